#!/usr/bin/env node
// Summarises a V8 .cpuprofile (from `node --cpu-prof`): where self time went,
// by component, by the Burrow role that caused it, by file and by function,
// with Burrow's dist/*.js frames mapped back to src/*.ts through their source
// maps. bench/http.mjs prints this for the profiles BENCH_CPU_PROF asks for.
//
//   node bench/lib/cpuprofile.mjs FILE.cpuprofile [--top N]
import { existsSync, readFileSync } from 'node:fs';
import { SourceMap } from 'node:module';
import { dirname, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { fmt, printTable } from './report.mjs';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

/** Which piece of code a frame belongs to, from its script URL. */
function componentOf(frame) {
  const { url, functionName } = frame;
  if (!url) {
    if (functionName === '(garbage collector)') return 'gc';
    if (functionName === '(program)') return 'program';
    if (functionName === '(idle)') return 'idle';
    if (functionName === '(root)') return 'root';
    return 'native';
  }
  if (url.startsWith('node:')) return 'node';
  const m = /\/packages\/(relay|agent|shared)\//.exec(url);
  if (m) return m[1];
  const nm = url.lastIndexOf('/node_modules/');
  if (nm >= 0) {
    const rest = url.slice(nm + 14).split('/');
    return rest[0].startsWith('@') ? `${rest[0]}/${rest[1]}` : rest[0];
  }
  if (url.includes('/bench/')) return 'backend';
  return 'other';
}

const maps = new Map();
/** `path:line` of a frame, through the source map for Burrow's own compiled files. */
function locate(frame) {
  const line = frame.lineNumber + 1;
  if (!frame.url.startsWith('file://')) return `${frame.url}:${line}`;
  const file = fileURLToPath(frame.url);
  if (/\/packages\/[^/]+\/dist\//.test(file)) {
    if (!maps.has(file)) {
      const mapFile = `${file}.map`;
      maps.set(file, existsSync(mapFile) ? new SourceMap(JSON.parse(readFileSync(mapFile, 'utf8'))) : null);
    }
    const map = maps.get(file);
    const entry = map?.findEntry(frame.lineNumber, frame.columnNumber);
    if (entry?.originalSource) {
      const src = entry.originalSource.startsWith('file://')
        ? fileURLToPath(entry.originalSource)
        : resolve(dirname(file), entry.originalSource);
      return `${relative(ROOT, src)}:${entry.originalLine + 1}`;
    }
  }
  const nm = file.lastIndexOf('/node_modules/');
  if (nm >= 0) return `${file.slice(nm + 14).replace(/^\.pnpm\/[^/]+\/node_modules\//, '')}:${line}`;
  return `${relative(ROOT, file)}:${line}`;
}

/**
 * Reads a profile and returns the summary figures (times in ms). With
 * `windows` ([{ from, to }] in µs of the monotonic clock, as V8 stamps
 * samples), only samples inside one of them count.
 */
export function summarise(path, windows) {
  const profile = JSON.parse(readFileSync(path, 'utf8'));
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);

  // The role a sample is charged to: the nearest Burrow relay/agent frame (or
  // the bench backend) on its stack, so node:http and ws time spent for the
  // relay counts as the relay's even when relay and agent share a process.
  const roleMemo = new Map();
  const roleOf = (id) => {
    if (roleMemo.has(id)) return roleMemo.get(id);
    const c = componentOf(byId.get(id).callFrame);
    let role;
    if (c === 'relay' || c === 'agent' || c === 'backend') role = c;
    else if (c === 'gc' || c === 'program' || c === 'idle') role = c;
    else role = parent.has(id) ? roleOf(parent.get(id)) : 'unattributed';
    if (role === 'root') role = 'unattributed';
    roleMemo.set(id, role);
    return role;
  };

  // Sample i lasts until sample i + 1 (timeDeltas[i + 1], in µs).
  const self = new Map();
  const { samples, timeDeltas } = profile;
  let at = profile.startTime;
  let wall = 0;
  for (let i = 0; i < samples.length; i++) {
    at += timeDeltas[i];
    if (windows && !windows.some((w) => at >= w.from && at < w.to)) continue;
    const us = timeDeltas[i + 1] ?? 0;
    wall += us / 1000;
    self.set(samples[i], (self.get(samples[i]) ?? 0) + us / 1000);
  }

  let total = 0;
  let idle = 0;
  const components = new Map();
  const roles = new Map();
  const functions = new Map();
  const files = new Map();
  const add = (m, k, v) => m.set(k, (m.get(k) ?? 0) + v);
  for (const [id, ms] of self) {
    const frame = byId.get(id).callFrame;
    total += ms;
    const component = componentOf(frame);
    if (component === 'idle') {
      idle += ms;
      continue;
    }
    add(components, component, ms);
    add(roles, roleOf(id), ms);
    if (component === 'gc' || component === 'program') continue;
    const where = locate(frame);
    const file = where.replace(/:\d+$/, '');
    const name = frame.functionName || '(anonymous)';
    const key = `${component}\0${file}\0${name}`;
    const f = functions.get(key) ?? { component, file, name, line: where.slice(file.length + 1), ms: 0 };
    f.ms += ms;
    functions.set(key, f);
    add(files, `${component}\0${file}`, ms);
  }
  return {
    wall: windows ? wall : (profile.endTime - profile.startTime) / 1000,
    total,
    busy: total - idle,
    components,
    roles,
    functions: [...functions.values()].sort((a, b) => b.ms - a.ms),
    files: [...files].map(([k, ms]) => ({ component: k.split('\0')[0], file: k.split('\0')[1], ms })),
  };
}

