// docs/configuration.md is generated from the option tables that drive the
// CLIs; this fails when someone changes an option without regenerating it.
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
import { ROOT } from '../helpers/proc.js';

t.test('docs/configuration.md matches the option tables', async (t) => {
  const result = await promisify(execFile)(
    process.execPath,
    [join(ROOT, 'scripts/gen-config-docs.mjs'), '--check'],
    { cwd: ROOT },
  ).then(
    () => 0,
    (err: { code: number; stderr: string }) => {
      t.comment(err.stderr);
      return err.code;
    },
  );
  t.equal(result, 0, 'run node scripts/gen-config-docs.mjs to regenerate');
});
