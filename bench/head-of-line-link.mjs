#!/usr/bin/env node
// Head-of-line blocking over a saturated network link: the latency of small
// requests while a bulk download fills the link the tunnel crosses, against
// their latency on the idle link. bench/head-of-line.mjs runs on loopback,
// where the bulk transfer saturates the CPU; here the bottleneck is a shaped
// link (bench/lib/link.mjs), and the CPUs stay mostly idle.
//
//   root namespace: relay, sshd, load generator ── veth, tbf on both ends ── namespace burrow-hol-PID: backend, agent, ssh -R
//
//   direct  load generator → backend at 203.0.113.2 across the link
//   burrow  load generator → relay 127.0.0.1 → tunnel across the link → agent → backend
//   ssh     load generator → sshd's forwarded port 127.0.0.1 → SSH connection across the link → ssh -R → backend
//
// Relay and agent are the built CLIs (packages/*/dist/cli.js), started as an
// operator would; the agent keeps ONE tunnel connection, so small requests
// and the bulk transfer share one WebSocket, as ssh -R's channels share one
// SSH connection. Small requests: an open-loop paced load
// (bench/lib/paced.mjs) at BENCH_HOL_RATE req/s, latency from each request's
// due time. Per run and path: the idle phase, then the same load while
// downloads run back to back on the same path, read by a child process.
//
// Needs root, iproute2 (`ip`, `tc`) and the tbf qdisc; without them it prints
// "skipped: REASON" and exits 0. Everything it builds (namespace, veth) is
// removed at exit, also after errors and SIGINT. Only 127.0.0.1 and
// 203.0.113.0/24 are used.
//
//   sudo node bench/head-of-line-link.mjs
//   BENCH_ONLY=head-of-line-link node bench/run.mjs
//
// Environment (defaults in brackets): BENCH_LINK_RATE tbf rate of each link
// direction [100mbit], BENCH_HOL_LINK_BULK_BYTES size of each background
// download [128 MiB: longer than the loaded phase at 100 Mbit/s],
// BENCH_DURATION seconds per phase [5], BENCH_HOL_RATE [100], BENCH_HOL_POOL
// [64], BENCH_HOL_CONNECTIONS agent tunnel connections [1], plus the common
// BENCH_RUNS, BENCH_SIDES, BENCH_PIN, BENCH_TIMEOUT [600], BENCH_SMOKE. See docs/performance.md.
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startBulkClient } from './lib/bulk-client.mjs';
import {
  alternate,
  commonConfig,
  headOfLineRun,
  reportHeadOfLine,
  reportTarget,
  sized,
  timeLimit,
} from './lib/harness.mjs';
import {
  buildLink,
  LinkUnavailable,
  ROOT_ADDR,
  rateBytes,
  SITE_ADDR,
  spawnLogged,
  startSiteBackend,
  startSiteSsh,
  waitFor,
} from './lib/link.mjs';
import { getStatus } from './lib/load.mjs';
import { createPool, pacedLoad } from './lib/paced.mjs';
import { envInt, envNumber, fmt } from './lib/report.mjs';
import { freePort, sshUnavailable } from './lib/ssh.mjs';
import { pin, pinLoadGenerator } from './lib/stack-control.mjs';

const MiB = 1024 * 1024;
const TARGET = 'head-of-line over a saturated link: small-request p99 under bulk <= 2x idle p99';
const HOSTNAME = 'app.lab.test';
const BACKEND_PORT = 9000;
const cfg = {
  ...commonConfig(600),
  linkRate: process.env.BENCH_LINK_RATE || '100mbit',
  duration: envNumber('BENCH_DURATION', sized(5, 1)),
  rate: envInt('BENCH_HOL_RATE', sized(100, 50), 1),
  pool: envInt('BENCH_HOL_POOL', 64, 1),
  bulkBytes: envInt('BENCH_HOL_LINK_BULK_BYTES', sized(128 * MiB, 4 * MiB), 1),
  connections: envInt('BENCH_HOL_CONNECTIONS', 1, 1),
};
if (!(rateBytes(cfg.linkRate) > 0)) {
  console.error(
    `BENCH_LINK_RATE must be a tc rate such as 100mbit, 1gbit or 500kbit (got "${cfg.linkRate}")`,
  );
  process.exit(1);
}
timeLimit(cfg.timeout, 'bench/head-of-line-link.mjs');
/** GET / with this scenario's Host → the status code, or 0 when the connection failed. */
const status = (host, port) => getStatus(port, { host, hostname: HOSTNAME });

let link;
try {
  link = buildLink(cfg.linkRate);
} catch (err) {
  if (!(err instanceof LinkUnavailable)) throw err;
  console.log(`head-of-line-link: skipped: ${err.message}`);
  reportTarget(TARGET, undefined, `skipped: ${err.message}`);
  process.exit(0);
}

// --- the site (backend, agent, ssh -R) and this side (relay, sshd) ---
const packages = join(dirname(fileURLToPath(import.meta.url)), '..', 'packages');
const relayCli = join(packages, 'relay', 'dist', 'cli.js');
const agentCli = join(packages, 'agent', 'dist', 'cli.js');
const { cpuCount, pinned, stackCpus } = pinLoadGenerator(cfg.pin);
const dir = link.dir;

