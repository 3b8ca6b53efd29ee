import { execFile } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { connect as h2connect, type Settings } from 'node:http2';
import { Agent as HttpsAgent } from 'node:https';
import { connect } from 'node:net';
import { join } from 'node:path';
import { Duplex } from 'node:stream';
import { type TLSSocket, connect as tlsConnect } from 'node:tls';
import { promisify } from 'node:util';
import type { AccessInfo, Relay } from '@burrow/relay';
import t from 'tap';
import { WebSocket, WebSocketServer } from 'ws';
import { memoryLogger } from '../../packages/agent/test/helpers/log.js';
import { testAgent } from '../helpers/agent.js';
import { deferred, until, within } from '../helpers/deferred.js';
import { get, httpsGet, testServer } from '../helpers/http.js';
import { field, tlsClient } from '../helpers/raw-wire.js';
import { type Teardownable, testRelay } from '../helpers/relay.js';
import { clientHelloFor, h2Session, type TestPki, testPki } from '../helpers/tls.js';

const run = promisify(execFile);

/** A backend that answers with what it received, as JSON. */
async function echoBackend(t: Teardownable) {
  return testServer(t, (req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = JSON.stringify({
        method: req.method,
        url: req.url,
        headers: req.headers,
        body: Buffer.concat(chunks).toString(),
      });
      res.writeHead(200, { 'content-type': 'application/json', 'set-cookie': ['a=1', 'b=2'] });
      res.end(body);
    });
  });
}

async function setup(t: Teardownable, pki: TestPki, extra: Parameters<typeof testRelay>[1] = {}) {
  const a = await pki.issue('a', ['a.example.test', 'b.example.test']);
  const wild = await pki.issue('wild', ['*.wild.example.test']);
  const relay = await testRelay(t, {
    tls: { host: '127.0.0.1', port: 0 },
    certFiles: {
      pairs: [
        { cert: a.certFile, key: a.keyFile },
        { cert: wild.certFile, key: wild.keyFile },
      ],
    },
    ...extra,
  });
  const backend = await echoBackend(t);
  await testAgent(t, relay, [
    { id: 'site-a', hostnames: ['a.example.test'], target: backend.url },
    { id: 'site-b', hostnames: ['b.example.test'], target: backend.url },
    { id: 'wild', hostnames: ['*.wild.example.test'], target: backend.url },
  ]);
  return { relay, backend, tlsPort: (relay as Relay).tlsAddress!.port };
}

t.test(
  'terminated route: HTTP/1.1 over TLS through the same forwarding path, certificate from files',
  async (t) => {
    const pki = await testPki(t);
    const { relay, tlsPort } = await setup(t, pki, { hstsMaxAge: 300 });
    const r = await httpsGet(tlsPort, 'a.example.test', pki.caPem, { path: '/hello?x=1' });
    t.equal(r.status, 200);
    t.equal(r.alpn, false, 'no ALPN offered by this client: HTTP/1.1');
    const seen = JSON.parse(r.body);
    t.equal(seen.url, '/hello?x=1');
    t.equal(seen.headers['x-forwarded-proto'], 'https', 'X-Forwarded-Proto says https');
    t.equal(seen.headers['x-forwarded-host'], 'a.example.test');
    t.match(seen.headers.forwarded, /proto=https/);
    t.equal(r.headers['strict-transport-security'], 'max-age=300', 'HSTS when configured');
    t.same(r.headers['set-cookie'], ['a=1', 'b=2']);

    const w = await httpsGet(tlsPort, 'x.wild.example.test', pki.caPem);
    t.equal(w.status, 200, 'a wildcard certificate serves a wildcard route');

    const status = relay.routes.list().length;
    t.ok(status >= 3, 'routes active');
    const expiry = relay.certificateExpiry();
    t.ok(
      expiry.some((e) => e.hostname === '*.wild.example.test' && e.notAfter.getTime() > Date.now()),
      'certificate expiry exposed per name',
    );
    const metrics = await relay.metrics.registry.metrics();
    const notAfter = expiry.find((e) => e.hostname === '*.wild.example.test')!.notAfter;
    t.match(
      metrics,
      `burrow_relay_certificate_expiry_timestamp_seconds{name="*.wild.example.test"} ${Math.floor(notAfter.getTime() / 1000)}`,
      'and as a Prometheus gauge per name',
    );
  },
);

