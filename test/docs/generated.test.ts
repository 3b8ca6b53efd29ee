// Docs generated from code (option tables, admin route schemas) must match
// what is committed: this fails when the code changes without regenerating.
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
import { ROOT } from '../helpers/proc.js';

const GENERATED = [
  { doc: 'docs/configuration.md', script: 'scripts/gen-config-docs.mjs', from: 'the option tables' },
  { doc: 'docs/admin-api.md', script: 'scripts/gen-admin-docs.mjs', from: 'the admin route schemas' },
];

for (const { doc, script, from } of GENERATED) {
  t.test(`${doc} matches ${from}`, async (t) => {
    const result = await promisify(execFile)(process.execPath, [join(ROOT, script), '--check'], {
      cwd: ROOT,
    }).then(
      () => 0,
      (err: { code: number; stderr: string }) => {
        t.comment(err.stderr);
        return err.code;
      },
    );
    t.equal(result, 0, `run node ${script} to regenerate`);
  });
}
