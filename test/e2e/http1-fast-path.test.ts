// The relay's HTTP/1.1 fast path: plain requests travel as bytes over one
// `http1` tunnel stream per client connection, spliced by the agent to one
// backend connection; anything else goes to the general path, mid-connection
// if need be, with no byte lost. Real relay, agent, backends and clients on
// 127.0.0.1.
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import t from 'tap';
import { testAgent } from '../helpers/agent.js';
import { deferred } from '../helpers/deferred.js';
import { get as httpGet, httpsGet, testServer } from '../helpers/http.js';
import { client, get, rawBackend } from '../helpers/raw-wire.js';
import { streamKinds, type Teardownable, testRelay } from '../helpers/relay.js';
import { h2Session, testPki } from '../helpers/tls.js';

async function setup(t: Teardownable, host: string, target: string) {
  const relay = await testRelay(t);
  await testAgent(t, relay, [{ id: host.split('.')[0]!, hostnames: [host], target }], { connections: 1 });
  return { relay, port: relay.httpAddress.port, kinds: streamKinds(relay) };
}

t.test('a keep-alive connection: one stream, one backend connection, every response in order', async (t) => {
  const host = 'keep.fast.test';
  const backend = await rawBackend(t, (socket, req) => {
    const body = `${req.head.split(' ')[1]} #${req.seq}`;
    socket.write(`HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
  });
  const { port, kinds } = await setup(t, host, backend.url);
  const c = client(t, port);
  for (let i = 0; i < 20; i++) {
    c.write(get(host, `/r${i}`));
    t.equal(String((await c.response())?.body), `/r${i} #${i}`);
  }
  // Three at once: answered one after the other, in the order sent.
  c.write(get(host, '/p1') + get(host, '/p2') + get(host, '/p3'));
  for (const p of ['/p1', '/p2', '/p3']) t.equal(String((await c.response())?.body).split(' ')[0], p);
  t.same(kinds, ['http1'], 'one HTTP/1.1 stream carried them all');
  t.equal(new Set(backend.requests.map((r) => r.conn)).size, 1, 'over one backend connection');
});

t.test('a request the fast path does not carry moves the connection to the general path', async (t) => {
  const host = 'mixed.fast.test';
  const backend = await testServer(t, (req, res) => {
    let n = 0;
    req.on('data', (c: Buffer) => (n += c.length));
    req.on('end', () => res.end(`${req.method} ${req.url} ${n}`));
  });
  const { port, kinds } = await setup(t, host, backend.url);
  const c = client(t, port);
  c.write(get(host, '/first'));
  t.equal(String((await c.response())?.body), 'GET /first 0');
  // A chunked upload, the next GET right behind it in the same write.
  c.write(
    `POST /up HTTP/1.1\r\nHost: ${host}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n` +
      get(host, '/after'),
  );
  t.equal(String((await c.response())?.body), 'POST /up 11', 'the chunked upload arrived whole');
  t.equal(String((await c.response())?.body), 'GET /after 0', 'and the request behind it too');
  t.same(kinds, ['http1', 'http', 'http'], 'first on the fast path, then on the general one');
});

t.test('an agent that does not offer http1 streams is served on the general path', async (t) => {
  const host = 'old.fast.test';
  const backend = await testServer(t, (req, res) => res.end(`${req.headers['x-forwarded-host']}`));
  const relay = await testRelay(t);
  await testAgent(t, relay, [{ id: 'old', hostnames: [host], target: backend.url }]);
  // As an agent from before the feature: its announcement named no features.
  for (const c of relay.connections) Object.defineProperty(c, 'servesHttp1', { value: false });
  const kinds = streamKinds(relay);
  const r = await httpGet(relay.httpAddress.port, host);
  t.equal(r.status, 200);
  t.equal(String(r.body), host);
  t.same(kinds, ['http']);
});

t.test('bytes a backend sends after a whole response do not reach the next one', async (t) => {
  const host = 'extra.fast.test';
  const backend = await rawBackend(t, (socket, req) => {
    // A HEAD answered with a body anyway: those bytes are not a response to anything.
    if (req.head.startsWith('HEAD')) socket.write('HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\njunk');
    else socket.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
  });
  const { port } = await setup(t, host, backend.url);
  const c = client(t, port);
  c.write(`HEAD / HTTP/1.1\r\nHost: ${host}\r\n\r\n`);
  t.equal((await c.response('HEAD'))?.status, 200);
  c.write(get(host, '/next'));
  const next = await c.response();
  t.equal(next?.status, 200);
  t.equal(String(next?.body), 'ok', 'the next request got its own response');
  t.equal(backend.requests.at(-1)?.conn, 1, 'on a new backend connection');
});

t.test(
  'a body sent after a bodiless response, in a later write, never answers the next request',
  async (t) => {
    // A backend that answers HEAD as GET, or a 204 with a body, and writes that
    // body late: here just before its next response on the same connection, so
    // that on a reused upstream it would be read as that response. The bodies
    // look like responses of their own, as an attacker would shape them.
    const stray = 'HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nPOISONED';
    const owed = new Map<number, string>();
    const backend = await rawBackend(t, (socket, req) => {
      socket.write(owed.get(req.conn) ?? '');
      owed.delete(req.conn);
      const path = req.head.split(' ')[1]!;
      if (req.head.startsWith('HEAD')) {
        socket.write(`HTTP/1.1 200 OK\r\nContent-Length: ${stray.length}\r\n\r\n`);
        owed.set(req.conn, stray);
      } else if (path === '/204') {
        socket.write(`HTTP/1.1 204 No Content\r\nContent-Length: ${stray.length}\r\n\r\n`);
        owed.set(req.conn, stray);
      } else socket.write(`HTTP/1.1 200 OK\r\nContent-Length: ${path.length}\r\n\r\n${path}`);
    });
    const host = 'late.fast.test';
    const { port } = await setup(t, host, backend.url);
    const c = client(t, port);
    c.write(`HEAD /file HTTP/1.1\r\nHost: ${host}\r\n\r\n`);
    t.equal((await c.response('HEAD'))?.status, 200);
    c.write(get(host, '/after-head'));
    t.equal(
      String((await c.response())?.body),
      '/after-head',
      'the request after a HEAD got its own response',
    );
    c.write(get(host, '/204'));
    t.equal((await c.response())?.status, 204);
    c.write(get(host, '/after-204'));
    t.equal(
      String((await c.response())?.body),
      '/after-204',
      'the request after the 204 got its own response',
    );
    t.same(
      backend.requests.map((r) => r.conn),
      [0, 1, 1, 2],
      'a new backend connection after each',
    );
  },
);

t.test(
  'https targets: the agent speaks TLS to the backend, verified unless the route says not',
  async (t) => {
    const pki = await testPki(t);
    const server = createHttpsServer(
      { cert: readFileSync(pki.certFile), key: readFileSync(pki.keyFile) },
      (req, res) => res.end(`secure ${req.url}`),
    );
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
    server.on('connection', (s) => t.teardown(() => s.destroy()));
    const target = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const relay = await testRelay(t);
    await testAgent(
      t,
      relay,
      [
        { id: 'insecure', hostnames: ['insecure.fast.test'], target, tlsInsecure: true },
        { id: 'verified', hostnames: ['verified.fast.test'], target },
      ],
      { connections: 1 },
    );
    const kinds = streamKinds(relay);
    const port = relay.httpAddress.port;
    const ok = await httpGet(port, 'insecure.fast.test', '/x');
    t.equal(ok.status, 200);
    t.equal(String(ok.body), 'secure /x');
    const refused = await httpGet(port, 'verified.fast.test');
    t.equal(refused.status, 502, 'a certificate the agent does not trust: 502');
    t.equal(refused.headers['x-burrow-error'], 'backend_error');
    t.same(kinds, ['http1', 'http1']);
  },
);

t.test('upstreams are pooled: clients in turn share backend connections, idle ones close', async (t) => {
  const host = 'pool.fast.test';
  let waiting: Array<() => void> = [];
  let hold = 0;
  const backend = await rawBackend(t, (socket, req) => {
    const answer = () =>
      socket.write(`HTTP/1.1 200 OK\r\nContent-Length: ${req.head.length}\r\n\r\n${req.head}`);
    // While `hold` is set, requests wait until that many have arrived: they are in flight together.
    if (hold === 0) return answer();
    waiting.push(answer);
    if (waiting.length === hold) {
      for (const w of waiting) w();
      waiting = [];
    }
  });
  const { port, kinds } = await setup(t, host, backend.url);
  // One after another, each on a client connection of its own (closed after its response).
  for (let i = 0; i < 5; i++) t.equal((await httpGet(port, host, `/seq${i}`)).status, 200);
  t.equal(kinds.length, 1, 'one upstream carried the five clients');
  t.same(new Set(backend.requests.map((r) => r.conn)), new Set([0]), 'over one backend connection');
  // Eight at once need eight upstreams; the next eight find them idle in the pool.
  for (const round of [1, 2]) {
    hold = 8;
    const replies = await Promise.all(
      Array.from({ length: 8 }, (_, i) => httpGet(port, host, `/r${round}-${i}`)),
    );
    t.same(
      replies.map((r) => r.status),
      Array(8).fill(200),
      `round ${round}`,
    );
  }
  t.equal(kinds.length, 8, 'the second round reused the first round’s upstreams');
  t.equal(backend.connections.length, 8, 'and their backend connections');
  // Idle upstreams are closed after the pool's idle timeout: the backend sees its connections end.
  await Promise.all(backend.connections.map((s) => (s.destroyed ? undefined : once(s, 'close'))));
  t.pass('every idle backend connection closed');
});

t.test(
  'terminated TLS: HTTP/1.1 takes the fast path, HSTS included; h2 and other hosts do not',
  async (t) => {
    const pki = await testPki(t);
    const cert = await pki.issue('secure', ['secure.fast.test', 'other.fast.test']);
    const relay = await testRelay(t, {
      tls: { host: '127.0.0.1', port: 0 },
      certFiles: { pairs: [{ cert: cert.certFile, key: cert.keyFile }] },
      hstsMaxAge: 300,
    });
    const backend = await testServer(t, (req, res) =>
      res.end(`${req.headers['x-forwarded-proto']} ${req.headers.host}`),
    );
    await testAgent(
      t,
      relay,
      [
        { id: 'secure', hostnames: ['secure.fast.test'], target: backend.url },
        { id: 'other', hostnames: ['other.fast.test'], target: backend.url },
      ],
      { connections: 1 },
    );
    const kinds = streamKinds(relay);
    const port = relay.tlsAddress!.port;
    const r = await httpsGet(port, 'secure.fast.test', pki.caPem);
    t.equal(r.alpn, false, 'no ALPN offered: HTTP/1.1');
    t.equal(r.status, 200);
    t.equal(r.body, 'https secure.fast.test');
    t.equal(r.headers['strict-transport-security'], 'max-age=300');
    t.same(kinds, ['http1']);

    const session = await h2Session(t, port, 'secure.fast.test', pki.caPem);
    const s = session.request({ ':path': '/', ':authority': 'secure.fast.test' });
    const [headers] = await once(s, 'response');
    s.resume();
    t.equal(Number(headers[':status']), 200, 'h2 is served too');
    t.same(kinds, ['http1', 'http'], 'on the general path');

    // A request for another host than the SNI name: the general path decides (421 across routes).
    const c = tlsConnect({ port, host: '127.0.0.1', servername: 'secure.fast.test', ca: pki.caPem });
    t.teardown(() => c.destroy());
    await once(c, 'secureConnect');
    c.write('GET / HTTP/1.1\r\nHost: other.fast.test\r\n\r\n');
    const [reply] = await once(c, 'data');
    t.match(String(reply), /^HTTP\/1\.1 421 /, 'misdirected');
    t.match(String(reply), /strict-transport-security: max-age=300/i);
    t.same(kinds, ['http1', 'http'], 'and no stream for it');
  },
);

t.test(
  'the keep-alive timeout closes idle client connections, never one with a request in flight',
  async (t) => {
    const host = 'idle.fast.test';
    const held: Array<() => void> = [];
    const arrived = deferred();
    const backend = await rawBackend(t, (socket, req) => {
      const answer = () => socket.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
      if (!req.head.startsWith('GET /held')) return answer();
      held.push(answer);
      arrived.resolve();
    });
    const { port } = await setup(t, host, backend.url);
    // The busy connection's last byte goes first, so its idle timer runs out first too.
    const busy = client(t, port);
    busy.write(get(host, '/held'));
    await arrived.promise;
    const idle = client(t, port);
    idle.write(get(host, '/once'));
    t.equal((await idle.response())?.status, 200);
    // The idle connection goes when the relay's keep-alive timeout (5 s) runs out...
    await idle.untilClosed();
    t.pass('the idle connection was closed');
    // ...while the busy one, silent for longer, still gets its response.
    t.notOk(busy.closed, 'the connection with a request in flight is open');
    for (const answer of held) answer();
    t.equal((await busy.response())?.status, 200, 'the request in flight was answered');
    busy.write(get(host, '/after'));
    t.equal((await busy.response())?.status, 200, 'and its connection is still usable');
  },
);

t.test('Expect: 100-continue: the relay answers it and the upload takes the fast path', async (t) => {
  const host = 'expect.fast.test';
  const backend = await rawBackend(t, (socket, req) => {
    const body = `${/\r\nexpect:/i.test(req.head) ? 'saw Expect' : 'no Expect'} ${req.body.length}`;
    socket.write(`HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
  });
  const { port, kinds } = await setup(t, host, backend.url);
  const c = client(t, port);
  c.write(`PUT /f HTTP/1.1\r\nHost: ${host}\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n`);
  await c.anyHead(); // the body waits for the go-ahead, as a client that asked would
  c.write('hello');
  const r = await c.response();
  t.same(
    c.interim.map((i) => i.status),
    [100],
    '100 Continue first',
  );
  t.equal(r?.status, 200);
  t.equal(String(r?.body), 'no Expect 5', 'the backend got the body, not the expectation');
  t.same(kinds, ['http1']);
});

t.test('--no-http1-fast-path: every request takes the general path, on both listeners', async (t) => {
  const pki = await testPki(t);
  const cert = await pki.issue('off', ['off.fast.test']);
  const relay = await testRelay(t, {
    http1FastPath: false,
    tls: { host: '127.0.0.1', port: 0 },
    certFiles: { pairs: [{ cert: cert.certFile, key: cert.keyFile }] },
    httpsRedirect: false,
  });
  const backend = await testServer(t, (req, res) => res.end(String(req.headers['x-forwarded-proto'])));
  await testAgent(t, relay, [{ id: 'off', hostnames: ['off.fast.test'], target: backend.url }], {
    connections: 1,
  });
  const kinds = streamKinds(relay);
  const plain = await httpGet(relay.httpAddress.port, 'off.fast.test');
  t.equal(String(plain.body), 'http');
  const secure = await httpsGet(relay.tlsAddress!.port, 'off.fast.test', pki.caPem);
  t.equal(secure.body, 'https');
  t.same(kinds, ['http', 'http'], 'a stream of its own for each request, none of them http1');
});
