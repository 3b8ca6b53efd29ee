// The relay's access log: one JSON line per request, in the logger's own line
// shape, on the fast path, the general path and upgrades; nothing at a level
// above info. Real relay, agent, backend and clients on 127.0.0.1.
import { once } from 'node:events';
import http2 from 'node:http2';
import { type AddressInfo, connect } from 'node:net';
import t from 'tap';
import { memoryLogger } from '../../packages/agent/test/helpers/log.js';
import { testAgent } from '../helpers/agent.js';
import { testServer } from '../helpers/http.js';
import { rawRequest } from '../helpers/raw-http.js';
import { testRelay } from '../helpers/relay.js';

t.test('one line per request, with what the request was and how it went', async (t) => {
  const log = memoryLogger('info', 'burrow-relay');
  const relay = await testRelay(t, { logger: log.logger });
  const backend = await testServer(t, (req, res) => {
    if (req.headers.upgrade) {
      res.writeHead(426).end();
      return;
    }
    res.end('hello');
  });
  await testAgent(t, relay, [{ id: 'app', hostnames: ['app.example.com'], target: backend.url }], {
    connections: 1,
  });
  const port = relay.httpAddress.port;
  const request = (n: number) =>
    log.waitFor((l) => l['msg'] === 'request' && log.lines.filter((x) => x['msg'] === 'request').length >= n);

  // HTTP/1.1: the fast path. A path with a quote, a backslash and percent-encoded UTF-8.
  const path = '/a"b\\\\c?q=%C3%A9';
  await rawRequest(port, `GET ${path} HTTP/1.1\r\nHost: app.example.com\r\n\r\n`);
  await request(1);
  // HTTP/1.0: Node's parser and the general path.
  await rawRequest(port, 'GET /old HTTP/1.0\r\nHost: app.example.com\r\n\r\n');
  await request(2);
  // An unknown host: answered by the relay itself.
  await rawRequest(port, 'GET / HTTP/1.1\r\nHost: nobody.example.com\r\n\r\n');
  await request(3);
  const lines = log.lines.filter((l) => l['msg'] === 'request');
  t.match(lines[0], {
    level: 30,
    time: /^\d{4}-\d\d-\d\dT/,
    name: 'burrow-relay',
    host: 'app.example.com',
    route: 'app.example.com',
    method: 'GET',
    path,
    status: 200,
    bytesIn: 0,
    bytesOut: 5,
    durationMs: Number,
    client: '127.0.0.1',
  });
  t.notOk('error' in lines[0]!, 'no error field on a success');
  t.match(
    lines[1],
    { path: '/old', status: 200, bytesOut: 5 },
    'response bytes are body bytes on both paths',
  );
  t.match(lines[2], { host: 'nobody.example.com', route: '', status: 404, error: String });
  t.ok(
    log.raw.filter((r) => r.includes('"msg":"request"')).every((r) => r.endsWith('}\n')),
    'each a whole JSON line',
  );

  // An upgrade the backend declines is logged as one too, and marked.
  const socket = connect(port, '127.0.0.1');
  socket.write(
    'GET /ws HTTP/1.1\r\nHost: app.example.com\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n',
  );
  socket.resume();
  t.teardown(() => socket.destroy());
  const upgrade = await log.waitFor((l) => l['msg'] === 'request' && l['path'] === '/ws');
  t.match(upgrade, { status: 426, upgrade: true });

  // At warn, no access lines.
  log.logger.level = 'warn';
  const before = log.lines.length;
  await rawRequest(port, `GET /quiet HTTP/1.1\r\nHost: app.example.com\r\n\r\n`);
  await new Promise((r) => setImmediate(r));
  t.equal(log.lines.length, before, 'nothing logged at warn');
});

t.test('bytesOut counts body bytes only, also from an h2c backend that sends trailers', async (t) => {
  const log = memoryLogger('info', 'burrow-relay');
  const relay = await testRelay(t, { logger: log.logger });
  const backend = http2.createServer();
  backend.on('stream', (stream) => {
    stream.respond({ ':status': 200 }, { waitForTrailers: true });
    stream.on('wantTrailers', () => stream.sendTrailers({ 'x-checksum': 'abc' }));
    stream.write('hello ');
    stream.end('world');
  });
  backend.listen(0, '127.0.0.1');
  await once(backend, 'listening');
  t.teardown(() => backend.close());
  const target = `h2c://127.0.0.1:${(backend.address() as AddressInfo).port}`;
  await testAgent(t, relay, [{ id: 'h2', hostnames: ['h2.example.com'], target }], { connections: 1 });
  const res = await rawRequest(
    relay.httpAddress.port,
    'GET / HTTP/1.1\r\nHost: h2.example.com\r\nTE: trailers\r\nConnection: close\r\n\r\n',
    15_000,
    true,
  );
  t.match(res.text, /\r\n6\r\nhello \r\n5\r\nworld\r\n0\r\nx-checksum: abc\r\n/i, 'body and trailer arrived');
  const line = await log.waitFor((l) => l['msg'] === 'request');
  t.match(line, { host: 'h2.example.com', status: 200, bytesOut: 11 }, 'no record framing, no trailers');
});
