#!/usr/bin/env node
// Control-plane timings:
//   announce  time from a new route entering the agent's route set (on a live
//             tunnel) to the first request for its hostname that the relay
//             answers 200; also when the relay's acceptance reached the agent.
//             ssh -R counterpart: a new forward added to the live SSH
//             connection (`ssh -O forward`, ControlMaster) to the first 200 on
//             the port sshd allocated; that includes starting the ssh command.
//   restart   the relay's process stopped (graceful: GOAWAY, drain) and a new
//             one started on the same ports, as a service restart does; time
//             from the new relay listening to the first 200 through it (the
//             agent reconnecting and announcing), and the whole outage seen by
//             a client. ssh -R has no counterpart: it does not reconnect by itself.
// Clients poll with back-to-back GETs (announce: one keep-alive connection;
// restart: a new connection every 5 ms), so the resolution is about 1 ms for
// announce and 5 ms for restart. Times are read from the monotonic clock that
// all processes share (process.hrtime.bigint()).
//
//   node bench/control-plane.mjs
//
// Environment (defaults in brackets): BENCH_ANNOUNCE_RUNS [10],
// BENCH_RESTART_RUNS [3], plus the common BENCH_SIDES, BENCH_PIN,
// BENCH_TIMEOUT, BENCH_SMOKE. See docs/performance.md.
import { Agent } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { commonConfig, finish, reportTarget, sized, startPaths, timeLimit } from './lib/harness.mjs';
import { getStatus } from './lib/load.mjs';
import { envInt, fmt, median, printTable } from './lib/report.mjs';
import { HOSTNAME } from './lib/stack-control.mjs';

const cfg = {
  ...commonConfig(600),
  announceRuns: envInt('BENCH_ANNOUNCE_RUNS', sized(10, 2), 1),
  restartRuns: envInt('BENCH_RESTART_RUNS', sized(3, 1), 1),
};
cfg.sides = cfg.sides.filter((s) => s !== 'direct');
timeLimit(cfg.timeout, 'bench/control-plane.mjs');
const paths = await startPaths(cfg, `control plane`);
const now = () => process.hrtime.bigint();
const ms = (from, to) => Number(to - from) / 1e6;
/** A client gives up on a route or a restart after this long. */
const POLL_LIMIT_MS = 30_000;

/** GETs back to back on `port` until one answers 200; the monotonic time it did, or null. */
async function firstSuccess(port, hostname, { keepAlive, gapMs = 0 }) {
  const agent = keepAlive ? new Agent({ keepAlive: true, maxSockets: 1 }) : false;
  const deadline = now() + BigInt(POLL_LIMIT_MS) * 1_000_000n;
  try {
    while (now() < deadline) {
      if ((await getStatus(port, { hostname, agent })) === 200) return now();
      if (gapMs) await sleep(gapMs);
    }
    return null;
  } finally {
    if (agent) agent.destroy();
  }
}

// ---- announce ----

console.log(`\n[announce] ${cfg.announceRuns} new hostnames, one at a time`);
const announce = { burrow: [], ack: [], ssh: [] };
for (let i = 1; i <= cfg.announceRuns; i++) {
  for (const side of cfg.sides) {
    if (side === 'burrow') {
      const hostname = `r${i}.${HOSTNAME}`;
      // The name is unknown until announced: the relay answers 404.
      const before = await getStatus(paths.ports.burrow, { hostname });
      if (before === 200) throw new Error(`${hostname} answered 200 before it was announced`);
      const poll = firstSuccess(paths.ports.burrow, hostname, { keepAlive: true });
      const { at, acked } = await paths.stack.announce(hostname);
      const ok = await poll;
      if (ok === null) throw new Error(`${hostname}: no 200 within ${POLL_LIMIT_MS} ms of its announcement`);
      const r = { total: ms(at, ok), ack: acked === null ? Number.NaN : ms(at, acked) };
      announce.burrow.push(r.total);
      announce.ack.push(r.ack);
      console.log(
        `  announce run ${i}  burrow  first 200 after ${fmt.ms(r.total)} ms (relay's answer at the agent after ${fmt.ms(r.ack)} ms)`,
      );
    } else {
      const at = now();
      const port = await paths.ssh.addForward(paths.stack.backendPort);
      const ok = await firstSuccess(port, HOSTNAME, { keepAlive: true });
      if (ok === null) throw new Error(`ssh forward on ${port}: no 200 within ${POLL_LIMIT_MS} ms`);
      announce.ssh.push(ms(at, ok));
      console.log(`  announce run ${i}  ssh     first 200 after ${fmt.ms(ms(at, ok))} ms`);
    }
  }
}

