// The dialer against real backends on 127.0.0.1, driven through a running
// agent by a stand-in relay that opens streams the way the relay does.
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { readFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type RequestListener, type Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { type AddressInfo, createServer as createTcpServer, type Socket } from 'node:net';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { type HeaderPairs, Reason, type Stream } from '@burrow/shared';
import t from 'tap';
import { WebSocketServer } from 'ws';
import { deferred } from '../../../test/helpers/deferred.js';
import { freePort } from '../../../test/helpers/net.js';
import { testPki } from '../../../test/helpers/tls.js';
import { socketFailure } from '../src/dialer/failure.js';
import type { Route } from '../src/routes/source.js';
import { agentOn } from './helpers/agent-on.js';
import {
  fakeRelay,
  listen,
  nextChunk,
  readHead,
  readResponse,
  resetReason,
  type Teardownable,
} from './helpers/fake-relay.js';

async function backend(
  t: Teardownable,
  handler: RequestListener,
): Promise<{ server: Server; url: string; port: number }> {
  const server = createServer(handler);
  const port = await listen(t, server);
  return { server, url: `http://127.0.0.1:${port}`, port };
}

async function agentFor(t: Teardownable, routes: Route[], connectTimeout?: number) {
  const relay = await fakeRelay(t);
  const { agent, log } = await agentOn(t, relay, routes, connectTimeout ? { connectTimeout } : {});
  return { relay, log, agent };
}

function header(pairs: HeaderPairs, name: string): string | undefined {
  return pairs.find(([k]) => k.toLowerCase() === name)?.[1];
}

t.test('HTTP through the dialer', async (t) => {
  const seen: IncomingMessage[] = [];
  const echo = await backend(t, (req, res) => {
    seen.push(req);
    const hash = createHash('sha256');
    let bytes = 0;
    req.on('data', (c: Buffer) => {
      hash.update(c);
      bytes += c.length;
    });
    req.on('end', () => {
      res.writeHead(201, 'Made It', {
        'content-type': 'application/json',
        connection: 'x-private',
        'x-private': 'hop',
        'keep-alive': 'timeout=5',
      });
      res.end(
        JSON.stringify({
          method: req.method,
          url: req.url,
          rawHeaders: req.rawHeaders,
          bytes,
          sha256: hash.digest('hex'),
          remotePort: req.socket.remotePort,
        }),
      );
    });
  });
  const released = deferred();
  const slow = await backend(t, (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    res.write('data: first\n\n');
    released.promise.then(() => res.end('data: last\n\n'));
  });
  const { relay } = await agentFor(t, [
    { id: 'echo', hostnames: ['echo.example.com'], target: echo.url },
    { id: 'slow', hostnames: ['slow.example.com'], target: slow.url },
  ]);

  t.test(
    'GET with a body: method, path, headers and body reach the backend; the response comes back',
    async (t) => {
      const stream = relay.openHttp(
        {
          route: 'echo',
          method: 'GET',
          path: '/search?q=burrow&x=1',
          headers: [
            ['Host', 'Echo.Example.com:8080'],
            ['X-Forwarded-For', '203.0.113.9'],
            ['Content-Length', '5'],
            ['Connection', 'x-drop'],
            ['X-Drop', 'hop-by-hop'],
          ],
        },
        undefined,
        true,
      );
      stream.end('hello');
      const { head, body } = await readResponse(stream);
      t.equal(head.status, 201);
      t.equal(head.statusText, 'Made It');
      t.equal(header(head.headers, 'content-type'), 'application/json');
      t.notOk(header(head.headers, 'x-private'), 'response fields named in Connection are removed');
      t.notOk(header(head.headers, 'keep-alive'));
      t.notOk(header(head.headers, 'connection'));
      const got = JSON.parse(body.toString());
      t.equal(got.method, 'GET');
      t.equal(got.url, '/search?q=burrow&x=1');
      t.equal(got.bytes, 5);
      t.equal(got.sha256, createHash('sha256').update('hello').digest('hex'));
      const [hostName, hostValue] = got.rawHeaders.slice(0, 2);
      t.equal(hostName.toLowerCase(), 'host');
      t.equal(hostValue, 'Echo.Example.com:8080', 'Host is sent as the relay gave it, not the target');
      t.ok(got.rawHeaders.includes('203.0.113.9'), 'forwarding headers pass through');
      t.notOk(got.rawHeaders.includes('X-Drop'), 'request fields named in Connection are removed');
    },
  );

  t.test('POST: a 5 MB body streams through byte-exact (chunked)', async (t) => {
    const stream = relay.openHttp(
      { route: 'echo', method: 'POST', path: '/upload', headers: [['Host', 'echo.example.com']] },
      undefined,
      true,
    );
    const data = randomBytes(5 * 1024 * 1024);
    const response = readResponse(stream);
    await pipeline(
      Readable.from(
        (function* () {
          for (let off = 0; off < data.length; off += 64 * 1024) yield data.subarray(off, off + 64 * 1024);
        })(),
      ),
      stream,
    );
    const { head, body } = await response;
    t.equal(head.status, 201);
    const got = JSON.parse(body.toString());
    t.equal(got.bytes, data.length);
    t.equal(got.sha256, createHash('sha256').update(data).digest('hex'));
    t.ok(got.rawHeaders.includes('chunked'), 'no Content-Length: sent chunked');
  });

  t.test('the relay says whether a body follows; the agent frames it from that', async (t) => {
    // A GET with a body and no Content-Length (it arrived chunked at the relay).
    const withBody = relay.openHttp(
      { route: 'echo', method: 'GET', path: '/g', headers: [['Host', 'echo.example.com']], body: true },
      undefined,
      true,
    );
    const smuggled = 'GET /x HTTP/1.1\r\n\r\n';
    withBody.end(smuggled);
    const got = JSON.parse((await readResponse(withBody)).body.toString());
    t.equal(got.bytes, smuggled.length, 'the body reaches the backend as a body');
    const framing = (got.rawHeaders as string[]).filter((_, i, all) =>
      /^(content-length|transfer-encoding)$/i.test(all[i - 1] ?? ''),
    );
    // Chunked, or a Content-Length when the whole body was in before the head left.
    t.ok(framing.length === 1 && ['chunked', String(smuggled.length)].includes(framing[0]!), 'framed');
    // A stream declared without a body carries none to the backend, whatever DATA comes.
    const noBody = relay.openHttp(
      { route: 'echo', method: 'POST', path: '/p', headers: [['Host', 'echo.example.com']], body: false },
      undefined,
      true,
    );
    noBody.end('stray bytes');
    const none = JSON.parse((await readResponse(noBody)).body.toString());
    t.equal(none.method, 'POST');
    t.equal(none.bytes, 0, 'nothing after a head that announced no body');
  });

  t.test('keep-alive: sequential requests reuse one backend connection', async (t) => {
    const ports: number[] = [];
    for (let i = 0; i < 3; i++) {
      const { body } = await readResponse(relay.openHttp({ route: 'echo', path: `/k${i}` }));
      ports.push(JSON.parse(body.toString()).remotePort);
    }
    t.equal(new Set(ports).size, 1, `one socket for all three (${ports.join(', ')})`);
  });

  t.test('a streaming response arrives before it ends', async (t) => {
    const stream = relay.openHttp({ route: 'slow', path: '/events' });
    const { head, rest } = await readHead(stream);
    t.equal(head.status, 200);
    const first = rest.length > 0 ? rest : await nextChunk(stream);
    t.equal(first.toString(), 'data: first\n\n');
    released.resolve();
    const tail: Buffer[] = [];
    for await (const c of stream) tail.push(c as Buffer);
    t.equal(Buffer.concat(tail).toString(), 'data: last\n\n');
  });
});

/** A masked client WebSocket frame (RFC 6455 §5.2) for payloads under 126 bytes. */
function clientFrame(opcode: number, payload: Buffer): Buffer {
  const mask = randomBytes(4);
  const masked = Buffer.from(payload.map((b, i) => b ^ mask[i % 4]!));
  return Buffer.concat([Buffer.from([0x80 | opcode, 0x80 | payload.length]), mask, masked]);
}

t.test('upgrade: a WebSocket backend, spliced both ways through the stream', async (t) => {
  const ws = await backend(t, (_req, res) => res.end('not a websocket request'));
  const wss = new WebSocketServer({ server: ws.server });
  wss.on('connection', (sock) =>
    sock.on('message', (data, isBinary) => sock.send(data, { binary: isBinary })),
  );
  const declines = await backend(t, () => {});
  declines.server.on('upgrade', (_req, socket: Socket) => {
    socket.end(
      'HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain\r\ncontent-length: 4\r\nconnection: close\r\n\r\nnope',
    );
  });
  const { relay } = await agentFor(t, [
    { id: 'ws', hostnames: ['ws.example.com'], target: ws.url },
    { id: 'declines', hostnames: ['declines.example.com'], target: declines.url },
  ]);
  const upgradeHeaders: HeaderPairs = [
    ['Host', 'ws.example.com'],
    ['Sec-WebSocket-Key', 'dGhlIHNhbXBsZSBub25jZQ=='],
    ['Sec-WebSocket-Version', '13'],
    ['Upgrade', 'websocket'],
    ['Connection', 'upgrade'],
  ];

  const stream = relay.openHttp({ route: 'ws', path: '/chat', upgrade: true, headers: upgradeHeaders });
  const { head, rest } = await readHead(stream);
  t.equal(head.status, 101);
  t.equal(header(head.headers, 'upgrade'), 'websocket', 'Upgrade survives');
  t.equal(header(head.headers, 'connection'), 'upgrade');
  t.equal(header(head.headers, 'sec-websocket-accept'), 's3pPLMBiTxaQ9kYGzzhZRbK+xOo=');
  t.equal(rest.length, 0);
  const echo = nextChunk(stream);
  stream.write(clientFrame(0x1, Buffer.from('hello through burrow')));
  const echoed = await echo;
  t.same([...echoed.subarray(0, 2)], [0x81, 20], 'an unmasked text frame of 20 bytes');
  t.equal(echoed.subarray(2).toString(), 'hello through burrow');
  // A close frame, then our FIN: the backend answers with its close frame and ends too.
  stream.write(clientFrame(0x8, Buffer.from([0x03, 0xe8])));
  stream.end();
  const tail: Buffer[] = [];
  for await (const c of stream) tail.push(c as Buffer);
  t.equal(Buffer.concat(tail)[0], 0x88, 'the backend close frame arrives before the stream ends');
  t.equal(stream.resetReason, undefined, 'ended cleanly in both directions');

  const declined = relay.openHttp({
    route: 'declines',
    path: '/chat',
    upgrade: true,
    headers: upgradeHeaders.map(([k, v]) => [k, k === 'Host' ? 'declines.example.com' : v]),
  });
  const answer = await readResponse(declined);
  t.equal(answer.head.status, 403, 'a declined upgrade is an ordinary response');
  t.equal(answer.body.toString(), 'nope');
});

t.test(
  'upgrade to an https backend: its own connection, checked unless the route says insecure',
  async (t) => {
    const pki = await testPki(t);
    const { certFile, keyFile } = await pki.issue('backend', ['127.0.0.1']);
    const server = createHttpsServer({ cert: await readFile(certFile), key: await readFile(keyFile) });
    new WebSocketServer({ server }).on('connection', (sock) => sock.on('message', (d) => sock.send(d)));
    const target = `https://127.0.0.1:${await listen(t, server)}`;
    const { relay } = await agentFor(t, [
      { id: 'checked', hostnames: ['checked.example.com'], target },
      { id: 'insecure', hostnames: ['insecure.example.com'], target, tlsInsecure: true },
    ]);
    const headers = (host: string): HeaderPairs => [
      ['Host', host],
      ['Sec-WebSocket-Key', 'dGhlIHNhbXBsZSBub25jZQ=='],
      ['Sec-WebSocket-Version', '13'],
      ['Upgrade', 'websocket'],
      ['Connection', 'upgrade'],
    ];
    const insecure = relay.openHttp({
      route: 'insecure',
      path: '/',
      upgrade: true,
      headers: headers('insecure.example.com'),
    });
    t.equal((await readHead(insecure)).head.status, 101, 'tlsInsecure: the private certificate is accepted');
    insecure.destroy();
    const checked = relay.openHttp({
      route: 'checked',
      path: '/',
      upgrade: true,
      headers: headers('checked.example.com'),
    });
    t.equal(
      await resetReason(checked),
      Reason.BackendError,
      'without it, an untrusted certificate fails the upgrade',
    );
  },
);

t.test('https backends are named after the target, never after the Host the relay sends', async (t) => {
  const pki = await testPki(t);
  const seen: Array<string | false | null> = [];
  const server = createHttpsServer(
    { cert: await readFile(pki.certFile), key: await readFile(pki.keyFile) },
    (_req, res) => res.end('ok'),
  );
  new WebSocketServer({ server });
  server.on('secureConnection', (socket) => seen.push(socket.servername));
  const port = await listen(t, server);
  // tlsInsecure: the certificate is the test CA's; the name sent is what is checked.
  const { relay } = await agentFor(t, [
    { id: 'named', hostnames: ['*.example.com'], target: `https://localhost:${port}`, tlsInsecure: true },
    { id: 'ip', hostnames: ['ip.example.com'], target: `https://127.0.0.1:${port}`, tlsInsecure: true },
  ]);
  const chosen: HeaderPairs = [['Host', 'chosen-by-the-client.example.com']];
  const ok = async (stream: Stream) => t.equal((await readResponse(stream)).head.status, 200);
  await ok(relay.openHttp({ route: 'named', headers: chosen }));
  await ok(relay.openHttp({ route: 'named', method: 'OPTIONS', path: '*', headers: chosen }));
  const upgrade = relay.openHttp({
    route: 'named',
    upgrade: true,
    headers: [
      ...chosen,
      ['Sec-WebSocket-Key', 'dGhlIHNhbXBsZSBub25jZQ=='],
      ['Sec-WebSocket-Version', '13'],
      ['Upgrade', 'websocket'],
      ['Connection', 'upgrade'],
    ],
  });
  t.equal((await readHead(upgrade)).head.status, 101);
  upgrade.destroy();
  t.same(seen, ['localhost', 'localhost', 'localhost'], 'request, OPTIONS * and upgrade: the target name');
  seen.length = 0;
  await ok(relay.openHttp({ route: 'ip', headers: chosen }));
  t.same(seen, [false], 'an IP target: no server name at all');
});

t.test('OPTIONS * whose framing fields promise a body it does not have is refused', async (t) => {
  const requests: string[] = [];
  const { url } = await backend(t, (req, res) => {
    requests.push(`${req.method} ${req.url} ${req.headers['content-length'] ?? '-'}`);
    res.end('ok');
  });
  const { relay } = await agentFor(t, [{ id: 'web', hostnames: ['web.example.com'], target: url }]);
  const options = (headers: HeaderPairs) =>
    relay.openHttp({ route: 'web', method: 'OPTIONS', path: '*', body: false, headers });
  const host: HeaderPairs = [['Host', 'web.example.com']];
  t.equal(
    await resetReason(options([...host, ['Content-Length', '5']])),
    Reason.BadMetadata,
    'a length with no body would make the backend read the next request as the body',
  );
  t.equal(await resetReason(options([...host, ['Transfer-Encoding', 'chunked']])), Reason.BadMetadata);
  t.equal((await readResponse(options([...host, ['Content-Length', '0']]))).head.status, 200);
  t.same(requests, ['OPTIONS * 0'], 'only the well-framed one reached the backend');
});

t.test('failures become resets with reason codes; nothing else is ever dialed', async (t) => {
  const closed = await freePort();
  // Accepts TCP and never speaks: a TLS handshake to it never completes.
  const silent = createTcpServer((s) => s.on('error', () => {}));
  silent.listen(0, '127.0.0.1');
  await once(silent, 'listening');
  t.teardown(() => silent.close());
  const sockets = new Set<Socket>();
  silent.on('connection', (s) => sockets.add(s));
  t.teardown(() => {
    for (const s of sockets) s.destroy();
  });
  const abortedOnBackend = deferred();
  const hangs = await backend(t, (req, res) => {
    res.writeHead(200);
    res.write('partial');
    req.socket.once('close', () => abortedOnBackend.resolve());
    res.on('close', () => abortedOnBackend.resolve());
  });
  const dies = await backend(t, (req, res) => {
    res.writeHead(200, { 'content-length': '100' });
    res.write('only part of it', () => req.socket.destroy());
  });
  const { relay, log } = await agentFor(
    t,
    [
      { id: 'gone', hostnames: ['gone.example.com'], target: `http://127.0.0.1:${closed}` },
      {
        id: 'silent',
        hostnames: ['silent.example.com'],
        target: `https://127.0.0.1:${(silent.address() as AddressInfo).port}`,
      },
      { id: 'hangs', hostnames: ['hangs.example.com'], target: hangs.url },
      { id: 'dies', hostnames: ['dies.example.com'], target: dies.url },
    ],
    300,
  );

  t.test("connection refused: RST CONNECT_REFUSED, the address only in the agent's log", async (t) => {
    const stream = relay.openHttp({ route: 'gone' });
    t.equal(await resetReason(stream), Reason.ConnectRefused);
    t.match(stream.errored, {
      reason: Reason.ConnectRefused,
      message: 'backend refused the connection',
    });
    const warn = await log.waitFor((l) => l.msg === 'backend request failed' && l['route'] === 'gone');
    t.match(warn, { level: 40, target: `http://127.0.0.1:${closed}`, reason: 'ConnectRefused' });
    t.notOk('headers' in warn, 'no headers in the log');
  });

  t.test('a backend that keeps refusing: one warning, the repeats at debug', async (t) => {
    for (let i = 0; i < 5; i++)
      t.equal(await resetReason(relay.openHttp({ route: 'gone' })), Reason.ConnectRefused);
    const lines = log.lines.filter((l) => l.msg === 'backend request failed' && l['route'] === 'gone');
    t.same(
      lines.map((l) => l.level),
      [40, 20, 20, 20, 20, 20],
      'a down backend fails every request: a line at warn for each would bury the rest',
    );
  });

  t.test('connect timeout: RST CONNECT_TIMEOUT', async (t) => {
    const stream = relay.openHttp({ route: 'silent' });
    t.equal(await resetReason(stream), Reason.ConnectTimeout);
    t.match(stream.errored, { message: /within 300 ms/ });
  });

  t.test('unknown route: RST ROUTE_UNKNOWN, and no connection anywhere', async (t) => {
    const stream = relay.openHttp({ route: 'not-announced' });
    t.equal(await resetReason(stream), Reason.RouteUnknown);
  });

  t.test('invalid metadata: RST BAD_METADATA', async (t) => {
    const session = relay.live()[0]!.session;
    for (const bytes of ['not json', '{"kind":"http","route":"gone"}', '{"kind":"control"}']) {
      const stream = session.openStream(Buffer.from(bytes));
      stream.on('error', () => {});
      t.equal(await resetReason(stream), Reason.BadMetadata, bytes);
    }
  });

  t.test('the relay resets mid-response (client went away): the backend request is aborted', async (t) => {
    const stream = relay.openHttp({ route: 'hangs' });
    await readHead(stream);
    stream.reset(Reason.Cancel, 'client closed the connection');
    await abortedOnBackend.promise;
    t.pass('backend saw its connection close');
  });

  t.test('the backend dies after the head: RST BACKEND_ERROR', async (t) => {
    const stream = relay.openHttp({ route: 'dies' });
    const { head } = await readHead(stream);
    t.equal(head.status, 200);
    t.equal(await resetReason(stream), Reason.BackendError);
  });
});

t.test(
  'the tunnel dropping mid-request aborts the backend request; the agent reconnects and serves again',
  async (t) => {
    const abortedOnBackend = deferred();
    const app = await backend(t, (req, res) => {
      if (req.url !== '/hold') return void res.end('ok');
      res.writeHead(200);
      res.write('x');
      res.on('close', () => abortedOnBackend.resolve());
    });
    const { relay, agent } = await agentFor(t, [
      { id: 'app', hostnames: ['app.example.com'], target: app.url },
    ]);
    const stream = relay.openHttp({ route: 'app', path: '/hold' });
    await readHead(stream);
    const reconnected = once(agent, 'connected');
    relay.dropAll();
    await abortedOnBackend.promise;
    await reconnected;
    const { head, body } = await readResponse(relay.openHttp({ route: 'app' }, relay.connections.at(-1)));
    t.equal(head.status, 200);
    t.equal(body.toString(), 'ok');
  },
);

t.test(
  'a stream reset before the backend connection is up still aborts the backend request',
  { timeout: 8000 },
  async (t) => {
    const holdArrived = deferred();
    const holdClosed = deferred();
    let holdSeen = false;
    const app = await backend(t, (req, res) => {
      if (req.url === '/hold') {
        holdSeen = true;
        holdArrived.resolve();
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        res.write('data: 1\n\n');
        res.on('close', () => holdClosed.resolve());
        return;
      }
      res.end('ok');
    });
    const { relay } = await agentFor(t, [{ id: 'app', hostnames: ['app.example.com'], target: app.url }]);
    // The client goes away at once: OPEN and RST reach the agent together,
    // before undici has a connection (and before it calls onConnect).
    const gone = relay.openHttp({ route: 'app', path: '/hold' });
    gone.reset(Reason.Cancel, 'client closed the connection');
    const marker = await readResponse(relay.openHttp({ route: 'app', path: '/marker' }));
    t.equal(marker.head.status, 200);
    if (!holdSeen) {
      t.pass('the abandoned request never reached the backend');
      return;
    }
    // With the bug the request is sent anyway and never aborted: an event stream
    // (and a pooled connection, paused by undici) is held open forever.
    await holdClosed.promise;
    t.pass('the backend saw the abandoned request closed');
  },
);

t.test('reset messages name no address, whatever the socket error says', async (t) => {
  t.equal(socketFailure('EHOSTUNREACH', 'connect EHOSTUNREACH 10.0.0.5:80'), 'EHOSTUNREACH');
  t.equal(
    socketFailure(
      'ERR_TLS_CERT_ALTNAME_INVALID',
      "Hostname/IP does not match certificate's altnames: IP: 10.0.0.5 is not in the cert's list: ",
    ),
    "the backend's certificate does not name the target (ERR_TLS_CERT_ALTNAME_INVALID)",
  );
  t.equal(socketFailure('UND_ERR_SOCKET', 'other side closed'), 'other side closed (UND_ERR_SOCKET)');
});
