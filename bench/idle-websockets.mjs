#!/usr/bin/env node
// Footprint: 10,000 concurrent idle WebSockets through one agent. The client
// (this process) opens them to the relay's HTTP listener; each becomes a
// tunnel stream to the agent and a WebSocket on the backend. Relay, agent and
// backend are separate processes; each reports process.memoryUsage() after a
// full garbage collection (--expose-gc), before the sockets open and once all
// are open. The same number of sockets is opened through ssh -R (sshd and ssh
// resident memory from /proc/PID/status) and directly (the backend alone: the
// cost of the WebSockets themselves, on every path).
//
// File descriptors: every process on the path holds one socket per
// WebSocket. The benchmark raises its own soft RLIMIT_NOFILE to the hard limit
// (prlimit; forked processes inherit it) and opens fewer sockets, saying so,
// when the hard limit is too low. The multiplexer's per-connection stream cap
// (8192 by default) is raised to the socket count on relay and agent.
//
//   node bench/idle-websockets.mjs
//   BENCH_WS_COUNT=2000 node bench/idle-websockets.mjs
//
// Environment (defaults in brackets): BENCH_WS_COUNT [10000],
// BENCH_WS_OPENING concurrent handshakes [200], BENCH_HEAP_SNAPSHOT a directory
// for heap snapshots of each burrow run, plus the common BENCH_RUNS,
// BENCH_SIDES, BENCH_PIN, BENCH_TIMEOUT, BENCH_SMOKE. See docs/performance.md.
import { spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { WebSocket } from 'ws';
import {
  alternate,
  commonConfig,
  finish,
  pick,
  ratio,
  reportTarget,
  sized,
  startPaths,
  timeLimit,
} from './lib/harness.mjs';
import { rssOf } from './lib/procfs.mjs';
import { envInt, fmt, printTable } from './lib/report.mjs';
import { HOST, HOSTNAME } from './lib/stack-control.mjs';

const cfg = {
  ...commonConfig(1800),
  count: envInt('BENCH_WS_COUNT', sized(10_000, 200), 1),
  opening: envInt('BENCH_WS_OPENING', 200, 1),
};
timeLimit(cfg.timeout, 'bench/idle-websockets.mjs');

/** The soft and hard limits on open files, from /proc/self/limits. */
function fileLimits() {
  const m = /^Max open files\s+(\S+)\s+(\S+)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
  const n = (s) => (s === 'unlimited' ? Number.POSITIVE_INFINITY : Number(s));
  return m ? { soft: n(m[1]), hard: n(m[2]) } : { soft: 1024, hard: 1024 };
}
// Headroom for everything else a process keeps open (modules, pipes, listeners, the tunnel).
const HEADROOM = 512;
let limits = fileLimits();
if (limits.soft < cfg.count + HEADROOM && limits.hard > limits.soft) {
  const to = Number.isFinite(limits.hard) ? limits.hard : cfg.count + HEADROOM;
  spawnSync('prlimit', ['--pid', String(process.pid), `--nofile=${to}:${limits.hard}`], { stdio: 'ignore' });
  const after = fileLimits();
  console.log(`raised the open-file limit from ${limits.soft} to ${after.soft} (hard limit ${limits.hard})`);
  limits = after;
}
if (limits.soft < cfg.count + HEADROOM) {
  const fits = Math.max(1, limits.soft - HEADROOM);
  console.log(
    `open-file limit ${limits.soft} is too low for ${cfg.count} sockets per process: opening ${fits} ` +
      '(raise it with `ulimit -n` before running)',
  );
  cfg.count = fits;
}

const streams = Math.max(8192, cfg.count + 1024);
const paths = await startPaths(cfg, `idle WebSockets`, { session: { maxConcurrentStreams: streams } });
console.log(
  `${cfg.count} WebSockets per run, at most ${cfg.opening} handshakes at a time; ` +
    `stream cap ${streams} per tunnel connection on relay and agent`,
);

/**
 * Opens `count` WebSockets to `port`, `opening` handshakes at a time. On the
 * first failure it stops opening, lets the handshakes in flight settle and
 * returns the sockets that are open with the error, so a path that cannot hold
 * them all is reported (how many it held, and why) rather than ending the run.
 */
async function openAll(port, count) {
  const open = [];
  let next = 0;
  let error;
  const worker = async () => {
    while (next < count && !error) {
      next++;
      const ws = new WebSocket(`ws://${HOST}:${port}/`, {
        headers: { host: HOSTNAME },
        perMessageDeflate: false,
        handshakeTimeout: 30_000,
      });
      const [err] = await Promise.race([
        once(ws, 'open').then(() => []),
        once(ws, 'error'),
        once(ws, 'unexpected-response').then(([, res]) => [
          new Error(`handshake answered ${res.statusCode}`),
        ]),
      ]).catch((e) => [e]);
      ws.on('error', () => {});
      if (err) {
        ws.terminate();
        error ??= new Error(`WebSocket ${open.length + 1} of ${count}: ${err.message}`);
      } else open.push(ws);
    }
  };
  await Promise.all(Array.from({ length: Math.min(cfg.opening, count) }, worker));
  return { sockets: open, error };
}

/** One echo round trip on a few of the sockets: they are open end to end, not just at the relay. */
async function checkEcho(sockets) {
  const step = Math.max(1, Math.floor(sockets.length / 10));
  for (let i = 0; i < sockets.length; i += step) {
    const ws = sockets[i];
    ws.send(`ping ${i}`);
    const [data] = await once(ws, 'message');
    if (String(data) !== `ping ${i}`) throw new Error(`WebSocket ${i} echoed "${data}"`);
  }
}

/** Waits (bounded) until the backend holds `n` WebSockets: closes and opens have landed. */
async function backendSockets(n) {
  const deadline = performance.now() + 20_000;
  let u = await paths.stack.usage();
  while (u.sockets !== n && performance.now() < deadline) {
    await sleep(50);
    u = await paths.stack.usage();
  }
  if (u.sockets !== n) console.log(`  (the backend holds ${u.sockets} WebSockets, expected ${n})`);
}

const idx = (role) => paths.stack.processes.indexOf(paths.stack.holder(role));
const sshRss = () => (paths.ssh ? paths.ssh.pids().reduce((a, pid) => a + rssOf(pid), 0) : Number.NaN);

// BENCH_HEAP_SNAPSHOT=DIR: heap snapshots of the stack processes before and after
// each burrow run, to compare with `node bench/lib/heapsnapshot.mjs BEFORE AFTER`.
const snapshotDir = process.env.BENCH_HEAP_SNAPSHOT ? resolve(process.env.BENCH_HEAP_SNAPSHOT) : undefined;
if (snapshotDir) mkdirSync(snapshotDir, { recursive: true });
let burrowRun = 0;
const snapshotAt = (side, when) =>
  snapshotDir && side === 'burrow' ? join(snapshotDir, `run${burrowRun}-${when}`) : undefined;

const res = await alternate(cfg, 'open', async (side) => {
  await backendSockets(0);
  if (side === 'burrow') burrowRun++;
  const before = await paths.stack.usage(true, snapshotAt(side, 'before'));
  const sshBefore = sshRss();
  const t0 = performance.now();
  const { sockets, error } = await openAll(paths.ports[side], cfg.count);
  const openMs = performance.now() - t0;
  const n = sockets.length;
  if (error) console.log(`  ${side}: ${n} of ${cfg.count} open, then ${error.message}`);
  const logged = error && side === 'ssh' ? paths.ssh.log() : '';
  if (/\S/.test(logged.replace(/^(sshd|ssh):/gm, ''))) console.log(`  sshd and ssh logged:\n${logged}`);
  await backendSockets(n);
  if (n > 0) await checkEcho(sockets);
  const after = await paths.stack.usage(true, snapshotAt(side, 'after'));
  const sshAfter = sshRss();
  for (const ws of sockets) ws.terminate();
  const per = (role, key) => (after.memory[idx(role)][key] - before.memory[idx(role)][key]) / n;
  const r = {
    opened: n,
    openRate: n / (openMs / 1000),
    backendHeap: per('backend', 'heapUsed'),
    backendRss: per('backend', 'rss'),
    relayHeap: side === 'burrow' ? per('relay', 'heapUsed') : Number.NaN,
    relayExternal: side === 'burrow' ? per('relay', 'external') : Number.NaN,
    relayRss: side === 'burrow' ? per('relay', 'rss') : Number.NaN,
    agentHeap: side === 'burrow' ? per('agent', 'heapUsed') : Number.NaN,
    agentRss: side === 'burrow' ? per('agent', 'rss') : Number.NaN,
    sshRss: side === 'ssh' ? (sshAfter - sshBefore) / n : Number.NaN,
    memory: { before: before.memory, after: after.memory },
  };
  r.line = () =>
    `${n === cfg.count ? '' : `only ${n} open; `}${fmt.int(r.openRate)} opened/s; bytes per WebSocket: backend heap ${fmt.int(r.backendHeap)}` +
    (side === 'burrow'
      ? `, relay heap ${fmt.int(r.relayHeap)} rss ${fmt.int(r.relayRss)}, agent heap ${fmt.int(r.agentHeap)} rss ${fmt.int(r.agentRss)}`
      : '') +
    (side === 'ssh' ? `, sshd + ssh rss ${fmt.int(r.sshRss)}` : '');
  return r;
});

const MB = (n) => `${(n / 1024 / 1024).toFixed(1)}`;
const burrowRuns = res.burrow ?? [];
if (burrowRuns.length > 0) {
  const last = burrowRuns.at(-1).memory;
  console.log(`\nburrow, last run: MiB before → after ${cfg.count} idle WebSockets (after a full GC):`);
  printTable(
    ['process', 'rss', 'heap used', 'external'],
    ['relay', 'agent', 'backend'].map((role) => {
      const b = last.before[idx(role)];
      const a = last.after[idx(role)];
      return [
        role,
        `${MB(b.rss)} → ${MB(a.rss)}`,
        `${MB(b.heapUsed)} → ${MB(a.heapUsed)}`,
        `${MB(b.external)} → ${MB(a.external)}`,
      ];
    }),
  );
}

console.log(
  `\nbytes per idle WebSocket (median of ${cfg.runs} run${cfg.runs === 1 ? '' : 's'}; heap after a full GC):`,
);
const rows = [];
const row = (what, key, side) => rows.push([what, fmt.int(pick(res[side], key))]);
if (res.burrow) {
  row('relay heap', 'relayHeap', 'burrow');
  row('relay external (Buffers)', 'relayExternal', 'burrow');
  row('relay rss', 'relayRss', 'burrow');
  row('agent heap', 'agentHeap', 'burrow');
  row('agent rss', 'agentRss', 'burrow');
}
if (res.ssh) row('sshd + ssh rss', 'sshRss', 'ssh');
for (const side of cfg.sides) row(`backend heap (${side})`, 'backendHeap', side);
printTable(['what', 'bytes/WebSocket'], rows);

// The tunnel's own footprint: what relay and agent hold per stream against sshd and ssh.
// Resident memory from the first run only: pages touched then stay resident and
// are reused by later runs, which then show little or no growth.
const tunnelRss = res.burrow ? res.burrow[0].relayRss + res.burrow[0].agentRss : Number.NaN;
const sshTunnelRss = res.ssh ? res.ssh[0].sshRss : Number.NaN;
console.log(
  '\nthe tunnel alone: resident memory growth per idle WebSocket (first run), handshakes per second (median):',
);
printTable(
  ['path', 'open (of ' + cfg.count + ')', 'tunnel rss bytes/WebSocket', 'vs ssh -R', 'opened/s', 'vs direct'],
  cfg.sides.map((s) => {
    const rss = s === 'burrow' ? tunnelRss : s === 'ssh' ? sshTunnelRss : Number.NaN;
    const rate = pick(res[s], 'openRate');
    return [
      s,
      fmt.int(Math.min(...res[s].map((r) => r.opened))),
      fmt.int(rss),
      s === 'burrow' ? ratio(tunnelRss, sshTunnelRss) : '-',
      fmt.int(rate),
      ratio(rate, pick(res.direct, 'openRate')),
    ];
  }),
);
console.log('  (resident memory moves in pages and stays after frees: read it next to the heap figures)');

console.log('\ntargets:');
const heap = pick(res.burrow, 'relayHeap');
reportTarget(
  '<= 4 KiB of relay heap per idle stream',
  Number.isFinite(heap) ? heap <= 4096 : undefined,
  `${fmt.int(heap)} bytes per stream over ${cfg.count} idle WebSockets` +
    (heap > 4096 ? `, over by ${fmt.int(heap - 4096)} bytes` : ''),
);

await finish(paths);
