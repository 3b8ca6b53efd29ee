#!/usr/bin/env node
// What two proxy hops can reach on this placement. Burrow puts two processes
// (relay and agent) between a client and a backend; so does any relay with an
// agent beside the service. This scenario chains two HAProxy instances the same
// way (bench/lib/haproxy.mjs) and measures them beside direct and Burrow, in
// the same run, alternating, on the same CPU placement as the other scenarios:
//   direct        client → backend
//   burrow        client → relay → WebSocket tunnel → agent → backend
//   ssh           client → sshd → SSH connection → ssh -R → backend
//   haproxy-http  client → HAProxy (routes by Host) → HAProxy → backend
//   haproxy-tcp   client → HAProxy → HAProxy → backend, bytes only
// Per run: small requests (wrk, keep-alive), then one download and one upload
// over a single stream. Then, for each proxied path, small requests at half
// of its own saturation (open loop, bench/lib/paced.mjs), and direct at the
// same rate: the p99 the two hops add there. A target that the C chains miss
// as well is bound by the hops and the placement, not by how Burrow is written.
//
//   node bench/ceiling.mjs
//   BENCH_RUNS=5 BENCH_CONNECTIONS=16 node bench/ceiling.mjs
//
// Environment (defaults in brackets): BENCH_CONNECTIONS [128] (a list, as the
// suite passes it to every scenario; the largest entry counts),
// BENCH_DURATION seconds of small requests per run [5], BENCH_WARMUP [1],
// BENCH_BULK_BYTES bytes per transfer [1 GiB], plus the common BENCH_RUNS [3],
// BENCH_PIN [1], BENCH_TIMEOUT, BENCH_SMOKE. Needs wrk and haproxy (Debian
// packages); without haproxy it says so and exits 0. See docs/performance.md.
import { performance } from 'node:perf_hooks';
import { haproxyUnavailable, startHaproxyChain } from './lib/haproxy.mjs';
import { alternate, commonConfig, finish, pick, sized, startPaths, timeLimit } from './lib/harness.mjs';
import { transfer } from './lib/load.mjs';
import { createPool, pacedLoad } from './lib/paced.mjs';
import { cpuDuring } from './lib/procfs.mjs';
import { envInt, envList, fmt, printTable } from './lib/report.mjs';
import { HOST, HOSTNAME, pin } from './lib/stack-control.mjs';
import { runWrk, wrkUnavailable } from './lib/wrk.mjs';

const MiB = 1024 * 1024;
const CHAINS = ['haproxy-http', 'haproxy-tcp'];
// Client connections of the open-loop load at half of saturation (as bench/http.mjs).
const HALF_POOL = 64;
const connectionList = envList('BENCH_CONNECTIONS', ['128']).map(Number);
if (!connectionList.every((n) => Number.isSafeInteger(n) && n >= 1 && n <= 4000)) {
  console.error(
    `BENCH_CONNECTIONS must list integers from 1 to 4000 (got "${process.env.BENCH_CONNECTIONS}")`,
  );
  process.exit(1);
}
const cfg = {
  ...commonConfig(1800),
  connections: Math.max(...connectionList),
  duration: envInt('BENCH_DURATION', sized(5, 1), 1),
  warmup: envInt('BENCH_WARMUP', sized(1, 0), 0),
  bytes: envInt('BENCH_BULK_BYTES', sized(1024 * MiB, 4 * MiB), 1),
};
for (const [what, why] of [
  ['wrk', wrkUnavailable()],
  ['haproxy', haproxyUnavailable()],
]) {
  if (why) {
    console.log(`skipped: ${why} (${what} is needed for this scenario)`);
    process.exit(0);
  }
}
timeLimit(cfg.timeout, 'bench/ceiling.mjs');
// ssh -R too, when sshd is here (setupPaths leaves it out with a message otherwise).
cfg.sides = ['direct', 'burrow', 'ssh'];
const paths = await startPaths(cfg, 'two proxy hops, Burrow and HAProxy');
const backendPid = paths.pids('direct')[0];
const chains = {};
for (const mode of ['http', 'tcp']) {
  const chain = await startHaproxyChain(paths.ports.direct, mode);
  process.once('exit', chain.close);
  if (paths.pinned) for (const pid of chain.pids()) pin(pid, paths.stackCpus, true);
  chains[`haproxy-${mode}`] = chain;
}
console.log(
  `HAProxy: two instances per chain, one thread each, on the CPUs of the other processes under test`,
);
cfg.sides = [...cfg.sides, ...CHAINS];
const portOf = (side) => chains[side]?.port ?? paths.ports[side];
const pidsOf = (side) => (chains[side] ? [...chains[side].pids(), backendPid] : paths.pids(side));

/** CPU time of `pids` per unit of work while `work()` runs, µs: one figure per process. */
async function costs(pids, work, units) {
  const { result: r, ms } = await cpuDuring(pids, work);
  const n = units(r);
  return { r, per: ms.map((used) => (used * 1000) / n) };
}

