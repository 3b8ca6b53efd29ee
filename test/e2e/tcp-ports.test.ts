import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { connect, type Socket } from 'node:net';
import { type Agent, StaticRouteSource } from '@burrow/agent';
import { buildAdminApp } from '@burrow/relay';
import t from 'tap';
import { memoryLogger } from '../../packages/agent/test/helpers/log.js';
import { testAgent } from '../helpers/agent.js';
import { until } from '../helpers/deferred.js';
import { metricValue } from '../helpers/metrics.js';
import { freePort, tcpBackend } from '../helpers/net.js';
import { type Teardownable, testRelay, tokenFor, tunnelUrl } from '../helpers/relay.js';
import { RogueAgent } from '../helpers/rogue-agent.js';

const ADMIN_TOKEN = 'admin-token-0123456789abcdef';

/**
 * A backend that echoes each chunk until the client half-closes, then writes
 * how many bytes it got and their sha256, and ends its side.
 */
function summingEcho(t: Teardownable, seen: { connections: number } = { connections: 0 }): Promise<number> {
  return tcpBackend(t, (s) => {
    seen.connections++;
    const hash = createHash('sha256');
    let n = 0;
    s.on('data', (chunk: Buffer) => {
      n += chunk.length;
      hash.update(chunk);
      if (n <= 64) s.write(chunk); // the greeting is echoed; the bulk is only counted
    });
    s.on('end', () => s.end(`${n} ${hash.digest('hex')}`));
  });
}

/** Connects to a relay port; resolves with the connected socket. */
async function dial(port: number): Promise<Socket> {
  const s = connect(port, '127.0.0.1');
  s.on('error', () => {});
  await once(s, 'connect');
  return s;
}

/** Everything a socket reads until it closes, and whether it ended cleanly (FIN) or by reset. */
async function readAll(s: Socket): Promise<{ data: Buffer; error: string | undefined }> {
  const chunks: Buffer[] = [];
  let error: string | undefined;
  s.on('data', (c: Buffer) => chunks.push(c));
  s.on('error', (err: NodeJS.ErrnoException) => {
    error = err.code ?? err.message;
  });
  await once(s, 'close');
  return { data: Buffer.concat(chunks), error };
}

/** Resolves once the agent's latest answer for `port` has `status`. */
async function portState(agent: Agent, port: number, status: 'active' | 'refused') {
  const now = () => agent.portStatus().find((r) => r.port === port && r.status === status);
  while (!now()) await once(agent, 'routes');
  return now()!;
}

t.test('a public TCP port carries bytes both ways, byte-exact, with half-close', async (t) => {
  const port = await freePort();
  const backend = await summingEcho(t);
  const relay = await testRelay(t, {
    tcp: { host: '127.0.0.1', ports: [port], publicHost: 'relay.example.test' },
  });
  const agent = await testAgent(t, relay, [
    { id: 'db', hostnames: [], ports: [port], target: `tcp://127.0.0.1:${backend}` },
  ]);
  const result = await portState(agent, port, 'active');
  t.equal(result.url, `tcp://relay.example.test:${port}`, 'the agent learns where the port is reachable');
  const admin = buildAdminApp({ state: relay.adminState, token: () => ADMIN_TOKEN });
  t.teardown(() => admin.close());
  const ports = async () =>
    (await admin.inject({ url: '/api/ports', headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })).json();
  // The second connection's announcement may still be on its way (or waiting its turn at the relay).
  await until(async () => (await ports())[0]?.connections?.length === 2, 'both connections listed');
  t.match(
    await ports(),
    [{ port, subject: 'tenant-a', routeIds: ['db'], connections: [Number, Number] }],
    "the admin API lists the port under its subject, with the agent's two connections",
  );

  const s = await dial(port);
  const reply = readAll(s);
  s.write('hello');
  const [greeting] = (await once(s, 'data')) as [Buffer];
  t.equal(greeting.toString(), 'hello', 'an interactive exchange: the greeting comes back at once');
  const bulk = randomBytes(8 * 1024 * 1024 + 7);
  s.end(bulk);
  const { data, error } = await reply;
  t.equal(error, undefined, 'the connection ends cleanly');
  const expected = Buffer.concat([Buffer.from('hello'), bulk]);
  t.equal(
    data.toString(),
    `hello${expected.length} ${createHash('sha256').update(expected).digest('hex')}`,
    'the backend got every byte after the client half-closed, and its answer came back whole',
  );
});

