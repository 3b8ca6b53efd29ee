// Edge cases of the agent's connector, CLI and probes: reconnect backoff after
// repeated GOAWAYs and after a healthy period, announcements larger than one
// control message may carry, option validation messages, and what the probe
// and metrics listeners answer while no tunnel is up.
import { execFile } from 'node:child_process';
import { once } from 'node:events';
import { createServer } from 'node:http';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { encodeJson, type Logger, parseOptions, Reason, writeMessage } from '@burrow/shared';
import t from 'tap';
import { WebSocketServer } from 'ws';
import { get } from '../../../test/helpers/http.js';
import { freePort } from '../../../test/helpers/net.js';
import { spawnLogged } from '../../../test/helpers/proc.js';
import { startAgent } from '../src/agent.js';
import { AGENT_OPTIONS, agentOptionsFrom } from '../src/config.js';
import { type Route, StaticRouteSource } from '../src/routes/source.js';
import { agentOn } from './helpers/agent-on.js';
import { fakeRelay, listen, nextChunk, resetReason } from './helpers/fake-relay.js';
import { memoryLogger } from './helpers/log.js';

const CLI = join(dirname(fileURLToPath(import.meta.url)), '..', 'dist', 'cli.js');
const run = promisify(execFile);
const TOKEN = 'eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ0ZXN0In0.c2VjcmV0LXNpZ25hdHVyZQ';

/**
 * An agent with one tunnel connection whose backoff jitter comes from `random`
 * (the backoff keeps the function it is built with; Math.random is put back).
 */
function startWithJitter(
  relayUrl: string,
  logger: Logger,
  backoff: { base: number; cap: number },
  healthyAfter: number,
  random: () => number,
) {
  const realRandom = Math.random;
  Math.random = random;
  try {
    return startAgent({
      relayUrl,
      token: TOKEN,
      routes: [{ id: 'app', hostnames: ['app.example.com'], target: 'http://127.0.0.1:9' }],
      connections: 1,
      logger,
      backoff,
      healthyAfter,
    });
  } finally {
    Math.random = realRandom;
  }
}

function manyRoutes(n: number): Route[] {
  return Array.from({ length: n }, (_, i) => ({
    id: `r${i}`,
    hostnames: [`h${i}.example.com`],
    target: 'http://127.0.0.1:9',
  }));
}

t.test('a relay that sends GOAWAY right after every welcome is retried with growing backoff', async (t) => {
  const relay = await fakeRelay(t);
  // Each connection is welcomed (the fake relay does so on the control stream),
  // then told the relay is shutting down, as a relay stuck in a drain would.
  relay.on('announce', (conn) => {
    if (!conn.session.draining && !conn.session.closed) void conn.session.goAway(Reason.Shutdown, 'draining');
  });
  const log = memoryLogger();
  const base = 20;
  // Fixed jitter: each delay is 0.9 of its bound.
  const agent = startWithJitter(relay.url, log.logger, { base, cap: 10_000 }, 60_000, () => 0.9);
  t.teardown(() => agent.close());
  const cycles = 7;
  await log.waitFor(
    () => log.lines.filter((l) => l.msg === 'tunnel draining; reconnecting').length >= cycles,
  );
  const delays = log.lines
    .filter((l) => l.msg === 'tunnel draining; reconnecting')
    .slice(0, cycles)
    .map((l) => l['retryIn'] as number);
  // A loop that never backs off stays within the base (18 ms each time here).
  t.ok(
    delays.some((d) => d > base),
    `reconnect delays grow beyond the base after repeated short-lived connections (got ${delays.join(', ')})`,
  );
});

