import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type LoggedProcess, RELAY_CLI, spawnLogged } from './proc.js';
import { type Teardownable, testKeys } from './relay.js';

export interface RelayProcess {
  proc: LoggedProcess;
  httpPort: number;
  tunnelPort: number;
  /** ws:// URL agents connect to. */
  tunnelUrl: string;
  /** Directory holding signing.pub (the test key pair's public half). */
  keyDir: string;
  /** The admin listener's port (an ephemeral one on 127.0.0.1 unless the args say otherwise). */
  adminPort: number | undefined;
}

/**
 * `burrow-relay serve` as a child process on 127.0.0.1, trusting the test key
 * pair (so tokenFor() tokens work), killed at teardown. Fixed ports may be
 * given to restart a relay where agents expect it.
 */
export async function relayProcess(
  t: Teardownable,
  args: string[] = [],
  ports: { http?: number; tunnel?: number; keyDir?: string } = {},
): Promise<RelayProcess> {
  let keyDir = ports.keyDir;
  if (!keyDir) {
    keyDir = await mkdtemp(join(tmpdir(), 'burrow-relay-keys-'));
    const dir = keyDir;
    t.teardown(() => rm(dir, { recursive: true, force: true }));
    await writeFile(join(keyDir, 'signing.pub'), (await testKeys()).publicPem);
  }
  const proc = spawnLogged(t, RELAY_CLI, [
    'serve',
    '--http-listen',
    `127.0.0.1:${ports.http ?? 0}`,
    '--tunnel-listen',
    `127.0.0.1:${ports.tunnel ?? 0}`,
    '--verify-key',
    keyDir,
    ...args,
  ]);
  const listening = await proc.waitFor((l) => l['msg'] === 'relay listening');
  const httpPort = (listening['http'] as { port: number }).port;
  const tunnelPort = (listening['tunnel'] as { port: number }).port;
  const adminPort = (listening['admin'] as { port: number } | undefined)?.port;
  return { proc, httpPort, tunnelPort, tunnelUrl: `ws://127.0.0.1:${tunnelPort}`, keyDir, adminPort };
}
