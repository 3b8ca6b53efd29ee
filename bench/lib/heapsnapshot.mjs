#!/usr/bin/env node
// What a process holds more of in one V8 heap snapshot than in another, by
// kind of object: the retained-memory evidence behind the idle-stream figures
// (bench/idle-websockets.mjs writes the snapshots with BENCH_HEAP_SNAPSHOT).
//
//   node bench/lib/heapsnapshot.mjs BEFORE.heapsnapshot AFTER.heapsnapshot [--per N] [--top N]
//
// Objects are grouped by V8's node type and name (the constructor for objects,
// the function name for closures); `--per N` divides the growth by N (the
// number of streams opened in between) to print bytes per stream.
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { fmt, printTable } from './report.mjs';

/** Self size and count per "type name" group of one snapshot. */
function groups(file) {
  const snap = JSON.parse(readFileSync(file, 'utf8'));
  const fields = snap.snapshot.meta.node_fields;
  const types = snap.snapshot.meta.node_types[0];
  const width = fields.length;
  const [iType, iName, iSize] = ['type', 'name', 'self_size'].map((f) => fields.indexOf(f));
  const out = new Map();
  const { nodes, strings } = snap;
  for (let i = 0; i < nodes.length; i += width) {
    const type = types[nodes[i + iType]];
    // Strings, numbers and code are grouped by type alone: their "names" are their contents.
    const name =
      type === 'object' || type === 'closure' || type === 'native' ? strings[nodes[i + iName]] : '';
    const key = `${type} ${name}`.trim();
    const g = out.get(key) ?? { size: 0, count: 0 };
    g.size += nodes[i + iSize];
    g.count++;
    out.set(key, g);
  }
  return out;
}

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { per: { type: 'string', default: '1' }, top: { type: 'string', default: '30' } },
});
if (positionals.length !== 2) {
  console.error(
    'usage: node bench/lib/heapsnapshot.mjs BEFORE.heapsnapshot AFTER.heapsnapshot [--per N] [--top N]',
  );
  process.exit(2);
}
const per = Number(values.per);
const [before, after] = positionals.map(groups);
const rows = [];
let total = 0;
for (const [key, a] of after) {
  const b = before.get(key) ?? { size: 0, count: 0 };
  const size = a.size - b.size;
  total += size;
  if (size !== 0) rows.push({ key, size, count: a.count - b.count });
}
rows.sort((x, y) => y.size - x.size);
console.log(`heap growth ${fmt.int(total)} bytes, ${fmt.int(total / per)} per stream (÷ ${per})`);
printTable(
  ['type and name', 'bytes per stream', 'objects per stream'],
  rows.slice(0, Number(values.top)).map((r) => [r.key, fmt.int(r.size / per), (r.count / per).toFixed(2)]),
);
