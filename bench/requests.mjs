#!/usr/bin/env node
import { performance } from 'node:perf_hooks';
// Small HTTP requests (GET / answering 5 bytes) through each path, with wrk:
//   keep-alive   1, 16 and 128 connections, each reused for every request
//   new conn     `Connection: close`: every request opens (and closes) a TCP
//                connection, at 1 and 16 concurrent connections
// req/s, p50 and p99 per path, in the same run, alternating; the CPU column is
// the system under test's (backend; or relay + agent + backend; or sshd + ssh
// + backend), 100 % = one core. Each run's line also gives the CPU time per
// request of each of those processes, in that order (µs/req).
//
// wrk rather than autocannon: a C client with one thread, it costs a fraction
// of autocannon's CPU per request, so the load generator's core is not the
// limit and its latency samples are not delayed by its own event loop.
//
//   node bench/requests.mjs
//   BENCH_DURATION=3 BENCH_CONNECTIONS=128 BENCH_CLOSE_CONNECTIONS= node bench/requests.mjs
//
// Environment (defaults in brackets): BENCH_DURATION seconds per run [5],
// BENCH_WARMUP seconds before each run [1; 0 skips], BENCH_CONNECTIONS
// [1,16,128], BENCH_CLOSE_CONNECTIONS [1,16] (empty: skip new-connection
// runs), plus the common BENCH_RUNS, BENCH_SIDES, BENCH_PIN, BENCH_TIMEOUT,
// BENCH_CPU_PROF, BENCH_SMOKE. See docs/performance.md.
import {
  alternate,
  commonConfig,
  finish,
  medians,
  ratio,
  reportTarget,
  sized,
  startPaths,
  timeLimit,
} from './lib/harness.mjs';
import { cpuDuring } from './lib/procfs.mjs';
import { envInt, fmt, printTable } from './lib/report.mjs';
import { runWrk, wrkUnavailable } from './lib/wrk.mjs';

function connectionList(name, fallback) {
  const raw = process.env[name];
  if (raw === undefined) return fallback;
  const items = raw
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
    .map(Number);
  if (items.some((n) => !Number.isSafeInteger(n) || n < 1 || n > 10_000)) {
    console.error(`${name} must list integers from 1 to 10000 (got "${raw}")`);
    process.exit(1);
  }
  return items;
}

const cfg = {
  ...commonConfig(1800),
  duration: envInt('BENCH_DURATION', sized(5, 1), 1),
  warmup: envInt('BENCH_WARMUP', sized(1, 0), 0),
  keepAlive: connectionList('BENCH_CONNECTIONS', [1, 16, 128]),
  close: connectionList('BENCH_CLOSE_CONNECTIONS', [1, 16]),
};
const missing = wrkUnavailable();
if (missing) {
  console.error(missing);
  process.exit(1);
}
timeLimit(cfg.timeout, 'bench/requests.mjs');
const paths = await startPaths(cfg, `small requests with wrk (1 thread)`);

async function measure(side, connections, close) {
  const t0 = performance.now();
  const { result: r, ms: used } = await cpuDuring(paths.pids(side), () =>
    runWrk({ port: paths.ports[side], connections, duration: cfg.duration, close, cpus: paths.loadgenCpus }),
  );
  const elapsed = performance.now() - t0;
  r.cpu = used.reduce((a, b) => a + b, 0) / elapsed;
  // CPU per request of each process (relay | agent | backend for burrow), µs.
  const requests = (r.rps * elapsed) / 1000;
  const perRequest = used.map((ms) => (ms * 1000) / requests);
  r.line = () =>
    `${fmt.int(r.rps).padStart(6)} req/s  p50 ${fmt.ms(r.p50)} ms  p99 ${fmt.ms(r.p99)} ms  cpu ${fmt.pct(r.cpu)}` +
    `  µs/req ${perRequest.map((us) => us.toFixed(0)).join(' | ')}` +
    (r.errors ? `  ${r.errors} errors` : '');
  return r;
}

const rows = [];
const at128 = {};
const cases = [
  ...cfg.keepAlive.map((c) => ({ connections: c, close: false })),
  ...cfg.close.map((c) => ({ connections: c, close: true })),
];
for (const { connections, close } of cases) {
  const label = `${close ? 'new conn' : 'keep-alive'} ×${connections}`;
  console.log(`\n[${label}] ${cfg.warmup ? `${cfg.warmup} s warm-up + ` : ''}${cfg.duration} s per run`);
  const res = await alternate(
    cfg,
    label,
    (side) => measure(side, connections, close),
    cfg.warmup
      ? (side) =>
          runWrk({
            port: paths.ports[side],
            connections,
            duration: cfg.warmup,
            close,
            cpus: paths.loadgenCpus,
          })
      : undefined,
  );
  const m = medians(res, ['direct', 'burrow', 'ssh'], ['rps', 'p50', 'p99', 'cpu']);
  if (connections === 128 && !close) Object.assign(at128, m);
  rows.push([
    label,
    fmt.int(m.direct.rps),
    fmt.int(m.burrow.rps),
    fmt.int(m.ssh.rps),
    ratio(m.burrow.rps, m.direct.rps),
    ratio(m.burrow.rps, m.ssh.rps),
    `${fmt.ms(m.direct.p50)} / ${fmt.ms(m.direct.p99)}`,
    `${fmt.ms(m.burrow.p50)} / ${fmt.ms(m.burrow.p99)}`,
    `${fmt.ms(m.ssh.p50)} / ${fmt.ms(m.ssh.p99)}`,
    [m.direct.cpu, m.burrow.cpu, m.ssh.cpu].map(fmt.pct).join(' | '),
    String(m.direct.errors + m.burrow.errors + m.ssh.errors),
  ]);
}

console.log(
  `\nsmall requests (median of ${cfg.runs} run${cfg.runs === 1 ? '' : 's'}; latency p50 / p99 in ms; ` +
    'cpu = system under test, direct | burrow | ssh, 100 % = one core):',
);
printTable(
  [
    'load',
    'direct req/s',
    'burrow req/s',
    'ssh req/s',
    'burrow/direct',
    'burrow/ssh',
    'direct ms',
    'burrow ms',
    'ssh ms',
    'cpu',
    'errors',
  ],
  rows,
);

console.log('\ntargets:');
if (at128.burrow) {
  const vsDirect = at128.burrow.rps / at128.direct.rps;
  reportTarget(
    'requests/s at 128 keep-alive connections >= 50 % of direct',
    Number.isFinite(vsDirect) ? vsDirect >= 0.5 : undefined,
    `${fmt.int(at128.burrow.rps)} vs ${fmt.int(at128.direct.rps)} req/s = ${fmt.pct(vsDirect)}` +
      (vsDirect < 0.5 ? `, short by ${fmt.int((0.5 - vsDirect) * 100)} points` : ''),
  );
  const vsSsh = at128.burrow.rps / at128.ssh.rps;
  reportTarget(
    'requests/s at 128 keep-alive connections >= ssh -R',
    Number.isFinite(vsSsh) ? vsSsh >= 1 : undefined,
    `${fmt.int(at128.burrow.rps)} vs ${fmt.int(at128.ssh.rps)} req/s = ${fmt.pct(vsSsh)}`,
  );
} else {
  reportTarget('requests/s at 128 keep-alive connections', undefined, 'BENCH_CONNECTIONS without 128');
}

await finish(paths);
