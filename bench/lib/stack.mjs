// The system under test for bench/http.mjs, run in a child process forked by
// it so the load generator never shares an event loop with what it measures.
// One child may hold any of three roles, each started by an IPC message from
// the parent, in this order: `backend` (a minimal node:http server), `relay`,
// `agent` (exposing the backend through the relay). The parent decides which
// roles live together (BENCH_TOPOLOGY in bench/http.mjs).
//
// Messages from the parent:
//   { type: 'start', role: 'backend' }
//   { type: 'start', role: 'relay', verifyPem }
//   { type: 'start', role: 'agent', relayTunnelPort, token, hostname, backendUrl }
//   { type: 'usage', id }   → { type: 'usage', id, cpu, io, frames }: CPU time, read/write system
//                              calls and multiplexer frames sent by relay and agent so far
// Disconnecting the IPC channel stops every role and exits 0, which is also
// when `--cpu-prof` writes its profile.
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { startAgent } from '@burrow/agent';
import { startRelay } from '@burrow/relay';
import { createLogger, loadVerifyKey } from '@burrow/shared';

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
const logger = createLogger({ name: 'burrow-bench', level: process.env.BURROW_LOG_LEVEL ?? 'silent' });
const closers = [];

function startBackend() {
  const server = createServer({ keepAliveTimeout: 60_000 }, (req, res) => {
    const url = req.url ?? '/';
    if (url === '/') {
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
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': size });
      writeBulk(res, size);
      return;
    }
    res.writeHead(404, { 'content-length': 0 });
    res.end();
  });
  server.listen(0, HOST);
  closers.push(
    () =>
      new Promise((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  );
  return once(server, 'listening').then(() => ({ backendPort: server.address().port }));
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

async function startRelayRole(msg) {
  const relay = await startRelay({
    http: { host: HOST, port: 0 },
    tunnel: { host: HOST, port: 0 },
    verifyKeys: [await loadVerifyKey(msg.verifyPem)],
    logger: logger.child({ component: 'relay' }),
    drainTimeout: 2_000,
  });
  relayRef = relay;
  closers.push(() => relay.close());
  return { relayHttpPort: relay.httpAddress.port, relayTunnelPort: relay.tunnelAddress.port };
}

async function startAgentRole(msg) {
  const agent = startAgent({
    relayUrl: `ws://${HOST}:${msg.relayTunnelPort}`,
    token: msg.token,
    routes: [{ id: 'bench', hostnames: [msg.hostname], target: msg.backendUrl }],
    connections: CONNECTIONS,
    logger: logger.child({ component: 'agent' }),
  });
  agentRef = agent;
  // Closed before the relay (closers run in reverse), as an operator would.
  closers.push(() => agent.close());
  await agent.ready();
  // ready() means one connection is up; measure with all of them (bounded wait).
  const deadline = Date.now() + 10_000;
  while (agent.connectionCount < CONNECTIONS && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return { connections: agent.connectionCount };
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

const starters = { backend: startBackend, relay: startRelayRole, agent: startAgentRole };

process.on('message', (msg) => {
  if (msg.type === 'start') {
    starters[msg.role](msg).then(
      (info) => process.send({ type: 'started', role: msg.role, ...info }),
      (err) => {
        console.error(`bench stack: starting ${msg.role} failed:`, err);
        process.exit(1);
      },
    );
  } else if (msg.type === 'usage') {
    process.send({
      type: 'usage',
      id: msg.id,
      cpu: process.cpuUsage(),
      io: syscalls(),
      frames: frames(),
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
