#!/usr/bin/env node
// A reference point for bench/requests.mjs: how many small requests per
// second a plain Node reverse proxy (node:http server + keep-alive
// http.request, no tunnel, no second process) gets through, against the
// same backend hit directly, with the same placement as the suite (proxy and
// backend share CPU 1, the load generator runs on CPU 0). It bounds what any
// relay built on Node's HTTP stack can reach on this topology.
//
//   node bench/reference-proxy.mjs
//
// Environment: BENCH_CONNECTIONS [128] (a list, as the suite passes it to
// every scenario, counts its largest entry), BENCH_DURATION seconds per run [5],
// BENCH_RUNS [3].
import { execFileSync, fork } from 'node:child_process';
import http from 'node:http';
import autocannon from 'autocannon';
import { envInt, envList, median } from './lib/report.mjs';

const connectionList = envList('BENCH_CONNECTIONS', ['128']).map(Number);
if (!connectionList.every((n) => Number.isSafeInteger(n) && n >= 1)) {
  console.error(`BENCH_CONNECTIONS must list whole numbers >= 1 (got "${process.env.BENCH_CONNECTIONS}")`);
  process.exit(1);
}
const connections = Math.max(...connectionList);
const duration = envInt('BENCH_DURATION', 5, 1);
const runs = envInt('BENCH_RUNS', 3, 1);

if (process.argv[2] === 'child') {
  const body = Buffer.from('hello');
  const backend = http.createServer((_req, res) => {
    res.setHeader('content-length', body.length);
    res.end(body);
  });
  await new Promise((resolve) => backend.listen(0, '127.0.0.1', resolve));
  const target = backend.address().port;
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1024 });
  const proxy = http.createServer((req, res) => {
    const upstream = http.request(
      { host: '127.0.0.1', port: target, method: req.method, path: req.url, headers: req.headers, agent },
      (up) => {
        res.writeHead(up.statusCode ?? 502, up.headers);
        up.pipe(res);
      },
    );
    upstream.on('error', () => res.destroy());
    req.pipe(upstream);
  });
  await new Promise((resolve) => proxy.listen(0, '127.0.0.1', resolve));
  // The parent gone (finished or failed): nothing is left to serve.
  process.on('disconnect', () => process.exit(0));
  process.send({ backend: target, proxy: proxy.address().port });
} else {
  const child = fork(new URL(import.meta.url).pathname, ['child']);
  const ports = await new Promise((resolve) => child.once('message', resolve));
  try {
    execFileSync('taskset', ['-p', '-c', '1', String(child.pid)], { stdio: 'ignore' });
    execFileSync('taskset', ['-p', '-c', '0', String(process.pid)], { stdio: 'ignore' });
  } catch {
    console.log('(taskset failed: placement left to the scheduler)');
  }
  const rate = (port) =>
    new Promise((resolve, reject) =>
      autocannon({ url: `http://127.0.0.1:${port}/`, connections, duration }, (err, result) =>
        err ? reject(err) : resolve(result.requests.average),
      ),
    );
  const direct = [];
  const proxied = [];
  for (let i = 0; i < runs; i++) {
    direct.push(await rate(ports.backend));
    proxied.push(await rate(ports.proxy));
    console.log(
      `run ${i + 1}: direct ${Math.round(direct[i])} req/s, node proxy ${Math.round(proxied[i])} req/s`,
    );
  }
  const d = median(direct);
  const p = median(proxied);
  console.log(
    `median of ${runs}, ${connections} connections: direct ${Math.round(d)} req/s, plain Node reverse proxy ${Math.round(p)} req/s = ${Math.round((100 * p) / d)} % of direct`,
  );
  child.kill();
}