t.test('HSTS: max-age=0 withdraws the policy; no header unless configured', async (t) => {
  const pki = await testPki(t);
  const { tlsPort } = await setup(t, pki, { hstsMaxAge: 0 });
  const r = await httpsGet(tlsPort, 'a.example.test', pki.caPem);
  t.equal(r.status, 200);
  t.equal(r.headers['strict-transport-security'], 'max-age=0', 'max-age=0 is sent, not dropped');
  const pki2 = await testPki(t);
  const plain = await setup(t, pki2);
  const none = await httpsGet(plain.tlsPort, 'a.example.test', pki2.caPem);
  t.equal(none.status, 200);
  t.equal(none.headers['strict-transport-security'], undefined, 'no HSTS without hstsMaxAge');
});

t.test(
  'terminated route: h2 from node http2 (several streams, one connection) and curl --http2',
  async (t) => {
    const pki = await testPki(t);
    const { tlsPort } = await setup(t, pki);
    const session = await h2Session(t, tlsPort, 'a.example.test', pki.caPem);
    t.equal(session.alpnProtocol, 'h2', 'ALPN picked h2');
    const request = (path: string, authority = 'a.example.test', body?: string) =>
      new Promise<{ status: number; body: string; headers: Record<string, unknown> }>((resolve, reject) => {
        const s = session.request({
          ':path': path,
          ':authority': authority,
          ':method': body ? 'POST' : 'GET',
          cookie: ['c1=x', 'c2=y'] as never,
        });
        let status = 0;
        let headers: Record<string, unknown> = {};
        s.on('response', (h) => {
          status = Number(h[':status']);
          headers = h;
        });
        const chunks: Buffer[] = [];
        s.on('data', (c: Buffer) => chunks.push(c));
        s.on('end', () => resolve({ status, headers, body: Buffer.concat(chunks).toString() }));
        s.on('error', reject);
        s.end(body);
      });
    const replies = await Promise.all([
      request('/one'),
      request('/two'),
      request('/three', undefined, 'payload'),
    ]);
    t.same(
      replies.map((r) => r.status),
      [200, 200, 200],
    );
    const seen = replies.map((r) => JSON.parse(r.body));
    t.same(
      seen.map((s) => s.url),
      ['/one', '/two', '/three'],
      'each h2 stream is its own request',
    );
    t.equal(seen[0].headers.host, 'a.example.test', ':authority becomes Host for the backend');
    t.equal(seen[0].headers.cookie, 'c1=x; c2=y', 'cookie crumbs joined');
    t.equal(seen[0].headers['x-forwarded-proto'], 'https');
    t.equal(seen[2].body, 'payload', 'request body streamed');
    t.same(replies[0]!.headers['set-cookie'], ['a=1', 'b=2']);

    // Coalescing: the certificate also covers b.example.test, a different route → 421.
    const misrouted = await request('/', 'b.example.test');
    t.equal(misrouted.status, 421, 'request for another route on this connection: 421 Misdirected Request');
    t.equal(misrouted.headers['x-burrow-error'], 'misdirected');

    const curl = await run('curl', [
      '-sS',
      '--http2',
      '--cacert',
      pki.caFile,
      '--resolve',
      `a.example.test:${tlsPort}:127.0.0.1`,
      '-o',
      '/dev/null',
      '-w',
      '%{http_version} %{http_code}',
      `https://a.example.test:${tlsPort}/curl`,
    ]);
    t.equal(curl.stdout, '2 200', 'curl --http2 negotiates h2 and gets 200');
    const curl1 = await run('curl', [
      '-sS',
      '--http1.1',
      '--cacert',
      pki.caFile,
      '--resolve',
      `b.example.test:${tlsPort}:127.0.0.1`,
      '-o',
      '/dev/null',
      '-w',
      '%{http_version} %{http_code}',
      `https://b.example.test:${tlsPort}/curl`,
    ]);
    t.equal(curl1.stdout, '1.1 200', 'curl --http1.1 through the same listener');
  },
);

