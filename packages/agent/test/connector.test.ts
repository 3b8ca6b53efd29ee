// The connector against a stand-in relay (a real ws server with a server-role
// session): connect, announce, reconnect, refusal handling, GOAWAY and drain.
import { once } from 'node:events';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Reason } from '@burrow/shared';
import t from 'tap';
import { deferred } from '../../../test/helpers/deferred.js';
import { freePort } from '../../../test/helpers/net.js';
import { startAgent } from '../src/agent.js';
import { StaticRouteSource } from '../src/routes/source.js';
import { agentOn } from './helpers/agent-on.js';
import { fakeRelay, readResponse, resetReason, type Teardownable } from './helpers/fake-relay.js';
import { memoryLogger } from './helpers/log.js';

const TOKEN = 'eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ0ZXN0In0.c2VjcmV0LXNpZ25hdHVyZQ';
const FAST = { base: 5, cap: 40 };

/** A backend whose responses wait until `release()`; `arrived` resolves per request. */
async function heldBackend(t: Teardownable) {
  const released = deferred();
  const server = createServer((_req, res) => {
    server.emit('arrived');
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.write('part1-');
    released.promise.then(() => res.end('done'));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => {
    server.closeAllConnections();
    server.close();
  });
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    server,
    release: released.resolve,
  };
}

/**
 * A stand-in relay, a held backend, and an agent serving app.example.com from it.
 * The agent is started but not awaited, and its close() is left to the caller.
 */
async function agentWithHeldBackend(
  t: Teardownable,
  { connections, backoff }: { connections: number; backoff: { base: number; cap: number } },
) {
  const relay = await fakeRelay(t);
  const backend = await heldBackend(t);
  const agent = startAgent({
    relayUrl: relay.url,
    token: TOKEN,
    routes: [{ id: 'app', hostnames: ['app.example.com'], target: backend.url }],
    connections,
    logger: memoryLogger().logger,
    backoff,
  });
  return { relay, backend, agent };
}

t.test('connects, announces, and reconnects with its routes after the relay drops the socket', async (t) => {
  const relay = await fakeRelay(t);
  const log = memoryLogger();
  const agent = startAgent({
    relayUrl: relay.url,
    token: TOKEN,
    routes: [
      { id: 'app', hostnames: ['app.example.com'], target: 'http://127.0.0.1:9', allowCidrs: ['10.0.0.0/8'] },
    ],
    connections: 1,
    logger: log.logger,
    backoff: FAST,
    session: { keepaliveInterval: 250 },
  });
  t.teardown(() => agent.close());
  const connected = once(agent, 'connected');
  await agent.ready();
  t.same(await connected, [0]);
  t.equal(agent.connectionCount, 1);
  t.same(agent.routeStatus(), [
    { id: 'app', hostname: 'app.example.com', status: 'active', url: 'http://app.example.com' },
  ]);
  t.equal(agent.sessions()[0]?.config.keepaliveInterval, 250, 'session options reach the session');
  const first = relay.connections[0]!;
  t.same(
    first.announcements,
    [[{ id: 'app', hostnames: ['app.example.com'], allowCidrs: ['10.0.0.0/8'] }]],
    'announces ids, hostnames and allowlists; the backend target never leaves the agent',
  );

  const disconnected = once(agent, 'disconnected');
  const reconnected = once(agent, 'connected');
  relay.dropAll();
  const [index, reason] = await disconnected;
  t.equal(index, 0);
  t.type(reason, 'string');
  await reconnected;
  const second = await relay.announced();
  t.not(second, first, 'a new connection');
  t.same(second.announcements, first.announcements, 'the full route set is announced again');
  t.equal(agent.connectionCount, 1);

  t.equal(log.lines.filter((l) => l.msg === 'tunnel disconnected').length, 1, 'one line per disconnect');
  t.equal(log.lines.filter((l) => l.msg === 'tunnel connected').length, 2);
  t.equal(
    log.lines.filter((l) => l.msg === 'route active').length,
    1,
    'an unchanged route result is not logged again',
  );
  t.match(
    log.lines.find((l) => l.msg === 'tunnel disconnected'),
    { level: 40, conn: 0, retryIn: Number },
  );
});

