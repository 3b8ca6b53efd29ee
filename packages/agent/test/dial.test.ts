// A failed dial is reported with what to change when it is a common mistake:
// ws:// against TLS and the reverse, a private CA not given, or another of the
// relay's listeners. Real servers on 127.0.0.1, the real dialer.
import { once } from 'node:events';
import { readFile } from 'node:fs/promises';
import { createServer as createHttpServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createServer as createTlsServer } from 'node:tls';
import t, { type Test } from 'tap';
import { testPki } from '../../../test/helpers/tls.js';
import { describeDialFailure, dialRelay } from '../src/tunnel/dial.js';

async function listen(t: Test, server: Server | ReturnType<typeof createTlsServer>): Promise<number> {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return (server.address() as AddressInfo).port;
}

/** Dials `endpoint` and returns the reason the agent would log. */
function dialFails(endpoint: string, ca?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    dialRelay(
      endpoint,
      'a-token',
      5_000,
      {
        open: (ws) => {
          ws.terminate();
          reject(new Error('the dial succeeded'));
        },
        fail: (err) => resolve(describeDialFailure(err, endpoint)),
      },
      ca,
    );
  });
}

async function tlsServer(t: Test) {
  const pki = await testPki(t);
  const { certFile, keyFile } = await pki.issue('relay', ['localhost', '127.0.0.1']);
  const server = createTlsServer({ cert: await readFile(certFile), key: await readFile(keyFile) }, (s) =>
    s.destroy(),
  );
  server.on('tlsClientError', () => {});
  return { port: await listen(t, server), caPem: pki.caPem };
}

t.test('wss:// to a listener without TLS: use ws://', async (t) => {
  const server = createHttpServer();
  server.on('upgrade', (_req, socket) => socket.destroy());
  const port = await listen(t, server);
  const reason = await dialFails(`wss://127.0.0.1:${port}/v1/tunnel`);
  t.match(reason, /does not speak TLS: use ws:\/\//);
  t.notMatch(reason, /\n/, 'one line');
});

t.test('ws:// to a TLS listener: use wss://', async (t) => {
  const { port } = await tlsServer(t);
  t.match(await dialFails(`ws://127.0.0.1:${port}/v1/tunnel`), /must start with wss:\/\//);
});

t.test('a relay certificate from a private CA, without --relay-ca', async (t) => {
  const { port } = await tlsServer(t);
  t.match(await dialFails(`wss://127.0.0.1:${port}/v1/tunnel`), /needs that CA: --relay-ca/);
});

t.test("the relay's public HTTP port instead of its tunnel listener", async (t) => {
  const server = createHttpServer();
  server.on('upgrade', (_req, socket) =>
    socket.end('HTTP/1.1 404 Not Found\r\ncontent-length: 9\r\nconnection: close\r\n\r\nNot found'),
  );
  const port = await listen(t, server);
  t.match(
    await dialFails(`ws://127.0.0.1:${port}/v1/tunnel`),
    /^relay refused the tunnel: HTTP 404: Not found \(is --relay the relay's tunnel listener/,
  );
});

t.test('other failures are reported as they are', async (t) => {
  const server = createHttpServer();
  server.on('upgrade', (_req, socket) =>
    socket.end('HTTP/1.1 401 Unauthorized\r\ncontent-length: 13\r\nconnection: close\r\n\r\ntoken expired'),
  );
  const port = await listen(t, server);
  t.equal(
    await dialFails(`ws://127.0.0.1:${port}/v1/tunnel`),
    'relay refused the tunnel: HTTP 401: token expired',
  );
});
