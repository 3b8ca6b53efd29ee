#!/usr/bin/env node
// Runs the benchmark suite, one scenario after another, each in its own Node
// process, and prints every target line they reported at the end.
// `npm run bench` calls this.
//
//   bulk             1 GiB down and up, 1 and 16 streams: direct, burrow, ssh -R
//   tcp              raw TCP through a public TCP port of the relay: bulk both ways and
//                    64-byte ping-pong, beside direct and ssh -R
//   requests         small requests, keep-alive at 1/16/128 connections and a
//                    new connection per request (wrk)
//   grpc             gRPC-shaped unary calls over h2c through the plain port (h2load)
//   reference-proxy  a plain Node reverse proxy (no tunnel) vs direct: what Node's
//                    HTTP stack alone allows on this placement
//   ceiling          two HAProxy instances chained like relay and agent (HTTP, and
//                    bytes only) beside direct and Burrow: what two proxy hops
//                    reach on this placement (haproxy)
//   head-of-line     small-request p99 with and without a bulk transfer on the tunnel
//   head-of-line-link  (not by default; root) the same over a shaped veth link into a
//                    network namespace, so the bulk transfer fills the link, not a CPU
//   idle-websockets  10,000 idle WebSockets: relay and agent memory per stream
//   control-plane    route announcement to first success; relay restart recovery
//   mux              the multiplexer alone over one WebSocket vs TCP
//   tls              the relay's TLS listener: terminated h1 and h2, passthrough (h2load)
//   metrics          the relay's per-request metrics bookkeeping, no network
//   http             (not by default) autocannon, latency at half saturation, CPU
//                    profiles: the diagnostic bench used while optimising
//
// Environment: BENCH_ONLY (comma-separated scenario names; default all but
// http and head-of-line-link), BENCH_SUITE_TIMEOUT (seconds for the whole
// suite, default 5400; each scenario gets what is left as its BENCH_TIMEOUT
// unless that is set), BENCH_SMOKE=1 (every scenario, the opt-in ones
// included, with tiny sizes and one short run: checks the suite still works,
// in a few minutes). Every other BENCH_* variable passes through to the
// scenarios (docs/performance.md).
// Exits non-zero if any scenario failed.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { envInt, envList } from './lib/report.mjs';

const SCENARIOS = [
  'bulk',
  'tcp',
  'requests',
  'grpc',
  'reference-proxy',
  'ceiling',
  'head-of-line',
  'head-of-line-link',
  'idle-websockets',
  'control-plane',
  'mux',
  'tls',
  'metrics',
  'http',
];
const smoke = process.env.BENCH_SMOKE === '1';
// Opt-in scenarios (BENCH_ONLY names them; BENCH_SMOKE runs them too).
const OPT_IN = ['http', 'head-of-line-link'];
const only = envList(
  'BENCH_ONLY',
  smoke ? SCENARIOS : SCENARIOS.filter((s) => !OPT_IN.includes(s)),
  SCENARIOS,
);
const suiteTimeout = envInt('BENCH_SUITE_TIMEOUT', smoke ? 900 : 5400, 1);

// Tiny sizes for the two benchmarks that predate BENCH_SMOKE.
const SMOKE_ENV = {
  mux: { BENCH_BYTES: String(4 * 1024 * 1024), BENCH_RUNS: '1' },
  http: {
    BENCH_DURATION: '1',
    BENCH_WARMUP: '0.2',
    BENCH_RUNS: '1',
    BENCH_CONNECTIONS: '16',
    BENCH_BULK_BYTES: String(4 * 1024 * 1024),
  },
  tls: { BENCH_REQUESTS: '500', BENCH_HANDSHAKES: '100' },
  metrics: { BENCH_REQUESTS: '10000', BENCH_RUNS: '1' },
  'reference-proxy': { BENCH_DURATION: '1', BENCH_RUNS: '1', BENCH_CONNECTIONS: '16' },
};

const dir = dirname(fileURLToPath(import.meta.url));
// A benchmark added to bench/ but not to SCENARIOS would silently never run.
for (const file of readdirSync(dir)) {
  const name = file.replace(/\.mjs$/, '');
  if (file.endsWith('.mjs') && file !== 'run.mjs' && !SCENARIOS.includes(name)) {
    console.log(`note: bench/${file} is not in bench/run.mjs's list of scenarios and does not run`);
  }
}
const work = mkdtempSync(join(tmpdir(), 'burrow-bench-'));
const targetsFile = join(work, 'targets.txt');
const deadline = Date.now() + suiteTimeout * 1000;

let failed = 0;
for (const name of only) {
  const left = Math.floor((deadline - Date.now()) / 1000);
  if (left <= 0) {
    console.error(`\nBENCH_SUITE_TIMEOUT=${suiteTimeout} s reached; ${name} and later scenarios not run`);
    failed++;
    break;
  }
  console.log(`\n== bench/${name}.mjs${smoke ? ' (smoke)' : ''}`);
  const env = {
    ...process.env,
    ...(smoke ? SMOKE_ENV[name] : {}),
    BENCH_TARGETS_FILE: targetsFile,
    BENCH_TIMEOUT: process.env.BENCH_TIMEOUT ?? String(left),
  };
  const child = spawn(process.execPath, [join(dir, `${name}.mjs`)], { stdio: 'inherit', env });
  // The scenario bounds itself; this is the backstop for the whole suite.
  const limit = setTimeout(() => child.kill('SIGKILL'), (left + 30) * 1000);
  const [code, signal] = await once(child, 'exit');
  clearTimeout(limit);
  if (code !== 0) {
    failed++;
    console.error(`bench/${name}.mjs failed (${signal ?? `exit code ${code}`})`);
  }
}

let targets = '';
try {
  targets = readFileSync(targetsFile, 'utf8');
} catch {
  // no scenario reported a target
}
rmSync(work, { recursive: true, force: true });
if (targets) {
  console.log(`\n== targets${smoke ? ' (smoke sizes: these figures mean nothing)' : ''}`);
  process.stdout.write(targets.replace(/^/gm, '  '));
}
process.exit(failed ? 1 : 0);
