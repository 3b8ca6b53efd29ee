// Stream edges of the relay: the TLS passthrough hand-over (ClientHello replay,
// half-close, silent clients, backends that close first, many connections),
// HTTP/2 on the terminator (request bodies, flow control, RST_STREAM, header
// translation), backpressure on slow HTTP/1.1 clients, and the streams and
// request metrics after resets, timeouts, upgrades and passthrough.
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { request as httpRequest, type IncomingMessage, type ServerResponse } from 'node:http';
import type { ClientHttp2Session, ClientHttp2Stream } from 'node:http2';
import { connect as netConnect, type Socket } from 'node:net';
import type { Relay } from '@burrow/relay';
import type { Stream } from '@burrow/shared';
import t, { type Test } from 'tap';
import { testAgent } from '../helpers/agent.js';
import { deferred, within } from '../helpers/deferred.js';
import { get, testServer } from '../helpers/http.js';
import { metricValue } from '../helpers/metrics.js';
import { tcpBackend } from '../helpers/net.js';
import { type Teardownable, testRelay } from '../helpers/relay.js';
import { clientHelloFor, h2Session, type TestPki, testPki } from '../helpers/tls.js';

const KiB = 1024;
const MiB = 1024 * KiB;

/**
 * A relay-side tunnel stream, a promise of its 'close', and one of the first
 * time it is paused after it started flowing into the client (backpressure).
 */
type Captured = Stream & { gone: Promise<unknown>; pushedBack: Promise<string> };

/** Every stream the relay opens to agents from now on (for reading their buffers and state). */
function captureStreams(relay: Relay): Captured[] {
  const seen: Captured[] = [];
  for (const c of relay.connections) {
    const session = c.session as unknown as { openStream(m: Buffer): Stream };
    const open = session.openStream.bind(session);
    session.openStream = (m: Buffer) => {
      const s = open(m);
      // Paused while piped into the client's response (or at all, on an HTTP/1.1
      // connection stream, which is only paused for that): the client side pushed back.
      const http1 = JSON.parse(m.toString()).kind === 'http1';
      const piped = () => (s as unknown as { _readableState: { pipes: unknown[] } })._readableState.pipes;
      const pushedBack = new Promise<string>((resolve) =>
        s.on('pause', () => {
          if (http1 || piped().length > 0) resolve('paused');
        }),
      );
      seen.push(Object.assign(s, { gone: new Promise((resolve) => s.once('close', resolve)), pushedBack }));
      return s;
    };
  }
  return seen;
}

/** Open streams over every tunnel connection of the relay. */
function relayStreams(relay: Relay): number {
  let n = 0;
  for (const c of relay.connections) n += c.session.stats.streams;
  return n;
}

/** A raw client connection to the relay's TLS port, and a promise of its 'close'. */
async function rawTls(relay: Relay): Promise<Socket & { gone: Promise<unknown> }> {
  const socket = netConnect({ port: relay.tlsAddress!.port, host: '127.0.0.1', allowHalfOpen: true });
  socket.on('error', () => {});
  const closed = new Promise((resolve) => socket.once('close', resolve));
  await once(socket, 'connect');
  return Object.assign(socket, { gone: closed });
}

/** Reads `socket` until it ends; resolves with everything. */
function readAll(socket: Socket | ClientHttp2Stream | IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('end', () => resolve(Buffer.concat(chunks)));
    socket.on('error', reject);
  });
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

async function passthroughSetup(t: Teardownable, handler: (socket: Socket) => void) {
  const port = await tcpBackend(t, handler);
  const relay = await testRelay(t, { tls: { host: '127.0.0.1', port: 0 } });
  await testAgent(
    t,
    relay,
    [{ id: 'pt', hostnames: ['pt.edge.test'], target: `tls-passthrough://127.0.0.1:${port}` }],
    { connections: 1 },
  );
  return { relay, hello: await clientHelloFor('pt.edge.test') };
}

/** A backend handler streaming `total` bytes as fast as the connection takes them; `written()` counts them. */
function bigResponse(total: number) {
  let written = 0;
  const wroteAll = deferred();
  const handler = (req: IncomingMessage, res: ServerResponse) => {
    req.resume();
    res.writeHead(200, { 'content-length': String(total) });
    const chunk = Buffer.alloc(64 * KiB, 'z');
    const pump = () => {
      while (written < total) {
        written += chunk.length;
        if (!res.write(chunk)) return void res.once('drain', pump);
      }
      res.end();
      wroteAll.resolve();
    };
    pump();
  };
  return { handler, written: () => written, wroteAll };
}

