#!/usr/bin/env node
// HTTP through the relay: requests/s, latency and bulk download MB/s for a
// client reaching a backend through relay → tunnel → agent, against the same
// backend reached directly, in the same run. Everything is on 127.0.0.1.
//
// The backend, relay and agent run in child processes (bench/lib/stack.mjs);
// this process is the load generator, so it never shares an event loop with
// the system under test. Scenarios, each alternating direct / burrow runs:
//   rps      small GETs on keep-alive connections (autocannon, closed loop) at
//            1, 16, 64 and 128 connections: req/s, p50, p99
//   latency  p50/p99 at half of burrow's saturation rate at 64 connections, with
//            an open-loop paced generator (bench/lib/paced.mjs), both paths
//   bulk     one 256 MiB download, then 16 parallel downloads splitting it
//
//   node bench/http.mjs
//   BENCH_DURATION=2 BENCH_SCENARIOS=rps node bench/http.mjs
//
// Environment (defaults in brackets): BENCH_DURATION seconds per measured run
// [5], BENCH_WARMUP seconds of unrecorded load before each run [1], BENCH_RUNS
// runs per side [3], BENCH_CONNECTIONS [1,16,64,128], BENCH_SCENARIOS
// [rps,latency,bulk], BENCH_BULK_BYTES [268435456], BENCH_BULK_PARALLEL [16],
// BENCH_SIDES [direct,burrow], BENCH_TOPOLOGY [one] (one: backend + relay +
// agent in one child; split: relay + agent in one child, backend in another;
// apart: relay, agent and backend each in its own child; relay-alone: relay
// in one child, agent + backend in another), BENCH_PIN [1] (1:
// with topology one and 2+ CPUs, the load generator's main thread on CPU 0 and
// the stack's on the others, with taskset; 0: the scheduler places them),
// BENCH_TIMEOUT whole-benchmark limit in seconds [1800], BENCH_CPU_PROF (a
// directory: the children write V8 CPU profiles there, summarised at the end
// for the burrow runs only).
// See docs/performance.md for the method and recorded figures.
import { resolve } from 'node:path';
import { printSummary } from './lib/cpuprofile.mjs';
import { medians, pick } from './lib/harness.mjs';
import { transfer } from './lib/load.mjs';
import { createPool, pacedLoad } from './lib/paced.mjs';
import { envInt, envList, envNumber, fmt, LatencyRecorder, median, printTable } from './lib/report.mjs';
import {
  busy,
  HOST,
  HOSTNAME,
  makeToken,
  pinLoadGenerator,
  startStack,
  TOPOLOGIES,
} from './lib/stack-control.mjs';

const HEADERS = { host: HOSTNAME };
const MiB = 1024 * 1024;
const TARGET_RPS_RATIO = 0.5;
const TARGET_ADDED_P99_MS = 2;

let autocannon;
let shared;
try {
  autocannon = (await import('autocannon')).default;
  shared = await import('@burrow/shared');
  await import('@burrow/relay');
  await import('@burrow/agent');
} catch (err) {
  console.error(
    `cannot load autocannon or the Burrow packages (run pnpm install and npx tsc -b): ${err.message}`,
  );
  process.exit(1);
}

