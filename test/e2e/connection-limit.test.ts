// --max-connections: a public listener holding its limit closes new client
// connections as they arrive, counts and logs them, keeps serving the ones it
// holds, and never stands in the way of an agent's tunnel.
import { once } from 'node:events';
import { connect, type Socket } from 'node:net';
import t from 'tap';
import { memoryLogger } from '../../packages/agent/test/helpers/log.js';
import { testAgent } from '../helpers/agent.js';
import { until } from '../helpers/deferred.js';
import { get, testServer } from '../helpers/http.js';
import { metricValue } from '../helpers/metrics.js';
import { type Teardownable, testRelay } from '../helpers/relay.js';

/** A client connection, open once connected. */
async function open(t: Teardownable, port: number): Promise<Socket> {
  const socket = connect(port, '127.0.0.1');
  t.teardown(() => socket.destroy());
  await once(socket, 'connect');
  return socket;
}

/** Sends one keep-alive GET on `socket` and resolves with the status of its response. */
function requestOn(socket: Socket, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    let text = '';
    const onData = (chunk: Buffer) => {
      text += chunk.toString('latin1');
      // The backend answers "ok" with a Content-Length: the response is whole when it is there.
      if (!text.endsWith('\r\n\r\nok')) return;
      socket.off('data', onData).off('close', onClose);
      resolve(Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1]));
    };
    const onClose = () => reject(new Error(`connection closed after ${JSON.stringify(text)}`));
    socket.on('data', onData).once('close', onClose);
    socket.write(`GET / HTTP/1.1\r\nHost: ${host}\r\n\r\n`);
  });
}

/** Resolves with the bytes a connection received before it closed. */
async function untilClosed(socket: Socket): Promise<number> {
  let received = 0;
  socket.on('data', (chunk: Buffer) => {
    received += chunk.length;
  });
  socket.on('error', () => {}); // a reset is as good as a FIN here
  await once(socket, 'close');
  return received;
}

t.test(
  'connections over the limit are closed on arrival; the held ones and the tunnels keep working',
  async (t) => {
    const log = memoryLogger('warn', 'relay');
    const relay = await testRelay(t, { maxConnections: 2, logger: log.logger });
    const app = await testServer(t, (_req, res) => {
      res.setHeader('Content-Length', '2');
      res.end('ok');
    });
    await testAgent(t, relay, [{ id: 'app', hostnames: ['app.limit.test'], target: app.url }]);
    const port = relay.httpAddress.port;
    const scrape = () => relay.metrics.registry.metrics();

    const first = await open(t, port);
    const second = await open(t, port);
    t.equal(await requestOn(first, 'app.limit.test'), 200);
    t.equal(await requestOn(second, 'app.limit.test'), 200);

    const third = await open(t, port);
    t.equal(await untilClosed(third), 0, 'the third connection is closed without a byte');
    t.equal(metricValue(await scrape(), 'burrow_relay_connections_dropped_total', { listener: 'http' }), 1);
    const warned = await log.waitFor((l) => l.msg.startsWith('connection limit reached'));
    t.match(warned, { listener: 'http', maxConnections: 2, dropped: 1 });

    // The connections it holds are served as before.
    t.equal(await requestOn(first, 'app.limit.test'), 200);

    // Client connections do not count against tunnels: another agent gets in while the listener is full.
    // An agent is ready once one of its two connections is; the relay counts each as it arrives.
    const tunnels = async (n: number) => metricValue(await scrape(), 'burrow_relay_tunnel_connections') === n;
    await until(() => tunnels(2), 'the first agent holds two tunnel connections');
    await testAgent(t, relay, [{ id: 'other', hostnames: ['other.limit.test'], target: app.url }], {
      sub: 'other-tenant',
    });
    await until(() => tunnels(4), 'the second agent holds two tunnel connections too');
    t.pass('four tunnel connections while the client listener is full');

    // A freed place is taken by the next client.
    second.end();
    await until(
      async () => (await get(port, 'other.limit.test').catch(() => undefined))?.status === 200,
      'a new connection once one closed',
    );
    t.equal(await requestOn(first, 'app.limit.test'), 200);
  },
);

t.test('the TLS listener keeps a limit of its own', async (t) => {
  const relay = await testRelay(t, { maxConnections: 1, tls: { host: '127.0.0.1', port: 0 } });
  const tlsPort = relay.tlsAddress!.port;
  await open(t, tlsPort); // holds the only place while it has not sent its ClientHello
  const second = await open(t, tlsPort);
  t.equal(await untilClosed(second), 0);
  const text = await relay.metrics.registry.metrics();
  t.equal(metricValue(text, 'burrow_relay_connections_dropped_total', { listener: 'tls' }), 1);
  // The plain HTTP listener has its own place: a request there is answered (404, nothing exposed).
  t.equal((await get(relay.httpAddress.port, 'nothing.limit.test')).status, 404);
});
