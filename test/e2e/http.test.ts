// HTTP through a real relay and agent over real sockets on 127.0.0.1: bodies
// both ways, streaming, upgrades, per-request routing and the error pages.
import { createHash, randomBytes } from 'node:crypto';
import { EventEmitter, once } from 'node:events';
import { Agent as HttpAgent, request } from 'node:http';
import { connect } from 'node:net';
import { Readable } from 'node:stream';
import t from 'tap';
import { WebSocket, WebSocketServer } from 'ws';
import { testAgent } from '../helpers/agent.js';
import { get, testServer } from '../helpers/http.js';
import { rawRequest } from '../helpers/raw-http.js';
import { testRelay } from '../helpers/relay.js';

const MB = 1024 * 1024;

/** Random bytes shared by every generated body; chunks are taken from it at shifting offsets. */
const POOL = randomBytes(MB + 64 * 1024);

/** A body of `size` bytes produced in 64 KiB chunks (never held whole in memory), with its sha256. */
function bodyStream(size: number, seed: number): { stream: Readable; sha256: Promise<string> } {
  const hash = createHash('sha256');
  let sent = 0;
  let k = seed;
  const stream = new Readable({
    read() {
      if (sent >= size) return void this.push(null);
      const n = Math.min(64 * 1024, size - sent);
      k = (k * 7919 + 104729) % MB;
      const chunk = POOL.subarray(k, k + n);
      sent += n;
      hash.update(chunk);
      this.push(chunk);
    },
  });
  const sha256 = new Promise<string>((resolve) => stream.on('end', () => resolve(hash.digest('hex'))));
  return { stream, sha256 };
}

