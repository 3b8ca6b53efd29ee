// An OpenSSH reverse tunnel on loopback, the tool Burrow is most often
// compared with: a private sshd on 127.0.0.1 (own host key, own client key,
// own sshd_config, all in a temporary directory) and `ssh -N -R` forwarding a
// port on the sshd side to the backend. Client traffic then goes
// client → sshd (forwarded port) → SSH connection → ssh → backend, the same
// shape as client → relay → tunnel → agent → backend.
// The addresses and where ssh runs are options, so the same tunnel can cross a
// shaped link into a network namespace (bench/lib/link.mjs).
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { DIE_WITH_PARENT, descendants } from './procfs.mjs';

const SSHD = '/usr/sbin/sshd';
const SSH = 'ssh';
const SETUP_TIMEOUT = 15_000;

/** Why the ssh comparison cannot run here, or undefined when it can. */
export function sshUnavailable() {
  if (!existsSync(SSHD)) return `${SSHD} not found (Debian: apt-get install openssh-server)`;
  if (spawnSync(SSH, ['-V'], { stdio: 'ignore' }).status !== 0) return 'ssh not found (openssh-client)';
  if (spawnSync('ssh-keygen', ['-?'], { stdio: 'ignore' }).error) return 'ssh-keygen not found';
  return undefined;
}

/**
 * A port free on `host` now (bound to 0, then released), for sshd's
 * ListenAddress and the CLIs' listen flags: they cannot listen on port 0 and report it.
 */
export async function freePort(host = '127.0.0.1') {
  const s = createServer();
  s.listen(0, host);
  await once(s, 'listening');
  const { port } = s.address();
  await new Promise((resolve) => s.close(resolve));
  return port;
}

function keygen(file) {
  const r = spawnSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'burrow-bench', '-f', file]);
  if (r.status !== 0) throw new Error(`ssh-keygen failed: ${r.stderr}`);
}

/** Resolves with the first match of `re` in the text a stream produces, or rejects on exit/timeout. */
function waitForText(child, stream, re, what) {
  return new Promise((resolve, reject) => {
    let text = '';
    const limit = setTimeout(
      () => done(new Error(`${what}: no answer in ${SETUP_TIMEOUT} ms:\n${text}`)),
      SETUP_TIMEOUT,
    );
    const onData = (chunk) => {
      text += chunk.toString();
      const m = re.exec(text);
      if (m) done(null, m);
    };
    const onExit = (code) => done(new Error(`${what} exited (${code}):\n${text}`));
    const done = (err, m) => {
      clearTimeout(limit);
      stream.off('data', onData);
      child.off('exit', onExit);
      if (err) reject(err);
      else resolve({ match: m, text });
    };
    stream.on('data', onData);
    child.on('exit', onExit);
  });
}

/**
 * Starts sshd and `ssh -N -R 0:backendHost:backendPort`; resolves with the
 * forwarded port on the sshd side, the negotiated cipher, the process ids (for
 * pinning and memory) and `close()`. sshd runs as the current user; as root it
 * needs its privilege separation directory, /run/sshd, which is created if
 * missing (systemd normally does that). Options, all for bench/lib/link.mjs:
 *   listenHost   sshd's ListenAddress, which ssh connects to (127.0.0.1)
 *   backendHost  where ssh forwards to, as ssh sees it (127.0.0.1)
 *   clientPrefix a command every ssh client runs through, e.g. ['ip', 'netns',
 *                'exec', NS]: the SSH connection then starts in that namespace
 *   dir          where the keys and config go (in a new directory below it;
 *                default the system's temporary directory)
 *   track        called with sshd and ssh as each starts, for a caller that
 *                kills them itself should this process die during the setup
 * Forwarded ports are on 127.0.0.1 of sshd's namespace (GatewayPorts no).
 */
