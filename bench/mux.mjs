#!/usr/bin/env node
// Multiplexer throughput: Burrow streams over a real `ws` WebSocket on
// 127.0.0.1 against a plain TCP pipe carrying the same bytes in the same chunk
// size. One-way bulk transfer, client → server → sink. The receiving end runs
// in a child process (this script, forked with --sink) so sender and receiver
// each get their own core and event loop, for both transports alike.
//
//   node bench/mux.mjs                     (512 MiB per scenario, 3 runs each)
//   BENCH_BYTES=134217728 node bench/mux.mjs
//
// Environment: BENCH_BYTES (total bytes per run, default 512 MiB), BENCH_CHUNK
// (write size, default 64 KiB), BENCH_RUNS (runs per transport, default 3),
// BENCH_TIMEOUT (whole-benchmark limit in seconds, default 900),
// BENCH_CPU_PROF (a directory: the sink child writes a --cpu-prof profile there).
// See docs/performance.md for the method and recorded figures.
import { fork } from 'node:child_process';
import { once } from 'node:events';
import { createRequire } from 'node:module';
import { connect, createServer } from 'node:net';
import { fileURLToPath } from 'node:url';
import { envInt, median, printTable } from './lib/report.mjs';

const HOST = '127.0.0.1';
const MiB = 1024 * 1024;
const WS_OPTIONS = { perMessageDeflate: false, maxPayload: 16 * MiB };
// The agent dials with an all-zero mask (packages/agent/src/tunnel/dial.ts) so
// ws skips masking; the client side here does the same to measure what ships.
const CLIENT_OPTIONS = { ...WS_OPTIONS, generateMask: (mask) => void mask.fill(0) };

// ws and the built multiplexer resolve from the shared package, relative to this file.
const requireShared = createRequire(new URL('../packages/shared/package.json', import.meta.url));
const { WebSocket, WebSocketServer } = requireShared('ws');
let shared;
try {
  shared = await import(new URL('../packages/shared/dist/index.js', import.meta.url).href);
} catch (err) {
  console.error(`cannot load packages/shared/dist (build first: npx tsc -b): ${err.message}`);
  process.exit(1);
}
const { createSession, WsTransport } = shared;

if (process.argv[2] === '--sink') await runSink();
else await runDriver();

// ---- Receiving side (child process) ----

/**
 * Listens on TCP and WebSocket ports. After an `expect` message from the
 * parent it counts incoming bytes on every connection and stream, and answers
 * `done` with the monotonic clock reading at which the last byte was counted.
 */
async function runSink() {
  let expected = 0;
  let counted = 0;
  let runId = 0;
  const count = (n) => {
    counted += n;
    if (expected > 0 && counted >= expected) {
      const at = process.hrtime.bigint().toString();
      expected = 0;
      process.send({ type: 'done', runId, at, counted });
    }
  };

  const tcp = createServer((socket) => {
    socket.on('data', (chunk) => count(chunk.byteLength));
    socket.on('end', () => socket.end());
    socket.on('error', () => {});
  });
  tcp.listen(0, HOST);
  await once(tcp, 'listening');

  const wss = new WebSocketServer({ host: HOST, port: 0, ...WS_OPTIONS });
  await once(wss, 'listening');
  wss.on('connection', (ws) => {
    const session = createSession(new WsTransport(ws), { role: 'server' });
    session.on('stream', (stream) => {
      stream.on('data', (chunk) => count(chunk.byteLength));
      stream.on('end', () => stream.end());
      stream.on('error', () => {});
    });
    session.on('close', () => {});
  });

  process.on('message', (msg) => {
    if (msg.type === 'expect') {
      runId = msg.runId;
      counted = 0;
      expected = msg.bytes;
      process.send({ type: 'armed', runId });
    }
  });
  // The parent going away (normally or not) ends the child.
  process.on('disconnect', () => process.exit(0));
  process.send({ type: 'listening', tcpPort: tcp.address().port, wsPort: wss.address().port });
}

// ---- Sending side (parent process) ----

