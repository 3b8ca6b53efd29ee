// A shaped network link for bench/head-of-line-link.mjs: a network namespace
// ("the site") joined to this one by a veth pair whose two ends are each
// limited by a tbf qdisc, so a bulk transfer saturates the link, not a CPU.
//
//   this namespace  203.0.113.1/24  veth bhol<PID>r ═══ bhol<PID>s  203.0.113.2/24  namespace burrow-hol-<PID>
//
// Also here: the loopback helpers placed on either side of the link:
//   - the backend of bench/lib/stack.mjs alone, run in the site on 0.0.0.0 so
//     the link reaches it (startSiteBackend);
//   - the OpenSSH reverse tunnel of bench/lib/ssh.mjs across the link: sshd
//     here on 203.0.113.1, the `ssh -N -R` client in the site (startSiteSsh).
// Needs root, `ip` and `tc` (iproute2) and the tbf qdisc; `linkUnavailable`
// says why not. Everything built is removed by `teardown()`, which runs on
// process exit (also after errors, SIGINT and SIGTERM); namespaces left by
// runs that were killed are removed by the next one.
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { descendants } from './procfs.mjs';
import { startSshTunnel } from './ssh.mjs';
import { startBackend } from './stack-control.mjs';

export const ROOT_ADDR = '203.0.113.1';
export const SITE_ADDR = '203.0.113.2';
const PREFIX = 'burrow-hol-';
const SETUP_TIMEOUT = 15_000;

/** Runs a command to completion; { ok, out } with its stderr and stdout. */
function run(cmd, args) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: SETUP_TIMEOUT });
  return { ok: r.status === 0, out: `${r.stderr ?? ''}${r.stdout ?? ''}`.trim() || String(r.error ?? '') };
}

/** A tc rate ("100mbit", "1gbit", "500kbit", "10mbps" = bytes) in bytes per second, or NaN. */
export function rateBytes(rate) {
  const m = /^(\d+(?:\.\d+)?)([kmgt]?)(bit|bps)$/i.exec(rate);
  if (!m) return Number.NaN;
  const scale = { '': 1, k: 1e3, m: 1e6, g: 1e9, t: 1e12 }[m[2].toLowerCase()];
  return (Number(m[1]) * scale) / (m[3].toLowerCase() === 'bit' ? 8 : 1);
}

/** Why the link cannot be built here, or undefined when it may be. */
export function linkUnavailable() {
  if (process.platform !== 'linux') return 'network namespaces need Linux';
  if (process.getuid?.() !== 0) return 'needs root (network namespaces, veth, tc)';
  if (spawnSync('ip', ['-V'], { stdio: 'ignore' }).status !== 0) return '`ip` not found (iproute2)';
  if (spawnSync('tc', ['-V'], { stdio: 'ignore' }).status !== 0) return '`tc` not found (iproute2)';
  return undefined;
}

/** Kills the processes left in namespace `ns` (all started by a run of this benchmark) and deletes it. */
function removeNamespace(ns, veth) {
  for (const pid of run('ip', ['netns', 'pids', ns]).out.split(/\s+/).filter(Boolean)) kill(Number(pid));
  // Deleting one end of a veth pair deletes both, at once (the namespace itself
  // lingers until its processes are gone).
  run('ip', ['link', 'del', veth]);
  run('ip', ['netns', 'del', ns]);
}

/**
 * What earlier runs left behind when they were killed before they could clean
 * up (SIGKILL): their namespace and veth, and the processes started from
 * their directory (/tmp/burrow-hol-PID: the relay, sshd) with sshd's children.
 * (The backend needs nothing: it exits when its parent's IPC channel closes.)
 */
function removeStale() {
  const pids = new Set();
  for (const line of run('ip', ['netns', 'list']).out.split('\n')) {
    const m = new RegExp(`^${PREFIX}(\\d+)\\b`).exec(line);
    if (m) pids.add(m[1]);
  }
  for (const name of readdirSync(tmpdir())) {
    const m = new RegExp(`^${PREFIX}(\\d+)$`).exec(name);
    if (m) pids.add(m[1]);
  }
  for (const pid of pids) {
    // A live run (a pid equal to ours is a dead run's: this run has built nothing yet).
    if (Number(pid) !== process.pid && cmdline(pid).includes('head-of-line-link')) continue;
    const dir = join(tmpdir(), `${PREFIX}${pid}`);
    for (const name of readdirSync('/proc')) {
      if (/^\d+$/.test(name) && cmdline(name).includes(`${dir}/`)) {
        for (const p of [...descendants(Number(name)), Number(name)]) kill(p);
      }
    }
    removeNamespace(`${PREFIX}${pid}`, `bhol${pid}r`);
    rmSync(dir, { recursive: true, force: true });
  }
}

function cmdline(pid) {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8');
  } catch {
    return '';
  }
}

function kill(pid) {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // exited meanwhile
  }
}

/** Who already holds 203.0.113.0/24 in this namespace, or undefined. */
function addressConflict() {
  const addrs = run('ip', ['-o', '-4', 'addr', 'show'])
    .out.split('\n')
    .filter((l) => / inet 203\.0\.113\./.test(l));
  if (addrs.length) return `${addrs[0].split(/\s+/)[1]} already has ${addrs[0].split(/\s+/)[3]}`;
  const routes = run('ip', ['-o', '-4', 'route', 'show', 'match', SITE_ADDR])
    .out.split('\n')
    .filter((l) => l && !l.startsWith('default'));
  if (routes.length) return `a route already covers ${SITE_ADDR}: ${routes[0]}`;
  return undefined;
}

