#!/usr/bin/env node
import { execFile, fork, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
// TLS at the relay: requests/s and latency through the TLS listener, for
// terminated HTTP/1.1, terminated h2 and passthrough, against plain HTTP
// through the relay and an HTTPS backend reached directly, in the same run;
// plus new TLS connections per second (one request per connection).
//
// The backends, relay and agent run in one child process (this file with the
// argument `stack`); h2load is the load generator, in its own process. Every
// run is bounded by a request count and a time limit. Everything is on
// 127.0.0.1.
//
//   node bench/tls.mjs
//   BENCH_REQUESTS=5000 node bench/tls.mjs
//
// Environment (defaults in brackets): BENCH_REQUESTS per run [20000],
// BENCH_CLIENTS concurrent connections [16], BENCH_STREAMS h2 streams per
// connection [10], BENCH_HANDSHAKES requests in the new-connection run [2000],
// BENCH_RUN_TIMEOUT seconds per run [120]. Needs h2load (nghttp2-client) and
// openssl. See docs/performance.md for recorded figures.
import { parseH2load } from './lib/h2load.mjs';
import { timeLimit } from './lib/harness.mjs';
import { envInt } from './lib/report.mjs';

const HOST = '127.0.0.1';
const NAME = 'bench.example.test';
const PASS = 'pass.example.test';

if (process.argv[2] === 'stack') await stack();
else await main();

/** The system under test: two backends, a relay with a TLS listener, an agent. */
async function stack() {
  const { startAgent } = await import('@burrow/agent');
  const { startRelay } = await import('@burrow/relay');
  const { createAgentToken, createLogger, generateSigningKeyPair, loadSigningKey, loadVerifyKey } =
    await import('@burrow/shared');
  const [certFile, keyFile] = [process.env.BENCH_CERT, process.env.BENCH_KEY];
  const body = Buffer.from('hello');
  const http = createServer((_req, res) => res.end(body)).listen(0, HOST);
  const https = createHttpsServer({ cert: readFileSync(certFile), key: readFileSync(keyFile) }, (_req, res) =>
    res.end(body),
  ).listen(0, HOST);
  await Promise.all([once(http, 'listening'), once(https, 'listening')]);
  const logger = createLogger({ name: 'burrow-bench', level: 'silent' });
  const pair = await generateSigningKeyPair();
  const relay = await startRelay({
    http: { host: HOST, port: 0 },
    tunnel: { host: HOST, port: 0 },
    tls: { host: HOST, port: 0 },
    verifyKeys: [await loadVerifyKey(pair.publicPem)],
    certFiles: { pairs: [{ cert: certFile, key: keyFile }] },
    httpsRedirect: false,
    logger,
  });
  const token = await createAgentToken(await loadSigningKey(pair.privatePem), {
    sub: 'bench',
    hosts: [NAME, PASS],
    ttl: 3_600_000,
  });
  const agent = startAgent({
    relayUrl: `ws://${HOST}:${relay.tunnelAddress.port}`,
    token,
    logger,
    routes: [
      { id: 'http', hostnames: [NAME], target: `http://${HOST}:${http.address().port}` },
      { id: 'pass', hostnames: [PASS], target: `tls-passthrough://${HOST}:${https.address().port}` },
    ],
  });
  await agent.ready();
  process.send({
    type: 'ready',
    http: relay.httpAddress.port,
    tls: relay.tlsAddress.port,
    httpsBackend: https.address().port,
  });
  process.on('disconnect', async () => {
    await agent.close();
    await relay.close();
    http.close();
    https.close();
    process.exit(0);
  });
}

function h2load(args, timeoutSec) {
  return new Promise((resolve) => {
    execFile('h2load', args, { timeout: timeoutSec * 1000 }, (err, stdout) => {
      const r = parseH2load(String(stdout));
      resolve({
        rps: Number.isFinite(r?.rps) ? Math.round(r.rps) : NaN,
        ok: r?.succeeded ?? 0,
        failed: r?.failed ?? 0,
        mean: r?.mean ?? '?',
        error: err && !r ? err.message.split('\n')[0] : undefined,
      });
    });
  });
}

async function main() {
  for (const tool of ['h2load', 'openssl']) {
    if (spawnSync(tool, ['--version']).error) {
      console.error(`bench/tls.mjs needs ${tool} (Debian: nghttp2-client, openssl)`);
      process.exit(1);
    }
  }
  timeLimit(envInt('BENCH_TIMEOUT', 900, 1), 'bench/tls.mjs');
  const n = String(envInt('BENCH_REQUESTS', 20_000, 1));
  const c = String(envInt('BENCH_CLIENTS', 16, 1));
  const m = String(envInt('BENCH_STREAMS', 10, 1));
  const handshakes = String(envInt('BENCH_HANDSHAKES', 2000, 1));
  const limit = envInt('BENCH_RUN_TIMEOUT', 120, 1);
  const dir = mkdtempSync(join(tmpdir(), 'burrow-bench-tls-'));
  const cert = join(dir, 'cert.pem');
  const key = join(dir, 'key.pem');
  const made = spawnSync('openssl', [
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:P-256',
    '-nodes',
    '-days',
    '1',
    '-keyout',
    key,
    '-out',
    cert,
    '-subj',
    `/CN=${NAME}`,
    '-addext',
    `subjectAltName=DNS:${NAME},DNS:${PASS}`,
  ]);
  if (made.status !== 0) {
    console.error(`bench/tls.mjs: openssl could not make the test certificate:\n${made.stderr}`);
    process.exit(1);
  }
  const child = fork(fileURLToPath(import.meta.url), ['stack'], {
    env: { ...process.env, BENCH_CERT: cert, BENCH_KEY: key },
  });
  // 'exit' before 'message': the stack failed to start (it printed why); once() rejects on neither.
  const early = (code) => {
    console.error(`bench/tls.mjs: the stack process exited (${code}) before it was ready`);
    process.exit(1);
  };
  child.once('exit', early);
  const [ready] = await once(child, 'message');
  child.off('exit', early);
  const at = (port) => `--connect-to=${HOST}:${port}`;
  const runs = [
    [
      'HTTP/1.1, plain, through the relay',
      ['--h1', '-n', n, '-c', c, `http://${NAME}:${ready.http}/`, at(ready.http)],
    ],
    [
      'HTTP/1.1, TLS terminated at the relay',
      ['--h1', '-n', n, '-c', c, `https://${NAME}:${ready.tls}/`, at(ready.tls)],
    ],
    [
      `h2 (${m} streams/conn), TLS terminated`,
      ['-n', n, '-c', c, '-m', m, `https://${NAME}:${ready.tls}/`, at(ready.tls)],
    ],
    ['HTTP/1.1, TLS passthrough', ['--h1', '-n', n, '-c', c, `https://${PASS}:${ready.tls}/`, at(ready.tls)]],
    ['HTTP/1.1, TLS, backend direct', ['--h1', '-n', n, '-c', c, `https://${HOST}:${ready.httpsBackend}/`]],
    [
      'new TLS connection per request, terminated',
      [
        '--h1',
        '-n',
        handshakes,
        '-c',
        c,
        '-H',
        'connection: close',
        `https://${NAME}:${ready.tls}/`,
        at(ready.tls),
      ],
    ],
  ];
  console.log(`requests per run ${n}, ${c} connections; one run each, same process tree`);
  console.log('| path | req/s | mean latency | failed |');
  console.log('|---|---:|---:|---:|');
  let failures = 0;
  for (const [label, args] of runs) {
    const r = await h2load(args, limit);
    if (r.error || r.failed > 0 || r.ok === 0) failures++;
    console.log(`| ${label} | ${r.rps} | ${r.mean} | ${r.failed}${r.error ? ` (${r.error})` : ''} |`);
  }
  child.disconnect();
  await once(child, 'exit');
  rmSync(dir, { recursive: true, force: true });
  process.exit(failures ? 1 : 0);
}