const relayRun = (args) => {
  const r = spawnSync(process.execPath, [relayCli, ...args], { encoding: 'utf8', timeout: 15_000 });
  if (r.status !== 0) throw new Error(`burrow-relay ${args[0]} failed (run npx tsc -b?): ${r.stderr}`);
  return r.stdout;
};
relayRun(['keygen', '--out', join(dir, 'keys')]);
const token = relayRun([
  'token',
  'create',
  '--key',
  join(dir, 'keys', 'signing.key'),
  '--sub',
  'lab',
  '--hosts',
  '*.lab.test',
  '--ttl',
  '1h',
]);
const tokenFile = join(dir, 'agent.token');
writeFileSync(tokenFile, token.trim(), { mode: 0o600 });

const backend = await startSiteBackend(link, BACKEND_PORT);
// What to pin with BENCH_PIN: Node processes (main thread) and native ones (every thread).
const nodePids = [backend.pid];
const nativePids = [];
await waitFor('backend across the link', async () => (await status(SITE_ADDR, BACKEND_PORT)) === 200);

const ports = { direct: BACKEND_PORT };
if (cfg.sides.includes('burrow')) {
  const [httpPort, adminPort, tunnelPort] = [
    await freePort('127.0.0.1'),
    await freePort('127.0.0.1'),
    await freePort(ROOT_ADDR),
  ];
  const relay = link.track(
    spawnLogged(process.execPath, [
      relayCli,
      'serve',
      '--verify-key',
      join(dir, 'keys'),
      '--http-listen',
      `127.0.0.1:${httpPort}`,
      '--tunnel-listen',
      `${ROOT_ADDR}:${tunnelPort}`,
      '--tls-listen',
      'off',
      '--admin-listen',
      `127.0.0.1:${adminPort}`,
      '--log-level',
      'warn',
    ]),
  );
  const agent = link.track(
    spawnLogged(
      ...link.exec(process.execPath, [
        agentCli,
        '--relay',
        `ws://${ROOT_ADDR}:${tunnelPort}`,
        '--token-file',
        tokenFile,
        '--expose',
        `${HOSTNAME}=http://127.0.0.1:${BACKEND_PORT}`,
        '--connections',
        String(cfg.connections),
        '--log-level',
        'warn',
      ]),
    ),
  );
  // 200 once the relay listens and the agent's route is active.
  await waitFor(
    'relay and agent',
    async () => {
      if (relay.exitCode !== null) throw new Error(`relay exited (${relay.exitCode}):\n${relay.log()}`);
      return (await status('127.0.0.1', httpPort)) === 200;
    },
    agent,
  );
  ports.burrow = httpPort;
  nodePids.push(relay.pid, agent.pid);
}
if (cfg.sides.includes('ssh')) {
  const why = sshUnavailable();
  if (why) {
    console.error(`ssh comparison left out: ${why}`);
    cfg.sides = cfg.sides.filter((s) => s !== 'ssh');
  } else {
    const ssh = await startSiteSsh(link, BACKEND_PORT);
    await waitFor('ssh -R', async () => (await status('127.0.0.1', ssh.port)) === 200);
    ports.ssh = ssh.port;
    nativePids.push(...ssh.pids());
  }
}
if (pinned) {
  for (const pid of nodePids) pin(pid, stackCpus);
  for (const pid of nativePids) pin(pid, stackCpus, true);
}
const hostOf = { direct: SITE_ADDR, burrow: '127.0.0.1', ssh: '127.0.0.1' };

console.log(
  `head-of-line-link: node ${process.version}; link: ${link.describe} ` +
    `(${fmt.num(rateBytes(cfg.linkRate) / 1e6)} MB/s each way); site namespace: backend` +
    (ports.burrow
      ? `, agent (${cfg.connections} tunnel connection${cfg.connections === 1 ? '' : 's'})`
      : '') +
    (ports.ssh ? ', ssh -N -R (default ciphers)' : '') +
    `; root namespace: ${ports.burrow ? 'relay, ' : ''}${ports.ssh ? 'sshd, ' : ''}load generator; ` +
    (pinned
      ? `load generator on CPU 0, the rest on CPU ${stackCpus} (taskset)`
      : `not pinned (${cpuCount} CPUs)`),
);
console.log(
  `small GET / at ${cfg.rate} req/s (open loop, up to ${cfg.pool} keep-alive connections), ${cfg.duration} s idle, ` +
    `then ${cfg.duration} s while ${fmt.bytes(cfg.bulkBytes)} downloads run back to back on the same path`,
);

// --- measure ---
const pools = Object.fromEntries(cfg.sides.map((s) => [s, createPool(cfg.pool)]));
const small = (side, duration) =>
  pacedLoad({
    host: hostOf[side],
    port: ports[side],
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
      startBulk: () =>
        startBulkClient(ports[side], cfg.bulkBytes, (cfg.duration + 30) * 1000, {
          host: hostOf[side],
          hostname: HOSTNAME,
        }),
      duration: cfg.duration,
      // Let the transfer fill the link's queue (slow start) before sampling.
      settleMs: sized(1000, 200),
      mbps: fmt.num,
    }),
  // Warm the path (JIT, connection pool) with a short unrecorded load.
  (side) => small(side, sized(1, 0.2)),
);
for (const p of Object.values(pools)) p.destroy();

reportHeadOfLine(cfg, res, {
  title: `head-of-line over a ${cfg.linkRate} link`,
  target: TARGET,
  mbps: fmt.num,
});

// Processes, namespace and veth go at exit (bench/lib/link.mjs).
process.exit(0);
