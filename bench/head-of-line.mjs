#!/usr/bin/env node
// Head-of-line blocking: the latency of small requests while a bulk download
// saturates the same tunnel, against their latency on an idle tunnel.
//
// The agent keeps ONE tunnel connection here (its default is 2), so the
// small requests and the bulk transfer share one WebSocket, as ssh -R's
// channels share one SSH connection. Direct has no tunnel: its figures show
// what the shared CPU alone does to the small requests.
//
// Small requests: an open-loop paced load (bench/lib/paced.mjs) at
// BENCH_HOL_RATE req/s on a pool of up to BENCH_HOL_POOL keep-alive connections; latency counts
// from each request's due time, so a stall cannot hide. Per run and path: the
// idle phase, then the same load while downloads run back to back. The
// downloads run in a child process (bench/lib/bulk-client.mjs), so reading
// them does not delay this process's timers and responses.
//
//   node bench/head-of-line.mjs
//
// Environment (defaults in brackets): BENCH_DURATION seconds per phase [5],
// BENCH_HOL_RATE [100], BENCH_HOL_POOL [64], BENCH_HOL_BULK_BYTES size of each background download
// [256 MiB], BENCH_HOL_CONNECTIONS agent tunnel connections [1], plus the common BENCH_RUNS, BENCH_SIDES, BENCH_PIN,
// BENCH_TIMEOUT, BENCH_CPU_PROF, BENCH_SMOKE. See docs/performance.md.
import { startBulkClient } from './lib/bulk-client.mjs';
import {
  alternate,
  commonConfig,
  finish,
  headOfLineRun,
  reportHeadOfLine,
  sized,
  startPaths,
  timeLimit,
} from './lib/harness.mjs';
import { createPool, pacedLoad } from './lib/paced.mjs';
import { envInt, envNumber, fmt } from './lib/report.mjs';
import { HOST, HOSTNAME } from './lib/stack-control.mjs';

const MiB = 1024 * 1024;
const cfg = {
  ...commonConfig(900),
  duration: envNumber('BENCH_DURATION', sized(5, 1)),
  rate: envInt('BENCH_HOL_RATE', sized(100, 50), 1),
  // Enough connections that a slow answer never queues the next request in the
  // client (4 connections at 100 ms each would cap the load at 40 req/s, and the
  // percentiles would then measure the client's queue, not the tunnel).
  pool: envInt('BENCH_HOL_POOL', 64, 1),
  bulkBytes: envInt('BENCH_HOL_BULK_BYTES', sized(256 * MiB, 16 * MiB), 1),
  // 1: small requests and the bulk transfer share one WebSocket (the case measured).
  connections: envInt('BENCH_HOL_CONNECTIONS', 1, 1),
};
timeLimit(cfg.timeout, 'bench/head-of-line.mjs');
const paths = await startPaths(cfg, `head-of-line`, { connections: cfg.connections });
console.log(
  `small GET / at ${cfg.rate} req/s (open loop, up to ${cfg.pool} keep-alive connections), ${cfg.duration} s idle, ` +
    `then ${cfg.duration} s while ${fmt.bytes(cfg.bulkBytes)} downloads run back to back on the same path`,
);

const pools = Object.fromEntries(cfg.sides.map((s) => [s, createPool(cfg.pool)]));
const small = (side, duration) =>
  pacedLoad({
    host: HOST,
    port: paths.ports[side],
    path: '/',
    headers: { host: HOSTNAME },
    rate: cfg.rate,
    duration,
    pool: pools[side],
  });

const res = await alternate(
  cfg,
  'small requests',
  (side) =>
    headOfLineRun({
      small: (seconds) => small(side, seconds),
      startBulk: () => startBulkClient(paths.ports[side], cfg.bulkBytes, (cfg.duration + 30) * 1000),
      duration: cfg.duration,
      // Let the transfer reach its steady rate (window growth) before sampling.
      settleMs: sized(500, 100),
    }),
  // Warm the path (JIT, connection pool) with a short unrecorded load.
  (side) => small(side, sized(1, 0.2)),
);
for (const p of Object.values(pools)) p.destroy();

reportHeadOfLine(cfg, res, {
  title: 'head-of-line',
  target: 'head-of-line: small-request p99 under a saturating bulk transfer <= 2x idle p99',
});

await finish(paths);
