// Metrics after real traffic: a relay, agents over real tunnels and real
// backends; the counters must match the requests the test sent, and no label
// may carry a client address or a client-chosen Host.
import { once } from 'node:events';
import { request } from 'node:http';
import { agentMetrics, StaticRouteSource } from '@burrow/agent';
import t from 'tap';
import { testAgent } from '../helpers/agent.js';
import { deferred } from '../helpers/deferred.js';
import { get, testServer } from '../helpers/http.js';
import { metricValue, parseMetrics } from '../helpers/metrics.js';
import { freePort } from '../helpers/net.js';
import { testRelay } from '../helpers/relay.js';
import { attempt } from '../helpers/tunnel-client.js';

t.test('relay and agent metrics count the traffic that was sent', async (t) => {
  const relay = await testRelay(t);
  const held = deferred();
  const holdArrived = deferred();
  const app = await testServer(t, (req, res) => {
    req.resume();
    req.on('end', () => {
      if (req.url === '/hold') {
        holdArrived.resolve();
        held.promise.then(() => res.end('late'));
      } else res.end('hello');
    });
  });
  const agent = await testAgent(
    t,
    relay,
    [
      { id: 'app', hostnames: ['app.metrics.test'], target: app.url },
      { id: 'down', hostnames: ['down.metrics.test'], target: `http://127.0.0.1:${await freePort()}` },
    ],
    { sub: 'metrics-tenant' },
  );
  const agentRegistry = agentMetrics(agent).registry;
  const port = relay.httpAddress.port;
  const scrape = () => relay.metrics.registry.metrics();

  for (let i = 0; i < 4; i++) t.equal((await get(port, 'app.metrics.test')).status, 200);
  const body = Buffer.alloc(100, 'x');
  for (let i = 0; i < 3; i++)
    t.equal((await get(port, 'app.metrics.test', '/up', { method: 'POST', body })).status, 200);
  for (let i = 0; i < 2; i++) t.equal((await get(port, 'down.metrics.test')).status, 502);
  for (let i = 0; i < 3; i++) t.equal((await get(port, `nobody-${i}.example.com`)).status, 404);
  t.equal((await attempt(`ws://127.0.0.1:${relay.tunnelAddress.port}`, 'not-a-token')).status, 401);

  // A request in flight shows as an active stream on its route.
  const pending = get(port, 'app.metrics.test', '/hold');
  await holdArrived.promise;
  t.equal(metricValue(await scrape(), 'burrow_relay_streams_active', { host: 'app.metrics.test' }), 1);
  held.resolve();
  t.equal((await pending).status, 200);

  const text = await scrape();
  const v = (name: string, labels: Record<string, string> = {}) => metricValue(text, name, labels);
  t.equal(v('burrow_relay_requests_total', { host: 'app.metrics.test', status_class: '2xx' }), 8);
  t.equal(v('burrow_relay_requests_total', { host: 'down.metrics.test', status_class: '5xx' }), 2);
  t.equal(v('burrow_relay_requests_total', { host: '_unrouted', status_class: '4xx' }), 3);
  t.equal(v('burrow_relay_request_errors_total', { reason: 'backend_refused' }), 2);
  t.equal(v('burrow_relay_request_errors_total', { reason: 'unknown_host' }), 3);
  t.equal(v('burrow_relay_request_duration_seconds_count', { host: 'app.metrics.test' }), 8);
  t.equal(v('burrow_relay_request_duration_seconds_bucket', { host: 'app.metrics.test', le: '+Inf' }), 8);
  t.equal(v('burrow_relay_http_bytes_total', { host: 'app.metrics.test', direction: 'in' }), 300);
  t.ok(
    (v('burrow_relay_http_bytes_total', { host: 'app.metrics.test', direction: 'out' }) ?? 0) >= 7 * 5 + 4,
    'response bytes counted',
  );
  t.equal(
    v('burrow_relay_streams_active', { host: 'app.metrics.test' }),
    1,
    'the requests went one after another: one stream carried them, kept for the next',
  );
  t.equal(v('burrow_relay_agents_connected'), 1);
  t.equal(v('burrow_relay_tunnel_connections'), 2);
  t.equal(v('burrow_relay_routes'), 2);
  t.equal(v('burrow_relay_refusals_total', { reason: 'token_invalid' }), 1);
  const labelValues = parseMetrics(text).flatMap((s) => Object.values(s.labels));
  t.notOk(
    labelValues.some((l) => l.includes('127.0.0.1') || l.includes('nobody')),
    'no client address or unrouted Host in any label',
  );

  const agentText = await agentRegistry.metrics();
  const a = (name: string, labels: Record<string, string> = {}) => metricValue(agentText, name, labels);
  t.equal(a('burrow_agent_tunnel_connections'), 2);
  const connected = parseMetrics(agentText).filter(
    (s) => s.name === 'burrow_agent_tunnel_state' && s.labels['state'] === 'connected',
  );
  t.same(
    connected.map((s) => s.value),
    [1, 1],
  );
  t.equal(a('burrow_agent_dial_errors_total', { reason: 'ConnectRefused' }), 2);
  t.equal(a('burrow_agent_routes', { status: 'active' }), 2);
  t.equal(a('burrow_agent_reconnects_total'), 0);
});

