// The admin API against a real relay with a real agent: app.inject() for every
// route, with no token, a wrong token and the right one; then the same app on
// the relay's own admin listener over real HTTP.
import { ADMIN_ROUTES, buildAdminApp } from '@burrow/relay';
import t from 'tap';
import { testAgent } from '../helpers/agent.js';
import { deferred } from '../helpers/deferred.js';
import { get, testServer } from '../helpers/http.js';
import { metricValue } from '../helpers/metrics.js';
import { testRelay } from '../helpers/relay.js';

const TOKEN = 'admin-token-0123456789abcdef';

t.test('admin API: probes open, everything else behind the bearer token', async (t) => {
  const relay = await testRelay(t);
  const backend = await testServer(t, (req, res) => {
    if (req.url === '/boom') res.writeHead(500);
    res.end('hi');
  });
  await testAgent(t, relay, [{ id: 'web', hostnames: ['web.admin.test'], target: backend.url }], {
    sub: 'admin-tenant',
  });
  t.equal((await get(relay.httpAddress.port, 'web.admin.test')).status, 200);
  t.equal((await get(relay.httpAddress.port, 'web.admin.test', '/boom')).status, 500);
  t.equal((await get(relay.httpAddress.port, 'gone.admin.test')).status, 404);

  const app = buildAdminApp({ state: relay.adminState, token: () => TOKEN });
  t.teardown(() => app.close());

  for (const path of ['/healthz', '/readyz']) {
    const res = await app.inject({ url: path });
    t.equal(res.statusCode, 200, `${path} needs no token`);
  }
  t.same((await app.inject({ url: '/readyz' })).json(), { status: 'ready' });

  const protectedRoutes = ADMIN_ROUTES.filter((r) => r.auth).map((r) => r.url);
  t.ok(protectedRoutes.includes('/metrics') && protectedRoutes.includes('/api/agents'));
  for (const url of protectedRoutes) {
    const none = await app.inject({ url });
    t.equal(none.statusCode, 401, `${url} without a token`);
    t.equal(none.headers['www-authenticate'], 'Bearer');
    t.equal(none.json().error, 'unauthorized');
    const wrong = await app.inject({ url, headers: { authorization: `Bearer ${TOKEN}x` } });
    t.equal(wrong.statusCode, 401, `${url} with a wrong token`);
    const prefix = await app.inject({ url, headers: { authorization: `Bearer ${TOKEN.slice(0, 10)}` } });
    t.equal(prefix.statusCode, 401, `${url} with a prefix of the token`);
    const basic = await app.inject({ url, headers: { authorization: `Basic ${TOKEN}` } });
    t.equal(basic.statusCode, 401, `${url} with another scheme`);
    const ok = await app.inject({ url, headers: { authorization: `Bearer ${TOKEN}` } });
    t.equal(ok.statusCode, 200, `${url} with the token`);
    t.notMatch(ok.body, TOKEN, `${url} never echoes the token`);
  }

  const auth = { authorization: `Bearer ${TOKEN}` };
  const agents = (await app.inject({ url: '/api/agents', headers: auth })).json();
  t.match(agents, [{ subject: 'admin-tenant', connections: 2, hostnames: ['web.admin.test'] }]);
  t.ok(!Number.isNaN(Date.parse(agents[0].connectedSince)));
  const routes = (await app.inject({ url: '/api/routes', headers: auth })).json();
  t.same(routes.length, 1);
  t.match(routes[0], { hostname: 'web.admin.test', subject: 'admin-tenant', routeIds: ['web'] });
  t.equal(routes[0].connections.length, 2);
  const connections = (await app.inject({ url: '/api/connections', headers: auth })).json();
  t.equal(connections.length, 2);
  for (const c of connections) {
    t.match(c, { subject: 'admin-tenant', remoteAddress: String, draining: false });
    t.type(c.rttMs, 'number');
    t.ok(c.streams >= 1, 'the control stream counts');
    t.ok(c.bytesIn > 0 && c.bytesOut > 0, 'bytes both ways');
  }
  const stats = (await app.inject({ url: '/api/stats', headers: auth })).json();
  t.match(stats, { requests: 3, requestErrors: 2, agents: 1, connections: 2, routes: 1 });
  const errors = (await app.inject({ url: '/api/errors', headers: auth })).json();
  t.match(errors, [
    { route: '', status: 404, reason: 'unknown_host', method: 'GET' },
    { route: 'web.admin.test', status: 500, reason: 'status' },
  ]);
  const metrics = await app.inject({ url: '/metrics', headers: auth });
  t.match(metrics.headers['content-type'], /^text\/plain/);
  t.equal(
    metricValue(metrics.body, 'burrow_relay_requests_total', { host: 'web.admin.test', status_class: '2xx' }),
    1,
  );

  const missing = await app.inject({ url: '/api/nothing', headers: auth });
  t.equal(missing.statusCode, 404);
  t.equal(missing.json().error, 'not_found');
  const post = await app.inject({ method: 'POST', url: '/api/agents', headers: auth });
  t.equal(post.statusCode, 404, 'read-only API');
  for (const method of ['POST', 'PUT', 'DELETE', 'PATCH'] as const) {
    const bad = await app.inject({
      method,
      url: '/api/stats',
      headers: { 'content-type': 'application/json' },
      payload: '{bad',
    });
    t.equal(bad.statusCode, 404, `${method} with a broken JSON body: 404, its body never parsed`);
    t.equal(bad.json().error, 'not_found');
  }
});

