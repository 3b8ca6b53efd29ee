import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { tempDir } from './fs.js';
import { type LoggedProcess, listeningPorts, RELAY_CLI, spawnLogged } from './proc.js';
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
    keyDir = await tempDir(t, 'burrow-relay-keys-');
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
  const listening = await listeningPorts(proc);
  return {
    proc,
    httpPort: listening.http,
    tunnelPort: listening.tunnel,
    tunnelUrl: `ws://127.0.0.1:${listening.tunnel}`,
    keyDir,
    adminPort: listening.admin,
  };
}