t.test('route refusals are counted by reason', async (t) => {
  const relay = await testRelay(t);
  const app = await testServer(t, (_req, res) => res.end('ok'));
  const agent = await testAgent(
    t,
    relay,
    [
      { id: 'ok', hostnames: ['ok.refusal.test'], target: app.url },
      { id: 'nope', hostnames: ['other.refusal.test'], target: app.url },
    ],
    { hosts: ['ok.refusal.test'], connections: 1 },
  );
  t.equal(agent.routeStatus().find((r) => r.hostname === 'other.refusal.test')?.status, 'refused');
  const text = await relay.metrics.registry.metrics();
  t.equal(metricValue(text, 'burrow_relay_refusals_total', { reason: 'route_not_allowed' }), 1);
  t.equal(metricValue(text, 'burrow_relay_routes'), 1);
});

t.test('an upgraded connection is counted when it closes, with its bytes', async (t) => {
  const upgradeDone = deferred();
  const relay = await testRelay(t, {
    onRequestDone: (info) => {
      if (info.route === 'ws.metrics.test') upgradeDone.resolve();
    },
  });
  const app = await testServer(t, (_req, res) => res.end('plain'));
  app.server.on('upgrade', (_req, socket) => {
    socket.write('HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n');
    socket.pipe(socket); // echo until the client half-closes
  });
  await testAgent(t, relay, [{ id: 'ws', hostnames: ['ws.metrics.test'], target: app.url }]);
  const socket = await new Promise<import('node:stream').Duplex>((resolve, reject) => {
    request({
      host: '127.0.0.1',
      port: relay.httpAddress.port,
      headers: { host: 'ws.metrics.test', connection: 'upgrade', upgrade: 'echo' },
    })
      .on('upgrade', (_res, s) => resolve(s))
      .on('error', reject)
      .end();
  });
  socket.write('0123456789');
  const [echo] = await once(socket, 'data');
  t.equal(String(echo), '0123456789');
  socket.end();
  await once(socket, 'close');
  const v = async (name: string, labels: Record<string, string>) =>
    metricValue(await relay.metrics.registry.metrics(), name, labels);
  await upgradeDone.promise;
  t.equal(await v('burrow_relay_requests_total', { host: 'ws.metrics.test', status_class: '1xx' }), 1);
  t.equal(await v('burrow_relay_http_bytes_total', { host: 'ws.metrics.test', direction: 'in' }), 10);
  t.ok(
    ((await v('burrow_relay_http_bytes_total', { host: 'ws.metrics.test', direction: 'out' })) ?? 0) >= 10,
  );
  t.equal(await v('burrow_relay_streams_active', { host: 'ws.metrics.test' }), 0);
});