/**
 * With the client not reading (`body` paused): the relay's tunnel stream is
 * paused before the backend wrote everything, and holds at most its window;
 * once the client reads, the whole body arrives.
 */
async function expectPushBack(
  t: Test,
  relayStream: Captured,
  big: ReturnType<typeof bigResponse>,
  body: NodeJS.ReadableStream,
  total: number,
) {
  const outcome = await within(
    30_000,
    Promise.race([relayStream.pushedBack, big.wroteAll.promise.then(() => 'all written')]),
    'outcome',
  );
  t.equal(outcome, 'paused', `relay pushed back (backend had written ${big.written()} bytes)`);
  t.ok(relayStream.readableLength <= relayStream.receiveWindow, 'relay holds at most its window');
  let got = 0;
  body.on('data', (c: Buffer) => (got += c.length));
  body.resume();
  await within(60_000, once(body as NodeJS.EventEmitter, 'end'), 'the whole body');
  t.equal(got, total, 'and then the whole body arrives');
}

t.test(
  'passthrough: bytes sent with and right after the ClientHello reach the backend in order',
  async (t) => {
    const got = deferred<Buffer>();
    const { relay, hello } = await passthroughSetup(t, (s) => {
      readAll(s).then(got.resolve);
      s.pipe(s); // echo, and FIN after the client's FIN
    });
    const tail = randomBytes(4 * MiB);
    const base = relayStreams(relay);
    const streams = captureStreams(relay);
    const socket = await rawTls(relay);
    const echoed = readAll(socket);
    // The hello and the first bytes after it in one segment, then more in pieces.
    socket.write(Buffer.concat([hello, tail.subarray(0, 1000)]));
    for (let off = 1000; off < tail.length; off += 64 * KiB) socket.write(tail.subarray(off, off + 64 * KiB));
    socket.end();
    const expected = Buffer.concat([hello, tail]);
    const atBackend = await within(20_000, got.promise, 'backend sees the client FIN');
    t.equal(atBackend.length, expected.length, 'every byte arrived');
    t.equal(sha(atBackend), sha(expected), 'in order, unaltered');
    const back = await within(20_000, echoed, 'client gets the echo and FIN');
    t.equal(sha(back), sha(expected), 'the echo came back whole');
    await within(5_000, socket.gone, 'client socket closes');
    await within(5_000, streams[0]!.gone, 'the tunnel stream closes');
    t.equal(relayStreams(relay), base, 'no stream left open');
  },
);

t.test(
  'passthrough: a client that sends nothing after the hello, then half-closes, gets the answer',
  async (t) => {
    const { relay, hello } = await passthroughSetup(t, (s) => {
      readAll(s).then((b) => s.end(`got ${b.length}`));
    });
    const socket = await rawTls(relay);
    const reply = readAll(socket);
    socket.end(hello);
    t.equal(String(await within(10_000, reply, 'reply')), `got ${hello.length}`);
    await within(5_000, socket.gone, 'closed');
  },
);

t.test(
  'passthrough: a backend that closes first: its bytes and FIN reach the client, who may still send',
  async (t) => {
    const afterFin = deferred<Buffer>();
    const { relay, hello } = await passthroughSetup(t, (s) => {
      let seen = Buffer.alloc(0);
      let ended = false;
      s.on('data', (c: Buffer) => {
        seen = Buffer.concat([seen, c]);
        if (!ended && seen.length >= hello.length) {
          ended = true;
          seen = seen.subarray(hello.length);
          s.end(Buffer.alloc(300 * KiB, 'b'));
        }
      });
      s.on('end', () => afterFin.resolve(seen));
    });
    const base = relayStreams(relay);
    const streams = captureStreams(relay);
    const socket = await rawTls(relay);
    const reply = readAll(socket);
    socket.write(hello);
    const r = await within(10_000, reply, 'backend bytes and FIN');
    t.equal(r.length, 300 * KiB, 'all the backend sent, then FIN');
    socket.end('late words');
    t.equal(
      String(await within(10_000, afterFin.promise, 'late bytes')),
      'late words',
      'half-open the other way',
    );
    await within(5_000, socket.gone, 'closed');
    await within(5_000, streams[0]!.gone, 'the tunnel stream closes');
    t.equal(relayStreams(relay), base, 'no stream left open');
  },
);

