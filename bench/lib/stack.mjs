// The system under test, run in child processes forked by bench/lib/stack-control.mjs
// so the load generator never shares an event loop with what it measures.
// One child may hold any of three roles, each started by an IPC message from
// the parent: `backend` (a minimal node:http server that also accepts
// WebSocket upgrades), `relay`, `agent` (exposing the backend through the
// relay). The parent decides which roles live together (its topology).
//
// Messages from the parent:
//   { type: 'start', role: 'backend', host?, port? }
//                                      → { backendPort, tcpBackendPort, h2cBackendPort }
//                        (127.0.0.1 and a free port unless given; started alone,
//                        without relay and agent, by startBackend in stack-control.mjs;
//                        tcpBackendPort: the raw TCP backend, see startTcpBackend;
//                        h2cBackendPort: the HTTP/2 one, see startH2cBackend)
//   { type: 'start', role: 'relay', verifyPem, httpPort?, tunnelPort?, tcpPort?, session? }
//                                                            → { relayHttpPort, relayTunnelPort }
//                        (tcpPort: a public TCP port the relay offers, --tcp-ports)
//   { type: 'start', role: 'agent', relayTunnelPort, token, hostname, backendUrl, tcpPort?,
//     tcpBackendUrl?, connections?, session? }              → { connections }
//                        (tcpPort with tcpBackendUrl: a tcp:// route on that public port)
//   { type: 'announce', id, hostname }  adds a route for `hostname` to the agent's set
//                      → { type: 'announced', id, at, acked }: monotonic ns when the set changed and
//                        when the relay accepted the name (process.hrtime.bigint(), one clock system-wide)
//   { type: 'usage', id, gc?, snapshot? }  → { type: 'usage', id, cpu, io, frames, memory, sockets }: CPU time,
//                        read/write system calls, multiplexer frames sent by relay and agent so far,
//                        process.memoryUsage() (after a full collection when `gc` and --expose-gc),
//                        open backend WebSockets; with `snapshot` (a path prefix) it first writes a
//                        V8 heap snapshot to PREFIX-ROLES.heapsnapshot
// Disconnecting the IPC channel stops every role and exits 0, which is also
// when `--cpu-prof` writes its profile.
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { createServer as createH2cServer } from 'node:http2';
import { createServer as createTcpServer } from 'node:net';
import { writeHeapSnapshot } from 'node:v8';
import { createLogger, loadVerifyKey } from '@burrow/shared';
import { WebSocketServer } from 'ws';

const HOST = '127.0.0.1';
// The agent's default number of tunnel connections.
const CONNECTIONS = 2;
const SMALL_BODY = Buffer.from('hello');
// /bulk bodies are slices of one preallocated buffer, written in 64 KiB pieces
// with backpressure, so the backend costs as little CPU per byte as Node allows.
const BULK_CHUNK = Buffer.alloc(64 * 1024);
for (let i = 0; i < BULK_CHUNK.length; i++) BULK_CHUNK[i] = (i * 131 + 7) & 0xff;

let relayRef;
let agentRef;
let routeSource;
let sockets;
const logger = createLogger({ name: 'burrow-bench', level: process.env.BURROW_LOG_LEVEL ?? 'silent' });
const closers = [];

