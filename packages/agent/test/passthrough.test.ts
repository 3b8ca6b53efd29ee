// TLS passthrough routes at the agent: `tcp` streams spliced byte for byte to
// the route's target, and stream kinds that do not match a route refused.
import { once } from 'node:events';
import { type AddressInfo, createServer as createTcpServer } from 'node:net';
import { encodeJson, type Http1Open, Reason, type TcpOpen } from '@burrow/shared';
import t from 'tap';
import { freePort } from '../../../test/helpers/net.js';
import { startAgent } from '../src/agent.js';
import { fakeRelay, resetReason } from './helpers/fake-relay.js';
import { memoryLogger } from './helpers/log.js';

const TOKEN = 'eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ0ZXN0In0.c2VjcmV0LXNpZ25hdHVyZQ';

t.test('tcp streams: spliced to the passthrough target; kinds must match the route', async (t) => {
  // A backend that answers every byte it gets, upper-cased, and ends when the client does.
  const upper = createTcpServer({ allowHalfOpen: true }, (s) => {
    s.on('data', (c: Buffer) => s.write(c.toString().toUpperCase()));
    s.on('end', () => s.end('|bye'));
  });
  upper.listen(0, '127.0.0.1');
  await once(upper, 'listening');
  t.teardown(() => upper.close());
  const closedPort = await freePort();

  const relay = await fakeRelay(t);
  const agent = startAgent({
    relayUrl: relay.url,
    token: TOKEN,
    connections: 1,
    logger: memoryLogger().logger,
    backoff: { base: 5, cap: 40 },
    routes: [
      {
        id: 'pass',
        hostnames: ['s.example.com'],
        target: `tls-passthrough://127.0.0.1:${(upper.address() as AddressInfo).port}`,
      },
      { id: 'gone', hostnames: ['g.example.com'], target: `tls-passthrough://127.0.0.1:${closedPort}` },
      { id: 'web', hostnames: ['w.example.com'], target: 'http://127.0.0.1:1' },
    ],
  });
  t.teardown(() => agent.close());
  const dialErrors: string[] = [];
  agent.on('dialError', (reason) => dialErrors.push(reason));
  await agent.ready();
  const [announce] = relay.live()[0]!.announcements;
  t.match(
    announce?.find((r) => r.id === 'pass'),
    { protocol: 'tls-passthrough' },
    'the relay is told the route is passthrough',
  );
  const session = relay.live()[0]!.session;
  const open = (route: string) => {
    const meta: TcpOpen = {
      kind: 'tcp',
      route,
      serverName: 's.example.com',
      client: { ip: '127.0.0.1', port: 9 },
    };
    const stream = session.openStream(encodeJson(meta));
    stream.on('error', () => {});
    return stream;
  };

  const stream = open('pass');
  stream.write('hello ');
  stream.end('world');
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(c as Buffer);
  t.equal(Buffer.concat(chunks).toString(), 'HELLO WORLD|bye', 'bytes both ways; half-close end to end');
  t.equal(stream.resetReason, undefined, 'ended cleanly');

  t.equal(await resetReason(open('gone')), Reason.ConnectRefused, 'closed backend port: CONNECT_REFUSED');
  t.same(dialErrors, ['ConnectRefused'], 'the failed connection counts as a dial error (metrics)');
  t.equal(await resetReason(open('web')), Reason.BadMetadata, 'tcp stream for an HTTP route: refused');
  const http = relay.openHttp({ route: 'pass' });
  t.equal(await resetReason(http), Reason.BadMetadata, 'HTTP stream for a passthrough route: refused');
  const http1: Http1Open = { kind: 'http1', route: 'pass' };
  const upstream = session.openStream(encodeJson(http1));
  upstream.on('error', () => {});
  t.equal(await resetReason(upstream), Reason.BadMetadata, 'http1 stream for a passthrough route: refused');
});