t.test('the series of a name that left the route table go once they have been scraped', async (t) => {
  const relay = await testRelay(t);
  // Each backend connection closes after its response: no upstream stays idle on the route.
  const app = await testServer(t, (_req, res) => res.writeHead(200, { connection: 'close' }).end('ok'));
  const route = (name: string) => [{ id: 'churn', hostnames: [`${name}.churn.test`], target: app.url }];
  const source = new StaticRouteSource(route('name-0'));
  // A wildcard token: the names its agent may announce, one after another, have no bound.
  const agent = await testAgent(t, relay, source, { hosts: ['*.churn.test'], connections: 1 });
  const port = relay.httpAddress.port;
  const scrape = () => relay.metrics.registry.metrics();
  const hosts = (text: string) =>
    new Set(parseMetrics(text).flatMap((s) => (s.labels['host'] ? [s.labels['host']] : [])));

  const names = 20;
  for (let i = 0; i < names; i++) {
    const name = `name-${i}.churn.test`;
    t.equal((await get(port, name)).status, 200);
    if (i + 1 < names) {
      // Withdrawn before the scrape that first sees its request: that scrape still counts it.
      const announced = once(agent, 'routes');
      source.update(route(`name-${i + 1}`));
      await announced;
      t.equal((await get(port, name)).status, 404, `${name} is gone`);
    }
    const text = await scrape();
    t.equal(metricValue(text, 'burrow_relay_requests_total', { host: name, status_class: '2xx' }), 1);
    t.equal(metricValue(text, 'burrow_relay_request_duration_seconds_count', { host: name }), 1);
  }
  const text = await scrape();
  t.same(
    [...hosts(text)].sort(),
    ['_unrouted', `name-${names - 1}.churn.test`],
    'only the name still served and the unrouted requests keep series',
  );
  t.equal(
    metricValue(text, 'burrow_relay_requests_total', { host: '_unrouted', status_class: '4xx' }),
    names - 1,
  );
});

t.test("the agent's stream gauge counts requests still running on a draining tunnel", async (t) => {
  const relay = await testRelay(t);
  const held = deferred();
  const arrived = deferred();
  const app = await testServer(t, (_req, res) => {
    arrived.resolve();
    held.promise.then(() => res.end('done'));
  });
  const agent = await testAgent(
    t,
    relay,
    [{ id: 'drain', hostnames: ['drain.metrics.test'], target: app.url }],
    { connections: 1 },
  );
  const { registry } = agentMetrics(agent);
  const pending = get(relay.httpAddress.port, 'drain.metrics.test');
  await arrived.promise;
  t.equal(
    metricValue(await registry.metrics(), 'burrow_agent_streams'),
    2,
    'the control stream and the request',
  );
  // The relay drains (a restart): GOAWAY, and the request finishes on the session it started on.
  const disconnected = once(agent, 'disconnected');
  const closed = relay.close();
  await disconnected;
  t.equal(metricValue(await registry.metrics(), 'burrow_agent_streams'), 1, 'the request, still running');
  held.resolve();
  t.equal((await pending).status, 200);
  await closed;
});

t.test('a kept upstream lent to another name of its route counts under that name', async (t) => {
  const relay = await testRelay(t);
  const held = deferred();
  const arrived = deferred();
  const app = await testServer(t, (req, res) => {
    if (req.url !== '/hold') return void res.end('ok');
    arrived.resolve();
    held.promise.then(() => res.end('late'));
  });
  // One route, two names: their requests share the route's kept upstreams.
  await testAgent(
    t,
    relay,
    [{ id: 'pair', hostnames: ['one.pair.test', 'two.pair.test'], target: app.url }],
    { connections: 1 },
  );
  const port = relay.httpAddress.port;
  const streams = async (host: string) =>
    metricValue(await relay.metrics.registry.metrics(), 'burrow_relay_streams_active', { host }) ?? 0;
  t.equal((await get(port, 'one.pair.test')).status, 200);
  t.equal(await streams('one.pair.test'), 1, 'its upstream, kept for the next request');
  const pending = get(port, 'two.pair.test', '/hold');
  await arrived.promise;
  t.equal(await streams('two.pair.test'), 1, 'the request in flight on the kept upstream');
  t.equal(await streams('one.pair.test'), 0, 'nothing is open for the first name any more');
  held.resolve();
  t.equal((await pending).status, 200);
  t.equal(await streams('two.pair.test'), 1, 'kept again, now by the name it last served');
});
