#!/usr/bin/env node
// Runs every benchmark script in bench/ (every *.mjs but this one), one after
// another, each in its own Node process. `npm run bench` calls this.
// Exits non-zero if any benchmark failed.
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = fileURLToPath(import.meta.url);
const dir = dirname(here);
const scripts = readdirSync(dir)
  .filter((f) => f.endsWith('.mjs') && f !== basename(here))
  .sort();

let failed = 0;
for (const file of scripts) {
  console.log(`\n== bench/${file}`);
  const result = spawnSync(process.execPath, [join(dir, file)], { stdio: 'inherit' });
  if (result.status !== 0) {
    failed++;
    console.error(`bench/${file} failed (${result.signal ?? `exit code ${result.status}`})`);
  }
}
process.exit(failed ? 1 : 0);
