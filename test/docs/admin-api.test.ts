// docs/admin-api.md is generated from the admin API's route schemas; this
// fails when a route or schema changes without regenerating it.
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
import { ROOT } from '../helpers/proc.js';

t.test('docs/admin-api.md matches the admin route schemas', async (t) => {
  const result = await promisify(execFile)(
    process.execPath,
    [join(ROOT, 'scripts/gen-admin-docs.mjs'), '--check'],
    { cwd: ROOT },
  ).then(
    () => 0,
    (err: { code: number; stderr: string }) => {
      t.comment(err.stderr);
      return err.code;
    },
  );
  t.equal(result, 0, 'run node scripts/gen-admin-docs.mjs to regenerate');
});
