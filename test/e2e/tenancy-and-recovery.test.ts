// Tenants cannot take each other's names; agents come back after a relay
// restart; losing one of an agent's connections does not stop its traffic.
import { EventEmitter, once } from 'node:events';
import t from 'tap';
import { testAgent } from '../helpers/agent.js';
import { get, testServer } from '../helpers/http.js';
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
  const statuses = new Map<number, number>();
  const progress = new EventEmitter();
  let done = 0;
  let stop = false;
  /** Resolves once `n` more requests have completed. */
  const after = (n: number) => {
    const target = done + n;
    return new Promise<void>((resolve) => {
      const check = () => {
        if (done < target) return;
        progress.off('done', check);
        resolve();
      };
      progress.on('done', check);
    });
  };
  // Four bounded loops: they end when the replacement is over, or after 5,000 requests each.
  const worker = async () => {
    for (let i = 0; i < 5_000 && !stop; i++) {
      const r = await get(relay.httpAddress.port, 'roll.example.com');
      statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
      done++;
      progress.emit('done');
    }
  };
  const loops = Promise.all([worker(), worker(), worker(), worker()]);
  await after(50);
  await testAgent(t, relay, routes, { token }); // the new replica
  await after(50);
  const closing = old.close(); // the old one gets SIGTERM: GOAWAY and drain
  await after(50);
  await closing;
  await after(50);
  stop = true;
  await loops;
  t.same(
    [...statuses.keys()],
    [200],
    `every request succeeded (${[...statuses].map(([k, v]) => `${k}: ${v}`).join(', ')})`,
  );
});

t.test('a response sent while the relay drains says Connection: close and ends its connection', async (t) => {
  let arrived!: () => void;
  const inFlight = new Promise<void>((resolve) => {
    arrived = resolve;
  });
  let release!: () => void;
  const held = new Promise<void>((resolve) => {
    release = resolve;
  });
  const app = await testServer(t, (_req, res) => {
    arrived();
    held.then(() => res.end('late'));
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
  await inFlight;
  const drained = relay.close();
  release();
  const r = await reply;
  t.equal(r.status, 200, 'the request in flight when the drain began completes');
  t.match(r.text, /\r\nconnection: close\r\n/i, 'its response tells the client not to reuse the connection');
  t.match(r.text, /late$/);
  t.ok(r.closed, 'and the relay closed the connection after it');
  await drained;
});