function startBackend(msg) {
  const server = createServer({ keepAliveTimeout: 60_000 }, (req, res) => {
    const url = req.url ?? '/';
    if (url === '/') {
      req.resume();
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': SMALL_BODY.length });
      res.end(SMALL_BODY);
      return;
    }
    if (url.startsWith('/bulk?')) {
      const size = Number(new URLSearchParams(url.slice(6)).get('size'));
      if (!Number.isSafeInteger(size) || size < 0) {
        res.writeHead(400, { 'content-length': 0 });
        res.end();
        return;
      }
      req.resume();
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': size });
      writeBulk(res, size);
      return;
    }
    if (url === '/upload' && req.method === 'POST') {
      // Counts the body and answers with the count, so the client checks every byte arrived.
      let n = 0;
      req.on('data', (chunk) => {
        n += chunk.length;
      });
      req.on('end', () => {
        const body = String(n);
        res.writeHead(200, { 'content-type': 'text/plain', 'content-length': body.length });
        res.end(body);
      });
      return;
    }
    req.resume();
    res.writeHead(404, { 'content-length': 0 });
    res.end();
  });
  // Idle WebSockets (bench/idle-websockets.mjs): accept, echo, count.
  const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false });
  sockets = wss.clients;
  server.on('upgrade', (req, socket, head) => {
    socket.on('error', () => {});
    wss.handleUpgrade(req, socket, head, (ws) => {
      ws.on('message', (data) => ws.send(data));
      ws.on('error', () => {});
    });
  });
  server.listen(msg.port ?? 0, msg.host ?? HOST);
  closers.push(
    () =>
      new Promise((resolve) => {
        for (const ws of wss.clients) ws.terminate();
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  );
  const tcp = startTcpBackend(msg.host ?? HOST);
  const h2c = startH2cBackend(msg.host ?? HOST);
  return Promise.all([once(server, 'listening'), tcp.listening, once(h2c, 'listening')]).then(() => ({
    backendPort: server.address().port,
    tcpBackendPort: tcp.server.address().port,
    h2cBackendPort: h2c.address().port,
  }));
}

/**
 * The HTTP/2 backend without TLS (bench/grpc.mjs), shaped like a gRPC server
 * at its least: every request's body comes back as the response body, with
 * `grpc-status: 0` in the trailers. No protobuf, no gRPC library: the
 * backend's own cost stays small next to what the paths add.
 */
function startH2cBackend(host) {
  const server = createH2cServer({ settings: { maxConcurrentStreams: 1000 } });
  server.on('stream', (stream) => {
    stream.on('error', () => {});
    const chunks = [];
    stream.on('data', (c) => chunks.push(c));
    stream.on('end', () => {
      // A stream the client reset also ends here (node:http2 reports the reset a turn later).
      if (stream.destroyed || stream.closed) return;
      stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
      stream.once('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
      stream.end(Buffer.concat(chunks));
    });
  });
  const sessions = new Set();
  server.on('session', (s) => {
    sessions.add(s);
    s.on('close', () => sessions.delete(s));
  });
  server.listen(0, host);
  closers.push(
    () =>
      new Promise((resolve) => {
        server.close(() => resolve());
        for (const s of sessions) s.destroy();
      }),
  );
  return server;
}

/**
 * The raw TCP backend (bench/tcp.mjs): the first line of a connection says
 * what it wants. `D N`: N bytes come back, then the end. `U`: everything after
 * the line until the client's FIN is counted, and the count comes back, then
 * the end. `E`: every byte after the line is echoed.
 */
function startTcpBackend(host) {
  const server = createTcpServer({ allowHalfOpen: true }, (socket) => {
    socket.on('error', () => {});
    let head = Buffer.alloc(0);
    const onHead = (chunk) => {
      head = Buffer.concat([head, chunk]);
      const nl = head.indexOf(10);
      if (nl === -1) return;
      socket.off('data', onHead);
      const [mode, size] = head.subarray(0, nl).toString('latin1').split(' ');
      const rest = head.subarray(nl + 1);
      if (mode === 'D') writeBulk(socket, Number(size));
      else if (mode === 'U') {
        let n = rest.length;
        socket.on('data', (c) => {
          n += c.length;
        });
        socket.on('end', () => socket.end(String(n)));
      } else if (mode === 'E') {
        if (rest.length) socket.write(rest);
        socket.pipe(socket);
      } else socket.destroy();
    };
    socket.on('data', onHead);
  });
  const connections = new Set();
  server.on('connection', (c) => {
    connections.add(c);
    c.on('close', () => connections.delete(c));
  });
  server.listen(0, host);
  closers.push(
    () =>
      new Promise((resolve) => {
        server.close(() => resolve());
        for (const c of connections) c.destroy();
      }),
  );
  return { server, listening: once(server, 'listening') };
}

function writeBulk(res, size) {
  let left = size;
  const pump = () => {
    while (left > 0) {
      const n = Math.min(left, BULK_CHUNK.length);
      left -= n;
      const ok = res.write(n === BULK_CHUNK.length ? BULK_CHUNK : BULK_CHUNK.subarray(0, n));
      if (!ok) {
        res.once('drain', pump);
        return;
      }
    }
    res.end();
  };
  res.on('close', () => {
    left = 0;
  });
  pump();
}

// Each role imports its package when it starts, as its own CLI would: a relay
// process does not load the agent (and its Kubernetes client), so a relay
// restart here costs what a real one does.
async function startRelayRole(msg) {
  const { startRelay } = await import('@burrow/relay');
  const relay = await startRelay({
    http: { host: HOST, port: msg.httpPort ?? 0 },
    tunnel: { host: HOST, port: msg.tunnelPort ?? 0 },
    verifyKeys: [await loadVerifyKey(msg.verifyPem)],
    logger: logger.child({ component: 'relay' }),
    drainTimeout: 2_000,
    ...(msg.tcpPort ? { tcp: { host: HOST, ports: [msg.tcpPort] } } : {}),
    ...(msg.session ? { session: msg.session } : {}),
  });
  relayRef = relay;
  closers.push(() => relay.close());
  return { relayHttpPort: relay.httpAddress.port, relayTunnelPort: relay.tunnelAddress.port };
}

async function startAgentRole(msg) {
  const { StaticRouteSource, startAgent } = await import('@burrow/agent');
  const connections = msg.connections ?? CONNECTIONS;
  routeSource = new StaticRouteSource([
    { id: 'bench', hostnames: [msg.hostname], target: msg.backendUrl },
    ...(msg.tcpPort
      ? [{ id: 'bench-tcp', hostnames: [], ports: [msg.tcpPort], target: msg.tcpBackendUrl }]
      : []),
  ]);
  const agent = startAgent({
    relayUrl: `ws://${HOST}:${msg.relayTunnelPort}`,
    token: msg.token,
    routes: routeSource,
    connections,
    logger: logger.child({ component: 'agent' }),
    ...(msg.session ? { session: msg.session } : {}),
  });
  agentRef = agent;
  // Closed before the relay (closers run in reverse), as an operator would.
  closers.push(() => agent.close());
  await agent.ready();
  // ready() means one connection is up; measure with all of them (bounded wait).
  const deadline = Date.now() + 10_000;
  while (agent.connectionCount < connections && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return { connections: agent.connectionCount };
}

/**
 * Adds a route for `hostname` (same backend) and reports when the set changed
 * and when a relay answered that the name is active (bounded: 30 s).
 */
function announce(msg) {
  const target = routeSource.routes()[0].target;
  const acked = new Promise((resolve) => {
    const limit = setTimeout(() => {
      agentRef.off('routes', onRoutes);
      resolve(null);
    }, 30_000);
    const onRoutes = (results) => {
      if (results.some((r) => r.hostname === msg.hostname && r.status === 'active')) {
        clearTimeout(limit);
        agentRef.off('routes', onRoutes);
        resolve(process.hrtime.bigint().toString());
      }
    };
    agentRef.on('routes', onRoutes);
  });
  const at = process.hrtime.bigint().toString();
  routeSource.update([...routeSource.routes(), { id: msg.hostname, hostnames: [msg.hostname], target }]);
  return acked.then((ackedAt) => ({ at, acked: ackedAt }));
}

/** Read and write system calls so far (Linux /proc; zeros elsewhere): socket writes per request. */
function syscalls() {
  try {
    const text = readFileSync('/proc/self/io', 'utf8');
    const field = (name) => Number(new RegExp(`^${name}: (\\d+)$`, 'm').exec(text)?.[1] ?? 0);
    return { reads: field('syscr'), writes: field('syscw') };
  } catch {
    return { reads: 0, writes: 0 };
  }
}

/** Multiplexer frames each side has sent so far, over all its tunnel connections. */
function frames() {
  const sum = (sessions) => {
    let out = 0;
    for (const s of sessions) out += s.stats.framesOut;
    return out;
  };
  return {
    relay: relayRef ? sum([...relayRef.connections].map((c) => c.session)) : 0,
    agent: agentRef ? sum(agentRef.sessions()) : 0,
  };
}

/** The roles this process holds, in the order they were started. */
const started = new Set();
const starters = { backend: startBackend, relay: startRelayRole, agent: startAgentRole };

process.on('message', (msg) => {
  if (msg.type === 'start') {
    started.add(msg.role);
    starters[msg.role](msg).then(
      (info) => process.send({ type: 'started', role: msg.role, ...info }),
      (err) => {
        console.error(`bench stack: starting ${msg.role} failed:`, err);
        process.exit(1);
      },
    );
  } else if (msg.type === 'announce') {
    announce(msg).then((r) => process.send({ type: 'announced', id: msg.id, ...r }));
  } else if (msg.type === 'usage') {
    // A full collection first, so heap figures count live objects, not garbage.
    if (msg.gc && typeof globalThis.gc === 'function') globalThis.gc();
    if (msg.snapshot) writeHeapSnapshot(`${msg.snapshot}-${[...started].join('+')}.heapsnapshot`);
    process.send({
      type: 'usage',
      id: msg.id,
      cpu: process.cpuUsage(),
      io: syscalls(),
      frames: frames(),
      memory: process.memoryUsage(),
      sockets: sockets?.size ?? 0,
    });
  }
});

let stopping = false;
process.on('disconnect', async () => {
  if (stopping) return;
  stopping = true;
  const limit = setTimeout(() => process.exit(0), 5_000);
  limit.unref();
  for (const close of closers.reverse()) await close().catch(() => {});
  process.exit(0);
});
process.send({ type: 'ready' });
