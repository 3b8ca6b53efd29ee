import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Teardownable } from './relay.js';

/** A new directory under the system temp dir, named `prefix` and a random suffix, removed at teardown. */
export async function tempDir(t: Teardownable, prefix: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}