/** Prints the summary of one profile: busy share by component and role, top files and functions. */
export function printSummary(path, { top = 25, windows, roles = 2 } = {}) {
  const s = summarise(path, windows);
  const share = (ms) => fmt.pct(ms / s.busy);
  console.log(`\nprofile ${relative(process.cwd(), path)}`);
  console.log(
    `  wall ${(s.wall / 1000).toFixed(1)} s, busy ${(s.busy / 1000).toFixed(1)} s (${fmt.pct(s.busy / s.wall)} of wall); shares below are of busy time\n`,
  );
  const sorted = (m) => [...m].sort((a, b) => b[1] - a[1]);
  console.log('  self time by component (where the code lives; 0.5 % and more):');
  printTable(
    ['component', 'share', 'ms'],
    sorted(s.components)
      .filter(([, ms]) => ms / s.busy >= 0.005)
      .map(([k, ms]) => [k, share(ms), fmt.int(ms)]),
    '    ',
  );
  if (roles > 1) {
    console.log(
      '\n  charged to the nearest relay / agent / backend frame on the stack (node:http, ws and shared code included):',
    );
    printTable(
      ['role', 'share', 'ms'],
      sorted(s.roles).map(([k, ms]) => [k, share(ms), fmt.int(ms)]),
      '    ',
    );
  }
  const burrow = new Set(['relay', 'agent', 'shared']);
  console.log('\n  Burrow files by self time, with their top functions:');
  const files = s.files.filter((f) => burrow.has(f.component)).sort((a, b) => b.ms - a.ms);
  const rows = [];
  for (const f of files.slice(0, 12)) {
    const fns = s.functions
      .filter((x) => x.file === f.file)
      .slice(0, 3)
      .map((x) => `${x.name} ${share(x.ms)}`)
      .join(', ');
    rows.push([f.file, share(f.ms), fns]);
  }
  printTable(['file', 'share', 'top functions'], rows, '    ');
  console.log(`\n  top ${top} functions by self time (any component):`);
  printTable(
    ['function', 'component', 'share', 'ms'],
    s.functions
      .slice(0, top)
      .map((f) => [`${f.file}:${f.line} ${f.name}`, f.component, share(f.ms), fmt.int(f.ms)]),
    '    ',
  );
  return s;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const args = process.argv.slice(2);
  const t = args.indexOf('--top');
  const top = t >= 0 ? Number(args.splice(t, 2)[1]) : 25;
  if (args.length === 0) {
    console.error('usage: node bench/lib/cpuprofile.mjs FILE.cpuprofile... [--top N]');
    process.exit(1);
  }
  for (const file of args) printSummary(resolve(file), { top });
}