t.test(
  'a connection that was up for the healthy period resets its backoff even when it ends with GOAWAY',
  async (t) => {
    // A controllable clock for the connection's "up for how long" and the restart
    // window, and a fixed jitter: delay = 0.5 x bound. Timers stay real.
    const realNow = performance.now.bind(performance);
    let offset = 0;
    performance.now = () => realNow() + offset;
    let jitter = 0; // 0 while failures pile up, so they cost no time
    t.teardown(() => {
      performance.now = realNow;
    });

    const relay = await fakeRelay(t);
    relay.refuse = { status: 503, body: 'unavailable' };
    const log = memoryLogger();
    const base = 10;
    const agent = startWithJitter(relay.url, log.logger, { base, cap: 100_000 }, 30_000, () => jitter);
    t.teardown(() => agent.close());

    // Twelve failed attempts: the bound has grown to the cap.
    await log.waitFor((l) => (l['failures'] as number) >= 12);
    relay.refuse = undefined;
    await agent.ready();

    // Up for a minute (past healthyAfter), then the relay restarts and stays down
    // past the 15 s restart window.
    offset += 60_000;
    relay.refuse = { status: 503, body: 'still restarting' };
    const conn = relay.live()[0]!;
    const failedOnce = log.waitFor(
      (l) =>
        l.msg === 'tunnel connect failed; retrying' &&
        l['reason'] !== undefined &&
        String(l['reason']).includes('still restarting'),
    );
    void conn.session.goAway(Reason.Shutdown, 'relay restarting');
    await failedOnce;
    offset += 16_000;
    jitter = 0.5;
    const before = log.lines.length;
    await log.waitFor(
      (l) =>
        log.lines.indexOf(l) >= before &&
        (l.msg === 'tunnel connect failed again' || l.msg === 'tunnel connect failed; retrying'),
    );
    const after = log.lines
      .slice(before)
      .find((l) => l.msg === 'tunnel connect failed again' || l.msg === 'tunnel connect failed; retrying')!;
    t.ok(
      (after['retryIn'] as number) <= base,
      `the first backoff after the restart window starts from the base again (retryIn ${String(after['retryIn'])} ms, base ${base} ms)`,
    );
  },
);

t.test('a route set larger than one announcement may carry keeps the tunnel up', async (t) => {
  const relay = await fakeRelay(t);
  // The relay refuses (and closes the tunnel for) an announce of more than 1024 routes.
  const source = new StaticRouteSource(manyRoutes(1025));
  const log = memoryLogger('warn');
  const agent = startAgent({
    relayUrl: relay.url,
    token: TOKEN,
    routes: source,
    connections: 1,
    logger: log.logger,
    backoff: { base: 5, cap: 40 },
  });
  t.teardown(() => agent.close());
  const outcome = await Promise.race([
    agent.ready().then(() => 'routes acknowledged'),
    once(agent, 'disconnected').then(([, reason]) => `tunnel closed: ${String(reason)}`),
  ]);
  t.equal(outcome, 'routes acknowledged', 'the relay acknowledged an announcement');
  t.ok(agent.skippedRoutes().size >= 1, 'routes beyond the limit are skipped with a reason');
});

t.test('routes whose hostnames add up to more than one announcement carries are skipped', async (t) => {
  const relay = await fakeRelay(t);
  // 257 routes of 64 names: 16,448, over the 16,384 the relay takes in one announcement.
  const routes = Array.from({ length: 257 }, (_, i) => ({
    id: `r${i}`,
    hostnames: Array.from({ length: 64 }, (_, j) => `h${i}-${j}.example.com`),
    target: 'http://127.0.0.1:9',
  }));
  const agent = startAgent({
    relayUrl: relay.url,
    token: TOKEN,
    routes: new StaticRouteSource(routes),
    connections: 1,
    logger: memoryLogger('warn').logger,
  });
  t.teardown(() => agent.close());
  const outcome = await Promise.race([
    agent.ready().then(() => 'routes acknowledged'),
    once(agent, 'disconnected').then(([, reason]) => `tunnel closed: ${String(reason)}`),
  ]);
  t.equal(outcome, 'routes acknowledged', 'the relay acknowledged the announcement');
  t.same([...agent.skippedRoutes().keys()], ['r256'], 'the last one skipped');
  t.match(agent.skippedRoutes().get('r256'), /over 16384/, 'saying why');
});

t.test(
  'a relay writes no status of its own choosing: answers only, no control characters, no odd URLs',
  async (t) => {
    const relay = await fakeRelay(t);
    relay.urlOf = (h) => (h.startsWith('odd') ? `javascript:alert(1)//${h}` : `http://${h}`);
    relay.refusedHosts.set('refused.example.com', 'taken\u001b[31m\r\nfake log line\u0007');
    const routes = [
      { id: 'odd', hostnames: ['odd.example.com'], target: 'http://127.0.0.1:1' },
      { id: 'refused', hostnames: ['refused.example.com'], target: 'http://127.0.0.1:1' },
    ];
    const { agent, log } = await agentOn(t, relay, routes);
    const status = () => Object.fromEntries(agent.routeStatus().map((r) => [r.hostname, r]));
    t.match(status()['odd.example.com'], { status: 'active' });
    t.equal(
      status()['odd.example.com']!.url,
      undefined,
      'a URL that is not http, https or tcp is not reported',
    );
    t.equal(
      status()['refused.example.com']!.error,
      'taken?[31m??fake log line?',
      'control characters shown as ?',
    );

    // Results nobody asked for: ignored, however many.
    const control = (await relay.announced()).control!;
    for (let i = 0; i < 20; i++) {
      writeMessage(control, {
        type: 'announce-result',
        routes: [{ id: 'odd', hostname: 'odd.example.com', status: 'refused', error: `unsolicited ${i}` }],
      });
    }
    const ignored = () =>
      log.lines.filter((l) => l.msg === 'announce-result with no announcement outstanding; ignored');
    await log.waitFor(() => ignored().length === 20);
    t.match(status()['odd.example.com'], { status: 'active' }, 'the status stays what the last answer said');
  },
);

