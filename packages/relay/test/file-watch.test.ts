// What the relay's file watch (config and certificate reloads) counts as a change.
import { EventEmitter, once } from 'node:events';
import { mkdir, rename, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createLogger } from '@burrow/shared';
import t, { type Test } from 'tap';
import { tempDir } from '../../../test/helpers/fs.js';
import { FileWatch } from '../src/file-watch.js';

async function watched(
  t: Test,
  files: (dir: string) => string[],
  dirs: (dir: string) => string[] = () => [],
) {
  const dir = await tempDir(t, 'burrow-watch-');
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
  return { dir, changed: () => once(changes, 'change') };
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
