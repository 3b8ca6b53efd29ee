import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { Teardownable } from './relay.js';

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const RELAY_CLI = join(ROOT, 'packages/relay/dist/cli.js');
export const AGENT_CLI = join(ROOT, 'packages/agent/dist/cli.js');
/** `burrow-relay serve` flags for HTTP and tunnel listeners on free loopback ports, TLS off. */
export const LOOPBACK_SERVE = [
  '--http-listen',
  '127.0.0.1:0',
  '--tunnel-listen',
  '127.0.0.1:0',
  '--tls-listen',
  'off',
];

export interface LoggedProcess {
  child: ChildProcess;
  /** JSON log lines seen so far. */
  lines: Array<Record<string, unknown>>;
  /** Resolves with the first log line (already seen or future) matching `pred`. */
  waitFor(pred: (line: Record<string, unknown>) => boolean): Promise<Record<string, unknown>>;
  exited: Promise<number | null>;
  stderr(): string;
}

export interface SpawnOptions {
  /** Run inside this network namespace (`ip netns exec NS node ...`; needs root). */
  netns?: string;
  /** Extra node options, e.g. --expose-gc. */
  nodeArgs?: string[];
}

/** Spawns a Burrow binary whose stdout is JSON log lines; killed at teardown. */
export function spawnLogged(
  t: Teardownable,
  script: string,
  args: string[],
  env: NodeJS.ProcessEnv = {},
  opts: SpawnOptions = {},
): LoggedProcess {
  const node = [process.execPath, ...(opts.nodeArgs ?? []), script, ...args];
  // `ip netns exec` execs the command, so the child's pid is node's own and signals reach it.
  const [command, ...argv] = opts.netns ? ['ip', 'netns', 'exec', opts.netns, ...node] : node;
  const child = spawn(command!, argv, {
    // The relay's admin listener defaults to 127.0.0.1:9090 and its TLS
    // listener to 0.0.0.0:443; parallel tests would collide on them (and 443
    // needs privileges), so they get ephemeral loopback ports unless a test says otherwise.
    env: { BURROW_ADMIN_LISTEN: '127.0.0.1:0', BURROW_TLS_LISTEN: '127.0.0.1:0', ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const exited = once(child, 'exit').then(([code]) => code as number | null);
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await exited;
    }
  });
  const lines: Array<Record<string, unknown>> = [];
  const waiters: Array<{
    pred: (l: Record<string, unknown>) => boolean;
    resolve: (l: Record<string, unknown>) => void;
  }> = [];
  let err = '';
  child.stderr!.on('data', (c: Buffer) => (err += c.toString()));
  createInterface({ input: child.stdout! }).on('line', (text) => {
    let line: Record<string, unknown>;
    try {
      line = JSON.parse(text);
    } catch {
      line = { msg: text };
    }
    lines.push(line);
    for (const w of [...waiters]) {
      if (w.pred(line)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(line);
      }
    }
  });
  return {
    child,
    lines,
    exited,
    stderr: () => err,
    waitFor(pred) {
      const seen = lines.find(pred);
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        waiters.push({ pred, resolve });
        exited.then((code) =>
          reject(new Error(`process exited (${code}) before the expected log line; stderr: ${err}`)),
        );
      });
    },
  };
}

/** The ports the relay logged in its "relay listening" line; `admin` only when its admin listener is on. */
export async function listeningPorts(
  relay: LoggedProcess,
): Promise<{ http: number; tunnel: number; admin: number | undefined }> {
  const listening = await relay.waitFor((l) => l['msg'] === 'relay listening');
  return {
    http: (listening['http'] as { port: number }).port,
    tunnel: (listening['tunnel'] as { port: number }).port,
    admin: (listening['admin'] as { port: number } | undefined)?.port,
  };
}