t.test('route changes a relay is too slow to take coalesce into the latest set', async (t) => {
  const relay = await fakeRelay(t);
  const source = new StaticRouteSource(manyRoutes(1000));
  const { agent } = await agentOn(t, relay, source);
  const conn = await relay.announced();
  // The relay stops reading its control stream: it grants no more credit, so
  // once the stream's window (256 KiB) is used the agent's writes wait.
  conn.control!.pause();
  const sets = Array.from({ length: 50 }, (_, n) =>
    manyRoutes(1000).map((r) => ({ ...r, hostnames: [`v${n}-${r.hostnames[0]}`] })),
  );
  for (const routes of sets) source.update(routes);
  const latest = sets.at(-1)![0]!.hostnames[0];
  const received = conn.announcements.length;
  conn.control!.resume();
  while (conn.announcements.at(-1)?.[0]?.hostnames[0] !== latest) await once(relay, 'announce');
  const sent = conn.announcements.length - received;
  t.ok(sent <= 5, `${sent} announcements for 50 changes: the waiting ones were replaced by the latest`);
  t.equal(agent.connectionCount, 1);
});

t.test('a fast-path stream of a withdrawn route is reset once its grace is over', async (t) => {
  const server = createServer((_req, res) => res.end('ok'));
  const port = await listen(t, server);
  const relay = await fakeRelay(t);
  const route = { id: 'admin', hostnames: ['admin.example.com'], target: `http://127.0.0.1:${port}` };
  const source = new StaticRouteSource([route]);
  await agentOn(t, relay, source, { withdrawGrace: 50 });
  const conn = await relay.announced();
  const stream = conn.session.openStream(encodeJson({ kind: 'http1', route: 'admin' }));
  stream.on('error', () => {});
  stream.write('GET /before HTTP/1.1\r\nHost: admin.example.com\r\n\r\n');
  let answer = '';
  while (!answer.endsWith('ok')) answer += (await nextChunk(stream)).toString();
  t.match(answer, /^HTTP\/1.1 200/);
  // The route is withdrawn; a relay keeps the stream it opened before and would go on using it.
  const withdrawn = once(relay, 'announce');
  source.update([]);
  await withdrawn;
  t.equal(await resetReason(stream), Reason.RouteUnknown, 'the stream is reset');
});

t.test(
  'what a relay answers reaches the logs bounded, and only for names this agent announced',
  async (t) => {
    const relay = await fakeRelay(t);
    const routes = manyRoutes(12);
    for (const r of routes) relay.refusedHosts.set(r.hostnames[0]!, 'held by another agent');
    relay.foreignResults = Array.from({ length: 500 }, (_, i) => ({
      id: `r${i % 12}`,
      hostname: `not-announced-${i}.example.com`,
      status: 'refused' as const,
      error: 'x'.repeat(500),
    }));
    const { agent, log } = await agentOn(t, relay, routes);
    const refusedLines = log.lines.filter((l) => l.msg === 'route refused by the relay');
    t.equal(refusedLines.length, 10, 'a line each for the first ten changes');
    t.match(
      log.lines.find((l) => l.msg === 'route changes beyond these were not logged one by one'),
      { active: 0, refused: 12, changesNotLogged: 2 },
    );
    t.notMatch(log.raw.join(''), 'not-announced', 'names the agent never announced are not logged');
    t.same(
      agent
        .routeStatus()
        .map((r) => r.hostname)
        .sort(),
      routes.map((r) => r.hostnames[0]).sort(),
      'nor reported (Kubernetes write-back reads this)',
    );

    // Text past its bound is cut, not refused: refusing would drop the connection and every route
    // on it over a long message (a refusal listing a token's 256 patterns, say).
    relay.welcome = { subject: 's'.repeat(1_000_000), relayId: 'fake-relay' };
    relay.refusedHosts.set(
      routes[0]!.hostnames[0]!,
      `not allowed (allowed: ${'x.example.com, '.repeat(300)})`,
    );
    const reconnected = once(agent, 'connected');
    relay.dropAll();
    await reconnected;
    const welcomed = log.lines.filter((l) => l.msg === 'tunnel connected').at(-1)!;
    t.equal((welcomed['subject'] as string).length, 256, 'the subject, cut');
    await log.waitFor(() => agent.routeStatus().some((r) => (r.error?.length ?? 0) > 1000));
    const long = agent.routeStatus().find((r) => (r.error?.length ?? 0) > 1000)!;
    t.ok(long.error!.length <= 1024 && long.error!.endsWith('…'), 'a long refusal, cut to 1024');
    t.equal(agent.connectionCount, 1, 'and the connection stays up');
    t.ok(
      log.raw.every((line) => line.length < 10_000),
      'no log line carries the oversized text',
    );
  },
);

