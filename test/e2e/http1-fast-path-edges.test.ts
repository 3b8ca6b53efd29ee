// Edge cases of the relay's HTTP/1.1 fast path (http1-parse.ts, http1-connection.ts,
// http1-pool.ts): shapes and sequences where it must answer as the general
// path (Node's parser, forward.ts, undici at the agent) does. Real relay,
// agent, backends and clients on 127.0.0.1.
import { once } from 'node:events';
import { readFile } from 'node:fs/promises';
import { type AddressInfo, createServer, type Socket } from 'node:net';
import { StaticRouteSource } from '@burrow/agent';
import type { Relay, RelayOptions } from '@burrow/relay';
import t from 'tap';
import { testAgent } from '../helpers/agent.js';
import { deferred, until, within } from '../helpers/deferred.js';
import { metricValue } from '../helpers/metrics.js';
import { rawRequest } from '../helpers/raw-http.js';
import { client, field, get, rawBackend } from '../helpers/raw-wire.js';
import { type Teardownable, testRelay } from '../helpers/relay.js';

interface Access {
  host: string;
  method: string;
  path: string;
  status: number;
  error?: string;
}

/** A relay (with an access-log tap) and one agent connection serving `host` from `target`. */
async function setup(
  t: Teardownable,
  host: string,
  target: string,
  opts: Partial<RelayOptions> = {},
  more: Array<{ id: string; hostnames: string[]; target: string }> = [],
) {
  const log: Access[] = [];
  const waiters: Array<() => void> = [];
  const relay = await testRelay(t, {
    ...opts,
    onRequestDone: (info) => {
      log.push(info);
      for (const w of waiters.splice(0)) w();
    },
  });
  const agent = await testAgent(t, relay, [{ id: host.split('.')[0]!, hostnames: [host], target }, ...more], {
    connections: 1,
  });
  /** Resolves with the n-th access entry (1-based) once it is logged. */
  const entry = async (n: number): Promise<Access> => {
    while (log.length < n) await new Promise<void>((r) => waiters.push(r));
    return log[n - 1]!;
  };
  return { relay, agent, port: relay.httpAddress.port, log, entry };
}

/** A TCP backend that answers nothing: each connection, and the bytes it got so far. */
async function sink(t: Teardownable) {
  const conns: Array<{ socket: Socket; bytes: Buffer; received(n: number): Promise<void> }> = [];
  const waiting: Array<() => void> = [];
  const server = createServer((socket) => {
    const changed: Array<() => void> = [];
    const conn = {
      socket,
      bytes: Buffer.alloc(0),
      async received(n: number) {
        while (conn.bytes.length < n) {
          if (socket.destroyed) throw new Error('closed before the bytes came');
          await new Promise<void>((r) => changed.push(r));
        }
      },
    };
    socket.on('error', () => {});
    socket.on('data', (c: Buffer) => {
      conn.bytes = Buffer.concat([conn.bytes, c]);
      for (const w of changed.splice(0)) w();
    });
    socket.on('close', () => {
      for (const w of changed.splice(0)) w();
    });
    conns.push(conn);
    for (const w of waiting.splice(0)) w();
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => {
    for (const c of conns) c.socket.destroy();
    return new Promise<void>((r) => server.close(() => r()));
  });
  let taken = 0;
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    conns,
    /** The next connection the backend accepts. */
    async next() {
      while (conns.length <= taken) await new Promise<void>((r) => waiting.push(r));
      return conns[taken++]!;
    },
  };
}

/** Resolves when the socket has closed (reset or not). */
const closed = (s: Socket) =>
  new Promise<void>((resolve) => (s.destroyed ? resolve() : s.once('close', () => resolve())));

const streamsActive = async (relay: Relay, host: string) =>
  metricValue(await relay.metrics.registry.metrics(), 'burrow_relay_streams_active', { host }) ?? 0;

// ---------------------------------------------------------------------------
// Request heads the fast parser accepts but Node's refuses
// ---------------------------------------------------------------------------