export async function startSshTunnel(
  backendPort,
  {
    listenHost = '127.0.0.1',
    backendHost = '127.0.0.1',
    clientPrefix = [],
    dir: parent = tmpdir(),
    track,
  } = {},
) {
  const dir = mkdtempSync(join(parent, 'burrow-bench-ssh-'));
  const user = userInfo().username;
  const at = { listenHost, backendHost, clientPrefix, user };
  keygen(join(dir, 'host_key'));
  keygen(join(dir, 'client_key'));
  writeFileSync(join(dir, 'authorized_keys'), readFileSync(join(dir, 'client_key.pub')), { mode: 0o600 });
  const port = await freePort(listenHost);
  const config = [
    `ListenAddress ${listenHost}`,
    `Port ${port}`,
    `HostKey ${join(dir, 'host_key')}`,
    `AuthorizedKeysFile ${join(dir, 'authorized_keys')}`,
    'PidFile none',
    'UsePAM no',
    'StrictModes no',
    `AllowUsers ${user}`,
    'PermitRootLogin prohibit-password',
    'PubkeyAuthentication yes',
    'PasswordAuthentication no',
    'KbdInteractiveAuthentication no',
    'AllowTcpForwarding yes',
    'GatewayPorts no',
    'X11Forwarding no',
    'PermitTTY no',
    // Idle forwarded connections must stay open as long as Burrow's do.
    'ClientAliveInterval 0',
    'MaxStartups 100',
    'LogLevel ERROR',
  ];
  writeFileSync(join(dir, 'sshd_config'), `${config.join('\n')}\n`);
  if (process.getuid?.() === 0 && !existsSync('/run/sshd')) mkdirSync('/run/sshd', { mode: 0o755 });

  const children = [];
  const started = (child) => {
    children.push(child);
    track?.(child);
    return child;
  };
  const close = async () => {
    for (const c of children.reverse()) {
      if (c.exitCode === null && c.signalCode === null) {
        const exited = once(c, 'exit');
        c.kill('SIGTERM');
        await exited;
      }
    }
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    // -D: stay in the foreground (a child of this process); -e: log to stderr.
    const sshdCommand = [...DIE_WITH_PARENT, SSHD, '-D', '-e', '-f', join(dir, 'sshd_config')];
    const sshd = started(
      spawn(sshdCommand[0], sshdCommand.slice(1), { stdio: ['ignore', 'ignore', 'pipe'] }),
    );
    let sshdLog = '';
    sshd.stderr.on('data', (c) => {
      sshdLog = (sshdLog + c.toString()).slice(-8192);
    });
    // sshd prints nothing when it starts listening at LogLevel ERROR; ssh retries instead.
    const cipher = await probeCipher(dir, port, at, () => sshdLog);
    const ssh = await connectSsh(dir, port, backendPort, at, started, () => sshdLog);
    return {
      port: ssh.forwarded,
      cipher,
      /** The latest lines sshd and ssh logged (errors only), for failure messages. */
      log: () => `sshd: ${sshdLog.slice(-4096)}\nssh: ${ssh.log()}`,
      sshdPid: sshd.pid,
      sshPid: ssh.child.pid,
      /**
       * Asks the running ssh (over its control socket) for one more remote
       * forward to `port`, the way Burrow's agent announces a route on a live
       * tunnel; resolves with the new forwarded port once sshd has bound it.
       */
      addForward: (port) => addForward(dir, at, port),
      /**
       * Kills sshd and ssh at once (for process exit): through their
       * ChildProcess handles, which know whether they already exited, so no
       * reused process id is ever signalled. sshd's per-connection process
       * ends with the ssh connection.
       */
      kill() {
        for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
        rmSync(dir, { recursive: true, force: true });
      },
      /** sshd's listener and its per-connection processes, plus the ssh client. */
      pids: () => [...descendants(sshd.pid), sshd.pid, ssh.child.pid],
      close,
    };
  } catch (err) {
    await close();
    throw err;
  }
}

/** Spawns the ssh client with `args`, through `at.clientPrefix` when there is one. */
function spawnSsh(at, args, options) {
  const [cmd, ...pre] = [...DIE_WITH_PARENT, ...at.clientPrefix, SSH];
  return spawn(cmd, [...pre, ...args], options);
}

function sshArgs(dir, port, { listenHost, user }, extra) {
  return [
    '-N',
    '-p',
    String(port),
    '-i',
    join(dir, 'client_key'),
    '-F',
    'none',
    '-o',
    'StrictHostKeyChecking=no',
    '-o',
    'UserKnownHostsFile=/dev/null',
    '-o',
    'BatchMode=yes',
    '-o',
    'ServerAliveInterval=0',
    ...extra,
    `${user}@${listenHost}`,
  ];
}

function addForward(dir, at, port) {
  const args = [
    '-S',
    join(dir, 'control'),
    '-O',
    'forward',
    '-R',
    `0:${at.backendHost}:${port}`,
    `${at.user}@${at.listenHost}`,
  ];
  return new Promise((resolve, reject) => {
    const child = spawnSsh(at, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (c) => (out += c));
    child.stderr.on('data', (c) => (out += c));
    const limit = setTimeout(() => child.kill('SIGKILL'), SETUP_TIMEOUT);
    child.on('exit', (code) => {
      clearTimeout(limit);
      // With port 0, ssh -O forward prints the port sshd allocated.
      const m = /^(\d+)\s*$/m.exec(out);
      if (code === 0 && m) resolve(Number(m[1]));
      else reject(new Error(`ssh -O forward failed (${code}): ${out}`));
    });
  });
}

/**
 * The cipher a default ssh negotiates with this sshd, from a separate verbose
 * connection: the tunnel itself runs without -v, whose per-channel debug
 * lines would cost ssh CPU during the measurements. Retries while sshd starts.
 */
async function probeCipher(dir, port, at, sshdLog) {
  const deadline = Date.now() + SETUP_TIMEOUT;
  for (let attempt = 1; ; attempt++) {
    const child = spawnSsh(at, sshArgs(dir, port, at, ['-v']), { stdio: ['ignore', 'ignore', 'pipe'] });
    try {
      const { match } = await waitForText(child, child.stderr, /kex: server->client cipher: (\S+)/, 'ssh');
      return match[1];
    } catch (err) {
      if (Date.now() > deadline || attempt >= 50) throw new Error(`${err.message}\nsshd log:\n${sshdLog()}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    } finally {
      child.kill('SIGTERM');
    }
  }
}

async function connectSsh(dir, port, backendPort, at, started, sshdLog) {
  // ControlMaster: more forwards can be added to this connection later (addForward).
  const extra = [
    '-o',
    'ExitOnForwardFailure=yes',
    '-o',
    'ControlMaster=yes',
    '-o',
    `ControlPath=${join(dir, 'control')}`,
    '-R',
    `0:${at.backendHost}:${backendPort}`,
  ];
  const child = started(spawnSsh(at, sshArgs(dir, port, at, extra), { stdio: ['ignore', 'ignore', 'pipe'] }));
  try {
    // Printed at ssh's default log level when the forward is up (port 0: sshd picks it).
    const { match } = await waitForText(
      child,
      child.stderr,
      /Allocated port (\d+) for remote forward/,
      'ssh -R',
    );
    // Keep what ssh says from here on (the last few KiB): why channels fail under load.
    let log = '';
    child.stderr.on('data', (c) => {
      log = (log + c.toString()).slice(-8192);
    });
    return { child, forwarded: Number(match[1]), log: () => log };
  } catch (err) {
    throw new Error(`${err.message}\nsshd log:\n${sshdLog()}`);
  }
}
