// Tenants cannot take each other's names; agents come back after a relay
// restart; losing one of an agent's connections does not stop its traffic.
import { once } from 'node:events';
import { type Agent, StaticRouteSource } from '@burrow/agent';
import type { RouteResult } from '@burrow/shared';
import t from 'tap';
import { memoryLogger } from '../../packages/agent/test/helpers/log.js';
import { TAKEN_RETRY } from '../../packages/relay/src/routes/table.js';
import { testAgent } from '../helpers/agent.js';
import { deferred } from '../helpers/deferred.js';
import { get, testServer } from '../helpers/http.js';
import { requestLoop } from '../helpers/load.js';
import { rawRequest } from '../helpers/raw-http.js';
import { testRelay, tokenFor, tunnelUrl } from '../helpers/relay.js';

t.test('a second tenant claiming a taken hostname is refused; the first keeps serving', async (t) => {
  const relay = await testRelay(t);
  const first = await testServer(t, (_req, res) => res.end('first tenant'));
  const second = await testServer(t, (_req, res) => res.end('second tenant'));
  await testAgent(t, relay, [{ id: 'shop', hostnames: ['shop.example.com'], target: first.url }], {
    sub: 'alice',
  });

  const intruder = await testAgent(
    t,
    relay,
    [
      { id: 'shop', hostnames: ['shop.example.com'], target: second.url },
      { id: 'own', hostnames: ['bob.example.com'], target: second.url },
    ],
    { sub: 'bob', hosts: ['*.example.com'] },
  );
  const results = intruder.routeStatus();
  const shop = results.find((r) => r.hostname === 'shop.example.com');
  t.equal(shop?.status, 'refused');
  t.match(shop?.error, /already served by another agent/);
  t.equal(
    results.find((r) => r.hostname === 'bob.example.com')?.status,
    'active',
    'its own names still work',
  );

  for (let i = 0; i < 10; i++) {
    const r = await get(relay.httpAddress.port, 'shop.example.com');
    t.equal(r.body.toString(), 'first tenant');
  }
  t.equal((await get(relay.httpAddress.port, 'bob.example.com')).body.toString(), 'second tenant');
});

t.test('an agent asking again for a name another agent serves: warned once, then at debug', async (t) => {
  const log = memoryLogger('debug', 'relay');
  const relay = await testRelay(t, { logger: log.logger });
  const app = await testServer(t, (_req, res) => res.end('x'));
  await testAgent(t, relay, [{ id: 'shop', hostnames: ['shop.example.com'], target: app.url }], {
    sub: 'alice',
  });
  const routes = [{ id: 'shop', hostnames: ['shop.example.com'], target: app.url }];
  const source = new StaticRouteSource(routes);
  const bob = await testAgent(t, relay, source, { sub: 'bob', hosts: ['*.example.com'], connections: 1 });
  t.match(bob.routeStatus()[0], { status: 'refused', retryAfter: TAKEN_RETRY });
  // As when the retry comes due: the same announcement again.
  const answered = once(bob, 'routes');
  source.update(routes);
  await answered;
  t.same(
    log.lines.filter((l) => /^route refused/.test(String(l['msg']))).map((l) => [l['msg'], l['level']]),
    [
      ['route refused', 40],
      ['route refused again', 20],
    ],
  );
});

