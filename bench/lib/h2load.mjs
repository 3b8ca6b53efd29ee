// HTTP/2 load with h2load (/usr/bin/h2load, Debian package `nghttp2-client`),
// the C load generator of the nghttp2 project: it speaks HTTP/2 without TLS
// with prior knowledge, many streams per connection, at a fraction of the CPU
// a Node client would need. Closed loop: each stream slot sends its next
// request when the previous answer is in. Its per-request log gives the
// latency percentiles its summary lacks.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LatencyRecorder } from './report.mjs';
import { HOST, HOSTNAME } from './stack-control.mjs';
import { runTool } from './tool.mjs';

const H2LOAD = 'h2load';

/** Why h2load cannot run here, or undefined when it can. */
export function h2loadUnavailable() {
  const r = spawnSync(H2LOAD, ['--version'], { stdio: 'ignore' });
  return r.error ? 'h2load not found (Debian: apt-get install nghttp2-client)' : undefined;
}

/** A gRPC message as it goes on the wire: a 5-byte prefix (not compressed, length), then `size` bytes. */
export function grpcMessage(size) {
  const msg = Buffer.alloc(5 + size, 0x61);
  msg.writeUInt8(0, 0);
  msg.writeUInt32BE(size, 1);
  return msg;
}

/**
 * Parses h2load's summary: req/s, requests done and succeeded, failures of
 * every kind (failed, errored, timed out, or answered with a status other than
 * 2xx), and the mean time per request as h2load prints it ("1.23ms").
 * Undefined when there is no summary (h2load did not get that far).
 */
export function parseH2load(out) {
  const m =
    /requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout/.exec(
      out,
    );
  if (!m) return undefined;
  const codes = /status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx/.exec(out);
  const [done, succeeded, failed, errored, timeout] = [3, 4, 5, 6, 7].map((i) => Number(m[i]));
  const non2xx = codes ? Number(codes[2]) + Number(codes[3]) + Number(codes[4]) : 0;
  return {
    rps: Number(/finished in [\d.]+m?s, ([\d.]+) req\/s/.exec(out)?.[1] ?? Number.NaN),
    done,
    succeeded,
    failed,
    errors: failed + errored + timeout + non2xx,
    mean: /time for request:\s+\S+\s+\S+\s+(\S+)/.exec(out)?.[1] ?? '?',
  };
}

/**
 * Sends gRPC-shaped unary calls (POST of `body` with `content-type:
 * application/grpc` and `te: trailers`) to 127.0.0.1:`port` for `duration`
 * seconds over `clients` connections with `streams` requests in flight on
 * each. `cpus`: pin h2load there. Resolves with req/s, p50 and p99 (ms) and
 * the error count.
 */
export async function runH2load({ port, clients, streams, duration, body, cpus }) {
  const dir = mkdtempSync(join(tmpdir(), 'burrow-h2load-'));
  const data = join(dir, 'body');
  const log = join(dir, 'log');
  writeFileSync(data, body);
  const args = [
    `-c${clients}`,
    `-m${streams}`,
    `-D${Math.max(1, Math.round(duration))}`,
    `--log-file=${log}`,
    '-d',
    data,
    '-H',
    'content-type: application/grpc',
    '-H',
    'te: trailers',
    '-H',
    `:authority: ${HOSTNAME}`,
    `http://${HOST}:${port}/burrow.bench.Echo/Echo`,
  ];
  try {
    // h2load stops by itself after -D; the limit bounds a wedged run.
    const { code, out, err } = await runTool(H2LOAD, args, { cpus, limitSeconds: duration + 30 });
    const summary = parseH2load(out);
    if (code !== 0 || !summary) throw new Error(`h2load failed (${code}): ${err || out}`);
    // One line per request: start (µs since the epoch), status, time to the whole response (µs).
    const latency = new LatencyRecorder();
    for (const line of readFileSync(log, 'utf8').split('\n')) {
      const us = Number(line.split('\t')[2]);
      if (Number.isFinite(us)) latency.add(us / 1000);
    }
    return {
      rps: summary.done / duration,
      requests: summary.done,
      p50: latency.percentile(0.5),
      p99: latency.percentile(0.99),
      errors: summary.errors,
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