for (const [name, cl] of [
  ['a vertical tab before the Content-Length value', '\x0b'],
  ['a form feed before the Content-Length value', '\x0c'],
  ['a no-break space before the Content-Length value', '\xa0'],
] as const) {
  t.test(`${name}: refused with 400 as Node refuses it, never smuggled`, async (t) => {
    const host = 'ws.review.test';
    const backend = await rawBackend(t, (socket, req) => {
      const body = req.head.split(' ')[1]!;
      socket.write(`HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
    });
    const { port } = await setup(t, host, backend.url);
    // The body, by the relay's reading, is a whole request by a backend's that
    // cannot read the Content-Length line.
    const inner = `GET /smuggled HTTP/1.1\r\nHost: ${host}\r\n\r\n`;
    const reply = await rawRequest(
      port,
      Buffer.from(
        `POST /outer HTTP/1.1\r\nHost: ${host}\r\nContent-Length:${cl}${inner.length}\r\n\r\n${inner}`,
        'latin1',
      ),
    );
    t.equal(reply.status, 400, 'Node answers 400: a control character in a field value');
    t.same(
      backend.requests.map((r) => r.head.split(' ')[1]),
      [],
      'nothing reached the backend',
    );
  });
}

// ---------------------------------------------------------------------------
// The upstream pool
// ---------------------------------------------------------------------------

t.test('a route whose target changed is served by the new target at once', async (t) => {
  const host = 'moved.review.test';
  const answer = (name: string) => (socket: Socket) =>
    socket.write(`HTTP/1.1 200 OK\r\nContent-Length: ${name.length}\r\n\r\n${name}`);
  const before = await rawBackend(t, answer('before'));
  const after = await rawBackend(t, answer('after'));
  const relay = await testRelay(t);
  const source = new StaticRouteSource([{ id: 'moved', hostnames: [host], target: before.url }]);
  const agent = await testAgent(t, relay, source, { connections: 1 });
  const port = relay.httpAddress.port;
  t.equal((await rawRequest(port, get(host, '/1'))).text.split('\r\n\r\n')[1], 'before');
  // The route now points elsewhere (a Service's port changed, a route file edited).
  const announced = once(agent, 'routes');
  source.update([{ id: 'moved', hostnames: [host], target: after.url }]);
  await announced;
  const reply = await rawRequest(port, get(host, '/2'));
  t.equal(reply.text.split('\r\n\r\n')[1], 'after', 'the request went to the new target');
  t.equal(before.requests.length, 1, 'the old target got no request after the change');
});

t.test('an agent going away: an upstream busy at its GOAWAY closes once its exchange ends', async (t) => {
  const host = 'away.review.test';
  const arrived = deferred<Socket>();
  const backend = await rawBackend(t, (socket) => arrived.resolve(socket));
  const { port, agent } = await setup(t, host, backend.url);
  const reply = rawRequest(port, get(host, '/slow'));
  const socket = await arrived.promise;
  // A rolling update: the agent drains while the request is in flight.
  const closing = agent.close();
  socket.write('HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone');
  t.equal((await reply).status, 200, 'the request in flight finished');
  // Nothing will ever be sent on that agent connection again: its upstream must not wait in the pool.
  await within(2_000, closed(socket), 'the backend connection closed');
  await within(2_000, closing, 'the agent finished draining');
  t.pass('the drain ended with the last exchange');
});

t.test('stale pooled upstream: a GET is sent again, a POST is not', async (t) => {
  const host = 'stale.review.test';
  // Each backend connection answers its first request, then closes as the second arrives
  // (as a keep-alive timeout racing a reuse would).
  const backend = await rawBackend(t, (socket, req) => {
    if (req.seq > 0) {
      socket.destroy();
      return;
    }
    socket.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
  });
  const { port, entry } = await setup(t, host, backend.url);
  t.equal((await rawRequest(port, get(host, '/warm'))).status, 200);
  await entry(1);
  const again = await rawRequest(port, get(host, '/get'));
  t.equal(again.status, 200, 'the GET was retried on a new upstream');
  t.equal((await rawRequest(port, get(host, '/warm2'))).status, 200);
  const post = await rawRequest(
    port,
    `POST /post HTTP/1.1\r\nHost: ${host}\r\nContent-Length: 5\r\n\r\nhello`,
  );
  t.equal(post.status, 502, 'the POST is not sent twice');
  t.equal(
    backend.requests.filter((r) => r.head.startsWith('POST')).length,
    1,
    'the backend saw the POST once',
  );
});

t.test('idle pooled upstreams do not take the stream slots other routes need', async (t) => {
  // An agent that allows 4 concurrent streams per tunnel connection (SessionConfig).
  const relay = await testRelay(t);
  let hold = 4;
  const waiting: Array<() => void> = [];
  const answer = (name: string) => (socket: Socket) => {
    const go = () => socket.write(`HTTP/1.1 200 OK\r\nContent-Length: ${name.length}\r\n\r\n${name}`);
    if (name !== 'a' || hold === 0) return go();
    waiting.push(go);
    if (waiting.length === hold) {
      hold = 0;
      for (const w of waiting.splice(0)) w();
    }
  };
  const a = await rawBackend(t, answer('a'));
  const b = await rawBackend(t, answer('b'));
  const routes = [
    { id: 'a', hostnames: ['a.slots.test'], target: a.url },
    { id: 'b', hostnames: ['b.slots.test'], target: b.url },
  ];
  await testAgent(t, relay, routes, { connections: 1, session: { maxConcurrentStreams: 4 } });
  const port = relay.httpAddress.port;
  // A burst of four on route a, in flight together: four upstreams, then idle in the pool.
  const burst = await Promise.all([1, 2, 3, 4].map((i) => rawRequest(port, get('a.slots.test', `/${i}`))));
  t.same(
    burst.map((r) => r.status),
    [200, 200, 200, 200],
  );
  // Nothing is in flight now: route b must be served.
  const r = await rawRequest(port, get('b.slots.test', '/'));
  t.equal(r.status, 200, 'route b answered');
  t.equal(r.text.split('\r\n\r\n')[1], 'b');
});

// ---------------------------------------------------------------------------
// Clients leaving at each stage
// ---------------------------------------------------------------------------

t.test('client leaves while awaiting the response: 499 client_closed, backend cancelled', async (t) => {
  const host = 'await.review.test';
  const arrived = deferred<Socket>();
  const backend = await rawBackend(t, (socket) => arrived.resolve(socket));
  const { port, entry, relay } = await setup(t, host, backend.url);
  const c = client(t, port);
  c.write(get(host, '/wait'));
  const socket = await arrived.promise;
  c.destroy();
  const e = await entry(1);
  t.equal(e.status, 499);
  t.equal(e.error, 'client_closed');
  await within(5_000, closed(socket), 'the backend connection was closed');
  await until(async () => (await streamsActive(relay, host)) === 0, 'no stream left');
});

t.test('client leaves mid-body: 499 client_closed, backend cancelled', async (t) => {
  const host = 'midbody.review.test';
  const backend = await sink(t);
  const { port, entry, relay } = await setup(t, host, backend.url);
  const c = client(t, port);
  c.write(`PUT /up HTTP/1.1\r\nHost: ${host}\r\nContent-Length: 100000\r\n\r\n${'x'.repeat(1000)}`);
  const conn = await backend.next();
  await conn.received(1000);
  c.destroy();
  const e = await entry(1);
  t.equal(e.status, 499);
  t.equal(e.error, 'client_closed');
  await within(5_000, closed(conn.socket), 'the backend connection was closed');
  await until(async () => (await streamsActive(relay, host)) === 0, 'no stream left');
});

t.test('client leaves mid-response: logged with client_closed, backend cancelled', async (t) => {
  const host = 'midresp.review.test';
  const arrived = deferred<Socket>();
  const backend = await rawBackend(t, (socket) => {
    socket.write(`HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n${'x'.repeat(100)}`);
    arrived.resolve(socket);
  });
  const { port, entry, relay } = await setup(t, host, backend.url);
  const c = client(t, port);
  c.write(get(host, '/stream'));
  const socket = await arrived.promise;
  await c.anyHead();
  c.destroy();
  const e = await entry(1);
  t.equal(e.status, 200);
  t.equal(e.error, 'client_closed');
  await within(5_000, closed(socket), 'the backend connection was closed');
  await until(async () => (await streamsActive(relay, host)) === 0, 'no stream left');
});

// ---------------------------------------------------------------------------
// Timeouts
// ---------------------------------------------------------------------------

t.test('no response head in time: 504, and a late response never reaches the next request', async (t) => {
  const host = 'late.review.test';
  const held: Socket[] = [];
  const backend = await rawBackend(t, (socket, req) => {
    if (req.head.startsWith('GET /slow')) held.push(socket);
    else socket.write('HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext');
  });
  const { port, entry } = await setup(t, host, backend.url, { responseHeadTimeout: 300 });
  const c = client(t, port);
  c.write(get(host, '/slow'));
  const r = await c.response();
  t.equal(r?.status, 504);
  t.equal((await entry(1)).status, 504);
  // The backend answers after all, on the connection it got the request on.
  for (const s of held) if (!s.destroyed) s.write('HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nlate');
  c.write(get(host, '/next'));
  const n = await c.response();
  t.equal(n?.status, 200);
  t.equal(String(n?.body), 'next');
});

t.test('a client that sends its head slowly gets 408 after headersTimeout', async (t) => {
  const host = 'slow.review.test';
  const backend = await rawBackend(t, (socket) =>
    socket.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok'),
  );
  const { port } = await setup(t, host, backend.url, { headersTimeout: 400 });
  const c = client(t, port);
  c.write(get(host, '/first'));
  t.equal((await c.response())?.status, 200);
  // The next head, a byte at a time, never finished.
  c.write('GET /x HTTP/1.1\r\n');
  const timer = setInterval(() => c.write('X'), 50);
  t.teardown(() => clearInterval(timer));
  const r = await within(5_000, c.response(), 'an answer');
  clearInterval(timer);
  t.equal(r?.status, 408);
  await within(5_000, c.untilClosed(), 'the close');
  t.equal(backend.requests.length, 1, 'only the first request reached the backend');
});

// ---------------------------------------------------------------------------
// One connection, many hosts; handoff to the general path mid-connection
// ---------------------------------------------------------------------------

t.test('host switching on one keep-alive connection, then unknown and refused hosts', async (t) => {
  const answer = (name: string) => (socket: Socket, req: { head: string }) => {
    const body = `${name} ${req.head.split(' ')[1]}`;
    socket.write(`HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
  };
  const a = await rawBackend(t, answer('a'));
  const b = await rawBackend(t, answer('b'));
  const { port } = await setup(t, 'a.review.test', a.url, {}, [
    { id: 'b', hostnames: ['b.review.test'], target: b.url },
  ]);
  const c = client(t, port);
  for (const [h, p] of [
    ['a', '/1'],
    ['b', '/2'],
    ['a', '/3'],
  ] as const) {
    c.write(get(`${h}.review.test`, p));
    t.equal(String((await c.response())?.body), `${h} ${p}`);
  }
  // Pipelined: a, b, unknown, a. The unknown host moves the connection to the general path.
  c.write(
    get('a.review.test', '/4') +
      get('b.review.test', '/5') +
      get('nobody.review.test', '/6') +
      get('a.review.test', '/7'),
  );
  t.equal(String((await c.response())?.body), 'a /4');
  t.equal(String((await c.response())?.body), 'b /5');
  t.equal((await c.response())?.status, 404);
  t.equal(String((await c.response())?.body), 'a /7');
  t.same(
    a.requests.map((r) => (/\r\nhost: ([^\r]*)/i.exec(r.head) ?? [])[1]),
    ['a.review.test', 'a.review.test', 'a.review.test', 'a.review.test'],
  );
});

// ---------------------------------------------------------------------------
// Bodies
// ---------------------------------------------------------------------------

t.test('pipelined uploads sent in pieces arrive whole, each with its own response', async (t) => {
  const host = 'pipe.review.test';
  const backend = await rawBackend(t, (socket, req) => {
    const body = `${req.head.split(' ')[1]} ${req.body.length} ${req.body.toString().slice(0, 3)}`;
    socket.write(`HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
  });
  const { port } = await setup(t, host, backend.url);
  const c = client(t, port);
  const wire = Buffer.from(
    `POST /a HTTP/1.1\r\nHost: ${host}\r\nContent-Length: 10\r\n\r\naaaaaaaaaa` +
      `PUT /b HTTP/1.1\r\nHost: ${host}\r\nContent-Length: 5\r\n\r\nbbbbb` +
      get(host, '/c') +
      `PATCH /d HTTP/1.1\r\nHost: ${host}\r\nContent-Length: 3\r\n\r\nddd`,
    'latin1',
  );
  // Three bytes at a time, each write after the last is taken.
  for (let i = 0; i < wire.length; i += 3) {
    if (!c.write(wire.subarray(i, i + 3))) await once(c.socket, 'drain');
    await new Promise<void>((r) => setImmediate(r));
  }
  t.equal(String((await c.response())?.body), '/a 10 aaa');
  t.equal(String((await c.response())?.body), '/b 5 bbb');
  t.equal(String((await c.response())?.body), '/c 0 ');
  t.equal(String((await c.response())?.body), '/d 3 ddd');
});

t.test('a big response to a client that does not read: backpressure, then every byte', async (t) => {
  const host = 'big.review.test';
  const SIZE = 16 * 1024 * 1024;
  const finished = deferred();
  const backend = await rawBackend(t, (socket, req) => {
    if (req.head.startsWith('GET /small')) {
      socket.write('HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nsmall');
      return;
    }
    socket.write(`HTTP/1.1 200 OK\r\nContent-Length: ${SIZE}\r\n\r\n`);
    const block = Buffer.alloc(64 * 1024);
    let sent = 0;
    const pump = () => {
      while (sent < SIZE) {
        block.fill(String.fromCharCode(97 + ((sent / block.length) % 26)));
        sent += block.length;
        if (!socket.write(block)) {
          socket.once('drain', pump);
          return;
        }
      }
      finished.resolve();
    };
    pump();
  });
  const { port } = await setup(t, host, backend.url);
  const c = client(t, port);
  c.socket.pause();
  c.write(get(host, '/big'));
  // The backend cannot finish while nobody reads: windows and buffers fill up.
  let done = false;
  void finished.promise.then(() => (done = true));
  await new Promise<void>((r) => c.socket.once('readable', () => r()));
  t.notOk(done, 'the backend was held back');
  c.socket.resume();
  const r = await c.response();
  t.equal(r?.body.length, SIZE);
  let ok = true;
  for (let i = 0; i < SIZE; i += 64 * 1024) if (r!.body[i] !== 97 + ((i / (64 * 1024)) % 26)) ok = false;
  t.ok(ok, 'in order');
  c.write(get(host, '/small'));
  t.equal(String((await c.response())?.body), 'small');
});

// ---------------------------------------------------------------------------
// Backends misbehaving
// ---------------------------------------------------------------------------

t.test('garbage, 101 and huge heads from the backend: 502, the connection goes on', async (t) => {
  const host = 'junk.review.test';
  const backend = await rawBackend(t, (socket, req) => {
    const path = req.head.split(' ')[1];
    if (path === '/garbage') socket.write('HTTP/1.1 2OO OK\r\n\r\n');
    else if (path === '/101') socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n');
    else if (path === '/huge') socket.write(`HTTP/1.1 200 OK\r\nX: ${'a'.repeat(300 * 1024)}\r\n\r\n`);
    else if (path === '/badchunk')
      socket.write('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcdefg\r\n0\r\n\r\n');
    else socket.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
  });
  const { port, relay } = await setup(t, host, backend.url);
  for (const p of ['/garbage', '/101', '/huge']) {
    const c = client(t, port);
    c.write(get(host, p));
    t.equal((await c.response())?.status, 502, p);
    c.write(get(host, '/ok'));
    t.equal(String((await c.response())?.body), 'ok', `${p}: the next request on the connection`);
  }
  const c = client(t, port);
  c.write(get(host, '/badchunk'));
  t.equal(await c.response(), undefined, 'a malformed chunked body: the client connection is cut');
  t.equal((await rawRequest(port, get(host, '/ok'))).status, 200);
  await until(async () => (await streamsActive(relay, host)) <= 1, 'streams closed but the pooled one');
});

t.test('a response head cut short: an error page, and none of it reaches the next response', async (t) => {
  const host = 'partial.review.test';
  // A response head that stops after a Set-Cookie line: the backend then closes, or goes quiet.
  const partial = 'HTTP/1.1 200 OK\r\nSet-Cookie: session=for-someone-else\r\n';
  const backend = await rawBackend(t, (socket, req) => {
    const path = req.head.split(' ')[1];
    if (path === '/closes') socket.end(partial);
    else if (path === '/stalls') socket.write(partial);
    else if (path === '/early-hints-then-stalls')
      socket.write(`HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n${partial}`);
    else socket.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
  });
  const { port } = await setup(t, host, backend.url, { responseHeadTimeout: 300 });
  for (const [path, status] of [
    ['/closes', 502],
    ['/stalls', 504],
    ['/early-hints-then-stalls', 504],
  ] as const) {
    const c = client(t, port);
    c.write(get(host, path));
    t.equal((await c.response())?.status, status, `${path}: ${status}`);
    c.write(get(host, '/next'));
    const next = await c.response();
    t.equal(next?.status, 200, `${path}: the next request on the connection`);
    t.same(field(next!, 'set-cookie'), [], `${path}: no field of the cut response in the next one`);
    t.equal(String(next?.body), 'ok');
  }
});

t.test('a response head sent a byte at a time arrives whole', async (t) => {
  const host = 'trickle.review.test';
  const head = `HTTP/1.1 200 OK\r\nX-Long: ${'v'.repeat(8 * 1024)}\r\nContent-Length: 2\r\n\r\n`;
  const backend = await rawBackend(t, (socket) => {
    socket.setNoDelay(true);
    let at = 0;
    const next = () => {
      if (socket.destroyed) return;
      if (at === head.length) {
        socket.write('ok');
        return;
      }
      socket.write(head[at++]!, next);
    };
    next();
  });
  const { port } = await setup(t, host, backend.url);
  const c = client(t, port);
  c.write(get(host, '/'));
  const r = await c.response();
  t.equal(r?.status, 200);
  t.equal(field(r!, 'x-long')[0]?.length, 8 * 1024, 'the long field, whole');
  t.equal(String(r?.body), 'ok');
});

t.test('a backend response with both Content-Length and Transfer-Encoding: 502 on both paths', async (t) => {
  const host = 'split.review.test';
  // By its length the body ends after "0\r\n\r\n"; by chunked framing too, but a cache or a
  // client reading Content-Length: 5 would see the rest as the next response.
  const backend = await rawBackend(t, (socket) => {
    socket.write(
      'HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n' +
        'HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\ninjected',
    );
  });
  const { port } = await setup(t, host, backend.url);
  // HTTP/1.1 takes the fast path; HTTP/1.0 takes Node's parser and the general path.
  for (const version of ['1.1', '1.0']) {
    const c = client(t, port);
    c.write(`GET / HTTP/${version}\r\nHost: ${host}\r\n\r\n`);
    const r = await c.response();
    t.equal(r?.status, 502, `HTTP/${version}: 502`);
    t.notMatch(String(r?.body), /injected/, `HTTP/${version}: nothing of what followed`);
  }
});

t.test('Transfer-Encoding with a no-break space is not chunked: 400 and 502, never a wait', async (t) => {
  const host = 'nbsp.review.test';
  const backend = await rawBackend(t, (socket, req) => {
    if (req.head.startsWith('GET /te'))
      socket.write('HTTP/1.1 200 OK\r\nTransfer-Encoding: \xa0chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n', 'latin1');
    else socket.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
  });
  const { port } = await setup(t, host, backend.url);
  const upload = await rawRequest(
    port,
    Buffer.from(
      `POST /up HTTP/1.1\r\nHost: ${host}\r\nTransfer-Encoding: \xa0chunked\r\n\r\n0\r\n\r\n`,
      'latin1',
    ),
  );
  t.equal(upload.status, 400, 'a request framed so: 400 at once');
  t.equal(backend.requests.length, 0, 'nothing reached the backend');
  t.equal((await rawRequest(port, get(host, '/te'))).status, 502, 'a response framed so: 502');
});

t.test('pipelined requests from a client that reads nothing: no more started than it can take', async (t) => {
  const host = 'piper.review.test';
  const SIZE = 8 * 1024;
  const COUNT = 6000;
  const backend = await rawBackend(t, (socket, req) => {
    const n = req.head.split(' ')[1]!.slice(1).padEnd(SIZE, '.');
    socket.write(`HTTP/1.1 200 OK\r\nContent-Length: ${SIZE}\r\n\r\n${n}`);
  });
  const { port } = await setup(t, host, backend.url);
  // What the kernel may hold between the relay and the client: the relay's send buffer and
  // the client's receive buffer at their largest. Each response beyond that sits in the relay.
  const largest = async (file: string) => Number((await readFile(file, 'utf8')).trim().split(/\s+/)[2]);
  const kernel =
    (await largest('/proc/sys/net/ipv4/tcp_rmem')) + (await largest('/proc/sys/net/ipv4/tcp_wmem'));
  const bound = Math.ceil(kernel / SIZE) + 2;
  t.ok(COUNT > bound * 1.2, `${COUNT} requests are more than the kernel holds (${bound})`);
  const c = client(t, port);
  c.socket.pause();
  let requests = '';
  for (let i = 0; i < COUNT; i++) requests += get(host, `/${i}`);
  c.write(requests);
  // The relay stops starting requests once the client's socket is full; wait for that.
  let last = -1;
  await until(async () => {
    const seen = backend.requests.length;
    const still = seen === last && seen > 0;
    last = seen;
    return still;
  }, 'the backend stopped getting requests');
  const started = backend.requests.length;
  t.ok(started <= bound, `${started} requests started before the client read (at most ${bound})`);
  c.socket.resume();
  let inOrder = true;
  for (let i = 0; i < COUNT; i++) {
    const r = await c.response();
    if (r?.status !== 200 || !String(r.body).startsWith(`${i}.`)) {
      inOrder = false;
      break;
    }
  }
  t.ok(inOrder, `all ${COUNT} responses, in order`);
});

// ---------------------------------------------------------------------------
// Drain
// ---------------------------------------------------------------------------

t.test('relay drain: idle fast connections close, a busy one finishes, close resolves', async (t) => {
  const host = 'drain.review.test';
  const arrived = deferred<Socket>();
  const backend = await rawBackend(t, (socket, req) => {
    if (req.head.startsWith('GET /slow')) arrived.resolve(socket);
    else socket.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
  });
  const { port, relay } = await setup(t, host, backend.url);
  const idle = client(t, port);
  idle.write(get(host, '/idle'));
  t.equal((await idle.response())?.status, 200);
  const busy = client(t, port);
  busy.write(get(host, '/slow'));
  const socket = await arrived.promise;
  const closing = relay.close();
  await within(3_000, idle.untilClosed(), 'the idle connection closed');
  socket.write('HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone');
  const r = await busy.response();
  t.equal(r?.status, 200);
  t.same(field(r!, 'connection'), ['close'], 'the last response says close');
  await within(5_000, closing, 'relay.close()');
  t.pass('drained');
});

t.test('an error page answering HEAD is a head alone, on both paths', async (t) => {
  const host = 'head.review.test';
  const backend = await rawBackend(t, (socket, req) => {
    if (req.head.split(' ')[1] === '/gone')
      socket.destroy(); // no answer at all: 502
    else socket.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
  });
  for (const http1FastPath of [true, false]) {
    const { port } = await setup(t, host, backend.url, { http1FastPath });
    const c = client(t, port);
    c.write(`HEAD /gone HTTP/1.1\r\nHost: ${host}\r\n\r\n`);
    const page = await c.response('HEAD');
    t.equal(page?.status, 502, `fast path ${http1FastPath}: 502`);
    t.equal(String(page?.body), '', 'no body');
    // A body after the head would be read as the start of this response.
    const next = await c.request(host, '/ok');
    t.equal(next?.status, 200, 'the next request on the connection gets its own response');
    t.equal(String(next?.body), 'ok');
  }
});

t.test(
  'the HTTP/2 preface after a request is not a switch to HTTP/2: 400, as on the general path',
  async (t) => {
    const host = 'preface.review.test';
    const backend = await rawBackend(t, (socket) =>
      socket.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok'),
    );
    const { port } = await setup(t, host, backend.url);
    const c = client(t, port);
    t.equal((await c.request(host, '/first'))?.status, 200);
    // RFC 9113 §3.4: the preface opens a connection; mid-connection it is a malformed request.
    const settings = Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0]);
    c.write(Buffer.concat([Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'), settings]));
    t.equal((await c.response())?.status, 400);
    await c.untilClosed();
    t.equal(backend.requests.length, 1, 'only the first request reached the backend');
  },
);