t.test('plain HTTP redirects to HTTPS for terminated names (on by default, can be turned off)', async (t) => {
  const pki = await testPki(t);
  const done: AccessInfo[] = [];
  const { relay, tlsPort } = await setup(t, pki, { onRequestDone: (info) => done.push(info) });
  const r = await get(relay.httpAddress.port, 'a.example.test', '/path?q=1');
  t.equal(r.status, 301);
  t.equal(r.headers.location, `https://a.example.test:${tlsPort}/path?q=1`);
  const post = await get(relay.httpAddress.port, 'a.example.test', '/form', {
    method: 'POST',
    body: Buffer.from('x'),
  });
  t.equal(post.status, 308, 'other methods keep their method and body: 308');
  await until(async () => done.length === 2, 'both redirects recorded');
  t.match(
    done,
    [
      { host: 'a.example.test', route: '', method: 'GET', path: '/path?q=1', status: 301 },
      { host: 'a.example.test', route: '', method: 'POST', path: '/form', status: 308 },
    ],
    'each redirect has its access line and counts in the metrics',
  );

  const pki2 = await testPki(t);
  const off = await setup(t, pki2, { httpsRedirect: false });
  const plain = await get(off.relay.httpAddress.port, 'a.example.test', '/');
  t.equal(plain.status, 200, 'with redirects off, plain HTTP is proxied');
  t.equal(JSON.parse(plain.body.toString()).headers['x-forwarded-proto'], 'http');
});

t.test('certificates reload when their files change, without dropping open connections', async (t) => {
  const pki = await testPki(t);
  const dir = await (await import('node:fs/promises')).mkdtemp(`${pki.dir}/certs-`);
  await pki.issue('site', ['r.example.test'], dir);
  const relay = await testRelay(t, {
    tls: { host: '127.0.0.1', port: 0 },
    certFiles: { dir },
  });
  const backend = await echoBackend(t);
  await testAgent(t, relay, [{ id: 'r', hostnames: ['r.example.test'], target: backend.url }]);
  const port = relay.tlsAddress!.port;
  const keepAlive = new HttpsAgent({ keepAlive: true, maxSockets: 1 });
  t.teardown(() => keepAlive.destroy());
  const first = await httpsGet(port, 'r.example.test', pki.caPem, { agent: keepAlive });
  t.equal(first.status, 200);

  const changed = once(relay.certs, 'change');
  const next = await pki.issue('site', ['r.example.test'], dir);
  await changed;
  const newSerial = new X509Certificate(await readFile(next.certFile)).serialNumber;
  t.not(newSerial, first.serial, 'a new certificate was written');

  const again = await httpsGet(port, 'r.example.test', pki.caPem, { agent: keepAlive });
  t.equal(again.status, 200, 'the open keep-alive connection still works');
  t.equal(again.serial, first.serial, '…on its original handshake');
  const fresh = await httpsGet(port, 'r.example.test', pki.caPem);
  t.equal(fresh.serial.toUpperCase(), newSerial.toUpperCase(), 'a new connection gets the new certificate');
});

