// An open-loop, constant-rate HTTP load generator for latency below saturation.
//
// autocannon's `overallRate` is not one: each connection sends its share of
// the second's requests back to back as fast as the server answers, then
// idles until the next 1 s tick (lib/httpClient.js `reqsMadeThisSecond`). At
// "50 % of saturation" that is full saturation for half of every second, so
// its percentiles are those of a saturated server. Here request i is due at
// start + i / rate whatever happened to earlier ones, and its latency counts
// from that due time (as wrk2 does), so a stall shows up in the percentiles
// instead of silently lowering the offered rate (coordinated omission).
import { Agent, request } from 'node:http';
import { performance } from 'node:perf_hooks';
import { LatencyRecorder } from './report.mjs';

/** A keep-alive connection pool of at most `connections` sockets for pacedLoad. */
export function createPool(connections) {
  return new Agent({ keepAlive: true, maxSockets: connections, maxFreeSockets: connections });
}

/**
 * Sends `rate` GET requests per second for `duration` seconds through `pool`.
 * Requests are issued from a 1 ms timer, so they leave in bursts of about
 * rate/1000; the timer's lateness is part of the latency from the due time
 * (`scheduled`), not of the latency from the moment the request was handed to
 * node:http (`sent`). Requests still unanswered `timeout` ms after the last
 * one was due are counted as errors.
 */
export function pacedLoad({ host, port, path, headers, rate, duration, pool, timeout = 10_000 }) {
  const total = Math.max(1, Math.round(rate * duration));
  const interval = 1000 / rate;
  const scheduled = new LatencyRecorder();
  const sent = new LatencyRecorder();
  let issued = 0;
  let finished = 0;
  let errors = 0;
  let non2xx = 0;
  let lastEnd = 0;
  const start = performance.now() + 2;

  return new Promise((resolve) => {
    let timer;
    let closed = false;
    const deadline = setTimeout(() => finish(), duration * 1000 + timeout);
    const finish = () => {
      if (closed) return;
      closed = true;
      clearTimeout(timer);
      clearTimeout(deadline);
      const elapsed = (lastEnd || performance.now()) - start;
      resolve({
        rate: finished / (elapsed / 1000),
        requests: finished,
        errors: errors + (total - finished), // failed, and never answered
        non2xx,
        scheduled,
        sent,
      });
    };
    const send = (due) => {
      const at = performance.now();
      let settled = false;
      const done = (ok) => {
        if (settled) return;
        settled = true;
        if (!ok) errors++;
        finished++;
        if (finished === total) finish();
      };
      const req = request({ host, port, path, headers, agent: pool }, (res) => {
        if (res.statusCode < 200 || res.statusCode > 299) non2xx++;
        res.resume();
        res.on('end', () => {
          const end = performance.now();
          scheduled.add(end - due);
          sent.add(end - at);
          lastEnd = end;
          done(true);
        });
        res.on('error', () => done(false));
      });
      req.on('error', () => done(false));
      req.end();
    };
    const tick = () => {
      const now = performance.now();
      const due = Math.min(total, Math.floor((now - start) / interval) + 1);
      while (issued < due) send(start + issued++ * interval);
      if (issued < total) timer = setTimeout(tick, 1);
    };
    timer = setTimeout(tick, 2);
  });
}