t.test('passthrough: 60 concurrent connections each get their own bytes back', async (t) => {
  const { relay, hello } = await passthroughSetup(t, (s) => s.pipe(s));
  const one = async (i: number) => {
    const socket = await rawTls(relay);
    const echoed = readAll(socket);
    const payload = Buffer.alloc(32 * KiB + i, i);
    socket.end(Buffer.concat([hello, payload]));
    const back = await echoed;
    return back.subarray(hello.length).equals(payload);
  };
  const results = await within(
    30_000,
    Promise.all(Array.from({ length: 60 }, (_, i) => one(i))),
    'all echoes',
  );
  t.equal(results.filter(Boolean).length, 60);
});

/** A backend that answers with what it received: method, headers, body length and hash. */
function echoRequest(req: IncomingMessage, res: import('node:http').ServerResponse) {
  readAll(req).then((body) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ method: req.method, headers: req.headers, bytes: body.length, sha: sha(body) }));
  });
}

async function h2Setup(
  t: Teardownable,
  handler: (req: IncomingMessage, res: import('node:http').ServerResponse) => void,
  extra: Parameters<typeof testRelay>[1] = {},
): Promise<{ relay: Relay; session: ClientHttp2Session; pki: TestPki; backendPort: number }> {
  const pki = await testPki(t);
  const pair = await pki.issue('h2', ['h2.edge.test']);
  const relay = await testRelay(t, {
    tls: { host: '127.0.0.1', port: 0 },
    certFiles: { pairs: [{ cert: pair.certFile, key: pair.keyFile }] },
    ...extra,
  });
  const backend = await testServer(t, handler);
  await testAgent(t, relay, [{ id: 'h2', hostnames: ['h2.edge.test'], target: backend.url }], {
    connections: 1,
  });
  const session = await h2Session(t, relay.tlsAddress!.port, 'h2.edge.test', pki.caPem);
  return { relay, session, pki, backendPort: backend.port };
}

/** One h2 request; resolves with status, headers and body. */
function h2Request(
  session: ClientHttp2Session,
  headers: Record<string, string | string[]>,
  body?: Buffer | ((s: ClientHttp2Stream) => void),
  options: { endStream?: boolean } = {},
): Promise<{ status: number; headers: Record<string, unknown>; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const s = session.request({ ':authority': 'h2.edge.test', ':path': '/', ...headers }, options);
    let status = 0;
    let h: Record<string, unknown> = {};
    s.on('response', (r) => {
      status = Number(r[':status']);
      h = r;
    });
    readAll(s).then((b) => resolve({ status, headers: h, body: b }), reject);
    if (typeof body === 'function') body(s);
    else if (!options.endStream) s.end(body);
    s.on('error', reject);
  });
}

t.test('h2: request bodies with and without content-length reach the HTTP/1.1 backend whole', async (t) => {
  const { session } = await h2Setup(t, echoRequest);
  const body = randomBytes(1 * MiB + 7);
  const withLength = await h2Request(
    session,
    { ':method': 'POST', 'content-length': String(body.length) },
    body,
  );
  t.equal(withLength.status, 200);
  const a = JSON.parse(String(withLength.body));
  t.equal(a.bytes, body.length);
  t.equal(a.sha, sha(body));
  t.equal(a.headers['content-length'], String(body.length));
  t.notOk(a.headers['transfer-encoding'], 'framed by its length');

  const chunked = await h2Request(session, { ':method': 'POST' }, (s) => {
    for (let off = 0; off < body.length; off += 100 * KiB) s.write(body.subarray(off, off + 100 * KiB));
    s.end();
  });
  const b = JSON.parse(String(chunked.body));
  t.equal(b.bytes, body.length);
  t.equal(b.sha, sha(body));
  t.equal(b.headers['transfer-encoding'], 'chunked', 'no length: chunked to the backend');
});