t.test('one unusable pair in a certificate directory holds back no other', async (t) => {
  const pki = await testPki(t);
  const dir = await mkdtemp(`${pki.dir}/certs-`);
  await pki.issue('site', ['r.example.test'], dir);
  await pki.issue('other', ['o.example.test'], dir);
  await writeFile(join(dir, 'junk.crt'), 'not a certificate');
  await writeFile(join(dir, 'junk.key'), 'not a key');
  // A certificate whose key has another name (a certbot-like layout) is named, not skipped silently.
  await writeFile(join(dir, 'fullchain.pem'), 'a chain');
  await writeFile(join(dir, 'privkey.pem'), 'a key');
  await writeFile(join(dir, 'monkey.pem'), 'a certificate whose name merely ends in key');
  const log = memoryLogger('info', 'relay');
  // It starts: the bad pair is logged and left out.
  const relay = await testRelay(t, {
    tls: { host: '127.0.0.1', port: 0 },
    certFiles: { dir },
    logger: log.logger,
  });
  t.match(
    log.lines.find((l) => l.level === 50),
    {
      cert: join(dir, 'junk.crt'),
      msg: 'certificate files unusable; their names get no certificate from them',
    },
  );
  t.match(
    log.lines.find((l) => l.level === 40),
    {
      files: [join(dir, 'fullchain.pem'), join(dir, 'monkey.pem')],
      msg: /without a key of the same name \(NAME\.key\)/,
    },
  );
  const backend = await echoBackend(t);
  await testAgent(t, relay, [{ id: 'r', hostnames: ['r.example.test'], target: backend.url }]);
  const port = relay.tlsAddress!.port;
  const first = await httpsGet(port, 'r.example.test', pki.caPem);
  t.equal(first.status, 200);

  // A renewal of the good pair is served, though the bad one is still there.
  const changed = once(relay.certs, 'change');
  const renewed = await pki.issue('site', ['r.example.test'], dir);
  await changed;
  const serial = new X509Certificate(await readFile(renewed.certFile)).serialNumber.toUpperCase();
  t.equal(
    (await httpsGet(port, 'r.example.test', pki.caPem)).serial.toUpperCase(),
    serial,
    'the renewal is served',
  );
  t.equal(
    log.lines.filter((l) => /without a key of the same name/.test(String(l.msg))).length,
    1,
    'the certificate without its key is named once, not again on each reload',
  );

  // The good pair's key half written: it keeps serving what it had (and announces no change).
  const seen = log.lines.length;
  const failed = log.waitFor(
    (l) =>
      log.lines.indexOf(l) >= seen &&
      l.msg === 'certificate files unusable; serving the certificate they held before',
  );
  let changes = 0;
  const count = () => changes++;
  relay.certs.on('change', count);
  await writeFile(join(dir, 'site.key'), '-----BEGIN PRIVATE KEY-----\n');
  t.match(await failed, { cert: join(dir, 'site.crt'), key: join(dir, 'site.key') });
  relay.certs.off('change', count);
  t.equal(changes, 0, 'nothing new: no change announced, though another pair loaded');
  t.equal((await httpsGet(port, 'r.example.test', pki.caPem)).serial.toUpperCase(), serial, 'still served');
});

t.test(
  'a renewal that has expired, or not begun, does not take the place of a valid certificate',
  async (t) => {
    const pki = await testPki(t);
    const dir = await mkdtemp(`${pki.dir}/certs-`);
    await pki.issue('site', ['r.example.test'], dir);
    const log = memoryLogger('info', 'relay');
    const relay = await testRelay(t, {
      tls: { host: '127.0.0.1', port: 0 },
      certFiles: { dir },
      logger: log.logger,
    });
    const backend = await echoBackend(t);
    await testAgent(t, relay, [{ id: 'r', hostnames: ['r.example.test'], target: backend.url }]);
    const port = relay.tlsAddress!.port;
    const serial = async () => (await httpsGet(port, 'r.example.test', pki.caPem)).serial.toUpperCase();
    const first = await serial();
    const logged = (pred: (l: (typeof log.lines)[number]) => boolean) => {
      const seen = log.lines.length;
      return log.waitFor((l) => log.lines.indexOf(l) >= seen && pred(l));
    };
    const day = 86_400_000;
    const now = Date.now();

    const expired = logged(
      (l) =>
        l.msg === 'certificate files unusable; serving the certificate they held before' &&
        /expired on/.test(String(l['reason'])),
    );
    await pki.issue('site', ['r.example.test'], dir, {
      from: new Date(now - 10 * day),
      until: new Date(now - day),
    });
    t.match(await expired, { level: 50, cert: join(dir, 'site.crt') }, 'an expired renewal is refused');
    t.equal(await serial(), first, 'the valid one is still served');

    // A renewal whose validity begins a moment from now (its CA's clock runs ahead of this one's).
    const early = logged(
      (l) => l.msg === 'certificate not valid yet; the one it replaces is served until it is',
    );
    const begins = Date.now() + 6_000;
    const renewed = await pki.issue('site', ['r.example.test'], dir, {
      from: new Date(begins),
      until: new Date(begins + 10 * day),
    });
    t.match(await early, { level: 40, cert: join(dir, 'site.crt') });
    const next = new X509Certificate(await readFile(renewed.certFile)).serialNumber.toUpperCase();
    // Meanwhile its key is caught half written, then whole again: the pair waiting to begin, and the
    // one it replaces, are both kept through the failed reload.
    const key = await readFile(renewed.keyFile);
    const broken = logged(
      (l) => l.msg === 'certificate files unusable; serving the certificate they held before',
    );
    await writeFile(renewed.keyFile, '-----BEGIN PRIVATE KEY-----\n');
    await broken;
    const whole = logged((l) => l.msg === 'certificates unchanged' || l.msg === 'certificates reloaded');
    await writeFile(renewed.keyFile, key);
    await whole;
    const meanwhile = await serial();
    // Checked only while the renewal has surely not begun: a loaded machine may get here late.
    if (Date.now() < begins - 500) t.equal(meanwhile, first, 'the one it replaces is served until then');
    // At the second it begins a client may still find the renewal not yet valid: that is a retry.
    await until(
      async () => (await serial().catch(() => '')) === next,
      'the renewal is served once it has begun',
    );
  },
);

