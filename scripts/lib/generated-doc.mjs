// Writes a generated Markdown file formatted as the repository's formatter
// would (so `biome ci` and --check agree), or with --check exits 1 when the
// committed file differs.
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** `doc` is relative to the repository root; `script` names the generator for the error message. */
export function writeGeneratedDoc(doc, markdown, script) {
  const target = join(ROOT, doc);
  const biome = join(ROOT, 'node_modules', '.bin', 'biome');
  const text = execFileSync(biome, ['format', `--stdin-file-path=${doc}`], {
    input: markdown,
    cwd: ROOT,
  }).toString();
  if (!process.argv.includes('--check')) {
    writeFileSync(target, text);
    return;
  }
  if (readFileSync(target, 'utf8') !== text) {
    console.error(`${doc} is out of date: run node ${relative(ROOT, script)}`);
    process.exit(1);
  }
}
