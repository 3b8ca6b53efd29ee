#!/usr/bin/env node
// Burrow demo: a relay, an agent and a sample app, all on loopback, in one
// process. The app shows the request headers it received, so the tunnel and
// the forwarding headers the relay adds are visible. A line-echo service is
// exposed on a public TCP port of the relay too. Runs until Ctrl-C.
//
//   npm run demo                   (relay HTTP on 127.0.0.1:8080, or a free port)
//   BURROW_DEMO_PORT=9000 npm run demo
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createServer, request } from 'node:http';
import { connect, createServer as createTcpServer } from 'node:net';
import { startAgent } from '@burrow/agent';
import { startRelay } from '@burrow/relay';
import {
  createAgentToken,
  createLogger,
  generateSigningKeyPair,
  loadSigningKey,
  loadVerifyKey,
} from '@burrow/shared';

const HOSTNAME = 'hello.localhost';
const logger = createLogger({ name: 'burrow-demo', level: process.env.BURROW_LOG_LEVEL ?? 'warn' });

function html(s) {
  return String(s).replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]);
}

// 1. The sample app: a plain HTTP server on an ephemeral loopback port.
const app = createServer((req, res) => {
  const rows = [];
  for (let i = 0; i < req.rawHeaders.length; i += 2) {
    rows.push(`<tr><th>${html(req.rawHeaders[i])}</th><td>${html(req.rawHeaders[i + 1])}</td></tr>`);
  }
  if ((req.headers.accept ?? '').includes('application/json')) {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ method: req.method, url: req.url, headers: req.headers }));
    return;
  }
  res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
  res.end(`<!doctype html><meta charset="utf-8"><title>Hello through Burrow</title>
<style>body{font:15px system-ui,sans-serif;margin:2rem auto;max-width:52rem}th{text-align:left;padding-right:1rem;vertical-align:top}td{font-family:ui-monospace,monospace;word-break:break-all}</style>
<h1>Hello through Burrow</h1>
<p>This page is served by a sample app on <code>${html(appUrl)}</code>, reached through the relay and an agent's outbound tunnel.
The <code>X-Forwarded-*</code> and <code>Forwarded</code> headers were added by the relay.</p>
<p><b>${html(req.method)} ${html(req.url)}</b></p><table>${rows.join('')}</table>`);
});
app.listen(0, '127.0.0.1');
await once(app, 'listening');
const appUrl = `http://127.0.0.1:${app.address().port}`;

// A TCP service (not HTTP): answers each line with it in capitals.
const echo = createTcpServer((socket) => {
  socket.on('error', () => {});
  socket.setEncoding('utf8');
  socket.on('data', (text) => socket.write(text.toUpperCase()));
});
echo.listen(0, '127.0.0.1');
await once(echo, 'listening');
const echoTarget = `tcp://127.0.0.1:${echo.address().port}`;

/** A loopback port that was free a moment ago, for the relay's public TCP port. */
async function freePort() {
  const probe = createTcpServer().listen(0, '127.0.0.1');
  await once(probe, 'listening');
  const { port } = probe.address();
  await new Promise((resolve) => probe.close(resolve));
  return port;
}
const tcpPort = await freePort();

// 2. Keys and a token, as `burrow-relay keygen` and `burrow-relay token create` would make them.
const pair = await generateSigningKeyPair();
const token = await createAgentToken(await loadSigningKey(pair.privatePem), {
  sub: 'demo',
  hosts: [HOSTNAME],
  ports: [tcpPort],
  ttl: 86_400_000,
});

// 3. The relay, on the demo port if free.
async function relayOn(port) {
  return startRelay({
    http: { host: '127.0.0.1', port },
    tunnel: { host: '127.0.0.1', port: 0 },
    tcp: { host: '127.0.0.1', ports: [tcpPort] },
    verifyKeys: [await loadVerifyKey(pair.publicPem)],
    logger: logger.child({ component: 'relay' }),
    drainTimeout: 2_000,
    // The dashboard and metrics, on a free loopback port with a token made for this run.
    admin: { host: '127.0.0.1', port: 0 },
    adminToken,
  });
}
const adminToken = randomBytes(24).toString('hex');
const wanted = Number(process.env.BURROW_DEMO_PORT ?? 8080);
let relay;
try {
  relay = await relayOn(wanted);
} catch (err) {
  if (err.code !== 'EADDRINUSE') throw err;
  relay = await relayOn(0);
}
const port = relay.httpAddress.port;

// 4. The agent: dials out to the relay and exposes the app under HOSTNAME.
const agent = startAgent({
  relayUrl: `ws://127.0.0.1:${relay.tunnelAddress.port}`,
  token,
  routes: [
    { id: 'demo', hostnames: [HOSTNAME], target: appUrl },
    { id: 'demo-tcp', hostnames: [], ports: [tcpPort], target: echoTarget },
  ],
  logger: logger.child({ component: 'agent' }),
  // As the relay's: a demo stops in seconds, whatever connection is still open.
  session: { drainTimeout: 2_000 },
});
await agent.ready();

// 5. Prove the path works before telling anyone to open it.
const status = await new Promise((resolve, reject) => {
  const req = request({ host: '127.0.0.1', port, path: '/', headers: { host: HOSTNAME } }, (res) => {
    res.resume();
    res.on('end', () => resolve(res.statusCode));
  });
  req.on('error', reject);
  req.end();
});
if (status !== 200) {
  console.error(
    `demo: the first request through the tunnel answered ${status}; run with BURROW_LOG_LEVEL=info to see why`,
  );
  process.exit(1);
}

// The same for the TCP port: a line goes through and comes back in capitals.
const echoed = await new Promise((resolve, reject) => {
  const socket = connect(tcpPort, '127.0.0.1', () => socket.write('hello\n'));
  socket.setEncoding('utf8');
  socket.once('data', (text) => {
    socket.destroy();
    resolve(text);
  });
  socket.on('error', reject);
});
if (echoed !== 'HELLO\n') {
  console.error(
    `demo: the TCP port answered ${JSON.stringify(echoed)}; run with BURROW_LOG_LEVEL=info to see why`,
  );
  process.exit(1);
}

const url = `http://${HOSTNAME}:${port}/`;
console.log(`
Burrow demo is up: relay, agent and a sample app on loopback.

  Open:      ${url}
  Or:        curl -H 'Host: ${HOSTNAME}' http://127.0.0.1:${port}/

  TCP:       nc 127.0.0.1 ${tcpPort}   (or telnet: a line-echo service on a public TCP port of the relay)

  Dashboard: http://127.0.0.1:${relay.adminAddress.port}/#token=${adminToken}

  relay      http 127.0.0.1:${port}, tcp 127.0.0.1:${tcpPort}, tunnel ws://127.0.0.1:${relay.tunnelAddress.port}/v1/tunnel
  agent      ${agent.connectionCount} tunnel connections, exposing ${HOSTNAME} -> ${appUrl}, port ${tcpPort} -> ${echoTarget}

Press Ctrl-C to stop.`);

let stopping = false;
async function stop() {
  // A second Ctrl-C while a connection (the nc session, say) holds the drain: stop now.
  if (stopping) {
    console.log('stopped without waiting for the drain');
    process.exit(1);
  }
  stopping = true;
  console.log('\nstopping: agent drains, relay drains (Ctrl-C again to stop at once)');
  await agent.close();
  await relay.close();
  app.close();
  echo.close();
  process.exit(0);
}
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