const cfg = {
  duration: envNumber('BENCH_DURATION', 5),
  warmup: envNumber('BENCH_WARMUP', 1),
  runs: envInt('BENCH_RUNS', 3, 1),
  connections: envList('BENCH_CONNECTIONS', ['1', '16', '64', '128']).map((c) => {
    const n = Number(c);
    if (!Number.isSafeInteger(n) || n < 1) {
      console.error(`BENCH_CONNECTIONS must list integers >= 1 (got "${c}")`);
      process.exit(1);
    }
    return n;
  }),
  scenarios: envList('BENCH_SCENARIOS', ['rps', 'latency', 'bulk'], ['rps', 'latency', 'bulk']),
  bulkBytes: envInt('BENCH_BULK_BYTES', 256 * MiB, 1),
  bulkParallel: envInt('BENCH_BULK_PARALLEL', 16, 1),
  // The suite's BENCH_SIDES may name ssh too; this bench compares direct and burrow only.
  sides: envList('BENCH_SIDES', ['direct', 'burrow'], ['direct', 'burrow', 'ssh']).filter((s) => s !== 'ssh'),
  topology: envList('BENCH_TOPOLOGY', ['one'], Object.keys(TOPOLOGIES))[0],
  timeout: envInt('BENCH_TIMEOUT', 1800, 1),
  profDir: process.env.BENCH_CPU_PROF ? resolve(process.env.BENCH_CPU_PROF) : undefined,
  pin: envList('BENCH_PIN', ['1'], ['0', '1'])[0] === '1',
};

// Only with one stack process: several would share one core for no reason.
const { cpuCount, pinned, stackCpus } = pinLoadGenerator(cfg.pin && cfg.topology === 'one');

const limit = setTimeout(() => {
  console.error(`benchmark exceeded BENCH_TIMEOUT=${cfg.timeout} s; giving up`);
  process.exit(1);
}, cfg.timeout * 1000);
limit.unref();

// ---- The system under test, in child processes (bench/lib/stack-control.mjs) ----

const { token, verifyPem } = await makeToken(shared);
const stack = await startStack({
  topology: cfg.topology,
  token,
  verifyPem,
  profDir: cfg.profDir,
  cpus: pinned ? stackCpus : undefined,
});
const children = stack.processes;
const usage = () => stack.usage();

/**
 * What the stack did per request (or per `per` of anything): read and write
 * system calls summed over the stack's processes, and multiplexer frames sent
 * each way. The load generator's own system calls are not included.
 */
function counts(before, after, per) {
  const d = (k) => (after[k] - before[k]) / per;
  const cpuUs = after.children.map(
    (c, i) => (c.user + c.system - before.children[i].user - before.children[i].system) / per,
  );
  return {
    cpuUs,
    writes: d('writes'),
    reads: d('reads'),
    relayFrames: d('relayFrames'),
    agentFrames: d('agentFrames'),
  };
}

// ---- Load ----

async function closedLoop(port, connections, duration, record = true) {
  const recorder = new LatencyRecorder();
  const instance = autocannon({ url: `http://${HOST}:${port}/`, connections, duration, headers: HEADERS });
  // autocannon's own histogram keeps whole milliseconds only; keep exact values.
  if (record) instance.on('response', (_client, _status, _bytes, ms) => recorder.add(ms));
  const r = await instance;
  return {
    requests: r.requests.total,
    rps: r.requests.total / r.duration,
    p50: recorder.percentile(0.5),
    p99: recorder.percentile(0.99),
    errors: r.errors + r.timeouts + r.non2xx,
  };
}

// ---- Scenarios ----

const SIDES = cfg.sides;
const BOTH = ['direct', 'burrow'];
const targets = {};

/**
 * Measured runs, as [from, to] in µs of the system-wide monotonic clock, which
 * V8 also stamps CPU profile samples with: the profile summary then leaves out
 * start-up, warm-ups and the other side's runs.
 */
const windows = [];
const monotonicUs = () => Number(process.hrtime.bigint() / 1000n);

async function runAlternating(label, measure, warm) {
  const results = { direct: [], burrow: [] };
  for (let i = 0; i < cfg.runs; i++) {
    for (const side of SIDES) {
      if (warm) await warm(side);
      const before = await usage();
      const from = monotonicUs();
      const r = await measure(side);
      windows.push({ side, from, to: monotonicUs() });
      const after = await usage();
      r.busy = busy(before, after);
      r.counts = counts(before, after, r.requests ?? 1);
      results[side].push(r);
      console.log(`  ${label} run ${i + 1}  ${side.padEnd(6)} ${r.line()}  ${cpuNote(r.busy)}`);
    }
  }
  return results;
}