t.test('HTTP end to end', async (t) => {
  const relay = await testRelay(t);
  const port = relay.httpAddress.port;

  const sse = new EventEmitter();
  // Backend A: echoes what it received (method, url, headers, body hash), serves sized downloads and SSE.
  const a = await testServer(t, (req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    if (url.pathname === '/download') {
      const { stream } = bodyStream(Number(url.searchParams.get('size')), 7);
      res.writeHead(200, {
        'content-type': 'application/octet-stream',
        'content-length': url.searchParams.get('size')!,
      });
      stream.pipe(res);
      return;
    }
    if (url.pathname === '/events') {
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
      res.write('data: first\n\n');
      // The second event is released only when the client confirms it saw the first:
      // proof that events stream before the response ends.
      sse.once('release', () => {
        res.write('data: second\n\n');
        res.end();
      });
      return;
    }
    if (url.pathname === '/release') {
      sse.emit('release');
      res.end('ok');
      return;
    }
    const hash = createHash('sha256');
    let bytes = 0;
    req.on('data', (c: Buffer) => {
      hash.update(c);
      bytes += c.length;
    });
    req.on('end', () => {
      const body = JSON.stringify({
        backend: 'a',
        method: req.method,
        url: req.url,
        headers: req.headers,
        bytes,
        sha256: hash.digest('hex'),
      });
      res.writeHead(200, { 'content-type': 'application/json', connection: 'x-private', 'x-private': 'hop' });
      res.end(body);
    });
  });
  const b = await testServer(t, (_req, res) => res.end('backend b'));

  // Backend W: a WebSocket echo server.
  const w = await testServer(t, (_req, res) => res.end('not a websocket request'));
  const wss = new WebSocketServer({ server: w.server });
  wss.on('connection', (ws) => ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary })));

  const closedPort = await (async () => {
    const s = await testServer(t, () => {});
    const p = s.port;
    await new Promise<void>((r) => s.server.close(() => r()));
    return p;
  })();

  await testAgent(t, relay, [
    { id: 'a', hostnames: ['a.example.com'], target: a.url },
    { id: 'b', hostnames: ['b.example.com'], target: b.url },
    { id: 'w', hostnames: ['ws.example.com'], target: w.url },
    { id: 'gone', hostnames: ['gone.example.com'], target: `http://127.0.0.1:${closedPort}` },
    { id: 'private', hostnames: ['private.example.com'], target: b.url, allowCidrs: ['10.0.0.0/8'] },
  ]);

  t.test('GET reaches the backend with forwarding headers; hop-by-hop headers stay behind', async (t) => {
    const r = await get(port, 'A.Example.com:1234', '/hello?x=1', {
      headers: { 'x-forwarded-for': '6.6.6.6', connection: 'keep-alive, x-secret', 'x-secret': 'no' },
    });
    t.equal(r.status, 200);
    const seen = JSON.parse(r.body.toString());
    t.equal(seen.url, '/hello?x=1');
    t.equal(seen.headers.host, 'A.Example.com:1234', 'Host is passed through');
    t.equal(seen.headers['x-forwarded-for'], '127.0.0.1', 'client-supplied X-Forwarded-For is replaced');
    t.equal(seen.headers['x-forwarded-proto'], 'http');
    t.equal(seen.headers['x-forwarded-host'], 'A.Example.com:1234');
    t.equal(seen.headers.forwarded, 'for=127.0.0.1;host="A.Example.com:1234";proto=http');
    t.notOk(seen.headers['x-secret'], 'fields named in Connection are removed');
    t.notOk(r.headers['x-private'], 'response fields named in Connection are removed');
  });

  t.test('100 MB upload arrives byte-exact (chunked)', async (t) => {
    const { stream, sha256 } = bodyStream(100 * MB, 1);
    const r = await get(port, 'a.example.com', '/upload', { method: 'POST', body: stream });
    const seen = JSON.parse(r.body.toString());
    t.equal(seen.bytes, 100 * MB);
    t.equal(seen.sha256, await sha256);
    t.equal(seen.headers['transfer-encoding'], 'chunked');
  });

  t.test('upload with Content-Length and Expect: 100-continue', async (t) => {
    const body = randomBytes(3 * MB);
    const r = await get(port, 'a.example.com', '/put', {
      method: 'PUT',
      body,
      headers: { 'content-length': String(body.length), expect: '100-continue' },
    });
    const seen = JSON.parse(r.body.toString());
    t.equal(seen.bytes, body.length);
    t.equal(seen.sha256, createHash('sha256').update(body).digest('hex'));
  });

  t.test('100 MB download arrives byte-exact with its Content-Length', async (t) => {
    const expected = bodyStream(100 * MB, 7);
    expected.stream.resume();
    const hash = createHash('sha256');
    let bytes = 0;
    const res = await new Promise<import('node:http').IncomingMessage>((resolve, reject) => {
      request(
        { host: '127.0.0.1', port, path: `/download?size=${100 * MB}`, headers: { host: 'a.example.com' } },
        resolve,
      )
        .on('error', reject)
        .end();
    });
    t.equal(res.headers['content-length'], String(100 * MB));
    for await (const c of res) {
      hash.update(c as Buffer);
      bytes += (c as Buffer).length;
    }
    t.equal(bytes, 100 * MB);
    t.equal(hash.digest('hex'), await expected.sha256);
  });

  t.test('16 downloads at once share the tunnel and each arrives byte-exact', async (t) => {
    // More data than the tunnel's send queue holds: the agent pauses and resumes
    // backend reads for many responses at once, while other responses are parsed.
    const size = 16 * MB;
    const expected = bodyStream(size, 7);
    expected.stream.resume();
    const agent = new HttpAgent({ keepAlive: false });
    t.teardown(() => agent.destroy());
    const download = () =>
      new Promise<{ status: number; bytes: number; sha256: string }>((resolve, reject) => {
        request(
          {
            host: '127.0.0.1',
            port,
            agent,
            path: `/download?size=${size}`,
            headers: { host: 'a.example.com' },
          },
          (res) => {
            const hash = createHash('sha256');
            let bytes = 0;
            res.on('data', (c: Buffer) => {
              hash.update(c);
              bytes += c.length;
            });
            res.on('error', reject);
            res.on('end', () => resolve({ status: res.statusCode ?? 0, bytes, sha256: hash.digest('hex') }));
          },
        )
          .on('error', reject)
          .end();
      });
    const results = await Promise.all(Array.from({ length: 16 }, download));
    const sha256 = await expected.sha256;
    t.same(
      results,
      results.map(() => ({ status: 200, bytes: size, sha256 })),
      'every download: 200, all bytes, the right bytes',
    );
  });

  t.test('OPTIONS * (asterisk form) reaches the backend as sent', async (t) => {
    const r = await rawRequest(port, 'OPTIONS * HTTP/1.1\r\nHost: a.example.com\r\n\r\n');
    t.equal(r.status, 200);
    t.match(r.text, '"method":"OPTIONS","url":"*"', 'the backend echoed method and request target');
  });

  t.test('server-sent events arrive before the response ends', async (t) => {
    const res = await new Promise<import('node:http').IncomingMessage>((resolve, reject) => {
      request({ host: '127.0.0.1', port, path: '/events', headers: { host: 'a.example.com' } }, resolve)
        .on('error', reject)
        .end();
    });
    t.equal(res.headers['content-type'], 'text/event-stream');
    res.setEncoding('utf8');
    const [first] = (await once(res, 'data')) as [string];
    t.equal(first, 'data: first\n\n', 'first event delivered while the response is still open');
    t.notOk(res.complete);
    const rest: string[] = [];
    res.on('data', (c: string) => rest.push(c));
    const ended = once(res, 'end');
    await get(port, 'a.example.com', '/release');
    await ended;
    t.equal(rest.join(''), 'data: second\n\n');
  });

  t.test('WebSocket echo through the tunnel', async (t) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/chat`, { headers: { host: 'ws.example.com' } });
    t.teardown(() => ws.terminate());
    await once(ws, 'open');
    const messages = ['hello', 'through', 'burrow'];
    const binary = randomBytes(200_000);
    const received: Array<[Buffer, boolean]> = [];
    const all = new Promise<void>((resolve) =>
      ws.on('message', (d: Buffer, isBinary: boolean) => {
        received.push([d, isBinary]);
        if (received.length === messages.length + 1) resolve();
      }),
    );
    for (const m of messages) ws.send(m);
    ws.send(binary);
    await all;
    t.same(
      received.slice(0, 3).map(([d]) => d.toString()),
      messages,
    );
    t.ok(received[3]![0].equals(binary) && received[3]![1], 'binary frame echoed byte-exact');
    ws.close();
    await once(ws, 'close');
  });

  t.test('one keep-alive connection, two Hosts, two backends', async (t) => {
    const agent = new HttpAgent({ keepAlive: true, maxSockets: 1 });
    t.teardown(() => agent.destroy());
    const sockets = new Set<unknown>();
    agent.on('free', (s) => sockets.add(s));
    const r1 = await get(port, 'a.example.com', '/one', { agent });
    const r2 = await get(port, 'b.example.com', '/two', { agent });
    const r3 = await get(port, 'a.example.com', '/three', { agent });
    t.equal(JSON.parse(r1.body.toString()).backend, 'a');
    t.equal(r2.body.toString(), 'backend b');
    t.equal(JSON.parse(r3.body.toString()).url, '/three');
    t.equal(sockets.size, 1, 'all three requests used one client connection');
  });

  t.test('error pages', async (t) => {
    const unknown = await get(port, 'nobody.example.com');
    t.equal(unknown.status, 404);
    t.equal(unknown.headers['x-burrow-error'], 'unknown_host');
    t.match(unknown.body.toString(), /No service is exposed at this hostname/);

    const refused = await get(port, 'gone.example.com');
    t.equal(refused.status, 502);
    t.equal(refused.headers['x-burrow-error'], 'backend_refused');
    t.match(refused.body.toString(), /refused the connection/);

    const forbidden = await get(port, 'private.example.com');
    t.equal(forbidden.status, 403);
    t.equal(forbidden.headers['x-burrow-error'], 'client_forbidden');

    const noHost = await new Promise<number>((resolve, reject) => {
      // HTTP/1.0 without Host: allowed by the parser, but not routable.
      const s = connect(port, '127.0.0.1');
      let data = '';
      s.on('data', (c: Buffer) => (data += c.toString()));
      s.on('end', () => resolve(Number(data.split(' ')[1])));
      s.on('error', reject);
      s.end('GET / HTTP/1.0\r\n\r\n');
    });
    t.equal(noHost, 400);
  });
});