t.test("a refusal's retryAfter is a hint: the agent asks again, and no value costs the tunnel", async (t) => {
  const relay = await fakeRelay(t);
  relay.refusedHosts.set('app.example.com', 'held for another agent');
  relay.refusedRetryAfter = 1000.5; // a fraction: as an older or newer relay might send
  const { agent, log } = await agentOn(t, relay, [
    { id: 'app', hostnames: ['app.example.com'], target: 'http://127.0.0.1:9' },
  ]);
  const conn = await relay.announced();
  t.match(agent.routeStatus()[0], { status: 'refused', retryAfter: 1001 }, 'rounded up');
  relay.refusedRetryAfter = 'soon';
  const answered = once(agent, 'routes');
  const [again] = await once(relay, 'announce');
  t.equal(again, conn, 'the agent asks again by itself, on the same connection');
  await answered;
  t.match(
    agent.routeStatus()[0],
    { status: 'refused', error: 'held for another agent' },
    'an unusable one is dropped',
  );
  t.equal(agent.routeStatus()[0]?.retryAfter, undefined);
  t.equal(agent.connectionCount, 1);
  t.notOk(
    log.lines.some((l) => l.msg === 'tunnel disconnected'),
    'the tunnel was never dropped over it',
  );
});

t.test(
  'a relay that keeps opening streams the agent must refuse: refused, and a warning per kind',
  async (t) => {
    const relay = await fakeRelay(t);
    const { agent, log } = await agentOn(t, relay, [
      { id: 'app', hostnames: ['app.example.com'], target: 'http://127.0.0.1:9' },
    ]);
    const conn = await relay.announced();
    const kinds = [
      Buffer.from('{"kind":"nope"}'),
      encodeJson({ kind: 'control' }),
      encodeJson({ kind: 'tcp', route: 'app', client: { ip: '127.0.0.1', port: 1 } }),
    ];
    for (let round = 0; round < 20; round++) {
      const streams = kinds.map((meta) => {
        const s = conn.session.openStream(meta);
        s.on('error', () => {});
        return s;
      });
      t.same(
        await Promise.all(streams.map((s) => resetReason(s))),
        [Reason.BadMetadata, Reason.BadMetadata, Reason.BadMetadata],
        `round ${round}: each refused`,
      );
    }
    const refusals = log.lines.filter((l) => /; refused$/.test(String(l.msg)));
    t.equal(refusals.length, 60, 'every refusal is logged');
    t.same(
      refusals.filter((l) => l.level === 40).map((l) => l.msg),
      [
        'relay opened a stream with invalid metadata; refused',
        'relay opened a stream of the wrong kind; refused',
        'stream kind does not match the route; refused',
      ],
      'but only the first of each kind as a warning; the rest at debug',
    );
    t.equal(agent.connectionCount, 1, 'the tunnel stays up');
  },
);

t.test('a name stays with the route that has it, until that route stops asking for it', async (t) => {
  const relay = await fakeRelay(t);
  const route = (id: string, ...hostnames: string[]): Route => ({
    id,
    hostnames,
    target: 'http://127.0.0.1:9',
  });
  const source = new StaticRouteSource([route('older', 'a.example.com'), route('newer', 'shop.example.com')]);
  const { agent } = await agentOn(t, relay, source);
  const announced = async (update: Route[]) => {
    const next = relay.nextAnnouncements(1);
    source.update(update);
    await next;
    return relay
      .live()[0]!
      .announcements.at(-1)!
      .map((r) => r.id);
  };
  // The route listed first, edited to ask for a name the other has: the holder keeps it.
  t.same(
    await announced([
      route('older', 'a.example.com', 'shop.example.com'),
      route('newer', 'shop.example.com'),
    ]),
    ['newer'],
  );
  t.equal(agent.skippedRoutes().get('older'), 'hostname "shop.example.com" is already in route "newer"');
  // The holder edited into a route that cannot be announced: the name is free for the other.
  t.same(
    await announced([
      route('older', 'a.example.com', 'shop.example.com'),
      route('newer', 'shop.example.com', 'bad_name'),
    ]),
    ['older'],
  );
  t.match(agent.skippedRoutes().get('newer'), /bad_name/);
});

