// Small-request load with wrk (/usr/bin/wrk, Debian package `wrk`), a C load
// generator: one thread drives hundreds of connections at a fraction of the
// CPU a Node client (autocannon) needs per request, so on this 2-core machine
// more of the second core is left to the system under test. Closed loop: each
// connection sends its next request when the answer to the previous one is in.
import { spawnSync } from 'node:child_process';
import { HOST, HOSTNAME } from './stack-control.mjs';
import { runTool } from './tool.mjs';

const WRK = 'wrk';

/** Why wrk cannot run here, or undefined when it can. */
export function wrkUnavailable() {
  const r = spawnSync(WRK, ['-v'], { stdio: 'ignore' });
  return r.error ? 'wrk not found (Debian: apt-get install wrk)' : undefined;
}

const UNITS = { us: 1e-3, ms: 1, s: 1000, m: 60_000 };
/** "136.00us" → 0.136 (ms). */
function toMs(text) {
  const m = /^([\d.]+)(us|ms|s|m)$/.exec(text);
  return m ? Number(m[1]) * UNITS[m[2]] : Number.NaN;
}

/** Parses wrk's summary (with --latency): req/s, p50, p99 in ms, request and error counts. */
export function parseWrk(out) {
  const num = (re) => Number(re.exec(out)?.[1] ?? Number.NaN);
  const pct = (p) => toMs(new RegExp(`^\\s+${p}%\\s+(\\S+)$`, 'm').exec(out)?.[1] ?? '');
  const socket = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  const socketErrors = socket ? socket.slice(1).reduce((a, n) => a + Number(n), 0) : 0;
  return {
    rps: num(/^Requests\/sec:\s+([\d.]+)/m),
    requests: num(/^\s+(\d+) requests in/m),
    p50: pct(50),
    p99: pct(99),
    errors: socketErrors + (Number(/Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1]) || 0),
  };
}

/**
 * Runs wrk against 127.0.0.1:`port` for `duration` seconds with `connections`
 * connections on one thread. `close`: send `Connection: close`, so each
 * request opens a new connection. `cpus`: pin wrk (all its threads) there.
 */
export async function runWrk({ port, connections, duration, close = false, cpus }) {
  const args = [
    '-t1',
    `-c${connections}`,
    `-d${Math.max(1, Math.round(duration))}s`,
    '--latency',
    '--timeout',
    '10s',
    '-H',
    `Host: ${HOSTNAME}`,
    ...(close ? ['-H', 'Connection: close'] : []),
    `http://${HOST}:${port}/`,
  ];
  // wrk stops by itself after -d; the limit bounds a wedged run.
  const { code, out, err } = await runTool(WRK, args, { cpus, limitSeconds: duration + 30 });
  const r = parseWrk(out);
  if (code !== 0 || Number.isNaN(r.rps)) throw new Error(`wrk failed (${code}): ${err || out}`);
  return r;
}
