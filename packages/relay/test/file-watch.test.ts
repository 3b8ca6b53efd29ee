// What the relay's file watch (config and certificate reloads) counts as a change.
import { EventEmitter, once } from 'node:events';
import { mkdir, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createLogger } from '@burrow/shared';
import t, { type Test } from 'tap';
import { within } from '../../../test/helpers/deferred.js';
import { tempDir } from '../../../test/helpers/fs.js';
import { FileWatch } from '../src/file-watch.js';

async function watched(
  t: Test,
  files: (dir: string) => string[],
  dirs: (dir: string) => string[] = () => [],
  prepare: (dir: string) => Promise<void> = async () => {},
) {
  const dir = await tempDir(t, 'burrow-watch-');
  await prepare(dir);
  const changes = new EventEmitter();
  const watch = new FileWatch({
    files: files(dir),
    dirs: dirs(dir),
    onChange: () => changes.emit('change'),
    debounce: 10,
    logger: createLogger({ name: 'test', level: 'silent' }),
    what: 'test',
    otherwise: 'restart',
  });
  t.teardown(() => watch.close());
  // Bounded: a watch gone silent fails the test instead of hanging it.
  return { dir, changed: (what = 'a change') => within(5_000, once(changes, 'change'), what) };
}

t.test('a watched file replaced by rename is a change', async (t) => {
  const { dir, changed } = await watched(t, (d) => [join(d, 'tls.crt')]);
  const change = changed();
  await writeFile(join(dir, 'tls.crt.tmp'), 'new');
  await rename(join(dir, 'tls.crt.tmp'), join(dir, 'tls.crt'));
  await change;
  t.pass('onChange after the rename');
});

t.test('a Kubernetes volume swapping its ..data link is a change', async (t) => {
  const { dir, changed } = await watched(t, (d) => [join(d, 'config.yaml')]);
  await mkdir(join(dir, '..2026_11_27'));
  const change = changed();
  await symlink('..2026_11_27', join(dir, '..data_tmp'));
  await rename(join(dir, '..data_tmp'), join(dir, '..data'));
  await change;
  t.pass('onChange after the swap');
});

t.test('in a watched directory any new file is a change', async (t) => {
  const { dir, changed } = await watched(
    t,
    () => [],
    (d) => [d],
  );
  const change = changed();
  await writeFile(join(dir, 'site.key'), 'key');
  await change;
  t.pass('onChange after a new file');
});

t.test(
  'a watched directory reached through a symlink that is repointed is watched where it now leads',
  async (t) => {
    const { dir, changed } = await watched(
      t,
      () => [],
      (d) => [join(d, 'certs')],
      async (d) => {
        await mkdir(join(d, 'certs-v1'));
        await symlink('certs-v1', join(d, 'certs'));
      },
    );
    await mkdir(join(dir, 'certs-v2'));
    const swapped = changed('onChange after the swap');
    // `ln -sfn certs-v2 certs`, done atomically.
    await symlink('certs-v2', join(dir, 'certs.tmp'));
    await rename(join(dir, 'certs.tmp'), join(dir, 'certs'));
    await swapped;
    const added = changed('onChange for a file added to the new directory');
    await writeFile(join(dir, 'certs-v2', 'site.key'), 'key');
    await added;
    t.pass('the swap, then a file in the new directory, are changes');
  },
);

t.test('a watched directory deleted and made again is watched again', async (t) => {
  const { dir, changed } = await watched(
    t,
    (d) => [join(d, 'tls', 'relay.yaml')],
    () => [],
    (d) => mkdir(join(d, 'tls')),
  );
  const removed = changed('onChange after the delete');
  await rm(join(dir, 'tls'), { recursive: true });
  await removed;
  const made = changed('onChange after the directory is made again');
  await mkdir(join(dir, 'tls'));
  await made;
  const written = changed('onChange for the file written in the new directory');
  await writeFile(join(dir, 'tls', 'relay.yaml'), 'log-level: debug\n');
  await written;
  t.pass('the delete, the new directory and the file in it are changes');
});
