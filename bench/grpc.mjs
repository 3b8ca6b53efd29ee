#!/usr/bin/env node
// gRPC-shaped unary calls over HTTP/2 without TLS (h2c), with h2load:
//   direct  h2load → the backend's HTTP/2 server
//   burrow  h2load → the relay's plain HTTP port (HTTP/2 with prior knowledge)
//           → WebSocket tunnel → agent → backend (an h2c:// route)
//   ssh     h2load → sshd forwarded port → SSH connection → ssh -R → backend
// in the same run, alternating. Each call POSTs one gRPC message (5-byte
// prefix and BENCH_GRPC_BYTES of payload) with `te: trailers`; the backend
// sends it back with `grpc-status: 0` in the trailers, so every call carries a
// body both ways and trailers, as a real one does. Loads: one connection with
// one call at a time (latency), then 16 connections × 10 streams.
//
//   node bench/grpc.mjs
//   BENCH_DURATION=3 BENCH_RUNS=1 node bench/grpc.mjs
//
// Environment (defaults in brackets): BENCH_DURATION seconds per run [5],
// BENCH_GRPC_BYTES message payload [100], BENCH_GRPC_LOADS connections×streams
// [1x1,16x10], plus the common BENCH_RUNS, BENCH_SIDES, BENCH_PIN,
// BENCH_TIMEOUT, BENCH_CPU_PROF, BENCH_SMOKE. See docs/performance.md.
import { performance } from 'node:perf_hooks';
import { grpcMessage, h2loadUnavailable, runH2load } from './lib/h2load.mjs';
import {
  alternate,
  commonConfig,
  finish,
  medians,
  ratio,
  sized,
  startPaths,
  timeLimit,
} from './lib/harness.mjs';
import { cpuDuring } from './lib/procfs.mjs';
import { envInt, fmt, printTable } from './lib/report.mjs';

function loadList(raw) {
  const loads = raw.split(',').map((item) => {
    const m = /^(\d+)x(\d+)$/.exec(item.trim());
    const [clients, streams] = m ? [Number(m[1]), Number(m[2])] : [0, 0];
    if (!(clients >= 1 && clients <= 1000 && streams >= 1 && streams <= 1000)) {
      console.error(`BENCH_GRPC_LOADS lists CONNECTIONSxSTREAMS, each 1 to 1000 (got "${item}")`);
      process.exit(1);
    }
    return { clients, streams };
  });
  return loads;
}

const cfg = {
  ...commonConfig(1200),
  duration: envInt('BENCH_DURATION', sized(5, 1), 1),
  bytes: envInt('BENCH_GRPC_BYTES', 100, 0),
  loads: loadList(process.env.BENCH_GRPC_LOADS ?? '1x1,16x10'),
};
const missing = h2loadUnavailable();
if (missing) {
  console.error(missing);
  process.exit(1);
}
timeLimit(cfg.timeout, 'bench/grpc.mjs');
const paths = await startPaths(cfg, `gRPC-shaped unary calls over h2c with h2load`, { h2c: true });
const body = grpcMessage(cfg.bytes);

async function measure(side, { clients, streams }) {
  const t0 = performance.now();
  const { result: r, ms: used } = await cpuDuring(paths.pids(side), () =>
    runH2load({
      port: paths.ports[side],
      clients,
      streams,
      duration: cfg.duration,
      body,
      cpus: paths.loadgenCpus,
    }),
  );
  const elapsed = performance.now() - t0;
  r.cpu = used.reduce((a, b) => a + b, 0) / elapsed;
  const perCall = used.map((ms) => (ms * 1000) / Math.max(1, r.requests));
  r.line = () =>
    `${fmt.int(r.rps).padStart(6)} calls/s  p50 ${fmt.ms(r.p50)} ms  p99 ${fmt.ms(r.p99)} ms  cpu ${fmt.pct(r.cpu)}` +
    `  µs/call ${perCall.map((us) => us.toFixed(0)).join(' | ')}` +
    (r.errors ? `  ${r.errors} errors` : '');
  return r;
}

const rows = [];
for (const load of cfg.loads) {
  const label = `${load.clients} conn × ${load.streams}`;
  console.log(`\n[${label}] ${cfg.duration} s per run, ${cfg.bytes}-byte messages`);
  const res = await alternate(cfg, label, (side) => measure(side, load));
  const m = medians(res, ['direct', 'burrow', 'ssh'], ['rps', 'p50', 'p99', 'cpu']);
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
    String(m.direct.errors + m.burrow.errors + m.ssh.errors),
  ]);
}

console.log(
  `\ngRPC-shaped unary calls over h2c (median of ${cfg.runs} run${cfg.runs === 1 ? '' : 's'}; p50 / p99 in ms):`,
);
printTable(
  [
    'load',
    'direct calls/s',
    'burrow calls/s',
    'ssh calls/s',
    'burrow/direct',
    'burrow/ssh',
    'direct ms',
    'burrow ms',
    'ssh ms',
    'errors',
  ],
  rows,
);
await finish(paths);
