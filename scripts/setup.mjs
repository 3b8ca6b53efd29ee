#!/usr/bin/env node
// Brings a fresh clone to a runnable state with nothing but Node and npm:
// installs the pinned pnpm (through npx), the workspace dependencies from the
// lockfile, and builds the packages. Cheap to rerun: pnpm and tsc -b skip work
// that is already done.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
const pnpm = pkg.packageManager; // e.g. "pnpm@12.4.2"

const [major, minor] = process.versions.node.split('.').map(Number);
if (major < 20 || (major === 20 && minor < 19)) {
  console.error(`Burrow needs Node.js >= 20.19 (this is ${process.version}).`);
  process.exit(1);
}

function run(cmd, args) {
  execFileSync(cmd, args, { cwd: root, stdio: 'inherit', env: { ...process.env, npm_config_yes: 'true' } });
}

const frozen = process.env.CI ? ['--frozen-lockfile'] : ['--prefer-offline', '--frozen-lockfile'];
run('npx', ['-y', pnpm, 'install', ...frozen, '--reporter=append-only']);
run('npx', ['-y', pnpm, 'run', 'build']);