t.test(
  'a 401 is logged once at error with the relay reason, retried with capped backoff, then recovers',
  async (t) => {
    const relay = await fakeRelay(t);
    relay.refuse = { status: 401, body: 'token expired: "exp" claim timestamp check failed' };
    const log = memoryLogger();
    const agent = startAgent({
      relayUrl: relay.url,
      token: TOKEN,
      routes: [{ id: 'app', hostnames: ['app.example.com'], target: 'http://127.0.0.1:9' }],
      connections: 2,
      logger: log.logger,
      backoff: FAST,
    });
    t.teardown(() => agent.close());
    let attempts = 0;
    while (attempts < 8) {
      const [authorization] = await once(relay, 'attempt');
      t.equal(authorization, `Bearer ${TOKEN}`);
      attempts++;
    }
    // The eighth attempt's failure is logged once its body is read.
    await log.waitFor((l) => l['failures'] === 7);
    const errors = log.lines.filter((l) => l.level >= 50);
    t.equal(errors.length, 1, 'one error line for a refusal that repeats on every connection');
    t.match(errors[0], {
      msg: 'tunnel connect failed; retrying',
      reason: 'relay refused the tunnel: HTTP 401: token expired: "exp" claim timestamp check failed',
      failures: 1,
    });
    const retries = log.lines.filter((l) => l.msg === 'tunnel connect failed again');
    t.ok(
      retries.length >= 6 && retries.every((l) => l.level === 20),
      'repeats only at debug, with a counter',
    );
    for (const l of [errors[0]!, ...retries]) {
      t.ok((l['retryIn'] as number) >= FAST.cap / 2, 'a refused token backs off to the cap');
    }
    t.equal(agent.connectionCount, 0);

    relay.refuse = undefined;
    await agent.ready();
    t.match(await log.waitFor((l) => l.msg === 'tunnel connected'), { afterFailures: Number });
    t.notMatch(log.raw.join(''), TOKEN.slice(10, 40), 'the token never reaches the log');
  },
);

t.test('a relay that is down: one warning, however many retries', async (t) => {
  const port = await freePort();
  const log = memoryLogger();
  const agent = startAgent({
    relayUrl: `ws://127.0.0.1:${port}`,
    token: TOKEN,
    routes: [{ id: 'app', hostnames: ['app.example.com'], target: 'http://127.0.0.1:9' }],
    connections: 2,
    logger: log.logger,
    backoff: { base: 2, cap: 10 },
  });
  t.teardown(() => agent.close());
  await log.waitFor((l) => (l['failures'] as number) >= 10);
  const warnings = log.lines.filter((l) => l.level >= 40);
  t.equal(warnings.length, 1);
  t.match(warnings[0], { msg: 'tunnel connect failed; retrying', reason: /ECONNREFUSED/ });
});

