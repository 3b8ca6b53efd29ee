#!/usr/bin/env node
// Cost of the relay's per-request metrics: what RelayMetrics adds to every
// proxied request (access counters, duration histogram, bytes, the per-route
// stream gauge), and how long one scrape takes, with a realistic number of
// route hostnames. No network: this isolates the bookkeeping.
//
//   node bench/metrics.mjs
//
// Environment: BENCH_REQUESTS (per run, default 1000000), BENCH_HOSTS (route
// hostnames, default 50), BENCH_RUNS (default 3). See docs/performance.md.
import { EventEmitter } from 'node:events';
import { RelayMetrics } from '@burrow/relay';
import { envInt, median, printTable } from './lib/report.mjs';

const requests = envInt('BENCH_REQUESTS', 1_000_000, 1);
const hostCount = envInt('BENCH_HOSTS', 50, 1);
const runs = envInt('BENCH_RUNS', 3, 1);
const hosts = Array.from({ length: hostCount }, (_, i) => `app-${i}.apps.example.com`);
const metrics = new RelayMetrics({
  connections: new Set(),
  routes: { list: () => [] },
  revokedTokens: () => 0,
});

const perRequest = [];
for (let run = 0; run < runs; run++) {
  const started = performance.now();
  for (let i = 0; i < requests; i++) {
    const route = hosts[i % hostCount];
    const failed = i % 20 === 0;
    const stream = new EventEmitter();
    metrics.streamOpened(route, (fn) => stream.once('close', fn));
    stream.emit('close');
    metrics.requestDone({
      host: route,
      route,
      method: 'GET',
      path: '/',
      status: failed ? 502 : 200,
      bytesIn: 0,
      bytesOut: 4096,
      durationMs: 3,
      client: '',
      ...(failed ? { error: 'backend_refused' } : {}),
    });
  }
  perRequest.push(((performance.now() - started) * 1000) / requests);
}
const scrapeStarted = performance.now();
const text = await metrics.registry.metrics();
const scrapeMs = performance.now() - scrapeStarted;

printTable(
  ['measure', 'value'],
  [
    ['µs per request (median of runs, stream gauge + counters + histogram)', median(perRequest).toFixed(2)],
    ['runs (µs per request)', perRequest.map((v) => v.toFixed(2)).join(', ')],
    [`one scrape with ${hostCount} route hostnames, ms`, scrapeMs.toFixed(1)],
    ['scrape size, bytes', String(text.length)],
  ],
);
