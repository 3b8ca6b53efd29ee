#!/usr/bin/env node
// Raw TCP through a public TCP port of the relay, for services that are not
// HTTP (databases, SSH): each path reaches the backend's raw TCP server
//   direct  client → backend
//   burrow  client → relay's public TCP port → WebSocket tunnel → agent → backend
//   ssh     client → sshd forwarded port → SSH connection → ssh -R → backend
// in the same run, alternating:
//   bulk       BENCH_BULK_BYTES down and up over one connection, then over 16
//   ping-pong  64-byte round trips one at a time on one connection (as a
//              database client's queries): round trips/s, p50, p99
// Each run's line also gives the CPU time per MB (bulk) of every process under test.
//
//   node bench/tcp.mjs
//   BENCH_BULK_BYTES=268435456 BENCH_RUNS=1 node bench/tcp.mjs
//
// Environment (defaults in brackets): BENCH_BULK_BYTES [1 GiB], BENCH_BULK_PARALLEL
// [16], BENCH_PINGS round trips per run [20000; at most 10 s], plus the common
// BENCH_RUNS, BENCH_SIDES, BENCH_PIN, BENCH_TIMEOUT, BENCH_SMOKE. See docs/performance.md.
import {
  alternate,
  bulkRuns,
  commonConfig,
  finish,
  pick,
  ratio,
  sized,
  startPaths,
  timeLimit,
} from './lib/harness.mjs';
import { rawPingPong, rawTransfer } from './lib/raw-load.mjs';
import { envInt, fmt, printTable } from './lib/report.mjs';

const MiB = 1024 * 1024;
const cfg = {
  ...commonConfig(1800),
  bytes: envInt('BENCH_BULK_BYTES', sized(1024 * MiB, 4 * MiB), 1),
  parallel: envInt('BENCH_BULK_PARALLEL', 16, 1),
  pings: envInt('BENCH_PINGS', sized(20_000, 500), 1),
};
timeLimit(cfg.timeout, 'bench/tcp.mjs');
const paths = await startPaths(cfg, `raw TCP through a public port, ${fmt.bytes(cfg.bytes)} per bulk run`, {
  raw: true,
});
const SIDES = ['direct', 'burrow', 'ssh'];

const rows = [];
for (const { label, m } of await bulkRuns(cfg, paths, ['download', 'upload'], rawTransfer, 'connection')) {
  rows.push([label, ...SIDES.map((s) => fmt.int(m[s])), ratio(m.burrow, m.direct), ratio(m.burrow, m.ssh)]);
}

console.log(`\n[ping-pong] ${cfg.pings} round trips of 64 bytes on one connection`);
for (const side of cfg.sides) await rawPingPong(paths.ports[side], { count: Math.min(cfg.pings, 1000) });
const pings = await alternate(cfg, 'ping-pong', async (side) => {
  const r = await rawPingPong(paths.ports[side], { count: cfg.pings });
  r.line = () =>
    `${fmt.int(r.rate).padStart(6)} round trips/s  p50 ${r.p50.toFixed(3)} ms  p99 ${r.p99.toFixed(3)} ms`;
  return r;
});
const rate = Object.fromEntries(SIDES.map((s) => [s, pick(pings[s], 'rate')]));
const p = (side, key) => {
  const v = pick(pings[side], key);
  return Number.isFinite(v) ? v.toFixed(3) : '-';
};

console.log(`\nraw TCP bulk (median MB/s of ${cfg.runs} run${cfg.runs === 1 ? '' : 's'}, 10^6 bytes/s):`);
printTable(['transfer', 'direct', 'burrow', 'ssh -R', 'burrow/direct', 'burrow/ssh'], rows);
console.log('\nraw TCP ping-pong (median of runs; p50 / p99 in ms):');
printTable(
  ['path', 'round trips/s', 'of direct', 'p50', 'p99'],
  cfg.sides.map((s) => [s, fmt.int(rate[s]), ratio(rate[s], rate.direct), p(s, 'p50'), p(s, 'p99')]),
);
await finish(paths);