function cpuNote(b) {
  const steal = b.steal > 0.005 ? `, stolen by the hypervisor ${fmt.pct(b.steal)}` : '';
  return `(cpu: stack ${fmt.pct(b.stack)}, load generator ${fmt.pct(b.loadgen)}${steal})`;
}

const cpuPerRequest = (runs) =>
  runs.length === 0
    ? '-'
    : runs[0].counts.cpuUs.map((_, i) => fmt.int(median(runs.map((r) => r.counts.cpuUs[i])))).join(' | ');
const busyPct = (runs) =>
  `${fmt.pct(median(runs.map((r) => r.busy.stack)))} / ${fmt.pct(median(runs.map((r) => r.busy.loadgen)))}`;

async function scenarioRps(ports) {
  console.log(
    `\n[rps] small GET /, keep-alive, autocannon closed loop; ${cfg.warmup} s warm-up + ${cfg.duration} s per run`,
  );
  const rows = [];
  const perRequest = [];
  for (const connections of cfg.connections) {
    const res = await runAlternating(
      `${String(connections).padStart(3)} conn`,
      async (side) => {
        const r = await closedLoop(ports[side], connections, cfg.duration);
        r.line = () =>
          `${fmt.int(r.rps).padStart(6)} req/s  p50 ${fmt.ms(r.p50)} ms  p99 ${fmt.ms(r.p99)} ms` +
          (r.errors ? `  ${r.errors} errors` : '');
        return r;
      },
      (side) => closedLoop(ports[side], connections, cfg.warmup, false),
    );
    const m = medians(res, BOTH, ['rps', 'p50', 'p99']);
    if (connections === 64) {
      targets.saturation = m.burrow.rps;
      targets.rpsRatio = m.burrow.rps / m.direct.rps;
      targets.rps = m;
    }
    rows.push([
      String(connections),
      fmt.int(m.direct.rps),
      fmt.int(m.burrow.rps),
      fmt.pct(m.burrow.rps / m.direct.rps),
      fmt.ms(m.direct.p50),
      fmt.ms(m.burrow.p50),
      fmt.delta(m.burrow.p50 - m.direct.p50),
      fmt.ms(m.direct.p99),
      fmt.ms(m.burrow.p99),
      fmt.delta(m.burrow.p99 - m.direct.p99),
      busyPct(res.direct),
      busyPct(res.burrow),
      String(m.direct.errors + m.burrow.errors),
    ]);
    const c = (side, k) => median(res[side].map((r) => r.counts[k]));
    perRequest.push([
      String(connections),
      fmt.num(c('direct', 'reads')),
      fmt.num(c('direct', 'writes')),
      fmt.num(c('burrow', 'relayFrames')),
      fmt.num(c('burrow', 'agentFrames')),
      fmt.num(c('burrow', 'reads')),
      fmt.num(c('burrow', 'writes')),
      cpuPerRequest(res.direct),
      cpuPerRequest(res.burrow),
    ]);
  }
  console.log(
    '\nsmall requests (median of runs; latency in ms; cpu = busiest stack process / load generator):',
  );
  printTable(
    [
      'conns',
      'direct req/s',
      'burrow req/s',
      'burrow/direct',
      'direct p50',
      'burrow p50',
      'added p50',
      'direct p99',
      'burrow p99',
      'added p99',
      'cpu direct',
      'cpu burrow',
      'errors',
    ],
    rows,
  );
  console.log(
    '\nper request (median of runs): read/write system calls summed over the stack processes, tunnel frames sent each way,\n' +
      `and CPU time of each stack process (${children.map((c) => c.roles.join(' + ')).join(' | ')}):`,
  );
  printTable(
    [
      'conns',
      'direct reads',
      'direct writes',
      'frames relay→agent',
      'frames agent→relay',
      'burrow reads',
      'burrow writes',
      'direct cpu µs',
      'burrow cpu µs',
    ],
    perRequest,
  );
}

