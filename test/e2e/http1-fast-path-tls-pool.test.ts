// The relay's HTTP/1.1 fast path on terminated TLS (keep-alive,
// Host ≠ SNI mid-connection, HSTS on error pages, upgrades, drain, half-close),
// the upstream pool under concurrency and agent failures, https targets, and
// client behaviour that must neither crash the relay nor leak streams.
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { type AddressInfo, createServer as createNetServer, type Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { StaticRouteSource } from '@burrow/agent';
import type { Relay, RelayOptions } from '@burrow/relay';
import t from 'tap';
import { testAgent } from '../helpers/agent.js';
import { deferred, until, within } from '../helpers/deferred.js';
import { metricValue } from '../helpers/metrics.js';
import { client, field, get, type Parsed, rawBackend, tlsClient } from '../helpers/raw-wire.js';
import { streamKinds, type Teardownable, testRelay } from '../helpers/relay.js';
import { type TestPki, testPki } from '../helpers/tls.js';

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

const hdr = (r: Parsed | undefined, name: string): string[] => field(r ?? { headers: [] }, name);

const streamsActive = async (relay: Relay, host: string) =>
  metricValue(await relay.metrics.registry.metrics(), 'burrow_relay_streams_active', { host }) ?? 0;

/** A backend answering `<host> <path>` on each request, Content-Length framed; paths under /hold wait for release(). */
async function holdingBackend(t: Teardownable) {
  const held: Array<() => void> = [];
  const arrivals: Array<() => void> = [];
  const backend = await rawBackend(t, (socket, req) => {
    const [, path] = req.head.split(' ');
    const host = /\r\nhost: *([^\r]*)/i.exec(req.head)?.[1] ?? '';
    const body = `${host} ${path}`;
    const answer = () => {
      if (!socket.destroyed) socket.write(`HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
    };
    if (path?.startsWith('/hold')) {
      held.push(answer);
      for (const w of arrivals.splice(0)) w();
    } else answer();
  });
  return {
    ...backend,
    held,
    async heldCount(n: number) {
      while (held.length < n) await new Promise<void>((r) => arrivals.push(r));
    },
    release() {
      for (const a of held.splice(0)) a();
    },
  };
}

/** A relay with a TLS listener and a certificate for `names`. */
async function tlsRelay(t: Teardownable, pki: TestPki, names: string[], extra: Partial<RelayOptions> = {}) {
  const cert = await pki.issue(`c${names.length}-${names[0]}`, names);
  return testRelay(t, {
    tls: { host: '127.0.0.1', port: 0 },
    certFiles: { pairs: [{ cert: cert.certFile, key: cert.keyFile }] },
    hstsMaxAge: 600,
    ...extra,
  });
}

const HSTS = 'max-age=600';

// ---------------------------------------------------------------------------
// Terminated TLS
// ---------------------------------------------------------------------------

t.test(
  'TLS h1 keep-alive: fast path for the SNI name with HSTS; a same-route alias is served, another route or tenant gets 421',
  async (t) => {
    const pki = await testPki(t);
    const relay = await tlsRelay(t, pki, ['a.tls.test', 'alias.tls.test', 'b.tls.test', 'c.other.test']);
    const backend = await holdingBackend(t);
    await testAgent(
      t,
      relay,
      [
        { id: 'a', hostnames: ['a.tls.test', 'alias.tls.test'], target: backend.url },
        { id: 'b', hostnames: ['b.tls.test'], target: backend.url },
      ],
      { connections: 1 },
    );
    await testAgent(t, relay, [{ id: 'c', hostnames: ['c.other.test'], target: backend.url }], {
      connections: 1,
      sub: 'tenant-b',
    });
    const kinds = streamKinds(relay);
    const port = relay.tlsAddress!.port;

    const c = await tlsClient(t, port, 'a.tls.test', pki.caPem);
    for (let i = 0; i < 3; i++) {
      const r = await c.request('a.tls.test', `/k${i}`);
      t.equal(r?.status, 200, `keep-alive request ${i}`);
      t.equal(String(r?.body), `a.tls.test /k${i}`);
      t.same(hdr(r, 'strict-transport-security'), [HSTS], 'HSTS once on a fast-path response');
    }
    t.same(kinds, ['http1'], 'one upstream for the three');
    // Host with a port and upper case still matches the SNI name.
    t.equal((await c.request('A.TLS.TEST:443', '/port'))?.status, 200);
    t.same(kinds, ['http1'], 'still the fast path');

    // Another name of the same route: the general path serves it.
    const alias = await c.request('alias.tls.test', '/alias');
    t.equal(alias?.status, 200, 'same route: served');
    t.equal(String(alias?.body), 'alias.tls.test /alias');
    t.same(hdr(alias, 'strict-transport-security'), [HSTS]);
    // Another route of the same tenant, and another tenant: 421, the connection goes on.
    const b = await c.request('b.tls.test', '/b');
    t.equal(b?.status, 421, 'another route: misdirected');
    t.same(hdr(b, 'strict-transport-security'), [HSTS]);
    const other = await c.request('c.other.test', '/c');
    t.equal(other?.status, 421, 'another tenant: misdirected');
    t.equal((await c.request('a.tls.test', '/again'))?.status, 200, 'the SNI name still served after');
    t.notOk(
      backend.requests.some((r) => r.head.startsWith('GET /b ') || r.head.startsWith('GET /c ')),
      'no misdirected request reached a backend',
    );

    // Misdirected as the connection's second request, straight after a fast-path one, pipelined.
    const d = await tlsClient(t, port, 'a.tls.test', pki.caPem);
    d.write(get('a.tls.test', '/p1') + get('c.other.test', '/p2') + get('a.tls.test', '/p3'));
    const p1 = await d.response();
    const p2 = await d.response();
    const p3 = await d.response();
    t.same([p1?.status, p2?.status, p3?.status], [200, 421, 200], 'pipelined: fast, misdirected, general');
    t.equal(String(p3?.body), 'a.tls.test /p3');
  },
);

t.test('TLS h1: fast-path 502 and 504 pages carry HSTS, and the connection goes on', async (t) => {
  const pki = await testPki(t);
  const relay = await tlsRelay(t, pki, ['err.tls.test', 'slow.tls.test'], { responseHeadTimeout: 400 });
  // A port nobody listens on.
  const dead = createNetServer();
  dead.listen(0, '127.0.0.1');
  await once(dead, 'listening');
  const deadPort = (dead.address() as AddressInfo).port;
  await new Promise<void>((r) => dead.close(() => r()));
  const silent = await rawBackend(t, () => {}); // never answers
  await testAgent(
    t,
    relay,
    [
      { id: 'err', hostnames: ['err.tls.test'], target: `http://127.0.0.1:${deadPort}` },
      { id: 'slow', hostnames: ['slow.tls.test'], target: silent.url },
    ],
    { connections: 1 },
  );
  const kinds = streamKinds(relay);
  const port = relay.tlsAddress!.port;
  const c = await tlsClient(t, port, 'err.tls.test', pki.caPem);
  const r502 = await c.request('err.tls.test', '/x');
  t.equal(r502?.status, 502);
  t.equal(hdr(r502, 'x-burrow-error').length, 1, `names the failure (${hdr(r502, 'x-burrow-error')})`);
  t.same(hdr(r502, 'strict-transport-security'), [HSTS], 'HSTS on the fast-path 502');
  t.same(kinds, ['http1'], 'it was the fast path');
  const s = await tlsClient(t, port, 'slow.tls.test', pki.caPem);
  const r504 = await s.request('slow.tls.test', '/x');
  t.equal(r504?.status, 504);
  t.same(hdr(r504, 'strict-transport-security'), [HSTS], 'HSTS on the fast-path 504');
  t.notOk(s.closed, 'the connection stays open after the 504');
});

t.test('TLS h1: a WebSocket upgrade after fast-path requests on one connection still works', async (t) => {
  const pki = await testPki(t);
  const relay = await tlsRelay(t, pki, ['ws.tls.test']);
  const server = createHttpServer((req, res) => res.end(`plain ${req.url}`));
  const upgraded: Socket[] = [];
  server.on('upgrade', (req, socket: Socket) => {
    upgraded.push(socket);
    socket.write(
      `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nX-Proto: ${req.headers['x-forwarded-proto']}\r\n\r\n`,
    );
    socket.on('data', (d: Buffer) => socket.write(Buffer.concat([Buffer.from('echo:'), d])));
    socket.on('error', () => {});
    socket.on('end', () => socket.end()); // a backend that closes when its client does
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => {
    server.closeAllConnections();
    return new Promise<void>((r) => server.close(() => r()));
  });
  await testAgent(
    t,
    relay,
    [
      {
        id: 'ws',
        hostnames: ['ws.tls.test'],
        target: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
      },
    ],
    { connections: 1 },
  );
  const kinds = streamKinds(relay);
  const c = await tlsClient(t, relay.tlsAddress!.port, 'ws.tls.test', pki.caPem);
  t.equal((await c.request('ws.tls.test', '/one'))?.status, 200);
  t.equal((await c.request('ws.tls.test', '/two'))?.status, 200);
  c.write(
    'GET /chat HTTP/1.1\r\nHost: ws.tls.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
      'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n',
  );
  while (c.buffered.indexOf('\r\n\r\n') === -1 && !c.closed) await c.changed();
  const head = c.buffered.subarray(0, c.buffered.indexOf('\r\n\r\n')).toString('latin1');
  t.match(head, /^HTTP\/1\.1 101 /, 'switched');
  t.match(head, /x-proto: https/i, 'the backend saw https');
  c.consume(c.buffered.indexOf('\r\n\r\n') + 4);
  c.write('hello');
  while (!c.buffered.toString().includes('echo:hello') && !c.closed) await c.changed();
  t.equal(c.buffered.toString(), 'echo:hello', 'bytes flow both ways after the switch');
  t.same(kinds, ['http1', 'http'], 'the upgrade went on the general path');
});

t.test(
  'TLS h1 drain: idle fast and handed-over connections close, a busy one finishes with close and HSTS, close() is prompt',
  async (t) => {
    const pki = await testPki(t);
    const relay = await tlsRelay(t, pki, ['drain.tls.test', 'alias.drain.tls.test'], { drainTimeout: 8_000 });
    const backend = await holdingBackend(t);
    await testAgent(
      t,
      relay,
      [{ id: 'drain', hostnames: ['drain.tls.test', 'alias.drain.tls.test'], target: backend.url }],
      { connections: 1 },
    );
    const port = relay.tlsAddress!.port;
    const idle = await tlsClient(t, port, 'drain.tls.test', pki.caPem);
    t.equal((await idle.request('drain.tls.test', '/idle'))?.status, 200);
    const handed = await tlsClient(t, port, 'drain.tls.test', pki.caPem);
    t.equal((await handed.request('alias.drain.tls.test', '/handed'))?.status, 200, 'on Node’s parser');
    const fresh = await tlsClient(t, port, 'drain.tls.test', pki.caPem); // handshake done, no request
    const busy = await tlsClient(t, port, 'drain.tls.test', pki.caPem);
    busy.write(get('drain.tls.test', '/hold'));
    await backend.heldCount(1);
    const started = performance.now();
    const closing = relay.close();
    await within(3_000, idle.untilClosed(), 'the idle fast-path connection closed');
    await within(3_000, handed.untilClosed(), 'the idle handed-over connection closed');
    await within(3_000, fresh.untilClosed(), 'the connection without a request closed');
    backend.release();
    const r = await busy.response();
    t.equal(r?.status, 200, 'the busy request finished');
    t.same(hdr(r, 'connection'), ['close'], 'with Connection: close');
    t.same(hdr(r, 'strict-transport-security'), [HSTS]);
    await within(3_000, busy.untilClosed(), 'and its connection closed');
    await within(3_000, closing, 'relay.close()');
    t.ok(performance.now() - started < 3_000, 'well before the drain deadline');
  },
);

t.test(
  'TLS h1: a request followed by the client half-closing neither hangs nor leaks a stream',
  async (t) => {
    const pki = await testPki(t);
    const relay = await tlsRelay(t, pki, ['half.tls.test']);
    const backend = await holdingBackend(t);
    await testAgent(t, relay, [{ id: 'half', hostnames: ['half.tls.test'], target: backend.url }], {
      connections: 1,
    });
    const port = relay.tlsAddress!.port;
    const c = await tlsClient(t, port, 'half.tls.test', pki.caPem);
    c.write(get('half.tls.test', '/hold-half'));
    await backend.heldCount(1);
    c.socket.end();
    await within(3_000, c.untilClosed(), 'the connection closed');
    await until(async () => (await streamsActive(relay, 'half.tls.test')) === 0, 'no stream left');
    backend.release();
    t.equal(
      (await (await tlsClient(t, port, 'half.tls.test', pki.caPem)).request('half.tls.test'))?.status,
      200,
    );
  },
);

// ---------------------------------------------------------------------------
// The pool under concurrency and agent failures
// ---------------------------------------------------------------------------

/** `n` keep-alive clients on the plain listener, each sending `rounds` requests in turn; their statuses. */
async function load(t: Teardownable, port: number, host: string, n: number, rounds: number, tag: string) {
  return Promise.all(
    Array.from({ length: n }, async (_, i) => {
      const c = client(t, port);
      const statuses: number[] = [];
      for (let k = 0; k < rounds; k++) {
        c.write(get(host, `/${tag}-${i}-${k}`));
        statuses.push((await c.response())?.status ?? 0);
      }
      c.destroy();
      return statuses;
    }),
  ).then((all) => all.flat());
}

t.test(
  'pool: two agent connections under load, one cut while upstreams are idle and busy; later requests all succeed',
  async (t) => {
    const host = 'load.pool.test';
    const relay = await testRelay(t);
    const backend = await holdingBackend(t);
    await testAgent(t, relay, [{ id: 'load', hostnames: [host], target: backend.url }], { connections: 2 });
    await until(async () => relay.connections.size === 2, 'both agent connections up');
    const port = relay.httpAddress.port;
    const warm = await load(t, port, host, 24, 5, 'warm');
    t.same(new Set(warm), new Set([200]), 'warm-up: all 200');
    // Busy upstreams on both connections.
    const busy = Array.from({ length: 8 }, () => client(t, port));
    for (const [i, c] of busy.entries()) c.write(get(host, `/hold-${i}`));
    await backend.heldCount(8);
    const [victim] = relay.connections;
    victim!.session.destroy(new Error('cut by test'));
    const after = await load(t, port, host, 24, 5, 'after');
    t.same(new Set(after), new Set([200]), 'every request after the cut: 200');
    backend.release();
    const busyStatuses = await Promise.all(busy.map(async (c) => (await c.response())?.status ?? 0));
    t.ok(
      busyStatuses.every((s) => s === 200 || s === 502 || s === 503),
      `busy ones: 200, or 502/503 on the cut connection (${busyStatuses})`,
    );
    for (const c of busy) c.destroy();
    // Idle upstreams go after the pool's idle timeout: nothing is left open.
    await until(async () => (await streamsActive(relay, host)) === 0, 'streams_active back to 0', 15_000);
    t.pass('no stream left');
  },
);

t.test('pool: an agent going away under load; the other agent serves every later request', async (t) => {
  const host = 'away.pool.test';
  const relay = await testRelay(t);
  const backend = await holdingBackend(t);
  const routes = [{ id: 'away', hostnames: [host], target: backend.url }];
  const first = await testAgent(t, relay, routes, { connections: 1 });
  await testAgent(t, relay, routes, { connections: 1 });
  const port = relay.httpAddress.port;
  t.same(new Set(await load(t, port, host, 16, 4, 'warm')), new Set([200]));
  const busy = Array.from({ length: 6 }, () => client(t, port));
  for (const [i, c] of busy.entries()) c.write(get(host, `/hold-${i}`));
  await backend.heldCount(6);
  const closing = first.close();
  const after = await load(t, port, host, 16, 4, 'after');
  t.same(new Set(after), new Set([200]), 'every request during the agent drain: 200');
  backend.release();
  const busyStatuses = await Promise.all(busy.map(async (c) => (await c.response())?.status ?? 0));
  t.same(new Set(busyStatuses), new Set([200]), 'busy ones finish on the draining agent');
  for (const c of busy) c.destroy();
  await within(5_000, closing, 'the agent finished draining');
  await until(async () => (await streamsActive(relay, host)) === 0, 'streams_active back to 0', 15_000);
});

t.test('agent reconnect after its tunnel is cut: the fast path serves again at once', async (t) => {
  const host = 'again.pool.test';
  const relay = await testRelay(t);
  const backend = await holdingBackend(t);
  await testAgent(t, relay, [{ id: 'again', hostnames: [host], target: backend.url }], { connections: 1 });
  const port = relay.httpAddress.port;
  const c = client(t, port);
  c.write(get(host, '/1'));
  t.equal((await c.response())?.status, 200);
  const [victim] = relay.connections;
  victim!.session.destroy(new Error('cut by test'));
  await until(async () => relay.routes.lookup(host).kind === 'found', 'the agent is back');
  const kinds = streamKinds(relay);
  c.write(get(host, '/2'));
  t.equal((await c.response())?.status, 200, 'the same client connection, the new tunnel');
  t.same(kinds, ['http1'], 'on the fast path');
});

t.test(
  'a route removed while its request is in flight: it finishes, then 404; nothing left open',
  async (t) => {
    const relay = await testRelay(t);
    const backend = await holdingBackend(t);
    const source = new StaticRouteSource([
      { id: 'gone', hostnames: ['gone.pool.test'], target: backend.url },
      { id: 'stay', hostnames: ['stay.pool.test'], target: backend.url },
    ]);
    const agent = await testAgent(t, relay, source, { connections: 1 });
    const port = relay.httpAddress.port;
    const c = client(t, port);
    c.write(get('gone.pool.test', '/warm'));
    t.equal((await c.response())?.status, 200);
    c.write(get('gone.pool.test', '/hold'));
    await backend.heldCount(1);
    const announced = once(agent, 'routes');
    source.update([{ id: 'stay', hostnames: ['stay.pool.test'], target: backend.url }]);
    await announced;
    backend.release();
    const r = await c.response();
    t.ok(r?.status === 200 || r?.status === 502, `the request in flight ends (${r?.status})`);
    c.write(get('gone.pool.test', '/after'));
    t.equal((await c.response())?.status, 404, 'the name is gone');
    const d = client(t, port);
    d.write(get('stay.pool.test', '/s'));
    t.equal((await d.response())?.status, 200, 'the other route still served');
    await until(
      async () => (await streamsActive(relay, 'gone.pool.test')) === 0,
      'no stream of the removed route',
    );
  },
);

// ---------------------------------------------------------------------------
// https targets at the agent
// ---------------------------------------------------------------------------

t.test('https target: a backend that closes kept-alive or mid-response TLS connections', async (t) => {
  const pki = await testPki(t);
  const sockets: TLSSocket[] = [];
  const backendCut = deferred();
  const server = createHttpsServer(
    { cert: readFileSync(pki.certFile), key: readFileSync(pki.keyFile) },
    (req, res) => {
      if (req.url === '/cut') {
        res.writeHead(200, { 'content-length': '100' });
        res.write('partial');
        setImmediate(() => req.socket.destroy());
        return;
      }
      if (req.url === '/hold') {
        res.writeHead(200, { 'content-length': '100' });
        res.write('partial');
        req.socket.once('close', () => backendCut.resolve());
        return;
      }
      res.end(`secure ${req.url}`);
    },
  );
  server.on('secureConnection', (s: TLSSocket) => sockets.push(s));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => {
    server.closeAllConnections();
    return new Promise<void>((resolve) => server.close(() => resolve()));
  });
  const target = `https://localhost:${(server.address() as AddressInfo).port}`;
  const relay = await testRelay(t);
  await testAgent(t, relay, [{ id: 'sec', hostnames: ['sec.fast.test'], target, tlsInsecure: true }], {
    connections: 1,
  });
  const port = relay.httpAddress.port;
  const c = client(t, port);
  c.write(get('sec.fast.test', '/1'));
  t.equal(String((await c.response())?.body), 'secure /1');
  // The backend drops its idle connection without close_notify: the pool must not reuse it.
  const first = sockets[0]!;
  first.destroy();
  await until(async () => (await streamsActive(relay, 'sec.fast.test')) === 0, 'the pooled upstream closed');
  c.write(get('sec.fast.test', '/2'));
  t.equal(String((await c.response())?.body), 'secure /2', 'served on a new backend connection');
  const d = client(t, port);
  d.write(get('sec.fast.test', '/cut'));
  t.equal(await d.response(), undefined, 'a response cut short: the client connection is cut');
  // The client leaves mid-response: the agent resets its TLS connection to the backend (no TCP RST there).
  const e = client(t, port);
  e.write(get('sec.fast.test', '/hold'));
  await e.anyHead();
  e.destroy();
  await backendCut.promise;
  c.write(get('sec.fast.test', '/3'));
  t.equal(String((await c.response())?.body), 'secure /3', 'others go on');
});

// ---------------------------------------------------------------------------
// Clients that must not crash the relay or leak streams
// ---------------------------------------------------------------------------

t.test('abusive TLS and plain clients: the relay stays up and leaks no stream', async (t) => {
  const pki = await testPki(t);
  const host = 'abuse.tls.test';
  const relay = await tlsRelay(t, pki, [host], { responseHeadTimeout: 300, headersTimeout: 300 });
  const backend = await holdingBackend(t);
  await testAgent(t, relay, [{ id: 'abuse', hostnames: [host], target: backend.url }], { connections: 1 });
  const tlsPort = relay.tlsAddress!.port;
  const port = relay.httpAddress.port;
  const shapes = [
    // pipelined fast, upgrade, fast, then gone
    get(host, '/a') + get(host, '/b', 'Upgrade: websocket\r\nConnection: Upgrade\r\n') + get(host, '/c'),
    // a body announced and never sent
    `POST /p HTTP/1.1\r\nHost: ${host}\r\nContent-Length: 100000\r\n\r\nabc`,
    // half a head
    `GET /h HTTP/1.1\r\nHost: ${host}\r\nX-A: `,
    // many pipelined
    Array.from({ length: 50 }, (_, i) => get(host, `/m${i}`)).join(''),
    // a hold then the client vanishes
    get(host, '/hold-abuse'),
  ];
  for (const shape of shapes) {
    for (const mode of ['destroy', 'end', 'read'] as const) {
      const c = await tlsClient(t, tlsPort, host, pki.caPem);
      c.write(shape);
      const p = client(t, port);
      p.write(shape);
      if (mode === 'read') {
        await c.response();
        await p.response();
      }
      if (mode === 'destroy') {
        c.socket.destroy();
        p.destroy();
      } else {
        c.socket.end();
        p.socket.end();
      }
    }
  }
  backend.release();
  const last = await tlsClient(t, tlsPort, host, pki.caPem);
  t.equal((await last.request(host, '/alive'))?.status, 200, 'still serving');
  last.socket.destroy();
  backend.release();
  await until(async () => (await streamsActive(relay, host)) === 0, 'no stream left', 15_000);
  await within(20_000, relay.close(), 'relay.close()');
  t.pass('no leak');
});

t.test(
  'TLS h1: Connection: close, and a pipelined upload for another name of the route handed over whole',
  async (t) => {
    const pki = await testPki(t);
    const relay = await tlsRelay(t, pki, ['up.tls.test', 'alias.up.tls.test']);
    const backend = await rawBackend(t, (socket, req) => {
      const body = `${req.head.split(' ')[1]} ${req.body.length}`;
      socket.write(`HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
    });
    await testAgent(
      t,
      relay,
      [{ id: 'up', hostnames: ['up.tls.test', 'alias.up.tls.test'], target: backend.url }],
      { connections: 1 },
    );
    const port = relay.tlsAddress!.port;
    const c = await tlsClient(t, port, 'up.tls.test', pki.caPem);
    const body = 'x'.repeat(50_000);
    c.write(
      get('up.tls.test', '/first') +
        `POST /upload HTTP/1.1\r\nHost: alias.up.tls.test\r\nContent-Length: ${body.length}\r\n\r\n${body.slice(0, 1000)}`,
    );
    t.equal(String((await c.response())?.body), '/first 0');
    c.write(body.slice(1000));
    t.equal(String((await c.response())?.body), `/upload ${body.length}`, 'the upload arrived whole');
    const d = await tlsClient(t, port, 'up.tls.test', pki.caPem);
    const r = await d.request('up.tls.test', '/bye', 'Connection: close\r\n');
    t.equal(String(r?.body), '/bye 0');
    t.same(hdr(r, 'connection'), ['close']);
    await within(3_000, d.untilClosed(), 'the relay closed the connection');
    t.notOk(d.reset, 'cleanly (close_notify), not reset');
  },
);
