// The tunnel endpoint needs no token to connect to: connections that have not
// asked for a tunnel yet are bounded (in all and per address) and timed, so a
// flood of silent connections cannot take the descriptors agents and clients
// need, nor hold a drain.
import { once } from 'node:events';
import { readFile } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import t from 'tap';
import { MAX_WAITING_PER_ADDRESS } from '../../packages/relay/src/listeners/tunnel-admission.js';
import { testAgent } from '../helpers/agent.js';
import { until } from '../helpers/deferred.js';
import { get, testServer } from '../helpers/http.js';
import { metricValue } from '../helpers/metrics.js';
import { type Teardownable, testRelay } from '../helpers/relay.js';
import { testPki } from '../helpers/tls.js';

/** A TCP connection to `port` from `from`, which sends nothing; resolves once connected. */
async function silent(t: Teardownable, port: number, from = '127.0.0.1'): Promise<Socket> {
  // Half open allowed: a connection the relay ends stays open on this side, as a hostile client's would.
  const socket = connect({ port, host: '127.0.0.1', localAddress: from, allowHalfOpen: true });
  socket.on('error', () => {});
  t.teardown(() => socket.destroy());
  await once(socket, 'connect');
  return socket;
}

/** Resolves with the bytes `socket` received before the relay ended or closed it. */
async function received(socket: Socket): Promise<string> {
  let text = '';
  socket.on('data', (chunk: Buffer) => {
    text += chunk.toString('latin1');
  });
  if (!socket.readableEnded && !socket.closed)
    await new Promise((resolve) => socket.once('end', resolve).once('close', resolve));
  return text;
}

for (const tls of [false, true]) {
  t.test(
    `${tls ? 'wss' : 'ws'}: silent connections are bounded per address, and agents still get in`,
    async (t) => {
      const pki = tls ? await testPki(t) : undefined;
      const relay = await testRelay(t, {
        ...(pki
          ? {
              tunnelTls: {
                cert: await readFile(pki.certFile, 'utf8'),
                key: await readFile(pki.keyFile, 'utf8'),
              },
            }
          : {}),
      });
      const port = relay.tunnelAddress.port;
      const held = await Promise.all(Array.from({ length: MAX_WAITING_PER_ADDRESS }, () => silent(t, port)));
      // One more from the same address is closed as it arrives, unread.
      const over = await silent(t, port);
      t.equal(await received(over), '', 'the next one is closed at once');
      t.equal(
        metricValue(await relay.metrics.registry.metrics(), 'burrow_relay_connections_dropped_total', {
          listener: 'tunnel',
        }),
        1,
        'and counted',
      );
      // Another address is not held up by this one.
      const other = await silent(t, port, '127.0.0.2');
      if (!tls) {
        other.write('GET / HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n');
        t.match(await received(other), /^HTTP\/1\.1 404 /, 'a connection from 127.0.0.2 is served');
      }
      other.destroy();

      // Connections that upgraded are not waiting: one agent with more tunnel connections than
      // the per-address bound gets them all, once the silent ones are gone.
      for (const s of held) s.destroy();
      await until(
        async () =>
          metricValue(await relay.metrics.registry.metrics(), 'burrow_relay_tunnel_connections') === 0,
        'nothing held',
      );
      const app = await testServer(t, (_req, res) => res.end('through'));
      const connections = MAX_WAITING_PER_ADDRESS + 8;
      const agent = await testAgent(
        t,
        pki ? `wss://localhost:${port}` : relay,
        [{ id: 'a', hostnames: ['a.example.com'], target: app.url }],
        { connections, ...(pki ? { relayCa: pki.caPem } : {}) },
      );
      await until(async () => agent.connectionCount === connections, `${connections} tunnel connections`);
      t.equal((await get(relay.httpAddress.port, 'a.example.com')).body.toString(), 'through');
    },
  );
}

t.test('refused upgrades keep their slots until their connections close', async (t) => {
  const relay = await testRelay(t);
  const port = relay.tunnelAddress.port;
  // Each asks for a tunnel where there is none, reads its 404 and keeps its side of the connection open.
  const refused = await Promise.all(
    Array.from({ length: MAX_WAITING_PER_ADDRESS }, async () => {
      const socket = await silent(t, port);
      socket.write(
        'GET /nope HTTP/1.1\r\nHost: relay\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n' +
          'Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n',
      );
      const [chunk] = (await once(socket, 'data')) as [Buffer];
      return { socket, status: chunk.toString('latin1').slice(0, 12) };
    }),
  );
  t.same(new Set(refused.map((r) => r.status)), new Set(['HTTP/1.1 404']));
  t.equal(await received(await silent(t, port)), '', 'the next connection is closed at once');
});

t.test('a drain closes connections that never asked for a tunnel at once', async (t) => {
  // A drain this long would outlast the test: only closing them at its start ends it in time.
  const relay = await testRelay(t, { drainTimeout: 120_000 });
  const waiting = await silent(t, relay.tunnelAddress.port);
  const closed = received(waiting);
  await relay.close();
  t.equal(await closed, '', 'closed with nothing sent');
});