async function runDriver() {
  const totalBytes = envInt('BENCH_BYTES', 512 * MiB, 1);
  const chunkSize = envInt('BENCH_CHUNK', 64 * 1024, 1);
  const runs = envInt('BENCH_RUNS', 3, 1);
  const timeoutSec = envInt('BENCH_TIMEOUT', 900, 1);
  const profDir = process.env.BENCH_CPU_PROF;

  let finished = false;
  const child = fork(fileURLToPath(import.meta.url), ['--sink'], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    execArgv: profDir ? ['--cpu-prof', `--cpu-prof-dir=${profDir}`] : [],
  });
  const limit = setTimeout(() => {
    console.error(`benchmark exceeded BENCH_TIMEOUT=${timeoutSec} s; giving up`);
    child.kill();
    process.exit(1);
  }, timeoutSec * 1000);
  limit.unref();
  child.on('exit', (code) => {
    if (!finished) {
      console.error(`sink process exited early (code ${code})`);
      process.exit(1);
    }
  });

  const replies = [];
  const waiters = [];
  child.on('message', (msg) => {
    const w = waiters.findIndex((x) => x.match(msg));
    if (w >= 0) waiters.splice(w, 1)[0].resolve(msg);
    else replies.push(msg);
  });
  const next = (match) => {
    const i = replies.findIndex(match);
    if (i >= 0) return Promise.resolve(replies.splice(i, 1)[0]);
    return new Promise((resolve) => waiters.push({ match, resolve }));
  };

  const { tcpPort, wsPort } = await next((m) => m.type === 'listening');
  const chunk = Buffer.alloc(chunkSize);
  for (let i = 0; i < chunk.length; i++) chunk[i] = (i * 131 + 7) & 0xff;
  let runId = 0;

  /** One transfer; returns MB/s (10^6 bytes per second). */
  async function measure(transport, streams, bytes) {
    const id = ++runId;
    child.send({ type: 'expect', runId: id, bytes });
    await next((m) => m.type === 'armed' && m.runId === id);
    const done = next((m) => m.type === 'done' && m.runId === id);
    const per = splitBytes(bytes, streams);
    let start;
    if (transport === 'tcp') {
      const sockets = await Promise.all(per.map(() => tcpConnect(tcpPort)));
      start = process.hrtime.bigint();
      await Promise.all(sockets.map((s, i) => writeAll(s, per[i], chunk)));
      const msg = await done;
      const end = BigInt(msg.at);
      await Promise.all(sockets.map((s) => (s.destroyed ? null : once(s, 'close'))));
      return bytes / 1e6 / (Number(end - start) / 1e9);
    }
    const ws = new WebSocket(`ws://${HOST}:${wsPort}/`, CLIENT_OPTIONS);
    // Create the session inside the 'open' handler, not after `await once(ws, 'open')`:
    // the server's HELLO can arrive in the same read as the 101 response, and ws emits
    // it as a message before a promise continuation would attach the transport, so the
    // handshake fails. (WsTransport drops sends while CONNECTING: it cannot attach earlier.)
    const session = await new Promise((resolve, reject) => {
      ws.once('error', reject);
      ws.once('open', () => {
        ws.off('error', reject);
        resolve(createSession(new WsTransport(ws), { role: 'client', drainTimeout: 5_000 }));
      });
    });
    await session.ready;
    start = process.hrtime.bigint();
    const opened = per.map(() => session.openStream());
    for (const s of opened) s.resume(); // take the sink's FIN so each stream completes
    await Promise.all(opened.map((s, i) => writeAll(s, per[i], chunk)));
    const msg = await done;
    const end = BigInt(msg.at);
    await session.goAway();
    if (ws.readyState !== WebSocket.CLOSED) await once(ws, 'close');
    return bytes / 1e6 / (Number(end - start) / 1e9);
  }

  const scenarios = [
    { name: '1 stream', streams: 1 },
    { name: '16 streams', streams: 16 },
  ];
  console.log(
    `mux throughput: ${fmtBytes(totalBytes)} per run, ${fmtBytes(chunkSize)} writes, ${runs} run${runs === 1 ? '' : 's'} each, ` +
      `receiver in a child process (node ${process.version}, ${HOST})`,
  );
  const rows = [];
  for (const sc of scenarios) {
    // One short unrecorded transfer each, so both paths are compiled before timing.
    const warm = Math.min(totalBytes, 32 * MiB);
    await measure('tcp', sc.streams, warm);
    await measure('burrow', sc.streams, warm);
    const results = { tcp: [], burrow: [] };
    for (let i = 0; i < runs; i++) {
      for (const transport of ['tcp', 'burrow']) {
        const mbps = await measure(transport, sc.streams, totalBytes);
        results[transport].push(mbps);
        console.log(
          `  ${sc.name.padEnd(10)} run ${i + 1}  ${transport.padEnd(6)} ${mbps.toFixed(0).padStart(6)} MB/s`,
        );
      }
    }
    const tcp = median(results.tcp);
    const burrow = median(results.burrow);
    rows.push([sc.name, tcp.toFixed(0), burrow.toFixed(0), `${((burrow / tcp) * 100).toFixed(0)} %`]);
  }
  console.log('');
  printTable(['scenario', 'tcp MB/s', 'burrow MB/s', 'burrow/tcp'], rows);

  finished = true;
  child.disconnect();
  await once(child, 'exit');
}

function splitBytes(total, parts) {
  const base = Math.floor(total / parts);
  return Array.from({ length: parts }, (_, i) => base + (i < total % parts ? 1 : 0));
}

function tcpConnect(port) {
  return new Promise((resolve, reject) => {
    const s = connect({ host: HOST, port }, () => {
      s.off('error', reject);
      resolve(s);
    });
    s.once('error', reject);
  });
}

/** Writes `bytes` in `chunk`-sized writes, honouring backpressure, then ends the writable side. */
async function writeAll(stream, bytes, chunk) {
  let left = bytes;
  while (left > 0) {
    const n = Math.min(left, chunk.length);
    const ok = stream.write(n === chunk.length ? chunk : chunk.subarray(0, n));
    left -= n;
    if (!ok) await once(stream, 'drain');
  }
  stream.end();
}

function fmtBytes(n) {
  if (n % MiB === 0) return `${n / MiB} MiB`;
  if (n % 1024 === 0) return `${n / 1024} KiB`;
  return `${n} B`;
}