t.test('route changes are re-announced on every connection; a withdrawn route is refused', async (t) => {
  const relay = await fakeRelay(t);
  const source = new StaticRouteSource([
    { id: 'a', hostnames: ['a.example.com'], target: 'http://127.0.0.1:9' },
  ]);
  const log = memoryLogger();
  const agent = startAgent({
    relayUrl: relay.url,
    token: TOKEN,
    routes: source,
    connections: 2,
    logger: log.logger,
    backoff: FAST,
  });
  t.teardown(() => agent.close());
  while (relay.live().filter((c) => c.announcements.length > 0).length < 2) await once(relay, 'announce');

  relay.refusedHosts.set('c.example.com', 'hostname "c.example.com" is not allowed by this agent\'s token');
  // The first connections' results may still be on their way: wait for the
  // ones that answer this update.
  const results = new Promise<void>((resolve) => {
    const onResults = (list: Array<{ hostname: string }>) => {
      if (!list.some((r) => r.hostname === 'c.example.com')) return;
      agent.off('routes', onResults);
      resolve();
    };
    agent.on('routes', onResults);
  });
  const two = relay.nextAnnouncements(2);
  source.update([
    { id: 'b', hostnames: ['b.example.com'], target: 'http://127.0.0.1:9' },
    { id: 'c', hostnames: ['c.example.com'], target: 'http://127.0.0.1:9' },
    { id: 'bad', hostnames: ['Bad.example.com'], target: 'http://127.0.0.1:9' },
  ]);
  await two;
  for (const conn of relay.live()) {
    t.same(conn.announcements.at(-1), [
      { id: 'b', hostnames: ['b.example.com'] },
      { id: 'c', hostnames: ['c.example.com'] },
    ]);
  }
  await results;
  t.match(
    log.lines.find((l) => l.msg === 'invalid route skipped'),
    { route: 'bad', level: 40 },
  );
  t.match(
    log.lines.filter((l) => l.msg === 'route refused by the relay'),
    [{ hostname: 'c.example.com', reason: /not allowed/ }],
  );
  t.equal(
    log.lines.filter((l) => l.msg === 'route refused by the relay').length,
    1,
    'a refusal seen on two connections is logged once',
  );
  t.equal(
    await resetReason(relay.openHttp({ route: 'a' })),
    Reason.RouteUnknown,
    'the withdrawn route is refused',
  );
});

t.test(
  'GOAWAY from the relay: a new connection at once; the in-flight request finishes on the old one',
  async (t) => {
    const { relay, backend, agent } = await agentWithHeldBackend(t, {
      connections: 1,
      backoff: { base: 5, cap: 30_000 },
    });
    t.teardown(() => agent.close());
    await agent.ready();
    const old = relay.live()[0]!;
    const stream = relay.openHttp({ route: 'app' });
    await once(backend.server, 'arrived');

    const disconnected = once(agent, 'disconnected');
    const connected = once(agent, 'connected');
    const drained = old.session.goAway(Reason.Shutdown, 'relay restarting');
    t.match(await disconnected, [0, /relay draining: relay restarting/]);
    await connected;
    t.equal(relay.live().length, 2, 'the old session stays open for its request');
    t.equal(agent.connectionCount, 1);

    backend.release();
    const { head, body } = await readResponse(stream);
    t.equal(head.status, 200);
    t.equal(body.toString(), 'part1-done');
    await drained;
    t.ok(old.session.closed, 'the old session closed once its last stream finished');
  },
);

t.test('a relay that never ends its drain: the agent cuts it after its own drain timeout', async (t) => {
  const relay = await fakeRelay(t);
  const backend = await heldBackend(t);
  const log = memoryLogger();
  const agent = startAgent({
    relayUrl: relay.url,
    token: TOKEN,
    routes: [{ id: 'app', hostnames: ['app.example.com'], target: backend.url }],
    connections: 1,
    logger: log.logger,
    backoff: FAST,
    session: { drainTimeout: 200 },
  });
  t.teardown(() => {
    backend.release();
    return agent.close();
  });
  await agent.ready();
  const old = relay.live()[0]!;
  const stream = relay.openHttp({ route: 'app' });
  await once(backend.server, 'arrived');
  // The relay's own drain timer is the default 30 s; the backend never finishes.
  void old.session.goAway(Reason.Shutdown, 'relay restarting');
  t.match(await log.waitFor((l) => l.msg === 'tunnel drain outlasted the drain timeout; closing it'), {
    level: 40,
    inFlight: 1,
    drainTimeout: 200,
  });
  if (!old.session.closed) await once(old.session, 'close');
  t.ok(stream.destroyed, "the drained session's stream is cut");
  t.equal(agent.connectionCount, 1, 'served by the new connection meanwhile');
});