t.test(
  'h2: a GET whose stream ends with an empty DATA frame reaches the backend without a body',
  async (t) => {
    const { session } = await h2Setup(t, echoRequest);
    // HEADERS without END_STREAM, then an empty DATA frame with END_STREAM: what
    // node's client sends for request().end(), and valid HTTP/2 for a bodiless GET.
    const r = await h2Request(session, { ':method': 'GET', ':path': '/plain' }, undefined, {
      endStream: false,
    });
    t.equal(r.status, 200);
    const seen = JSON.parse(String(r.body));
    t.equal(seen.bytes, 0);
    t.notOk(seen.headers['transfer-encoding'], 'no chunked framing invented for a GET without a body');
  },
);

t.test(
  'h2: te: trailers and cookie crumbs are translated; h2-only headers never reach the backend',
  async (t) => {
    const { session } = await h2Setup(t, echoRequest);
    const r = await h2Request(session, { ':method': 'GET', te: 'trailers', 'x-keep': 'yes' }, undefined, {
      endStream: true,
    });
    t.equal(r.status, 200);
    const seen = JSON.parse(String(r.body));
    t.notOk(seen.headers.te, 'te is hop-by-hop');
    t.equal(seen.headers['x-keep'], 'yes');
    t.equal(seen.headers.host, 'h2.edge.test');
  },
);

t.test('h2: RST_STREAM from the client mid-response cancels the backend request', async (t) => {
  const backendClosed = deferred();
  let held: import('node:http').ServerResponse | undefined;
  const { relay, session } = await h2Setup(t, (req, res) => {
    held = res;
    req.resume();
    res.writeHead(200, { 'content-type': 'application/octet-stream' });
    res.write(Buffer.alloc(1000, 'x'));
    res.on('close', () => backendClosed.resolve());
  });
  const streams = captureStreams(relay);
  const s = session.request({ ':authority': 'h2.edge.test', ':path': '/long' }, { endStream: true });
  s.on('error', () => {});
  await once(s, 'data');
  s.close(0x8); // CANCEL
  try {
    await within(10_000, backendClosed.promise, 'the backend response is torn down');
    await within(5_000, streams[0]!.gone, 'the tunnel stream closes');
    const text = await relay.metrics.registry.metrics();
    t.equal(metricValue(text, 'burrow_relay_streams_active', { host: 'h2.edge.test' }), 0);
    t.equal(metricValue(text, 'burrow_relay_request_errors_total', { reason: 'client_closed' }), 1);
  } finally {
    held?.destroy(); // so the teardown's drain does not wait for a response that outlived the test
  }
});

t.test(
  'h2: a client that does not read holds the relay to its window: the relay pauses the tunnel stream',
  async (t) => {
    const total = 64 * MiB;
    const big = bigResponse(total);
    const { relay, session } = await h2Setup(t, big.handler);
    const streams = captureStreams(relay);
    const s = session.request({ ':authority': 'h2.edge.test', ':path': '/big' }, { endStream: true });
    s.on('error', () => {});
    s.pause();
    await once(s, 'response');
    // The relay stream pauses once the h2 side pushes back, before the backend got rid of 64 MiB.
    // The response head came through it: the relay opened it already.
    await expectPushBack(t, streams[0]!, big, s, total);
  },
);

t.test('h2: the access entry names the client address, as on HTTP/1.1', async (t) => {
  const seen: string[] = [];
  const { session } = await h2Setup(t, echoRequest, { onRequestDone: (info) => seen.push(info.client) });
  const r = await h2Request(session, { ':method': 'GET' }, undefined, { endStream: true });
  t.equal(r.status, 200);
  t.same(seen, ['127.0.0.1']);
});

t.test('h2: a request body followed by trailers reaches the backend whole', async (t) => {
  const { session } = await h2Setup(t, echoRequest);
  const body = randomBytes(200 * KiB);
  const r = await new Promise<Buffer>((resolve, reject) => {
    const s = session.request(
      { ':authority': 'h2.edge.test', ':path': '/t', ':method': 'POST' },
      { waitForTrailers: true },
    );
    s.on('wantTrailers', () => s.sendTrailers({ 'x-checksum': sha(body) }));
    s.on('error', reject);
    readAll(s).then(resolve, reject);
    s.end(body);
  });
  const seen = JSON.parse(String(r));
  t.equal(seen.bytes, body.length);
  t.equal(seen.sha, sha(body));
});

