// The parent's side of bench/lib/stack.mjs: forks the processes that hold the
// backend, relay and agent, starts their roles over IPC, pins them to CPUs,
// and reads their CPU, system call, frame and memory counters. Every
// benchmark that runs Burrow end to end starts it through `startStack`.
import { fork, spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { basename, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';

export const HOST = '127.0.0.1';
export const HOSTNAME = 'bench.example.com';

/** Which roles share a process. `apart` is the default: every role its own process, as deployed. */
export const TOPOLOGIES = {
  one: [['backend', 'relay', 'agent']],
  split: [['relay', 'agent'], ['backend']],
  apart: [['relay'], ['agent'], ['backend']],
  // The relay's CPU alone, for profiles (bench/http.mjs BENCH_CPU_PROF).
  'relay-alone': [['relay'], ['agent', 'backend']],
};

const STACK_FILE = fileURLToPath(new URL('./stack.mjs', import.meta.url));

/**
 * Pins the main thread of `pid` to `cpus` (taskset, util-linux). Unpinned, the
 * scheduler sometimes keeps the load generator and the server it ping-pongs
 * with on one core, and a direct run lands at half its usual rate. Only the
 * main thread: pinning V8's GC helper threads to the same core (taskset -a)
 * made collections wait for time slices (p99 of 60 ms on direct runs).
 * `all` pins every thread, for native programs (sshd, ssh, wrk).
 */
export function pin(pid, cpus, all = false) {
  const args = all ? ['-a', '-p', '-c', cpus, String(pid)] : ['-p', '-c', cpus, String(pid)];
  return spawnSync('taskset', args, { stdio: 'ignore' }).status === 0;
}

/**
 * CPU placement for a benchmark: when `wanted` and there are 2+ CPUs, pins
 * this process (the load generator) to CPU 0. `stackCpus` lists the CPUs left
 * for the system under test; `pinned` says whether the pinning happened.
 */
export function pinLoadGenerator(wanted) {
  const cpuCount = availableParallelism();
  const pinned = wanted && cpuCount >= 2 && pin(process.pid, '0');
  const stackCpus = cpuCount > 2 ? `1-${cpuCount - 1}` : '1';
  return { cpuCount, pinned, stackCpus };
}

/**
 * Clock ticks the hypervisor gave to other guests while this VM wanted to run
 * (the `steal` column of /proc/stat, summed over CPUs); NaN where unavailable.
 */
function stealTicks() {
  try {
    const cpu = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0].trim().split(/\s+/);
    return Number(cpu[8]);
  } catch {
    return Number.NaN;
  }
}
const TICKS_PER_SECOND = 100; // USER_HZ on Linux

/** One forked stack process and its message queue. */
class StackProcess {
  #inbox = [];
  #waiters = [];

  constructor(roles, { profDir, prefix, onExit }) {
    this.roles = roles;
    // --expose-gc: memory figures are read after a full collection. BENCH_NODE_ARGS adds flags
    // (--perf-basic-prof, say, for `perf record`).
    const extra = (process.env.BENCH_NODE_ARGS ?? '').split(' ').filter(Boolean);
    const execArgv = ['--expose-gc', ...extra];
    if (profDir) {
      mkdirSync(profDir, { recursive: true });
      this.profile = join(profDir, `${roles.join('+')}.${process.pid}.${Date.now()}.cpuprofile`);
      execArgv.push('--cpu-prof', `--cpu-prof-dir=${profDir}`, `--cpu-prof-name=${basename(this.profile)}`);
    }
    const stdio = ['ignore', 'inherit', 'inherit', 'ipc'];
    // A prefix (`ip netns exec NS`) execs Node in the end, so the IPC channel and the pid carry over.
    this.proc = prefix?.length
      ? spawn(prefix[0], [...prefix.slice(1), process.execPath, ...execArgv, STACK_FILE], { stdio })
      : fork(STACK_FILE, [], { stdio, execArgv });
    this.proc.on('exit', (code, signal) => onExit(this, code, signal));
    this.proc.on('message', (msg) => {
      const i = this.#waiters.findIndex((w) => w.match(msg));
      if (i >= 0) this.#waiters.splice(i, 1)[0].resolve(msg);
      else this.#inbox.push(msg);
    });
  }

  get pid() {
    return this.proc.pid;
  }

  next(match) {
    const i = this.#inbox.findIndex(match);
    if (i >= 0) return Promise.resolve(this.#inbox.splice(i, 1)[0]);
    return new Promise((resolve) => this.#waiters.push({ match, resolve }));
  }

  /** Sends `msg` and resolves with the first reply of type `reply` (and the same id, if any). */
  ask(msg, reply) {
    this.proc.send(msg);
    return this.next(
      (m) => m.type === reply && m.id === msg.id && (m.role === undefined || m.role === msg.role),
    );
  }

  async stop() {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    const exited = once(this.proc, 'exit');
    this.stopping = true;
    this.proc.disconnect();
    await exited;
  }
}

/**
 * Forks the stack processes for `topology`, starts backend, relay and agent,
 * and pins the stack to `cpus` when `cpus` is set. Options:
 *   token, verifyPem     the agent's token and the relay's verify key (see makeToken)
 *   connections          agent tunnel connections (default 2)
 *   session              multiplexer settings for both relay and agent
 *   tcpPort              a public TCP port the relay offers and the agent serves, to the raw
 *                        TCP backend (the token must list it: makeToken)
 *   h2c                  the agent's route goes to the HTTP/2 backend (h2c://) instead of the
 *                        HTTP/1.1 one
 *   profDir              write V8 CPU profiles of the stack processes there
 *   cpus                 taskset CPU list for the stack processes' main threads
 */
export async function startStack(opts) {
  const procs = [];
  let stopping = false;
  const onExit = (p, code, signal) => {
    if (!stopping && !p.stopping) {
      console.error(`bench stack (${p.roles.join(' + ')}) exited early (${signal ?? `code ${code}`})`);
      process.exit(1);
    }
  };
  const spawnRoles = async (roles) => {
    const p = new StackProcess(roles, { profDir: opts.profDir, onExit });
    await p.next((m) => m.type === 'ready');
    // After 'ready', so the threads V8 started with the process exist.
    if (opts.cpus) pin(p.pid, opts.cpus);
    return p;
  };
  for (const roles of TOPOLOGIES[opts.topology ?? 'apart']) procs.push(await spawnRoles(roles));
  const holder = (role) => procs.find((p) => p.roles.includes(role));
  const start = (role, msg = {}) => holder(role).ask({ type: 'start', role, ...msg }, 'started');

  const { backendPort, tcpBackendPort, h2cBackendPort } = await start('backend');
  const relayMsg = {
    verifyPem: opts.verifyPem,
    ...(opts.tcpPort ? { tcpPort: opts.tcpPort } : {}),
    ...(opts.session ? { session: opts.session } : {}),
  };
  const { relayHttpPort, relayTunnelPort } = await start('relay', relayMsg);
  const agentMsg = {
    relayTunnelPort,
    token: opts.token,
    hostname: HOSTNAME,
    backendUrl: opts.h2c ? `h2c://${HOST}:${h2cBackendPort}` : `http://${HOST}:${backendPort}`,
    ...(opts.tcpPort ? { tcpPort: opts.tcpPort, tcpBackendUrl: `tcp://${HOST}:${tcpBackendPort}` } : {}),
    ...(opts.connections ? { connections: opts.connections } : {}),
    ...(opts.session ? { session: opts.session } : {}),
  };
  const { connections } = await start('agent', agentMsg);

  let usageId = 0;
  const stack = {
    backendPort,
    tcpBackendPort,
    h2cBackendPort,
    relayTcpPort: opts.tcpPort,
    relayHttpPort,
    relayTunnelPort,
    connections,
    processes: procs,
    holder,
    /** Names of the processes, e.g. "relay | agent | backend". */
    describe: () => procs.map((p) => p.roles.join(' + ')).join(' | '),
    /**
     * Counters of every stack process (see stack.mjs 'usage'); `gc` collects
     * garbage first; `snapshot`, a path prefix, has each process write a heap snapshot.
     */
    async usage(gc = false, snapshot = undefined) {
      const id = ++usageId;
      const replies = await Promise.all(
        procs.map((p) => p.ask({ type: 'usage', id, gc, snapshot }, 'usage')),
      );
      return {
        at: performance.now(),
        self: process.cpuUsage(),
        steal: stealTicks(),
        children: replies.map((r) => r.cpu),
        memory: replies.map((r) => r.memory),
        sockets: replies.reduce((a, r) => a + r.sockets, 0),
        writes: replies.reduce((a, r) => a + r.io.writes, 0),
        reads: replies.reduce((a, r) => a + r.io.reads, 0),
        relayFrames: replies.reduce((a, r) => a + r.frames.relay, 0),
        agentFrames: replies.reduce((a, r) => a + r.frames.agent, 0),
      };
    },
    /** Adds a route for `hostname`; monotonic ns (BigInt) of the change and of the relay's answer. */
    async announce(hostname) {
      const r = await holder('agent').ask({ type: 'announce', id: ++usageId, hostname }, 'announced');
      return { at: BigInt(r.at), acked: r.acked === null ? null : BigInt(r.acked) };
    },
    /**
     * Stops the relay's process (graceful: GOAWAY, drain) and starts a new one
     * on the same ports, as a restart of the relay's service would. Needs the
     * relay alone in its process. Returns monotonic ns when the stop began and
     * when the new relay was listening.
     */
    async restartRelay() {
      const i = procs.indexOf(holder('relay'));
      if (procs[i].roles.length !== 1) throw new Error('restartRelay needs topology "apart"');
      const stoppedAt = process.hrtime.bigint();
      await procs[i].stop();
      procs[i] = await spawnRoles(['relay']);
      await start('relay', { ...relayMsg, httpPort: relayHttpPort, tunnelPort: relayTunnelPort });
      return { stoppedAt, listeningAt: process.hrtime.bigint() };
    },
    async stop() {
      stopping = true;
      await Promise.all(procs.map((p) => p.stop()));
    },
  };
  return stack;
}

/**
 * The backend alone (no relay, no agent) in its own stack process, listening
 * on host:port (default 127.0.0.1 and a free port). `prefix` is a command the
 * process is started through, e.g. ['ip', 'netns', 'exec', NS] to run it in
 * another network namespace (bench/lib/link.mjs). Resolves with { proc,
 * backendPort } once it listens; it exits when this process's IPC channel
 * closes, even on SIGKILL.
 */
export async function startBackend({ host, port, prefix } = {}) {
  let early;
  const p = new StackProcess(['backend'], {
    prefix,
    onExit: (_p, code, signal) => early?.(new Error(`backend exited (${signal ?? `code ${code}`})`)),
  });
  const exited = new Promise((_resolve, reject) => (early = reject));
  const { backendPort } = await Promise.race([
    p
      .next((m) => m.type === 'ready')
      .then(() => p.ask({ type: 'start', role: 'backend', host, port }, 'started')),
    exited,
  ]);
  early = undefined;
  return { proc: p.proc, backendPort };
}

/** A signing key pair and an agent token for HOSTNAME and its subdomains, and `ports`. */
export async function makeToken(shared, ports = []) {
  const pair = await shared.generateSigningKeyPair();
  const token = await shared.createAgentToken(await shared.loadSigningKey(pair.privatePem), {
    sub: 'bench',
    hosts: [HOSTNAME, `*.${HOSTNAME}`],
    ...(ports.length ? { ports } : {}),
    ttl: 3_600_000,
  });
  return { token, verifyPem: pair.publicPem };
}

/** CPU shares between two `usage()` readings: busiest stack process, load generator, steal. */
export function busy(before, after) {
  const wall = (after.at - before.at) * 1000;
  const cpu = (a, b) => (b.user + b.system - a.user - a.system) / wall;
  return {
    stack: Math.max(...after.children.map((c, i) => cpu(before.children[i], c))),
    perProcess: after.children.map((c, i) => cpu(before.children[i], c)),
    loadgen: cpu(before.self, after.self),
    // Share of one CPU's time stolen by the hypervisor during the run.
    steal: (after.steal - before.steal) / TICKS_PER_SECOND / ((after.at - before.at) / 1000),
  };
}