t.test('a slow HTTP/1.1 request head over TLS gets 408, like on the plain listener', async (t) => {
  const pki = await testPki(t);
  const { tlsPort } = await setup(t, pki, { headersTimeout: 300 });
  const socket = tlsConnect({
    host: '127.0.0.1',
    port: tlsPort,
    servername: 'a.example.test',
    ca: pki.caPem,
    ALPNProtocols: ['http/1.1'],
  });
  t.teardown(() => socket.destroy());
  await once(socket, 'secureConnect');
  socket.write('GET / HTTP/1.1\r\nHost: a.example.test\r\n');
  const chunks: Buffer[] = [];
  for await (const c of socket) chunks.push(c as Buffer);
  t.match(Buffer.concat(chunks).toString(), /^HTTP\/1\.1 408/, 'closed with 408 Request Timeout');
});

t.test('an HTTP/2 session that sends no request is closed after the head deadline', async (t) => {
  const pki = await testPki(t);
  const { tlsPort } = await setup(t, pki, { headersTimeout: 300 });
  const session = await h2Session(t, tlsPort, 'a.example.test', pki.caPem);
  const [code] = (await once(session, 'goaway')) as [number];
  t.equal(code, 0, 'the relay sends GOAWAY (NO_ERROR)');
  await once(session, 'close');
  t.pass('and the connection closes');
});

t.test(
  'a client that sends its ClientHello and stalls the handshake is closed at the hello deadline',
  async (t) => {
    const pki = await testPki(t);
    const { tlsPort } = await setup(t, pki, { helloTimeout: 300 });
    // A real hello for a terminated name, then nothing: the relay answers it and waits for the client's Finished.
    const socket = connect(tlsPort, '127.0.0.1');
    t.teardown(() => socket.destroy());
    socket.on('error', () => {});
    socket.resume();
    await once(socket, 'connect');
    socket.write(await clientHelloFor('a.example.test'));
    // Bounded: a handshake timeout taken for an HTTP parse error kept the socket for the head deadline.
    await within(10_000, once(socket, 'close'), 'the relay closes the connection');
    t.pass('closed (Node alone would wait 120 s)');
  },
);

t.test('a client that offers only http/1.0 in ALPN is served over HTTP/1, fast path or not', async (t) => {
  const pki = await testPki(t);
  for (const http1FastPath of [true, false]) {
    const { tlsPort } = await setup(t, pki, { http1FastPath });
    const c = await tlsClient(t, tlsPort, 'a.example.test', pki.caPem, ['http/1.0']);
    t.equal((c.socket as TLSSocket).alpnProtocol, 'http/1.0', 'the handshake agrees on http/1.0');
    c.write('GET /ten HTTP/1.0\r\nHost: a.example.test\r\n\r\n');
    const res = await c.response();
    t.equal(res?.status, 200, `the backend's response (fast path ${http1FastPath ? 'on' : 'off'})`);
    t.equal(JSON.parse(res!.body.toString()).url, '/ten');
    await c.untilClosed();
    t.pass('and the connection closes after it, as HTTP/1.0 without keep-alive does');

    // A client that offered http/1.0 but sends 1.1 requests keeps its connection.
    const k = await tlsClient(t, tlsPort, 'b.example.test', pki.caPem, ['http/1.0']);
    for (const path of ['/one', '/two']) {
      const r = await k.request('b.example.test', path);
      t.equal(r?.status, 200);
      t.equal(JSON.parse(r!.body.toString()).url, path, `${path} on the same connection`);
    }
  }
});

t.test('curl --http1.0 gets its response through a terminated route', async (t) => {
  const pki = await testPki(t);
  const { tlsPort } = await setup(t, pki);
  const curl = await run('curl', [
    '-sS',
    '--http1.0',
    '--cacert',
    pki.caFile,
    '--resolve',
    `a.example.test:${tlsPort}:127.0.0.1`,
    '-w',
    '\n%{http_code}',
    `https://a.example.test:${tlsPort}/curl10`,
  ]);
  const [body, code] = curl.stdout.split('\n');
  t.equal(code, '200');
  t.equal(JSON.parse(body!).url, '/curl10', "the backend's response");
});