t.test('HTTP/1.1: a client that does not read holds the relay to its window', async (t) => {
  const total = 64 * MiB;
  const big = bigResponse(total);
  const relay = await testRelay(t);
  const backend = await testServer(t, big.handler);
  await testAgent(t, relay, [{ id: 'dl', hostnames: ['dl.edge.test'], target: backend.url }], {
    connections: 1,
  });
  const streams = captureStreams(relay);
  const res = await new Promise<IncomingMessage>((resolve, reject) => {
    httpRequest({
      host: '127.0.0.1',
      port: relay.httpAddress.port,
      path: '/big',
      headers: { host: 'dl.edge.test' },
    })
      .on('response', resolve)
      .on('error', reject)
      .end();
  });
  res.pause();
  await expectPushBack(t, streams[0]!, big, res, total);
});

t.test('a backend that never answers: 504, and no stream is left counted as active', async (t) => {
  const arrived = deferred();
  const gone = deferred();
  const relay = await testRelay(t, { responseHeadTimeout: 300 });
  const backend = await testServer(t, (req, res) => {
    req.resume();
    res.on('close', () => gone.resolve());
    arrived.resolve();
  });
  await testAgent(t, relay, [{ id: 'slow', hostnames: ['slow.edge.test'], target: backend.url }], {
    connections: 1,
  });
  const streams = captureStreams(relay);
  const r = await get(relay.httpAddress.port, 'slow.edge.test');
  t.equal(r.status, 504);
  await within(5_000, arrived.promise, 'the request reached the backend');
  await within(5_000, streams[0]!.gone, 'the tunnel stream closed');
  await within(5_000, gone.promise, 'the backend request was cancelled');
  const text = await relay.metrics.registry.metrics();
  t.equal(metricValue(text, 'burrow_relay_streams_active', { host: 'slow.edge.test' }), 0);
  t.equal(metricValue(text, 'burrow_relay_request_errors_total', { reason: 'upstream_timeout' }), 1);
});

t.test(
  'upgrade: a client that half-closes and then goes away releases the tunnel stream and the backend',
  async (t) => {
    const backendSaw = deferred<Socket>();
    const backendEnd = deferred();
    const backendClosed = deferred();
    const relay = await testRelay(t);
    const backend = await testServer(t, (_req, res) => res.end('plain'));
    backend.server.on('upgrade', (_req, socket: Socket) => {
      socket.on('error', () => {});
      socket.write('HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: raw\r\n\r\n');
      socket.on('end', () => backendEnd.resolve()); // stays open: a server that keeps talking
      socket.on('close', () => backendClosed.resolve());
      socket.resume();
      backendSaw.resolve(socket);
    });
    await testAgent(t, relay, [{ id: 'up', hostnames: ['up.edge.test'], target: backend.url }], {
      connections: 1,
    });
    const streams = captureStreams(relay);
    const client = netConnect({ port: relay.httpAddress.port, host: '127.0.0.1', allowHalfOpen: true });
    client.on('error', () => {});
    const clientClosed = new Promise((resolve) => client.once('close', resolve));
    await once(client, 'connect');
    client.write('GET /raw HTTP/1.1\r\nHost: up.edge.test\r\nConnection: upgrade\r\nUpgrade: raw\r\n\r\n');
    const [head] = (await once(client, 'data')) as [Buffer];
    t.match(String(head), /^HTTP\/1\.1 101/);
    const backendSocket = await backendSaw.promise;
    client.end(); // half-close: "I have nothing more to send"
    await within(5_000, backendEnd.promise, "the client's FIN reached the backend");
    client.resetAndDestroy(); // and then the client is gone altogether (RST: the relay's next write fails)
    await clientClosed;
    backendSocket.write('are you there?'); // the relay finds out when it writes
    try {
      await within(10_000, streams[0]!.gone, 'the tunnel stream is released');
      // The agent resets its backend connection. Past its own EOF the backend learns
      // of that when it next writes (the reset reaches the agent a moment after the
      // relay let go): it writes until its socket fails, at most 100 times.
      const writes = (async () => {
        for (let i = 0; i < 100 && !backendSocket.destroyed; i++) {
          backendSocket.write('still there?');
          await new Promise((resolve) => setTimeout(resolve, 50));
        }
      })();
      await within(5_000, backendClosed.promise, 'the backend connection is closed');
      await writes;
      const text = await relay.metrics.registry.metrics();
      t.equal(metricValue(text, 'burrow_relay_streams_active', { host: 'up.edge.test' }), 0);
    } finally {
      backendSocket.destroy(); // an upgraded socket would keep the backend's close() waiting
    }
  },
);
