// Client side of bench/tcp.mjs: raw TCP to the backend's TCP server (the
// protocol is in bench/lib/stack.mjs, startTcpBackend), every byte counted.
import { connect } from 'node:net';
import { performance } from 'node:perf_hooks';
import { HOST } from './stack-control.mjs';

const CHUNK = Buffer.alloc(64 * 1024, 0x5a);
/** A stalled transfer fails the run instead of hanging the benchmark. */
const STALL_MS = 60_000;

/** Opens a connection and sends `line`; the promise settles through `done`. */
function open(port, line, done) {
  const socket = connect({ host: HOST, port, allowHalfOpen: true });
  socket.setTimeout(STALL_MS, () => socket.destroy(new Error(`raw transfer stalled for ${STALL_MS} ms`)));
  socket.on('error', (err) => done(err));
  socket.write(line);
  return socket;
}

/** `D size`: resolves once all `size` bytes arrived and the backend ended. */
export function rawDownload(port, size) {
  return new Promise((resolve, reject) => {
    let n = 0;
    const socket = open(port, `D ${size}\n`, reject);
    socket.on('data', (c) => {
      n += c.length;
    });
    socket.on('end', () => {
      socket.end();
      n === size ? resolve(n) : reject(new Error(`raw download got ${n} of ${size} bytes`));
    });
  });
}

/** `U`, `size` bytes, FIN: resolves once the backend's count says all arrived. */
export function rawUpload(port, size) {
  return new Promise((resolve, reject) => {
    let answer = '';
    const socket = open(port, 'U\n', reject);
    socket.setEncoding('latin1');
    socket.on('data', (c) => {
      answer += c;
    });
    socket.on('end', () => {
      socket.end();
      Number(answer) === size
        ? resolve(size)
        : reject(new Error(`raw upload: backend counted "${answer}" of ${size}`));
    });
    let left = size;
    const pump = () => {
      while (left > 0) {
        const n = Math.min(left, CHUNK.length);
        left -= n;
        if (!socket.write(n === CHUNK.length ? CHUNK : CHUNK.subarray(0, n))) {
          socket.once('drain', pump);
          return;
        }
      }
      socket.end();
    };
    pump();
  });
}

/** Moves `total` bytes over `parallel` raw connections; resolves with MB/s (10^6 bytes/s). */
export async function rawTransfer(direction, port, total, parallel) {
  const base = Math.floor(total / parallel);
  const sizes = Array.from({ length: parallel }, (_, i) => base + (i < total % parallel ? 1 : 0));
  const move = direction === 'upload' ? rawUpload : rawDownload;
  const start = performance.now();
  await Promise.all(sizes.map((s) => move(port, s)));
  return total / 1e6 / ((performance.now() - start) / 1000);
}

/**
 * Round trips of a `size`-byte message on one echoing connection, one at a
 * time, `count` of them or until `limitMs` passed; resolves with round trips
 * per second and the p50 and p99 of their times, ms.
 */
export function rawPingPong(port, { size = 64, count = 20_000, limitMs = 10_000 } = {}) {
  return new Promise((resolve, reject) => {
    const message = Buffer.alloc(size, 0x61);
    const times = [];
    let got = 0;
    let sentAt = 0;
    const started = performance.now();
    const socket = open(port, 'E\n', reject);
    socket.setNoDelay(true);
    const send = () => {
      got = 0;
      sentAt = performance.now();
      socket.write(message);
    };
    socket.on('data', (c) => {
      got += c.length;
      if (got < size) return;
      const now = performance.now();
      times.push(now - sentAt);
      if (times.length >= count || now - started > limitMs) {
        socket.destroy();
        const sorted = times.sort((a, b) => a - b);
        const at = (q) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
        resolve({ rate: times.length / ((now - started) / 1000), p50: at(0.5), p99: at(0.99) });
        return;
      }
      send();
    });
    send();
  });
}