t.test(
  'a client whose ALPN offers no protocol the relay speaks gets a no_application_protocol alert',
  async (t) => {
    const pki = await testPki(t);
    const { tlsPort } = await setup(t, pki);
    const socket = tlsConnect({
      host: '127.0.0.1',
      port: tlsPort,
      servername: 'a.example.test',
      ca: pki.caPem,
      ALPNProtocols: ['spdy/3'],
    });
    t.teardown(() => socket.destroy());
    const [err] = (await once(socket, 'error')) as [NodeJS.ErrnoException];
    t.equal(
      err.code,
      'ERR_SSL_TLSV1_ALERT_NO_APPLICATION_PROTOCOL',
      'RFC 7301 §3.2: a fatal alert, not a guess',
    );
    // Among others, one the relay speaks is chosen in its own order of preference.
    const mixed = await tlsClient(t, tlsPort, 'a.example.test', pki.caPem, [
      'spdy/3',
      'http/1.0',
      'http/1.1',
    ]);
    t.equal((mixed.socket as TLSSocket).alpnProtocol, 'http/1.1');
    const r = await mixed.request('a.example.test', '/mixed');
    t.equal(r?.status, 200);
  },
);

t.test('an HTTP/2 connection may have 100 requests in progress', async (t) => {
  const pki = await testPki(t);
  const { tlsPort } = await setup(t, pki);
  const session = h2connect(`https://a.example.test:${tlsPort}`, {
    ca: pki.caPem,
    servername: 'a.example.test',
    host: '127.0.0.1',
  } as never);
  session.on('error', () => {});
  t.teardown(() => session.destroy());
  // Listening from the start: until the relay's SETTINGS arrive, remoteSettings holds the 100
  // streams nghttp2 assumes of any peer, which would pass whatever the relay sends.
  const [settings] = (await once(session, 'remoteSettings')) as [Settings];
  t.equal(settings.maxConcurrentStreams, 100, 'so one client cannot take every stream of a tunnel');
});

t.test('WebSocket over a terminated TLS connection (wss://): the same upgrade splice', async (t) => {
  const pki = await testPki(t);
  const cert = await pki.issue('ws', ['ws.example.test']);
  const relay = await testRelay(t, {
    tls: { host: '127.0.0.1', port: 0 },
    certFiles: { pairs: [{ cert: cert.certFile, key: cert.keyFile }] },
  });
  const w = await testServer(t, (_req, res) => res.end('not a websocket request'));
  const wss = new WebSocketServer({ server: w.server });
  wss.on('connection', (ws, req) =>
    ws.on('message', (data) => ws.send(`${req.headers['x-forwarded-proto']}:${data}`)),
  );
  await testAgent(t, relay, [{ id: 'ws', hostnames: ['ws.example.test'], target: w.url }]);
  // ws hands these options to https.request, which takes the SNI name from `servername`.
  const options = { headers: { host: 'ws.example.test' }, servername: 'ws.example.test', ca: pki.caPem };
  const ws = new WebSocket(`wss://127.0.0.1:${relay.tlsAddress!.port}/chat`, options);
  t.teardown(() => ws.terminate());
  await once(ws, 'open');
  ws.send('hello');
  const [reply] = await once(ws, 'message');
  t.equal(String(reply), 'https:hello', 'echoed through the tunnel; the backend saw https');
});

/**
 * A relay terminating TLS for post.example.test (fast path on or off), whose
 * backend answers each request once its body is whole and `release` has come,
 * and an HTTP/1.1 client connection to it.
 */