async function scenarioLatency(ports) {
  const connections = 64;
  if (targets.saturation === undefined) {
    console.log(`\n[latency] measuring burrow saturation at ${connections} connections first`);
    const rates = [];
    for (let i = 0; i < cfg.runs; i++) {
      await closedLoop(ports.burrow, connections, cfg.warmup, false);
      rates.push((await closedLoop(ports.burrow, connections, cfg.duration, false)).rps);
      console.log(`  saturation run ${i + 1}  ${fmt.int(rates.at(-1))} req/s`);
    }
    targets.saturation = median(rates);
  }
  const rate = Math.max(1, Math.round(targets.saturation / 2));
  console.log(
    `\n[latency] open-loop paced GET / at ${rate} req/s (half of burrow's ${fmt.int(targets.saturation)} req/s ` +
      `at ${connections} connections), pool of up to ${connections} keep-alive connections; ` +
      `${cfg.warmup} s warm-up + ${cfg.duration} s per run`,
  );
  const pools = { direct: createPool(connections), burrow: createPool(connections) };
  const load = (side, duration) =>
    pacedLoad({
      host: HOST,
      port: ports[side],
      path: '/',
      headers: HEADERS,
      rate,
      duration,
      pool: pools[side],
    });
  const res = await runAlternating(
    'paced',
    async (side) => {
      const r = await load(side, cfg.duration);
      const out = {
        achieved: r.rate,
        p50: r.scheduled.percentile(0.5),
        p99: r.scheduled.percentile(0.99),
        sentP99: r.sent.percentile(0.99),
        errors: r.errors + r.non2xx,
      };
      out.line = () =>
        `${fmt.int(out.achieved).padStart(6)} req/s  p50 ${fmt.ms(out.p50)} ms  p99 ${fmt.ms(out.p99)} ms ` +
        `(from send: p99 ${fmt.ms(out.sentP99)} ms)` +
        (out.errors ? `  ${out.errors} errors` : '');
      return out;
    },
    (side) => load(side, cfg.warmup),
  );
  for (const p of Object.values(pools)) p.destroy();
  const m = medians(res, BOTH, ['achieved', 'p50', 'p99', 'sentP99']);
  targets.latency = { rate, ...m, addedP99: m.burrow.p99 - m.direct.p99 };
  console.log(`\nlatency at ${rate} req/s (median of runs; ms, counted from each request's due time):`);
  printTable(
    ['path', 'offered req/s', 'achieved req/s', 'p50', 'p99', 'p99 from send', 'cpu stack/loadgen', 'errors'],
    SIDES.map((side) => [
      side,
      String(rate),
      fmt.int(m[side].achieved),
      fmt.ms(m[side].p50),
      fmt.ms(m[side].p99),
      fmt.ms(m[side].sentP99),
      busyPct(res[side]),
      String(m[side].errors),
    ]).concat([
      [
        'added by burrow',
        '',
        '',
        fmt.delta(m.burrow.p50 - m.direct.p50),
        fmt.delta(m.burrow.p99 - m.direct.p99),
        fmt.delta(m.burrow.sentP99 - m.direct.sentP99),
        '',
        '',
      ],
    ]),
  );
}