async function measure(side) {
  const port = portOf(side);
  const pids = pidsOf(side);
  if (cfg.warmup) {
    await runWrk({ port, connections: cfg.connections, duration: cfg.warmup, cpus: paths.loadgenCpus });
  }
  const t0 = performance.now();
  const small = await costs(
    pids,
    () => runWrk({ port, connections: cfg.connections, duration: cfg.duration, cpus: paths.loadgenCpus }),
    (w) => (w.rps * (performance.now() - t0)) / 1000,
  );
  const down = await costs(
    pids,
    () => transfer('download', port, cfg.bytes, 1),
    () => cfg.bytes / 1e6,
  );
  const up = await costs(
    pids,
    () => transfer('upload', port, cfg.bytes, 1),
    () => cfg.bytes / 1e6,
  );
  const r = { rps: small.r.rps, p99: small.r.p99, errors: small.r.errors, down: down.r, up: up.r };
  const each = (c) => c.per.map((us) => us.toFixed(0)).join(' | ');
  r.line = () =>
    `${fmt.int(r.rps).padStart(6)} req/s (µs/req ${each(small)})  p99 ${fmt.ms(r.p99)} ms  ` +
    `down ${fmt.int(r.down)} MB/s (µs/MB ${each(down)})  up ${fmt.int(r.up)} MB/s` +
    (r.errors ? `  ${r.errors} errors` : '');
  return r;
}

console.log(
  `\n[${cfg.connections} keep-alive connections, ${cfg.duration} s; then ${fmt.bytes(cfg.bytes)} down and up over one stream]`,
);
const res = await alternate(cfg, 'ceiling', measure);

const m = Object.fromEntries(
  cfg.sides.map((s) => [
    s,
    Object.fromEntries(['rps', 'p99', 'down', 'up'].map((k) => [k, pick(res[s], k)])),
  ]),
);
const pctOf = (a, b) => (Number.isFinite(a) && b > 0 ? fmt.pct(a / b) : '-');
console.log(`\ntwo proxy hops (median of ${cfg.runs} run${cfg.runs === 1 ? '' : 's'}; % of direct):`);
printTable(
  ['path', 'req/s', '% direct', 'p99 ms', 'download MB/s', '% direct', 'upload MB/s', '% direct', 'errors'],
  cfg.sides.map((s) => [
    s,
    fmt.int(m[s].rps),
    pctOf(m[s].rps, m.direct.rps),
    fmt.ms(m[s].p99),
    fmt.int(m[s].down),
    pctOf(m[s].down, m.direct.down),
    fmt.int(m[s].up),
    pctOf(m[s].up, m.direct.up),
    String(res[s].reduce((a, r) => a + r.errors, 0)),
  ]),
);
console.log(
  `\nburrow against the HAProxy chains: requests/s ${pctOf(m.burrow.rps, m['haproxy-http'].rps)} of haproxy-http, ` +
    `${pctOf(m.burrow.rps, m['haproxy-tcp'].rps)} of haproxy-tcp; ` +
    `download ${pctOf(m.burrow.down, m['haproxy-http'].down)} / ${pctOf(m.burrow.down, m['haproxy-tcp'].down)}; ` +
    `upload ${pctOf(m.burrow.up, m['haproxy-http'].up)} / ${pctOf(m.burrow.up, m['haproxy-tcp'].up)}`,
);
if (m.ssh) {
  const others = cfg.sides.filter((s) => s !== 'direct' && s !== 'ssh');
  console.log(
    `requests/s against ssh -R: ${others.map((s) => `${s} ${pctOf(m[s].rps, m.ssh.rps)}`).join(', ')}`,
  );
}

// Latency at half of saturation: each proxied path at half its own median
// rate, direct at the same rate right after it, alternating.
console.log(
  `\n[half of saturation: open loop, ${HALF_POOL} keep-alive connections, ${cfg.duration} s per run]`,
);
const pools = Object.fromEntries(cfg.sides.map((s) => [s, createPool(HALF_POOL)]));
const half = {};
for (const side of cfg.sides.filter((s) => s !== 'direct')) {
  const rate = Math.max(1, Math.round(m[side].rps / 2));
  const paced = (s, duration) =>
    pacedLoad({
      host: HOST,
      port: portOf(s),
      path: '/',
      headers: { host: HOSTNAME },
      rate,
      duration,
      pool: pools[s],
    });
  // Each run starts warm, as the saturation runs do: after the other path's run the relay
  // has closed idle client connections (5 s) and upstreams (4 s), and a cold start is not
  // what this phase measures.
  const warm = cfg.warmup ? (s) => paced(s, cfg.warmup) : undefined;
  const runs = await alternate(
    { ...cfg, sides: [side, 'direct'] },
    `${fmt.int(rate)} req/s`,
    async (s) => {
      const r = await paced(s, cfg.duration);
      const out = {
        p50: r.scheduled.percentile(0.5),
        p99: r.scheduled.percentile(0.99),
        errors: r.errors + r.non2xx,
      };
      out.line = () =>
        `p50 ${fmt.ms(out.p50)} ms  p99 ${fmt.ms(out.p99)} ms${out.errors ? `  ${out.errors} errors` : ''}`;
      return out;
    },
    warm,
  );
  half[side] = { rate, p99: pick(runs[side], 'p99'), direct: pick(runs.direct, 'p99') };
}
console.log(
  `\nat half of each path's saturation (median p99 of ${cfg.runs} run${cfg.runs === 1 ? '' : 's'}, ms):`,
);
printTable(
  ['path', 'rate req/s', 'p99', 'direct p99 at that rate', 'p99 added'],
  Object.entries(half).map(([side, h]) => [
    side,
    fmt.int(h.rate),
    fmt.ms(h.p99),
    fmt.ms(h.direct),
    `${h.p99 >= h.direct ? '+' : '-'}${fmt.ms(Math.abs(h.p99 - h.direct))}`,
  ]),
);

for (const pool of Object.values(pools)) pool.destroy();
for (const chain of Object.values(chains)) chain.close();
await finish(paths);