async function heldPosts(t: Teardownable, fast: boolean) {
  const host = 'post.example.test';
  const pki = await testPki(t);
  const cert = await pki.issue('post', [host]);
  const log = memoryLogger('info', 'relay');
  const relay = await testRelay(t, {
    http1FastPath: fast,
    logger: log.logger,
    tls: { host: '127.0.0.1', port: 0 },
    certFiles: { pairs: [{ cert: cert.certFile, key: cert.keyFile }] },
    httpsRedirect: false,
  });
  const release = deferred();
  const received = deferred();
  const cancelled = deferred();
  const backend = await testServer(t, (req, res) => {
    req.once('data', () => received.resolve());
    req.on('end', () => void release.promise.then(() => res.end('created')));
    res.on('close', () => cancelled.resolve());
  });
  await testAgent(t, relay, [{ id: 'post', hostnames: [host], target: backend.url }], { connections: 1 });
  const c = await tlsClient(t, relay.tlsAddress!.port, host, pki.caPem, ['http/1.1']);
  // Chunked: Node's parser reads it, with the fast path on too.
  c.write(`POST /orders HTTP/1.1\r\nHost: ${host}\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n`);
  await within(10_000, received.promise, 'the POST reaches the backend');
  return { c, log, release, cancelled: cancelled.promise };
}

for (const fast of [false, true]) {
  t.test(
    `HTTP/1.1 over TLS, fast path ${fast ? 'on' : 'off'}: a parse error after a request waits for its response`,
    async (t) => {
      const { c, log, release } = await heldPosts(t, fast);
      c.write('0\r\n\r\nGARBAGE\r\n\r\n');
      // Node's own handler would answer at once, before the POST's response.
      await within(
        10_000,
        Promise.race([log.waitFor((l) => l['msg'] === 'bad request from client'), c.anyHead()]),
        'the relay reads the bad bytes',
      );
      release.resolve();
      const first = await within(10_000, c.response('POST'), "the POST's response");
      t.equal(first?.status, 200, "the first response is the POST's");
      t.equal(first?.body.toString(), 'created', 'whole');
      const second = await within(10_000, c.response(), 'the answer to the bad bytes');
      t.equal(second?.status, 400, 'then the 400');
      await within(10_000, c.untilClosed(), 'and the connection closes');
    },
  );

  t.test(
    `HTTP/1.1 over TLS, fast path ${fast ? 'on' : 'off'}: a malformed chunk size is answered 400 at once`,
    async (t) => {
      const { c, cancelled } = await heldPosts(t, fast);
      c.write('zz\r\nworld\r\n0\r\n\r\n');
      const reply = await within(10_000, c.response('POST'), 'an answer');
      t.equal(reply?.status, 400, 'a 400, not a wait for the rest of the body');
      t.same(field(reply!, 'x-burrow-error'), ['bad_framing'], 'from the relay, saying why');
      await within(10_000, cancelled, 'the backend request is cancelled');
      await within(10_000, c.untilClosed(), 'and the connection closes');
    },
  );
}

t.test('a ClientHello sent as 1-byte records, each in a write of its own, is read whole', async (t) => {
  const pki = await testPki(t);
  const { tlsPort } = await setup(t, pki);
  const raw = connect(tlsPort, '127.0.0.1');
  t.teardown(() => raw.destroy());
  await once(raw, 'connect');
  raw.setNoDelay(true);
  // The TLS client writes through this: its hello leaves as one record per byte of the
  // handshake message, one write and one turn of the event loop each; the rest as it is.
  let hello = true;
  const wire = new Duplex({
    read() {},
    write(chunk: Buffer, _encoding, callback) {
      if (!hello) return void raw.write(chunk, callback);
      hello = false;
      const end = 5 + chunk.readUInt16BE(3);
      void (async () => {
        for (const byte of chunk.subarray(5, end)) {
          raw.write(Buffer.from([22, 3, 1, 0, 1, byte]));
          await new Promise((resolve) => setImmediate(resolve));
        }
        if (end < chunk.length) raw.write(chunk.subarray(end));
        callback();
      })();
    },
  });
  raw.on('data', (data: Buffer) => wire.push(data));
  raw.on('end', () => wire.push(null));
  const tls = tlsConnect({ socket: wire, servername: 'a.example.test', ca: pki.caPem });
  tls.on('error', () => {});
  t.teardown(() => tls.destroy());
  await once(tls, 'secureConnect');
  tls.write('GET /trickled HTTP/1.1\r\nHost: a.example.test\r\nConnection: close\r\n\r\n');
  const chunks: Buffer[] = [];
  for await (const chunk of tls) chunks.push(chunk as Buffer);
  const response = Buffer.concat(chunks).toString();
  t.match(response, /^HTTP\/1\.1 200 /, 'served');
  t.match(response, /"url":"\/trickled"/);
});