t.test('static routes beyond the 1024 an announcement may carry are refused at start', async (t) => {
  let message = '';
  try {
    const agent = startAgent({
      relayUrl: 'ws://127.0.0.1:9',
      token: TOKEN,
      routes: manyRoutes(1025),
      connections: 1,
      logger: memoryLogger('silent').logger,
    });
    await agent.close();
  } catch (err) {
    message = (err as Error).message;
  }
  t.match(message, /1024/, `refused at start naming the limit (got "${message}")`);
});

t.test('--keepalive-interval below the session minimum is refused naming the flag', async (t) => {
  const env = { BURROW_TOKEN: TOKEN };
  const argv = [
    '--relay',
    'ws://127.0.0.1:9',
    '--expose',
    'app.example.com=http://127.0.0.1:9',
    '--keepalive-interval',
    '5ms',
  ];
  const err = await run(process.execPath, [CLI, ...argv], {
    env: { PATH: process.env['PATH'], ...env },
  }).catch((e: { code: number; stderr: string }) => e);
  t.equal((err as { code: number }).code, 1, 'exit 1');
  t.match(
    (err as { stderr: string }).stderr,
    /^burrow-agent: --keepalive-interval\b/,
    'the message names the flag',
  );
});

t.test('--connect-timeout bounds the relay handshake: a relay that never sends HELLO', async (t) => {
  // Takes the WebSocket upgrade and then says nothing.
  const server = createServer();
  const wss = new WebSocketServer({ server });
  t.teardown(() => wss.close());
  const port = await listen(t, server);
  const log = memoryLogger();
  const agent = startAgent({
    relayUrl: `ws://127.0.0.1:${port}`,
    token: TOKEN,
    routes: [{ id: 'app', hostnames: ['app.example.com'], target: 'http://127.0.0.1:9' }],
    connections: 1,
    logger: log.logger,
    connectTimeout: 150,
    backoff: { base: 60_000, cap: 60_000 },
  });
  t.teardown(() => agent.close());
  const failed = await log.waitFor((l) => /within \d+ ms/.test(String(l['reason'] ?? l['msg'])));
  t.match(
    String(failed['reason'] ?? failed['msg']),
    /no HELLO from peer within 150 ms/,
    'the option, not a fixed 10 s',
  );
});

t.test('--connect-timeout that rounds to 0 ms is refused naming the flag', async (t) => {
  const values = parseOptions(
    AGENT_OPTIONS,
    [
      '--relay',
      'ws://127.0.0.1:9',
      '--expose',
      'app.example.com=http://127.0.0.1:9',
      '--connect-timeout',
      '0.2ms',
    ],
    { BURROW_TOKEN: TOKEN },
  ).values;
  let message = '';
  try {
    const { options } = await agentOptionsFrom(values, { BURROW_TOKEN: TOKEN });
    const agent = startAgent({ ...options, logger: memoryLogger('silent').logger });
    await agent.close();
  } catch (err) {
    message = (err as Error).message;
  }
  t.match(message, /^--connect-timeout\b/, `refused naming the flag (got "${message}")`);
});

t.test('no listener answers /readyz with "ready" while no tunnel is up', async (t) => {
  const port = await freePort(); // nothing listens: every dial is refused
  const agent = spawnLogged(
    t,
    CLI,
    [
      '--relay',
      `ws://127.0.0.1:${port}`,
      '--expose',
      'app.example.com=http://127.0.0.1:9',
      '--health-listen',
      '127.0.0.1:0',
      '--metrics-listen',
      '127.0.0.1:0',
    ],
    { BURROW_TOKEN: TOKEN },
  );
  const health = await agent.waitFor((l) => l['msg'] === 'health endpoint listening');
  const metrics = await agent.waitFor((l) => l['msg'] === 'metrics endpoint listening');
  await agent.waitFor((l) => l['msg'] === 'tunnel connect failed; retrying');
  const healthPort = (health['address'] as { port: number }).port;
  const metricsPort = (metrics['address'] as { port: number }).port;
  const onHealth = await get(healthPort, '127.0.0.1', '/readyz');
  t.equal(onHealth.status, 503, 'the health listener says not ready');
  const onMetrics = await get(metricsPort, '127.0.0.1', '/readyz');
  t.not(
    onMetrics.status,
    200,
    `the metrics listener does not claim readiness (got ${onMetrics.status} ${onMetrics.body.toString().trim()})`,
  );
});