t.test('a hostname outside the token is refused with the reason', async (t) => {
  const relay = await testRelay(t);
  const app = await testServer(t, (_req, res) => res.end('x'));
  const agent = await testAgent(t, relay, [{ id: 'x', hostnames: ['evil.example.org'], target: app.url }], {
    hosts: ['*.example.com'],
  });
  const [r] = agent.routeStatus();
  t.equal(r?.status, 'refused');
  t.match(r?.error, /not allowed by this agent's token/);
  t.equal((await get(relay.httpAddress.port, 'evil.example.org')).status, 404);
});

t.test('many refused names in one announcement: a few log lines and a count, not a line each', async (t) => {
  const log = memoryLogger('info', 'relay');
  const relay = await testRelay(t, { logger: log.logger });
  const app = await testServer(t, (_req, res) => res.end('x'));
  const routes = Array.from({ length: 40 }, (_, i) => ({
    id: `r${i}`,
    hostnames: [`a${i}.example.org`, `b${i}.example.org`],
    target: app.url,
  }));
  const agent = await testAgent(t, relay, routes, { hosts: ['*.example.com'] });
  t.equal(
    agent.routeStatus().filter((r) => r.status === 'refused').length,
    80,
    'the agent hears of every name refused',
  );
  // One announcement per tunnel connection of the agent.
  const announced = log.lines.filter((l) => l['msg'] === 'routes announced');
  t.ok(announced.length >= 1);
  for (const line of announced) t.match(line, { active: 0, refused: 80, refusalsNotLogged: 70 });
  t.equal(
    log.lines.filter((l) => l['msg'] === 'route refused').length,
    10 * announced.length,
    'the first 10 of each are logged',
  );
});

t.test('relay restart: the agent reconnects and its routes return', async (t) => {
  const app = await testServer(t, (_req, res) => res.end('still here'));
  let relay = await testRelay(t);
  const ports = { http: relay.httpAddress.port, tunnel: relay.tunnelAddress.port };
  const agent = await testAgent(
    t,
    tunnelUrl(relay),
    [{ id: 'app', hostnames: ['app.example.com'], target: app.url }],
    {
      connections: 2,
    },
  );
  t.equal((await get(ports.http, 'app.example.com')).body.toString(), 'still here');

  const disconnected = once(agent, 'disconnected');
  await relay.close();
  await disconnected;

  relay = await testRelay(t, {
    http: { host: '127.0.0.1', port: ports.http },
    tunnel: { host: '127.0.0.1', port: ports.tunnel },
  });
  // Routes are back once an announce-result arrives from the new relay.
  await once(agent, 'routes');
  const r = await get(ports.http, 'app.example.com');
  t.equal(r.status, 200);
  t.equal(r.body.toString(), 'still here');
});

t.test('one of two agent connections killed: requests keep succeeding', async (t) => {
  const relay = await testRelay(t);
  const app = await testServer(t, (_req, res) => res.end('ok'));
  const agent = await testAgent(t, relay, [{ id: 'app', hostnames: ['app.example.com'], target: app.url }], {
    connections: 2,
  });
  // Both connections announced before we cut one.
  while (relay.routes.list()[0]?.connections.length !== 2) await once(agent, 'routes');
  const [victim] = relay.connections;
  const closed = once(victim!.session, 'close');
  victim!.session.destroy(new Error('cut by test'));
  await closed;
  t.equal(relay.routes.list()[0]?.connections.length, 1, 'the dead connection no longer serves the name');
  for (let i = 0; i < 20; i++) {
    const r = await get(relay.httpAddress.port, 'app.example.com');
    t.equal(r.status, 200);
  }
});

/** Resolves when `agent`'s relay reports `hostname` active, as it will after announcing again. */
function activeLater(agent: Agent, hostname: string): Promise<void> {
  return new Promise((resolve) => {
    const check = (results: RouteResult[]) => {
      if (!results.some((r) => r.hostname === hostname && r.status === 'active')) return;
      agent.off('routes', check);
      resolve();
    };
    agent.on('routes', check);
  });
}

t.test('a name held for an agent that left goes to the one refused it when the hold ends', async (t) => {
  const relay = await testRelay(t, { offlineGrace: 1500 });
  const first = await testServer(t, (_req, res) => res.end('first tenant'));
  const second = await testServer(t, (_req, res) => res.end('second tenant'));
  const alice = await testAgent(
    t,
    relay,
    [{ id: 'shop', hostnames: ['shop.example.com'], target: first.url }],
    {
      sub: 'alice',
    },
  );
  await alice.close();
  const bob = await testAgent(
    t,
    relay,
    [{ id: 'shop', hostnames: ['shop.example.com'], target: second.url }],
    {
      sub: 'bob',
      hosts: ['*.example.com'],
    },
  );
  const active = activeLater(bob, 'shop.example.com');
  const refused = bob.routeStatus().find((r) => r.hostname === 'shop.example.com');
  t.match(refused, { status: 'refused', error: /reconnecting \(held for it until / });
  t.ok(refused?.retryAfter !== undefined && refused.retryAfter <= 2500, 'the refusal says when to ask again');
  // No reconnect, no route change: the agent asks again on its own when the hold ends.
  await active;
  t.equal((await get(relay.httpAddress.port, 'shop.example.com')).body.toString(), 'second tenant');
});

t.test('one agent serving a name in two modes: the second is refused until the first lets go', async (t) => {
  const relay = await testRelay(t, { tls: { host: '127.0.0.1', port: 0 } });
  const app = await testServer(t, (_req, res) => res.end('terminated here'));
  const token = await tokenFor('shop', ['shop.example.com']);
  const http = await testAgent(t, relay, [{ id: 'web', hostnames: ['shop.example.com'], target: app.url }], {
    token,
  });
  // A replica of a new version passes TLS through to the backend instead.
  const passthrough = await testAgent(
    t,
    relay,
    [{ id: 'web', hostnames: ['shop.example.com'], target: `tls-passthrough://127.0.0.1:${app.port}` }],
    { token },
  );
  const active = activeLater(passthrough, 'shop.example.com');
  t.match(
    passthrough.routeStatus().find((r) => r.hostname === 'shop.example.com'),
    {
      status: 'refused',
      error: /is served as http by another connection of this agent; one name has one mode at a time/,
    },
  );
  t.equal(
    (await get(relay.httpAddress.port, 'shop.example.com')).body.toString(),
    'terminated here',
    'the first keeps serving it',
  );
  // The old replica goes; the new one asks again and has the name.
  await http.close();
  await active;
  t.equal(
    passthrough.routeStatus().find((r) => r.hostname === 'shop.example.com')?.status,
    'active',
    'the passthrough replica serves the name once the other is gone',
  );
});

t.test('when an agent leaves, its names answer 503 (agent not connected)', async (t) => {
  const relay = await testRelay(t, { offlineGrace: 60_000 });
  const app = await testServer(t, (_req, res) => res.end('ok'));
  const token = await tokenFor('leaver', ['leave.example.com']);
  const agent = await testAgent(t, relay, [{ id: 'l', hostnames: ['leave.example.com'], target: app.url }], {
    token,
  });
  t.equal((await get(relay.httpAddress.port, 'leave.example.com')).status, 200);
  await agent.close();
  const r = await get(relay.httpAddress.port, 'leave.example.com');
  t.equal(r.status, 503, 'a name whose agent is gone answers 503, not 404');
  t.equal(r.headers['x-burrow-error'], 'agent_offline');
});

t.test('rolling agent replacement under a request loop: zero failed requests', async (t) => {
  const relay = await testRelay(t);
  const app = await testServer(t, (_req, res) => res.end('ok'));
  const routes = [{ id: 'app', hostnames: ['roll.example.com'], target: app.url }];
  const token = await tokenFor('roller', ['roll.example.com']);
  const old = await testAgent(t, relay, routes, { token });
  // Four workers: they stop when the replacement is over, or after 20,000 requests in all.
  const loop = requestLoop(t, relay.httpAddress.port, 'roll.example.com', { workers: 4 });
  await loop.after(50);
  await testAgent(t, relay, routes, { token }); // the new replica
  await loop.after(50);
  const closing = old.close(); // the old one gets SIGTERM: GOAWAY and drain
  await loop.after(50);
  await closing;
  await loop.after(50);
  await loop.stop();
  t.same([...loop.statuses.keys()], [200], `every request succeeded (${loop.summary()})`);
});

t.test('a response sent while the relay drains says Connection: close and ends its connection', async (t) => {
  const inFlight = deferred();
  const held = deferred();
  const app = await testServer(t, (_req, res) => {
    inFlight.resolve();
    held.promise.then(() => res.end('late'));
  });
  const relay = await testRelay(t);
  await testAgent(t, tunnelUrl(relay), [{ id: 'app', hostnames: ['app.example.com'], target: app.url }]);
  // A keep-alive request (HTTP/1.1 default); the reply is read until the relay closes the connection.
  const reply = rawRequest(
    relay.httpAddress.port,
    'GET /slow HTTP/1.1\r\nHost: app.example.com\r\n\r\n',
    15_000,
    true,
  );
  await inFlight.promise;
  const drained = relay.close();
  held.resolve();
  const r = await reply;
  t.equal(r.status, 200, 'the request in flight when the drain began completes');
  t.match(r.text, /\r\nconnection: close\r\n/i, 'its response tells the client not to reuse the connection');
  t.match(r.text, /late$/);
  t.ok(r.closed, 'and the relay closed the connection after it');
  await drained;
});

t.test(
  '16,384 names in one announcement: the relay answers each, and the agent reads the answer',
  async (t) => {
    const relay = await testRelay(t);
    const routes = Array.from({ length: 1024 }, (_, i) => ({
      id: `r${i}`,
      hostnames: Array.from({ length: 16 }, (_, j) => `h${j}-r${i}.many.example.com`),
      target: 'http://127.0.0.1:9',
    }));
    // Ready means every name got its result: the answer (1.4 MiB) is larger than the announcement.
    const agent = await testAgent(t, relay, routes, { hosts: ['*.many.example.com'], connections: 1 });
    const status = agent.routeStatus();
    t.equal(status.length, 16_384);
    t.ok(
      status.every((r) => r.status === 'active'),
      'all active',
    );
    t.equal(agent.connectionCount, 1, 'and the tunnel stays up');
  },
);
