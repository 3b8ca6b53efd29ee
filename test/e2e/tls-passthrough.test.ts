import { X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import { readFile } from 'node:fs/promises';
import { createServer as createHttpsServer } from 'node:https';
import { type AddressInfo, connect as netConnect, type Socket } from 'node:net';
import { type TLSSocket, connect as tlsConnect } from 'node:tls';
import t from 'tap';
import { memoryLogger } from '../../packages/agent/test/helpers/log.js';
import { testAgent } from '../helpers/agent.js';
import { get, httpsGet, testServer } from '../helpers/http.js';
import { type Teardownable, testRelay } from '../helpers/relay.js';
import { clientHelloFor, type TestPki, testPki } from '../helpers/tls.js';

/** An HTTPS backend with its own certificate for secure.example.test. */
async function tlsBackend(t: Teardownable, pki: TestPki) {
  const pair = await pki.issue('backend', ['secure.example.test']);
  const [cert, key] = await Promise.all([readFile(pair.certFile, 'utf8'), readFile(pair.keyFile, 'utf8')]);
  const server = createHttpsServer({ cert, key }, (req, res) => {
    const socket = req.socket as TLSSocket;
    res.end(
      JSON.stringify({ sni: socket.servername, url: req.url, xfp: req.headers['x-forwarded-proto'] ?? null }),
    );
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => {
    server.closeAllConnections();
    return new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return {
    port: (server.address() as AddressInfo).port,
    fingerprint: new X509Certificate(cert).fingerprint256,
  };
}

/** Sends raw bytes to the TLS port; resolves with what came back once the relay closed the connection. */
async function rawExchange(port: number, bytes?: Buffer, end = false): Promise<Buffer> {
  const socket: Socket = netConnect(port, '127.0.0.1');
  socket.on('error', () => {});
  const chunks: Buffer[] = [];
  socket.on('data', (c: Buffer) => chunks.push(c));
  await once(socket, 'connect');
  if (bytes) socket.write(bytes);
  if (end) socket.end();
  await once(socket, 'close');
  return Buffer.concat(chunks);
}

t.test('passthrough: the backend terminates with its own certificate; the relay holds none', async (t) => {
  const pki = await testPki(t);
  const backend = await tlsBackend(t, pki);
  const relay = await testRelay(t, { tls: { host: '127.0.0.1', port: 0 } });
  await testAgent(t, relay, [
    {
      id: 'secure',
      hostnames: ['secure.example.test'],
      target: `tls-passthrough://127.0.0.1:${backend.port}`,
    },
    {
      id: 'fenced',
      hostnames: ['fenced.example.test'],
      target: `tls-passthrough://127.0.0.1:${backend.port}`,
      allowCidrs: ['203.0.113.0/24'],
    },
  ]);
  t.equal(relay.certificateExpiry().length, 0, 'the relay has no certificate at all');
  const fenced = await new Promise<string>((resolve) => {
    const s = tlsConnect({
      host: '127.0.0.1',
      port: relay.tlsAddress!.port,
      servername: 'fenced.example.test',
      ca: pki.caPem,
    });
    s.on('secureConnect', () => resolve('connected'));
    s.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
    t.teardown(() => s.destroy());
  });
  t.match(
    fenced,
    /UNRECOGNIZED_NAME/,
    "a client outside the route's allowlist is refused before any byte reaches the agent",
  );
  const r = await httpsGet(relay.tlsAddress!.port, 'secure.example.test', pki.caPem, { path: '/through' });
  t.equal(r.status, 200);
  t.equal(r.fingerprint, backend.fingerprint, "the client verified the backend's own certificate");
  t.same(
    JSON.parse(r.body),
    { sni: 'secure.example.test', url: '/through', xfp: null },
    'bytes untouched: no forwarding headers added',
  );

  const plain = await get(relay.httpAddress.port, 'secure.example.test', '/x');
  t.equal(plain.status, 301, 'plain HTTP to a passthrough name redirects to HTTPS');
  t.equal(plain.headers.location, `https://secure.example.test:${relay.tlsAddress!.port}/x`);

  // Half-close travels end to end: the client ends its side after the request, the response still arrives.
  const socket = tlsConnect({
    host: '127.0.0.1',
    port: relay.tlsAddress!.port,
    servername: 'secure.example.test',
    ca: pki.caPem,
  });
  t.teardown(() => socket.destroy());
  await once(socket, 'secureConnect');
  socket.end('GET /half HTTP/1.1\r\nHost: secure.example.test\r\nConnection: close\r\n\r\n');
  const chunks: Buffer[] = [];
  for await (const c of socket) chunks.push(c as Buffer);
  t.match(
    Buffer.concat(chunks).toString(),
    /^HTTP\/1\.1 200[\s\S]*"url":"\/half"/,
    'response after the client half-closed',
  );
});

t.test(
  'no SNI, unknown SNI, garbage, malformed or slow hellos: closed, logged, relay unharmed',
  async (t) => {
    const pki = await testPki(t);
    const a = await pki.issue('a', ['ok.example.test']);
    const log = memoryLogger('info', 'relay');
    const relay = await testRelay(t, {
      tls: { host: '127.0.0.1', port: 0 },
      certFiles: { pairs: [{ cert: a.certFile, key: a.keyFile }] },
      helloTimeout: 300,
      logger: log.logger,
    });
    const backend = await testServer(t, (_req, res) => res.end('fine'));
    await testAgent(t, relay, [{ id: 'ok', hostnames: ['ok.example.test'], target: backend.url }]);
    const port = relay.tlsAddress!.port;
    const alert = Buffer.from([0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x70]);

    const tlsAttempt = (servername?: string) =>
      new Promise<string>((resolve) => {
        const s = tlsConnect({
          host: '127.0.0.1',
          port,
          ca: pki.caPem,
          ...(servername ? { servername } : {}),
        });
        s.on('secureConnect', () => {
          s.destroy();
          resolve('connected');
        });
        s.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
      });
    t.match(await tlsAttempt(), /UNRECOGNIZED_NAME/, 'no SNI (IP literal): refused with unrecognized_name');
    t.match(await tlsAttempt('nobody.example.test'), /UNRECOGNIZED_NAME/, 'unknown SNI: refused');

    t.same(
      await rawExchange(port, Buffer.from('GET / HTTP/1.1\r\nHost: ok.example.test\r\n\r\n')),
      Buffer.alloc(0),
      'plain HTTP on the TLS port: closed without a reply',
    );
    let seed = 7;
    const random = Buffer.alloc(4096);
    for (let i = 0; i < random.length; i++) {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      random[i] = seed >> 16;
    }
    t.same(await rawExchange(port, random), Buffer.alloc(0), 'random bytes: closed');
    // A record that claims to be a handshake but carries a broken ClientHello.
    const broken = Buffer.from([22, 3, 1, 0, 8, 1, 0, 0, 4, 3, 3, 0xff, 0xff]);
    t.same(await rawExchange(port, broken), Buffer.alloc(0), 'malformed ClientHello: closed');
    t.same(
      await rawExchange(port, Buffer.from([22, 3, 1, 0, 200, 1])),
      Buffer.alloc(0),
      'truncated hello, then silence: closed at the hello timeout',
    );
    t.same(
      await rawExchange(port),
      Buffer.alloc(0),
      'a client that says nothing: closed at the hello timeout',
    );
    t.same(
      await rawExchange(port, Buffer.from([22, 3, 1]), true),
      Buffer.alloc(0),
      'half a header then FIN: closed',
    );

    const unknown = await rawExchange(port, await clientHelloFor('nobody.example.test'));
    t.same(unknown, alert, 'unknown SNI gets exactly one unrecognized_name alert');
    const refusals = log.lines.filter((l) => l['msg'] === 'tls connection refused').map((l) => l['reason']);
    t.equal(refusals.length, 9, 'one log line per refused connection');
    t.match(refusals, [
      /no SNI/,
      /no route for this name/,
      /not a TLS ClientHello: not a TLS handshake record/,
      /not a TLS ClientHello/,
      /not a TLS ClientHello/,
      /no complete ClientHello within 300 ms/,
      /no complete ClientHello within 300 ms/,
      /client closed before its ClientHello ended/,
      /no route for this name/,
    ]);

    // Everything else still works.
    const ok = (await httpsGet(port, 'ok.example.test', pki.caPem)).body;
    t.equal(ok, 'fine', 'a well-behaved client is served after all of that');
    t.equal(
      (await get(relay.httpAddress.port, 'ok.example.test')).status,
      301,
      'the HTTP listener is fine too',
    );
  },
);