// ---- restart ----

const restart = [];
if (cfg.sides.includes('burrow')) {
  console.log(`\n[restart] the relay's process restarted ${cfg.restartRuns} times on the same ports`);
  for (let i = 1; i <= cfg.restartRuns; i++) {
    const port = paths.stack.relayHttpPort;
    if ((await getStatus(port)) !== 200) throw new Error('the relay does not answer 200 before the restart');
    // A client polling throughout: the last 200 before the outage and the first after.
    let lastOk = now();
    let failures = 0;
    let polling = true;
    const poller = (async () => {
      while (polling) {
        const status = await getStatus(port, { timeout: 1_000 });
        if (status === 200) lastOk = now();
        else failures++;
        await sleep(5);
      }
    })();
    await sleep(50);
    const { stoppedAt, listeningAt } = await paths.stack.restartRelay();
    polling = false;
    await poller;
    // What a client sees: from its last 200 before the restart to its first after.
    const outageFrom = lastOk;
    const ok = await firstSuccess(port, HOSTNAME, { keepAlive: false, gapMs: 5 });
    if (ok === null) throw new Error(`no 200 within ${POLL_LIMIT_MS} ms of the relay restarting`);
    const r = {
      stop: ms(stoppedAt, listeningAt),
      recover: ms(listeningAt, ok),
      outage: ms(outageFrom, ok),
      failures,
    };
    restart.push(r);
    console.log(
      `  restart run ${i}  old relay stopped and new one listening in ${fmt.ms(r.stop)} ms; first 200 ` +
        `${fmt.ms(r.recover)} ms after that; outage seen by a client ${fmt.ms(r.outage)} ms ` +
        `(${failures} failed requests while the old relay drained)`,
    );
  }
}

console.log('\ncontrol plane (median of runs, ms):');
const col = (xs) => (xs.length ? fmt.ms(median(xs)) : '-');
const range = (xs) => (xs.length ? `${fmt.ms(Math.min(...xs))} – ${fmt.ms(Math.max(...xs))}` : '-');
const rows = [
  ['burrow: route announced → first 200', col(announce.burrow), range(announce.burrow)],
  ["burrow: route announced → relay's answer at the agent", col(announce.ack), range(announce.ack)],
  ['ssh -R: ssh -O forward started → first 200', col(announce.ssh), range(announce.ssh)],
  [
    'burrow: relay stop begins → new relay listening',
    col(restart.map((r) => r.stop)),
    range(restart.map((r) => r.stop)),
  ],
  [
    'burrow: new relay listening → first 200',
    col(restart.map((r) => r.recover)),
    range(restart.map((r) => r.recover)),
  ],
  [
    'burrow: outage seen by a polling client',
    col(restart.map((r) => r.outage)),
    range(restart.map((r) => r.outage)),
  ],
];
printTable(['what', 'median', 'min – max'], rows);
if (announce.burrow.length && announce.ssh.length) {
  console.log(
    `  burrow / ssh -R for a new route: ${fmt.pct(median(announce.burrow) / median(announce.ssh))} of ssh's time`,
  );
}

console.log('\ntargets:');
const a = median(announce.burrow);
reportTarget(
  'route announcement to first success: median <= 1 s',
  announce.burrow.length ? a <= 1000 : undefined,
  `${fmt.ms(a)} ms over ${announce.burrow.length} announcements` +
    (announce.ssh.length ? `; ssh -O forward ${fmt.ms(median(announce.ssh))} ms` : ''),
);

await finish(paths);