async function scenarioBulk(ports) {
  const warm = Math.min(cfg.bulkBytes, 32 * MiB);
  console.log(
    `\n[bulk] GET /bulk, ${fmt.bytes(cfg.bulkBytes)} per run over 1 and ${cfg.bulkParallel} parallel downloads ` +
      `(new connection each), after a ${fmt.bytes(warm)} warm-up per side`,
  );
  const rows = [];
  for (const parallel of [1, cfg.bulkParallel]) {
    for (const side of SIDES) await transfer('download', ports[side], warm, parallel);
    const res = await runAlternating(
      `${String(parallel).padStart(2)} download${parallel === 1 ? ' ' : 's'}`,
      async (side) => {
        const r = { mbps: await transfer('download', ports[side], cfg.bulkBytes, parallel) };
        r.line = () => `${fmt.int(r.mbps).padStart(6)} MB/s`;
        return r;
      },
    );
    const direct = pick(res.direct, 'mbps');
    const burrow = pick(res.burrow, 'mbps');
    rows.push([
      parallel === 1 ? '1 download' : `${parallel} parallel`,
      fmt.int(direct),
      fmt.int(burrow),
      fmt.pct(burrow / direct),
      busyPct(res.direct),
      busyPct(res.burrow),
    ]);
  }
  console.log('\nbulk download (median MB/s of runs, 10^6 bytes/s):');
  printTable(['downloads', 'direct MB/s', 'burrow MB/s', 'burrow/direct', 'cpu direct', 'cpu burrow'], rows);
}

function printTargets() {
  console.log('\ntargets:');
  if (targets.rps && !Number.isNaN(targets.rpsRatio)) {
    const met = targets.rpsRatio >= TARGET_RPS_RATIO;
    console.log(
      `  >= 50 % of direct requests/s at 64 connections: ${met ? 'met' : 'NOT met'} ` +
        `(burrow ${fmt.int(targets.rps.burrow.rps)} req/s = ${fmt.pct(targets.rpsRatio)} of direct ${fmt.int(targets.rps.direct.rps)} req/s)`,
    );
  } else {
    console.log(
      '  >= 50 % of direct requests/s at 64 connections: not measured (rps scenario without 64 connections)',
    );
  }
  if (targets.latency && !Number.isNaN(targets.latency.addedP99)) {
    const l = targets.latency;
    const met = l.addedP99 <= TARGET_ADDED_P99_MS;
    console.log(
      `  p99 added latency <= 2 ms at half of saturation: ${met ? 'met' : 'NOT met'} ` +
        `(${fmt.delta(l.addedP99)} ms: burrow p99 ${fmt.ms(l.burrow.p99)} ms, direct p99 ${fmt.ms(l.direct.p99)} ms at ${l.rate} req/s)`,
    );
  } else {
    console.log('  p99 added latency <= 2 ms at half of saturation: not measured');
  }
}

// ---- Main ----

const { backendPort, relayHttpPort, connections } = stack;
const ports = { direct: backendPort, burrow: relayHttpPort };
const probe = await closedLoop(relayHttpPort, 1, 0.2, false);
if (probe.errors > 0 || probe.rps === 0) {
  console.error('the first requests through the relay failed; run with BURROW_LOG_LEVEL=info to see why');
  process.exit(1);
}

console.log(
  `http through the relay vs direct: node ${process.version}, ${HOST}, topology "${cfg.topology}" ` +
    `(${children.map((c) => c.roles.join(' + ')).join(' | ')} | load generator), ` +
    (pinned
      ? `stack on CPU ${stackCpus}, load generator on CPU 0, `
      : `not pinned to CPUs (${cpuCount} available), `) +
    `agent with ${connections} tunnel connections, ${cfg.runs} run${cfg.runs === 1 ? '' : 's'} per side, alternating`,
);
if (cfg.scenarios.includes('rps')) await scenarioRps(ports);
if (cfg.scenarios.includes('latency')) await scenarioLatency(ports);
if (cfg.scenarios.includes('bulk')) await scenarioBulk(ports);
printTargets();

await stack.stop();
if (cfg.profDir) {
  console.log('\nCPU profiles, burrow runs only (start-up, warm-ups and direct runs left out):');
  const burrowRuns = windows.filter((w) => w.side === 'burrow');
  for (const c of children) printSummary(c.profile, { windows: burrowRuns, roles: c.roles.length });
}
// Nothing should be left running; exit regardless so the benchmark always ends by itself.
process.exit(0);