t.test('admin API: closed when no token is configured', async (t) => {
  const relay = await testRelay(t);
  const app = buildAdminApp({ state: relay.adminState, token: () => undefined });
  t.teardown(() => app.close());
  t.equal((await app.inject({ url: '/healthz' })).statusCode, 200);
  const res = await app.inject({
    url: '/api/agents',
    headers: { authorization: 'Bearer anything-at-all-here' },
  });
  t.equal(res.statusCode, 401);
  t.match(res.json().message, /no admin token is configured/);
});

t.test('admin listener: real HTTP, token swapped live, /readyz turns 503 while draining', async (t) => {
  const relay = await testRelay(t, { admin: { host: '127.0.0.1', port: 0 }, adminToken: TOKEN });
  const port = relay.adminAddress!.port;
  const call = (path: string, token?: string) =>
    fetch(`http://127.0.0.1:${port}${path}`, token ? { headers: { authorization: `Bearer ${token}` } } : {});
  t.equal((await call('/healthz')).status, 200);
  t.equal((await call('/api/stats')).status, 401);
  t.equal((await call('/api/stats', TOKEN)).status, 200);
  const page = await call('/');
  t.equal(page.status, 200);
  t.match(page.headers.get('content-type'), /text\/html/);
  t.match(page.headers.get('content-security-policy'), /script-src 'self'/);
  t.match(await page.text(), /<script src="\/dashboard.js"/);
  t.equal((await call('/dashboard.js')).status, 200);
  // A URL that does not decode: the API's error shape and headers, not the framework's.
  const bad = await call('/api/%ZZ', TOKEN);
  t.equal(bad.status, 400);
  t.match(await bad.json(), { error: 'bad_request', message: /not a valid url/ });
  t.equal(bad.headers.get('x-frame-options'), 'DENY');
  t.match(bad.headers.get('content-security-policy'), /default-src 'none'/);

  const next = 'another-admin-token-0123456789';
  relay.setAdminToken(next);
  t.equal((await call('/api/stats', TOKEN)).status, 401, 'the old token stops working at once');
  t.equal((await call('/api/stats', next)).status, 200);

  // A request in flight keeps the drain (and the admin listener) open.
  const held = deferred();
  const arrived = deferred();
  const backend = await testServer(t, (_req, res) => {
    arrived.resolve();
    held.promise.then(() => res.end('done'));
  });
  await testAgent(t, relay, [{ id: 'slow', hostnames: ['slow.admin.test'], target: backend.url }]);
  const inFlight = get(relay.httpAddress.port, 'slow.admin.test');
  await arrived.promise;
  const closed = relay.close();
  const ready = await call('/readyz');
  t.equal(ready.status, 503);
  t.same(await ready.json(), { status: 'not ready', reason: 'draining' });
  held.resolve();
  t.equal((await inFlight).status, 200, 'the in-flight request finished');
  await closed;
});
