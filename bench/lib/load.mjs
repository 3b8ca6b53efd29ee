// Client-side load for the benchmarks: bulk downloads and uploads with every
// byte counted, and single GETs. All of it plain node:http on 127.0.0.1, with
// the stack's hostname; getStatus and bulkLoop also reach other addresses and
// names (bench/head-of-line-link.mjs, whose backend is across a shaped link).
import { request } from 'node:http';
import { performance } from 'node:perf_hooks';
import { HOST, HOSTNAME } from './stack-control.mjs';

const HEADERS = { host: HOSTNAME };
// Upload bodies are slices of one preallocated buffer, like the backend's downloads.
const CHUNK = Buffer.alloc(64 * 1024, 0x5a);
/** A stalled transfer fails the run instead of hanging the benchmark. */
const STALL_MS = 60_000;

/** GET /bulk?size=N on a new connection; resolves with the byte count once all arrived. */
export function download(port, size) {
  return new Promise((resolve, reject) => {
    const req = request(
      { host: HOST, port, path: `/bulk?size=${size}`, headers: HEADERS, agent: false },
      (res) => {
        if (res.statusCode !== 200) {
          res.resume();
          reject(new Error(`bulk download answered ${res.statusCode}`));
          return;
        }
        let n = 0;
        res.on('data', (chunk) => {
          n += chunk.length;
        });
        res.on('end', () =>
          n === size ? resolve(n) : reject(new Error(`bulk download got ${n} of ${size} bytes`)),
        );
        res.on('error', reject);
      },
    );
    req.setTimeout(STALL_MS, () => req.destroy(new Error(`bulk download stalled for ${STALL_MS} ms`)));
    req.on('error', reject);
    req.end();
  });
}

/** POST /upload of `size` bytes on a new connection, with backpressure; the backend echoes the count. */
export function upload(port, size) {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: HOST,
        port,
        method: 'POST',
        path: '/upload',
        headers: { ...HEADERS, 'content-type': 'application/octet-stream', 'content-length': size },
        agent: false,
      },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c) => {
          body += c;
        });
        res.on('end', () => {
          if (res.statusCode !== 200 || Number(body) !== size) {
            reject(new Error(`upload answered ${res.statusCode} "${body.slice(0, 80)}" for ${size} bytes`));
          } else resolve(size);
        });
        res.on('error', reject);
      },
    );
    req.setTimeout(STALL_MS, () => req.destroy(new Error(`upload stalled for ${STALL_MS} ms`)));
    req.on('error', reject);
    let left = size;
    const pump = () => {
      while (left > 0) {
        const n = Math.min(left, CHUNK.length);
        left -= n;
        if (!req.write(n === CHUNK.length ? CHUNK : CHUNK.subarray(0, n))) {
          req.once('drain', pump);
          return;
        }
      }
      req.end();
    };
    pump();
  });
}

/**
 * Moves `total` bytes over `parallel` concurrent transfers (`download` or
 * `upload`); resolves with MB/s (10^6 bytes per second) from the first
 * request to the last byte counted.
 */
export async function transfer(direction, port, total, parallel) {
  const base = Math.floor(total / parallel);
  const sizes = Array.from({ length: parallel }, (_, i) => base + (i < total % parallel ? 1 : 0));
  const move = direction === 'upload' ? upload : download;
  const start = performance.now();
  await Promise.all(sizes.map((s) => move(port, s)));
  return total / 1e6 / ((performance.now() - start) / 1000);
}

/**
 * One GET; resolves with the status code, or 0 when the connection failed.
 * Never rejects: the control-plane benchmark polls through failures.
 */
export function getStatus(port, { host = HOST, hostname = HOSTNAME, agent = false, timeout = 2_000 } = {}) {
  return new Promise((resolve) => {
    const req = request({ host, port, path: '/', headers: { host: hostname }, agent }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode));
      res.on('error', () => resolve(0));
    });
    req.setTimeout(timeout, () => req.destroy(new Error('timeout')));
    req.on('error', () => resolve(0));
    req.end();
  });
}

/**
 * Downloads back to back (`size` bytes each) from host:port (Host: `hostname`)
 * until `stop()` is called, to keep a path saturated; `stop()` resolves with
 * the bytes received and MB/s. `started` resolves when the first bytes
 * arrived. Bounded by `limitMs`.
 */
export function bulkLoop(port, size, limitMs, { host = HOST, hostname = HOSTNAME } = {}) {
  let bytes = 0;
  let current;
  let stopped = false;
  let markStarted;
  const started = new Promise((resolve) => (markStarted = resolve));
  const t0 = performance.now();
  const limit = setTimeout(() => stop(), limitMs);
  const one = () => {
    if (stopped) return;
    current = request(
      { host, port, path: `/bulk?size=${size}`, headers: { host: hostname }, agent: false },
      (res) => {
        res.on('data', (chunk) => {
          bytes += chunk.length;
          markStarted();
        });
        res.on('end', one);
        res.on('error', () => {});
      },
    );
    current.on('error', () => {
      if (!stopped) setTimeout(one, 10);
    });
    current.end();
  };
  const stop = () => {
    stopped = true;
    clearTimeout(limit);
    current?.destroy();
    markStarted();
    return { bytes, mbps: bytes / 1e6 / ((performance.now() - t0) / 1000) };
  };
  one();
  return { started, stop };
}