t.test('ports are refused with the reason: not on the relay, not in the token, taken', async (t) => {
  const [offered, unlisted, notOffered] = [await freePort(), await freePort(), await freePort()];
  const backend = await summingEcho(t);
  const relay = await testRelay(t, { tcp: { host: '127.0.0.1', ports: [offered, unlisted] } });
  const target = `tcp://127.0.0.1:${backend}`;
  const agent = await testAgent(
    t,
    relay,
    [
      { id: 'one', hostnames: [], ports: [offered], target },
      { id: 'two', hostnames: [], ports: [unlisted], target },
      { id: 'three', hostnames: [], ports: [notOffered], target },
    ],
    { ports: [offered, notOffered] },
  );
  t.equal(
    (await portState(agent, offered, 'active')).url,
    `tcp://127.0.0.1:${offered}`,
    "without the relay's public name, the URL names the host the agent dials",
  );
  t.match((await portState(agent, unlisted, 'refused')).error, /not allowed by this agent's token/);
  t.match(
    (await portState(agent, notOffered, 'refused')).error,
    new RegExp(`port ${notOffered} is not one of the relay's TCP ports \\(--tcp-ports: `),
  );

  const other = await testAgent(t, relay, [{ id: 'mine', hostnames: [], ports: [offered], target }], {
    sub: 'tenant-b',
    connections: 1,
  });
  t.match((await portState(other, offered, 'refused')).error, /already served by another agent/);
  const s = await dial(offered);
  const reply = readAll(s);
  s.end('still mine');
  t.match((await reply).data.toString(), /^still mine10 /, 'the first tenant keeps serving the port');
});

t.test('a relay without TCP ports refuses announced ports and keeps the tunnel', async (t) => {
  const relay = await testRelay(t);
  const agent = await testAgent(t, relay, [
    { id: 'web', hostnames: ['web.example.test'], target: 'http://127.0.0.1:9' },
    { id: 'db', hostnames: [], ports: [15432], target: 'tcp://127.0.0.1:9' },
  ]);
  t.match((await portState(agent, 15432, 'refused')).error, /--tcp-ports: none/);
  t.equal(agent.routeStatus()[0]?.status, 'active', 'the hostname route is served all the same');
  t.equal(agent.connectionCount, 2, 'both tunnel connections stay up');
});

t.test('a client outside the allowlist is closed before anything reaches the agent', async (t) => {
  const port = await freePort();
  const seen = { connections: 0 };
  const backend = await summingEcho(t, seen);
  const log = memoryLogger('info', 'relay');
  const relay = await testRelay(t, { tcp: { host: '127.0.0.1', ports: [port] }, logger: log.logger });
  await testAgent(t, relay, [
    {
      id: 'fenced',
      hostnames: [],
      ports: [port],
      target: `tcp://127.0.0.1:${backend}`,
      allowCidrs: ['203.0.113.0/24'],
    },
  ]);
  const s = await dial(port);
  const reply = readAll(s);
  s.write('let me in');
  t.equal((await reply).data.length, 0, 'nothing comes back');
  const line = await log.waitFor((l) => l.msg === 'tcp connection refused');
  t.match(line, { port, client: '127.0.0.1', reason: /allowlist/ });
  t.equal(seen.connections, 0, 'the backend never saw a connection');
});

t.test('withdrawn, then announced again; an agent that leaves keeps its port reserved', async (t) => {
  const port = await freePort();
  const backend = await summingEcho(t);
  const log = memoryLogger('info', 'relay');
  const relay = await testRelay(t, { tcp: { host: '127.0.0.1', ports: [port] }, logger: log.logger });
  const route = { id: 'db', hostnames: [], ports: [port], target: `tcp://127.0.0.1:${backend}` };
  const source = new StaticRouteSource([route]);
  const agent = await testAgent(t, relay, source, { hosts: [], ports: [port] });
  await portState(agent, port, 'active');

  source.update([]);
  while (relay.ports.list().length > 0) await once(agent, 'routes');
  let s = await dial(port);
  t.equal((await readAll(s)).data.length, 0, 'a withdrawn port closes new connections');
  t.match(await log.waitFor((l) => l.reason === 'no agent serves this port'), { port });

  source.update([route]);
  await portState(agent, port, 'active');
  s = await dial(port);
  let reply = readAll(s);
  s.end('back');
  t.match((await reply).data.toString(), /^back4 /, 'served again once announced again');

  await agent.close();
  const other = await testAgent(t, relay, [{ ...route, id: 'grab' }], { sub: 'tenant-b', connections: 1 });
  t.match(
    (await portState(other, port, 'refused')).error,
    /belongs to another agent that is reconnecting/,
    "another tenant cannot take the port while its agent's reservation lasts",
  );
  s = await dial(port);
  reply = readAll(s);
  t.equal((await reply).data.length, 0, 'meanwhile connections are closed');
  t.match(await log.waitFor((l) => l.reason === 'the agent serving this port is not connected'), { port });
});

t.test('the TCP ports share one connection limit: over it, connections are closed and counted', async (t) => {
  const [first, second] = [await freePort(), await freePort()];
  const backend = await summingEcho(t);
  const log = memoryLogger('warn', 'relay');
  const relay = await testRelay(t, {
    tcp: { host: '127.0.0.1', ports: [first, second] },
    maxConnections: 1,
    logger: log.logger,
  });
  const target = `tcp://127.0.0.1:${backend}`;
  await testAgent(t, relay, [{ id: 'db', hostnames: [], ports: [first, second], target }]);
  const held = await dial(first);
  held.write('hi');
  await once(held, 'data'); // through the tunnel and back: the relay holds it
  const over = await dial(second);
  t.equal((await readAll(over)).data.length, 0, 'a connection over the limit, on the other port, is closed');
  const warned = await log.waitFor((l) => l.msg?.startsWith('connection limit reached') === true);
  t.match(warned, { listener: 'tcp', maxConnections: 1 });
  t.equal(
    metricValue(await relay.metrics.registry.metrics(), 'burrow_relay_connections_dropped_total', {
      listener: 'tcp',
    }),
    1,
  );
  const reply = readAll(held);
  held.end();
  t.match((await reply).data.toString(), /^2 [0-9a-f]{64}$/, 'the held connection is served to its end');
});

t.test('a port announced twice is refused once; the rest of the announcement stands', async (t) => {
  const port = await freePort();
  const relay = await testRelay(t, { tcp: { host: '127.0.0.1', ports: [port] } });
  const rogue = await RogueAgent.connect(
    t,
    tunnelUrl(relay),
    await tokenFor('twice', ['web.twice.test'], undefined, [port]),
  );
  const result = await rogue.announce(
    [{ id: 'web', hostnames: ['web.twice.test'] }],
    [
      { id: 'first', port },
      { id: 'second', port },
    ],
  );
  t.match(result.routes, [{ status: 'active' }], 'the hostname route is served');
  t.match(result.ports, [
    { id: 'first', port, status: 'active' },
    { id: 'second', port, status: 'refused', error: `port ${port} is announced twice` },
  ]);
  t.ok(await rogue.alive(), 'the tunnel stays up');
});