t.test('an error GOAWAY the relay never follows with a close: the agent reconnects', async (t) => {
  const relay = await fakeRelay(t);
  const { agent, log } = await agentOn(t, relay, [
    { id: 'app', hostnames: ['app.example.com'], target: 'http://127.0.0.1:9' },
  ]);
  const old = relay.live()[0]!;
  const reconnected = once(agent, 'connected');
  void old.session.goAway(Reason.InternalError, 'gave up');
  t.match(await log.waitFor((l) => l.msg === 'tunnel disconnected'), {
    level: 40,
    reason: 'peer closed the session: InternalError: gave up',
  });
  if (!old.session.closed) await once(old.session, 'close');
  t.ok(old.session.closed, 'the refusing session is gone, not left up');
  await reconnected;
  t.equal(agent.connectionCount, 1);
  t.equal(relay.live().length, 1, 'on a new connection');
});

t.test(
  'close() drains: GOAWAY to the relay, the in-flight request completes, then it resolves',
  async (t) => {
    const { relay, backend, agent } = await agentWithHeldBackend(t, { connections: 2, backoff: FAST });
    await agent.ready();
    while (relay.live().filter((c) => c.announcements.length > 0).length < 2) await once(relay, 'announce');
    const conn = relay.live()[0]!;
    const stream = relay.openHttp({ route: 'app' }, conn);
    await once(backend.server, 'arrived');

    const goaway = once(conn.session, 'goaway');
    let closed = false;
    const closing = agent.close().then(() => (closed = true));
    const [info] = await goaway;
    t.equal(info.reason, Reason.Shutdown);
    t.throws(() => relay.openHttp({ route: 'app' }, conn), { code: 'BURROW_ERR_GOAWAY' }, 'no new streams');
    t.notOk(closed, 'close() waits for the in-flight request');

    backend.release();
    const { head, body } = await readResponse(stream);
    t.equal(head.status, 200);
    t.equal(body.toString(), 'part1-done');
    await closing;
    t.equal(agent.connectionCount, 0);
    t.ok(
      relay.connections.every((c) => c.session.closed),
      'every relay-side session saw the tunnel close',
    );
  },
);

t.test('ready() rejects when the agent closes before any connection came up', async (t) => {
  const agent = startAgent({
    relayUrl: 'ws://127.0.0.1:9',
    token: TOKEN,
    routes: [{ id: 'app', hostnames: ['app.example.com'], target: 'http://127.0.0.1:9' }],
    logger: memoryLogger('silent').logger,
  });
  const ready = agent.ready();
  await agent.close();
  await t.rejects(ready, { message: /closed before a tunnel was ready/ });
});

t.test('bad options fail at once with a ConfigError', async (t) => {
  const routes = [{ id: 'app', hostnames: ['app.example.com'], target: 'http://127.0.0.1:9' }];
  const logger = memoryLogger('silent').logger;
  t.throws(() => startAgent({ relayUrl: 'http://x', token: TOKEN, routes, logger }), {
    message: /use ws:\/\//,
  });
  t.throws(() => startAgent({ relayUrl: 'ws://x', token: '', routes, logger }), {
    code: 'BURROW_ERR_CONFIG',
  });
  t.throws(() => startAgent({ relayUrl: 'ws://x', token: TOKEN, routes, connections: 0, logger }), {
    message: /connections/,
  });
  t.throws(
    () => startAgent({ relayUrl: 'ws://x', token: TOKEN, routes: [{ ...routes[0]!, target: 'x' }], logger }),
    {
      message: /^routes\[0\]\.target: must be an http/,
    },
  );
  t.throws(
    () => startAgent({ relayUrl: 'ws://x', token: TOKEN, routes, session: { keepaliveInterval: 1 }, logger }),
    {
      message: /session\.keepaliveInterval/,
    },
  );
});
