#!/usr/bin/env node
// Bulk transfer through the HTTP path: 1 GiB downloaded (GET /bulk) and
// uploaded (POST /upload), on one stream and then over 16 parallel streams,
// for each path in the same run, alternating:
//   direct  client → backend
//   burrow  client → relay HTTP listener → WebSocket tunnel → agent → backend
//   ssh     client → sshd forwarded port → SSH connection → ssh -R → backend
// Every byte is counted (the upload's count comes back from the backend). Each
// run's line also gives the CPU time per MB of every process under test (relay |
// agent | backend for burrow; sshd | ssh | backend for ssh -R).
//
//   node bench/bulk.mjs
//   BENCH_BULK_BYTES=268435456 BENCH_RUNS=1 node bench/bulk.mjs
//
// Environment (defaults in brackets): BENCH_BULK_BYTES bytes per run [1 GiB],
// BENCH_BULK_PARALLEL [16], BENCH_BULK_DIRECTIONS [download,upload], plus the
// common BENCH_RUNS [3], BENCH_SIDES [direct,burrow,ssh], BENCH_PIN [1],
// BENCH_TIMEOUT [1800], BENCH_CPU_PROF, BENCH_SMOKE. See docs/performance.md.
import {
  bulkRuns,
  commonConfig,
  finish,
  ratio,
  reportTarget,
  sized,
  startPaths,
  timeLimit,
} from './lib/harness.mjs';
import { transfer } from './lib/load.mjs';
import { envInt, envList, fmt, printTable } from './lib/report.mjs';

const MiB = 1024 * 1024;
const cfg = {
  ...commonConfig(1800),
  bytes: envInt('BENCH_BULK_BYTES', sized(1024 * MiB, 4 * MiB), 1),
  parallel: envInt('BENCH_BULK_PARALLEL', 16, 1),
  directions: envList('BENCH_BULK_DIRECTIONS', ['download', 'upload'], ['download', 'upload']),
};
timeLimit(cfg.timeout, 'bench/bulk.mjs');
const paths = await startPaths(cfg, `bulk transfer, ${fmt.bytes(cfg.bytes)} per run`);

const rows = [];
const single = {};
for (const { label, parallel, direction, m } of await bulkRuns(cfg, paths, cfg.directions, transfer)) {
  if (parallel === 1) single[direction] = m;
  rows.push([
    label,
    fmt.int(m.direct),
    fmt.int(m.burrow),
    fmt.int(m.ssh),
    ratio(m.burrow, m.direct),
    ratio(m.burrow, m.ssh),
    ratio(m.ssh, m.direct),
  ]);
}

console.log(`\nbulk (median MB/s of ${cfg.runs} run${cfg.runs === 1 ? '' : 's'}, 10^6 bytes/s):`);
printTable(['transfer', 'direct', 'burrow', 'ssh -R', 'burrow/direct', 'burrow/ssh', 'ssh/direct'], rows);

console.log('\ntargets:');
for (const [direction, m] of Object.entries(single)) {
  const vsDirect = m.burrow / m.direct;
  reportTarget(
    `single-stream ${direction} >= 60 % of direct`,
    Number.isFinite(vsDirect) ? vsDirect >= 0.6 : undefined,
    `${fmt.int(m.burrow)} vs ${fmt.int(m.direct)} MB/s = ${fmt.pct(vsDirect)}` +
      (vsDirect < 0.6 ? `, short by ${fmt.int((0.6 - vsDirect) * 100)} points` : ''),
  );
  const vsSsh = m.burrow / m.ssh;
  reportTarget(
    `single-stream ${direction} >= 1.5x ssh -R`,
    Number.isFinite(vsSsh) ? vsSsh >= 1.5 : undefined,
    `${fmt.int(m.burrow)} vs ${fmt.int(m.ssh)} MB/s = ${vsSsh.toFixed(2)}x`,
  );
}

await finish(paths);