/** The link could not be built: the scenario reports it as skipped. */
export class LinkUnavailable extends Error {}

/**
 * Builds the namespace, the veth pair and a `tbf rate RATE burst 64kb latency
 * 5ms` qdisc on both ends. Throws LinkUnavailable when the machine cannot.
 * Returns { ns, dir (a private directory, removed at teardown), prefix (the
 * command that runs another in the site), exec(cmd, args) → spawn arguments
 * running in the site, track(child) (killed at teardown), teardown() }.
 */
export function buildLink(rate) {
  const why = linkUnavailable();
  if (why) throw new LinkUnavailable(why);
  removeStale();
  const conflict = addressConflict();
  if (conflict) throw new LinkUnavailable(`${conflict} (another lab on this machine?)`);
  const ns = `${PREFIX}${process.pid}`;
  // Keys, token and sshd's files; named after this process so a later run can
  // find what a killed one started (removeStale).
  const dir = join(tmpdir(), ns);
  mkdirSync(dir, { mode: 0o700 });
  const [rootDev, siteDev] = [`bhol${process.pid}r`, `bhol${process.pid}s`];
  const children = [];
  let done = false;
  const teardown = () => {
    if (done) return;
    done = true;
    for (const c of children) {
      if (c.exitCode !== null || c.signalCode !== null) continue;
      // sshd's per-connection process: a child sshd would otherwise keep.
      for (const pid of descendants(c.pid)) kill(pid);
      c.kill('SIGKILL');
    }
    removeNamespace(ns, rootDev);
    rmSync(dir, { recursive: true, force: true });
  };
  process.once('exit', teardown);
  for (const signal of ['SIGINT', 'SIGTERM']) {
    process.once(signal, () => {
      console.error(`${signal}: removing namespace ${ns}`);
      process.exit(130);
    });
  }
  const inSite = ['ip', 'netns', 'exec', ns];
  const steps = [
    ['ip', 'netns', 'add', ns],
    ['ip', 'link', 'add', rootDev, 'type', 'veth', 'peer', 'name', siteDev],
    ['ip', 'link', 'set', siteDev, 'netns', ns],
    ['ip', 'addr', 'add', `${ROOT_ADDR}/24`, 'dev', rootDev],
    ['ip', 'link', 'set', rootDev, 'up'],
    [...inSite, 'ip', 'addr', 'add', `${SITE_ADDR}/24`, 'dev', siteDev],
    [...inSite, 'ip', 'link', 'set', siteDev, 'up'],
    [...inSite, 'ip', 'link', 'set', 'lo', 'up'],
    ...[
      [[], rootDev],
      [inSite, siteDev],
    ].map(([pre, dev]) => [
      ...pre,
      ...['tc', 'qdisc', 'add', 'dev', dev, 'root', 'tbf', 'rate', rate, 'burst', '64kb', 'latency', '5ms'],
    ]),
  ];
  for (const [cmd, ...args] of steps) {
    const r = run(cmd, args);
    if (!r.ok) {
      teardown();
      throw new LinkUnavailable(`\`${cmd} ${args.join(' ')}\` failed: ${r.out}`);
    }
  }
  return {
    ns,
    dir,
    prefix: inSite,
    describe: `veth ${ROOT_ADDR} ↔ ${SITE_ADDR} (namespace ${ns}), tbf rate ${rate} burst 64kb latency 5ms on both ends`,
    /** [command, args] that run `cmd args` inside the site's namespace. */
    exec: (cmd, args) => [inSite[0], [...inSite.slice(1), cmd, ...args]],
    /** Kills `child` at teardown (and its descendants). */
    track(child) {
      children.push(child);
      return child;
    },
    teardown,
  };
}

/** Spawns a process whose output is kept (last 8 KiB) for error messages; `log()` returns it. */
export function spawnLogged(cmd, args, options = {}) {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], ...options });
  let log = '';
  const keep = (c) => {
    log = (log + c.toString()).slice(-8192);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  child.log = () => log;
  return child;
}

/** Resolves once `check()` resolves true; rejects after SETUP_TIMEOUT or when `child` exits. */
export async function waitFor(what, check, child) {
  const deadline = Date.now() + SETUP_TIMEOUT;
  while (Date.now() < deadline) {
    if (child && (child.exitCode !== null || child.signalCode !== null)) {
      throw new Error(`${what}: process exited (${child.signalCode ?? child.exitCode}):\n${child.log?.()}`);
    }
    if (await check()) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`${what}: not ready in ${SETUP_TIMEOUT} ms${child ? `:\n${child.log?.()}` : ''}`);
}

/**
 * Starts the backend (bench/lib/stack.mjs, alone) in the site on
 * 0.0.0.0:`port`; resolves with its process once it listens. It exits by
 * itself when this process's IPC channel closes (even on SIGKILL).
 */
export async function startSiteBackend(link, port) {
  const { proc } = await startBackend({ host: '0.0.0.0', port, prefix: link.prefix });
  return link.track(proc);
}

/**
 * The ssh comparison across the link (bench/lib/ssh.mjs): sshd here on
 * ROOT_ADDR, `ssh -N -R 0:127.0.0.1:backendPort` in the site, so the SSH
 * connection crosses the link. Its files go to the link's directory, where
 * removeStale finds what a killed run left, and its processes die at teardown.
 */
export function startSiteSsh(link, backendPort) {
  return startSshTunnel(backendPort, {
    listenHost: ROOT_ADDR,
    clientPrefix: link.prefix,
    dir: link.dir,
    track: link.track,
  });
}
