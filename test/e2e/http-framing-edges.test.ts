// HTTP/1.1 message framing between a client, the relay, the agent and a real
// backend (node:http servers and raw TCP servers writing hand-crafted
// responses), all on 127.0.0.1: bodiless responses, close-delimited and
// chunked bodies, conflicting framing from a backend, informational
// responses, early answers before the request body, keep-alive reuse on both
// sides, repeated and non-ASCII header fields.
import { once } from 'node:events';
import http2 from 'node:http2';
import { gzipSync } from 'node:zlib';
import t from 'tap';
import { testServer } from '../helpers/http.js';
import { client, field, get, rawBackend, through } from '../helpers/raw-wire.js';
import type { Teardownable } from '../helpers/relay.js';

t.test(
  'HEAD: the backend Content-Length is passed on without a body, and the connection stays usable',
  async (t) => {
    const host = 'head.example.com';
    const backend = await testServer(t, (req, res) => {
      res.writeHead(200, { 'content-length': '1000', 'content-type': 'text/plain' });
      res.end(req.method === 'HEAD' ? undefined : 'x'.repeat(1000));
    });
    const port = await through(t, host, backend.url);
    const c = client(t, port);
    c.write(`HEAD / HTTP/1.1\r\nHost: ${host}\r\n\r\n`);
    const head = await c.response('HEAD');
    t.equal(head?.status, 200);
    t.same(field(head!, 'content-length'), ['1000']);
    c.write(get(host, '/after'));
    const after = await c.response();
    t.equal(after?.status, 200, 'the next request on the same connection is framed correctly');
    t.equal(after?.body.length, 1000);
  },
);

t.test('204 reaches the client without a body and the connection stays usable', async (t) => {
  const host = 'nocontent.example.com';
  const backend = await rawBackend(t, (socket, req) => {
    // Content-Length on a 204 breaks RFC 9110 §8.6, and some backends send it.
    if (req.head.startsWith('GET /204'))
      socket.write('HTTP/1.1 204 No Content\r\nContent-Length: 5\r\nX-A: 1\r\n\r\n');
    else socket.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
  });
  const port = await through(t, host, backend.url);
  const c = client(t, port);
  c.write(get(host, '/204'));
  const a = await c.response();
  t.equal(a?.status, 204);
  t.same(field(a!, 'transfer-encoding'), [], 'a 204 has no Transfer-Encoding');
  t.same(field(a!, 'content-length'), [], 'nor Content-Length');
  t.same(field(a!, 'x-a'), ['1']);
  c.write(get(host, '/ok'));
  const d = await c.response();
  t.equal(d?.status, 200);
  t.equal(d?.body.toString(), 'ok', 'nothing was left between the responses');
});

t.test('a 204 with Content-Length reaches an HTTP/2 client as a 204, not a refused stream', async (t) => {
  // nghttp2, under curl and node:http2, resets a stream whose 204 has a nonzero Content-Length.
  const host = 'nocontent-h2.example.com';
  const backend = await rawBackend(t, (socket) =>
    socket.write('HTTP/1.1 204 No Content\r\nContent-Length: 5\r\nX-A: 1\r\n\r\n'),
  );
  const port = await through(t, host, backend.url);
  const session = http2.connect(`http://127.0.0.1:${port}`);
  t.teardown(() => session.close());
  const stream = session.request({ ':path': '/', ':authority': host });
  const [headers] = (await once(stream, 'response')) as [http2.IncomingHttpHeaders];
  t.equal(headers[':status'], 204);
  t.equal(headers['content-length'], undefined);
  t.equal(headers['x-a'], '1');
  stream.resume();
  await once(stream, 'end');
});

t.test(
  '304 with the Content-Length of the representation reaches the client, bodiless, connection usable',
  async (t) => {
    // RFC 9110 §8.6: a 304 may carry the Content-Length a 200 would have had; it never has a body.
    const host = 'notmodified.example.com';
    const backend = await testServer(t, (req, res) => {
      if (req.headers['if-none-match'] === '"v1"') {
        res.writeHead(304, { etag: '"v1"', 'content-length': '1234' });
        res.end();
        return;
      }
      res.writeHead(200, { etag: '"v1"', 'content-length': '2' });
      res.end('ok');
    });
    const port = await through(t, host, backend.url);
    const c = client(t, port);
    c.write(get(host, '/', 'If-None-Match: "v1"\r\n'));
    const b = await c.response();
    t.equal(b?.status, 304);
    t.same(field(b ?? { headers: [] }, 'etag'), ['"v1"']);
    c.write(get(host, '/'));
    const d = await c.response();
    t.equal(d?.status, 200, 'the connection is still usable');
    t.equal(d?.body.toString(), 'ok');
  },
);

t.test('bytes a backend sends after a 304 that gives a length never answer the next request', async (t) => {
  const host = 'late304.example.com';
  const backend = await rawBackend(t, (socket, req) => {
    if (req.head.startsWith('GET /cached-length')) {
      socket.write('HTTP/1.1 304 Not Modified\r\nETag: "v1"\r\nContent-Length: 7\r\n\r\n');
      return;
    }
    if (req.head.startsWith('GET /cached-chunked')) {
      socket.write('HTTP/1.1 304 Not Modified\r\nETag: "v1"\r\nTransfer-Encoding: chunked\r\n\r\n');
      return;
    }
    // A request on the connection that answered the 304 first meets the body that 304 declared,
    // sent late, and then a response of the backend's own that nobody asked for.
    if (req.seq > 0) socket.write('the-bodyHTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nPOISON');
    else socket.write('HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfresh');
  });
  const port = await through(t, host, backend.url);
  for (const declared of ['length', 'chunked']) {
    const c = client(t, port);
    c.write(get(host, `/cached-${declared}`, 'If-None-Match: "v1"\r\n'));
    t.equal((await c.response())?.status, 304);
    c.write(get(host, '/next'));
    const next = await c.response();
    t.equal(
      next?.body.toString(),
      'fresh',
      `a 304 with a ${declared}: the next request gets its own response`,
    );
    t.equal(backend.requests.at(-1)?.seq, 0, 'on a connection of its own');
    c.destroy();
  }
});

t.test('a close-delimited backend response reaches the client whole and properly ended', async (t) => {
  const host = 'close.example.com';
  const body = Buffer.alloc(300_000, 'abcdefghij');
  const backend = await rawBackend(t, (socket, req) => {
    if (req.head.startsWith('GET /http10'))
      socket.write('HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n');
    else socket.write('HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n');
    socket.end(body);
  });
  const port = await through(t, host, backend.url);
  const c = client(t, port);
  for (const path of ['/http10', '/http11']) {
    c.write(get(host, path));
    const r = await c.response();
    t.equal(r?.status, 200, path);
    t.not(r?.framing, 'close', `${path}: the relay frames the body (chunked) on a keep-alive connection`);
    t.equal(r?.body.length, body.length, `${path}: the whole body`);
    t.ok(r?.body.equals(body), `${path}: byte for byte`);
  }
});

t.test(
  'a chunked response with trailers: the body arrives whole and the connection stays usable',
  async (t) => {
    const host = 'trailers.example.com';
    const backend = await testServer(t, (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain', trailer: 'x-checksum' });
      res.write('hello ');
      res.addTrailers({ 'x-checksum': 'abc123' });
      res.end('world');
    });
    const port = await through(t, host, backend.url);
    const c = client(t, port);
    c.write(get(host, '/'));
    const r = await c.response();
    t.equal(r?.status, 200);
    t.equal(r?.body.toString(), 'hello world');
    c.write(get(host, '/again'));
    t.equal((await c.response())?.body.toString(), 'hello world');
  },
);

t.test(
  'conflicting or duplicate Content-Length from a backend answers 502, never a response with both',
  async (t) => {
    const host = 'dupcl.example.com';
    const backend = await rawBackend(t, (socket, req) => {
      if (req.head.startsWith('GET /conflict'))
        socket.end('HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello!!');
      else if (req.head.startsWith('GET /same'))
        socket.end('HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello');
      else socket.end('HTTP/1.1 200 OK\r\nContent-Length: 5, 7\r\n\r\nhello!!');
    });
    const port = await through(t, host, backend.url);
    for (const path of ['/conflict', '/same', '/list']) {
      const c = client(t, port);
      c.write(get(host, path));
      const r = await c.response();
      t.equal(r?.status, 502, path);
      c.destroy();
    }
  },
);

t.test(
  'Transfer-Encoding: gzip, chunked: the client never gets the gzip bytes as if they were the content',
  async (t) => {
    const host = 'tegzip.example.com';
    const content = 'hello, transfer-coded world';
    const gz = gzipSync(content);
    // The codings on one line, or over two (RFC 9110 §5.3 lets a field be split so).
    for (const codings of [
      'Transfer-Encoding: gzip, chunked',
      'Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked',
    ]) {
      const backend = await rawBackend(t, (socket) => {
        socket.write(
          `HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n${codings}\r\n\r\n${gz.length.toString(16)}\r\n`,
        );
        socket.write(gz);
        socket.write('\r\n0\r\n\r\n');
      });
      // The fast path, the general path, and OPTIONS * (which the agent sends with node:http).
      for (const [fastPath, target] of [
        [true, '/'],
        [false, '/'],
        [false, '*'],
      ] as const) {
        const port = await through(t, host, backend.url, { http1FastPath: fastPath });
        const c = client(t, port);
        c.write(`${target === '*' ? 'OPTIONS' : 'GET'} ${target} HTTP/1.1\r\nHost: ${host}\r\n\r\n`);
        const r = await c.response();
        const te = field(r!, 'transfer-encoding').join(',');
        t.ok(
          r?.status === 502 || r?.body.toString() === content || /gzip/i.test(te),
          `${JSON.stringify(codings)}, fast path ${fastPath}, ${target}: decoded, still labelled gzip, or refused (got ${r?.status}, transfer-encoding "${te}", ${r?.body.length} bytes)`,
        );
        c.destroy();
      }
    }
  },
);

t.test(
  'Transfer-Encoding the parsers read differently (a tab after chunked, chunked twice): decoded or refused on every path',
  async (t) => {
    const host = 'tetab.example.com';
    for (const codings of [
      'Transfer-Encoding: chunked\t',
      'Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked',
    ]) {
      // The backend keeps its connection open: a body read "until close" would never end.
      const backend = await rawBackend(t, (socket) => {
        socket.write(`HTTP/1.1 200 OK\r\n${codings}\r\n\r\n2\r\nok\r\n0\r\n\r\n`);
      });
      // Not OPTIONS *: node:http, which the agent sends it with, drops the tab from the field it
      // reports, and the agent cannot tell that its parser read the body to the close.
      for (const fastPath of [true, false]) {
        const port = await through(t, host, backend.url, { http1FastPath: fastPath });
        const c = client(t, port);
        c.write(get(host, '/'));
        const r = await c.response();
        const what = `${JSON.stringify(codings)}, fast path ${fastPath}`;
        t.ok(
          r?.status === 502 || (r?.status === 200 && r.body.toString() === 'ok'),
          `${what}: the content, or a 502 (got ${r?.status}, ${JSON.stringify(r?.body.toString())})`,
        );
        c.destroy();
      }
    }
  },
);

t.test('a backend head that cannot be passed on is invalid_response_head on both paths', async (t) => {
  const host = 'badhead.example.com';
  const heads: Record<string, string> = {
    '/cl-te':
      'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n',
    '/two-cl': 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok!',
    '/gzip': 'HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nok',
    '/garbage': 'HTTP/1.1 200 OK\r\nBad Header: x\r\nContent-Length: 2\r\n\r\nok',
  };
  const backend = await rawBackend(t, (socket, req) => {
    socket.end(heads[req.head.split(' ')[1]!] ?? '');
  });
  for (const fastPath of [true, false]) {
    const port = await through(t, host, backend.url, { http1FastPath: fastPath });
    for (const path of Object.keys(heads)) {
      const c = client(t, port);
      c.write(get(host, path));
      const r = await c.response();
      t.equal(r?.status, 502, `fast path ${fastPath}, ${path}`);
      t.same(
        field(r!, 'x-burrow-error'),
        ['invalid_response_head'],
        `fast path ${fastPath}, ${path}: its code`,
      );
      c.destroy();
    }
  }
});

t.test('a response head of 30 KB passes on both paths, one over 256 KiB is a 502 on both', async (t) => {
  const host = 'bighead.example.com';
  const backend = await rawBackend(t, (socket, req) => {
    const size = req.head.startsWith('GET /huge') ? 300_000 : 30_000;
    // Large cookies, as single sign-on sets them: eight fields adding up to `size` bytes.
    const cookies = Array.from({ length: 8 }, (_, i) => `Set-Cookie: c${i}=${'v'.repeat(size / 8)}\r\n`).join(
      '',
    );
    socket.write(`HTTP/1.1 200 OK\r\n${cookies}Content-Length: 2\r\n\r\nok`);
  });
  for (const fastPath of [true, false]) {
    const port = await through(t, host, backend.url, { http1FastPath: fastPath });
    const c = client(t, port);
    c.write(get(host, '/big'));
    const big = await c.response();
    t.equal(big?.status, 200, `fast path ${fastPath}: 30 KB of fields pass`);
    t.equal(field(big!, 'set-cookie').length, 8);
    c.write(get(host, '/huge'));
    t.equal((await c.response())?.status, 502, `fast path ${fastPath}: 300 KB of fields do not`);
    c.destroy();
  }
});

t.test('a backend response with many header fields passes whole', async (t) => {
  const host = 'manyheaders.example.com';
  const backend = await testServer(t, (_req, res) => {
    const raw: string[] = [];
    for (let i = 0; i < 300; i++) raw.push(`X-H-${i}`, `v${i}-${'y'.repeat(30)}`);
    res.writeHead(200, raw);
    res.end('ok');
  });
  const port = await through(t, host, backend.url);
  const c = client(t, port);
  c.write(get(host, '/'));
  const r = await c.response();
  t.equal(r?.status, 200);
  t.equal(r?.headers.filter(([k]) => k.startsWith('X-H-')).length, 300);
});

t.test('103 Early Hints before the final response: the final response arrives with its body', async (t) => {
  const host = 'hints.example.com';
  const backend = await testServer(t, (_req, res) => {
    res.writeEarlyHints({ link: '</style.css>; rel=preload; as=style' });
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.end('final');
  });
  const port = await through(t, host, backend.url);
  const c = client(t, port);
  c.write(get(host, '/'));
  const r = await c.response();
  t.equal(r?.status, 200);
  t.equal(r?.body.toString(), 'final');
  c.write(get(host, '/again'));
  t.equal((await c.response())?.body.toString(), 'final');
});

t.test('a 100 Continue nobody asked for never gets the request processed twice', async (t) => {
  const host = 'continue.example.com';
  const backend = await rawBackend(t, (socket) =>
    socket.write('HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello'),
  );
  for (const fastPath of [true, false]) {
    const port = await through(t, host, backend.url, { http1FastPath: fastPath });
    const before = backend.requests.length;
    const c = client(t, port);
    c.write(get(host, '/once'));
    const r = await c.response();
    // The fast path passes the interim response by; the general path's HTTP client cannot read it.
    t.ok(
      r?.status === 200 || r?.status === 502,
      `fast path ${fastPath}: the response, or a 502 (got ${r?.status})`,
    );
    t.equal(backend.requests.length - before, 1, `fast path ${fastPath}: the backend got the request once`);
    c.destroy();
  }
});

const BIG = 4 * 1024 * 1024;

for (const backendCloses of [false, true]) {
  t.test(
    `an early 413 before the request body is read (backend ${backendCloses ? 'closes' : 'keeps'} its connection): the client gets the 413 and its connection stays usable`,
    async (t) => {
      const host = `early${backendCloses ? 'close' : 'keep'}.example.com`;
      const backend = await testServer(t, (req, res) => {
        if (req.method === 'POST') {
          res.writeHead(413, {
            'content-type': 'text/plain',
            ...(backendCloses ? { connection: 'close' } : {}),
          });
          res.end('too large');
          return;
        }
        res.end('next ok');
      });
      const port = await through(t, host, backend.url);
      const c = client(t, port);
      c.write(`POST /upload HTTP/1.1\r\nHost: ${host}\r\nContent-Length: ${BIG}\r\n\r\n`);
      c.write(Buffer.alloc(64 * 1024, 'a'));
      const r = await c.response();
      t.equal(r?.status, 413, 'the backend answer reaches the client');
      t.equal(r?.body.toString(), 'too large');
      const closing = field(r!, 'connection').some((v) => /close/i.test(v));
      if (closing) {
        // Allowed: the relay may close instead of reading the rest of the body.
        await c.untilClosed();
        t.pass('the relay said Connection: close and closed');
        return;
      }
      // The relay kept the connection: the rest of the body is read and the next request served.
      let left = BIG - 64 * 1024;
      const chunk = Buffer.alloc(64 * 1024, 'b');
      while (left > 0) {
        const n = Math.min(left, chunk.length);
        left -= n;
        if (!c.write(chunk.subarray(0, n))) {
          await Promise.race([once(c.socket, 'drain'), once(c.socket, 'close')]);
          if (c.closed) break;
        }
      }
      c.write(get(host, '/next'));
      const next = await c.response();
      t.equal(next?.status, 200, 'the next request on the same connection is answered');
      t.equal(next?.body.toString(), 'next ok');
    },
  );
}

t.test(
  'an upload the backend refuses before reading it: the general path (every HTTP/2 client) passes the answer on',
  async (t) => {
    const host = 'earlygeneral.example.com';
    const backend = await testServer(t, (_req, res) => {
      res.writeHead(413, { 'content-type': 'text/plain', connection: 'close' });
      res.end('too large');
    });
    const port = await through(t, host, backend.url, { http1FastPath: false });
    // The backend closes with the body unread: its kernel resets the connection while the agent
    // is still writing. Several uploads, as each may meet the reset at another point.
    const size = 5 * 1024 * 1024;
    const seen: string[] = [];
    for (let i = 0; i < 5; i++) {
      const c = client(t, port);
      c.write(`POST /upload HTTP/1.1\r\nHost: ${host}\r\nContent-Length: ${size}\r\n\r\n`);
      c.write(Buffer.alloc(size, 'a'));
      const r = await c.response();
      seen.push(`${r?.status} ${r?.body.toString()}`);
      c.destroy();
    }
    t.same(seen, Array(5).fill('413 too large'), "the backend's answer, each time");
  },
);

t.test(
  'POST with Content-Length: 0 reaches the backend as a bodiless POST with Content-Length: 0',
  async (t) => {
    const host = 'post0.example.com';
    const backend = await rawBackend(t, (socket) => {
      socket.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
    });
    const port = await through(t, host, backend.url);
    const c = client(t, port);
    c.write(`POST /x HTTP/1.1\r\nHost: ${host}\r\nContent-Length: 0\r\n\r\n`);
    const r = await c.response();
    t.equal(r?.status, 200);
    const seen = backend.requests[0]!;
    t.match(seen.head, /^POST \/x HTTP\/1\.1/);
    t.match(seen.head, /\r\ncontent-length: 0(\r\n|$)/i, 'Content-Length: 0 is sent');
    t.notMatch(seen.head, /transfer-encoding/i, 'not chunked');
    c.write(get(host, '/after'));
    t.equal((await c.response())?.status, 200, 'the next request is framed correctly');
    t.equal(backend.requests.length, 2);
    t.match(backend.requests[1]!.head, /^GET \/after /);
  },
);

t.test('Expect: 100-continue with a backend that refuses: the client gets the refusal', async (t) => {
  const host = 'expect.example.com';
  const backend = await testServer(t, (_req, res) => {
    res.writeHead(413, { 'content-type': 'text/plain' });
    res.end('refused');
  });
  const port = await through(t, host, backend.url);
  const c = client(t, port);
  c.write(`PUT /f HTTP/1.1\r\nHost: ${host}\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n`);
  await c.anyHead();
  c.write('hello');
  const r = await c.response();
  t.equal(r?.status, 413);
  t.equal(r?.body.toString(), 'refused');
  c.write(get(host, '/next'));
  t.equal((await c.response())?.status, 413, 'the connection stays in sync');
});

t.test(
  'a kept-alive backend socket closed under a request: GET is retried, a POST with a body is not',
  async (t) => {
    const host = 'stale.example.com';
    const backend = await rawBackend(t, (socket, req) => {
      // Every connection answers its first GET and resets on the second: a
      // keep-alive socket the backend closes as it is reused. A POST is reset
      // wherever it comes, so a retry would show as a second one.
      if (req.seq >= 1 || req.head.startsWith('POST')) return void socket.resetAndDestroy();
      socket.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\nKeep-Alive: timeout=60\r\n\r\nok');
    });
    const port = await through(t, host, backend.url);
    const c = client(t, port);
    c.write(get(host, '/one'));
    t.equal((await c.response())?.status, 200);
    c.write(get(host, '/two'));
    const two = await c.response();
    t.equal(two?.status, 200, 'the GET is retried on a new connection');
    const posts = backend.requests.length;
    c.write(`POST /p HTTP/1.1\r\nHost: ${host}\r\nContent-Length: 5\r\n\r\nhello`);
    const p = await c.response();
    t.equal(p?.status, 502, 'a POST with a body is not sent twice');
    t.equal(
      backend.requests.filter((r, i) => i >= posts && r.head.startsWith('POST')).length,
      1,
      'the backend saw the POST once',
    );
  },
);

t.test('a backend that answers Connection: close gets no further request on that socket', async (t) => {
  const host = 'connclose.example.com';
  const backend = await rawBackend(t, (socket) => {
    // Says close but leaves the socket open: the agent must not write to it again.
    socket.write('HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok');
  });
  const port = await through(t, host, backend.url);
  const c = client(t, port);
  for (let i = 0; i < 3; i++) {
    c.write(get(host, `/${i}`));
    t.equal((await c.response())?.status, 200);
  }
  t.same(
    backend.requests.map((r) => r.seq),
    [0, 0, 0],
    'each request on a connection of its own',
  );
});

t.test('repeated Set-Cookie fields stay separate', async (t) => {
  const host = 'cookies.example.com';
  const cookies = ['a=1; Expires=Wed, 21 Oct 2037 07:28:00 GMT; Path=/', 'b=2; HttpOnly', 'c=3'];
  const backend = await testServer(t, (_req, res) => {
    res.setHeader('set-cookie', cookies);
    res.end('ok');
  });
  const port = await through(t, host, backend.url);
  const c = client(t, port);
  c.write(get(host, '/'));
  const r = await c.response();
  t.same(field(r!, 'set-cookie'), cookies);
  c.write(`OPTIONS * HTTP/1.1\r\nHost: ${host}\r\n\r\n`);
  const o = await c.response('OPTIONS');
  t.same(field(o!, 'set-cookie'), cookies, 'also on the node:http path (OPTIONS *)');
});

t.test('header values with obs-text (latin1 bytes) round-trip byte for byte', async (t) => {
  const host = 'latin1.example.com';
  const value = Buffer.from([0x63, 0x61, 0x66, 0xe9, 0x20, 0xc3, 0xa9, 0x20, 0xff]); // "caf\xe9 \xc3\xa9 \xff"
  const backend = await rawBackend(t, (socket) => {
    socket.write(
      Buffer.concat([
        Buffer.from('HTTP/1.1 200 OK\r\nX-Latin: '),
        value,
        Buffer.from('\r\nContent-Length: 2\r\n\r\nok'),
      ]),
    );
  });
  const port = await through(t, host, backend.url);
  const c = client(t, port);
  for (const path of ['/', '*']) {
    const method = path === '*' ? 'OPTIONS' : 'GET';
    c.write(
      Buffer.concat([
        Buffer.from(`${method} ${path} HTTP/1.1\r\nHost: ${host}\r\nX-Latin: `),
        value,
        Buffer.from('\r\n\r\n'),
      ]),
    );
    const r = await c.response(method);
    t.equal(r?.status, 200, `${method} ${path}`);
    t.same(Buffer.from(field(r!, 'x-latin')[0] ?? '', 'latin1'), value, `${method} ${path}: response value`);
    const seen = backend.requests.at(-1)!;
    const sent = /\r\nx-latin: ([^\r]*)/i.exec(seen.head)?.[1] ?? '';
    t.same(Buffer.from(sent, 'latin1'), value, `${method} ${path}: request value at the backend`);
  }
});

/**
 * A request through a backend that sends part of a chunked body and then
 * closes (no last chunk); resolves with what the client could parse as a
 * complete response (undefined when none).
 */
async function throughCutBody(t: Teardownable, host: string, request: string) {
  const backend = await rawBackend(t, (socket) => {
    socket.write(
      'HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n7\r\npartial\r\n',
    );
    socket.end(); // no last chunk: the body is incomplete
  });
  const c = client(t, await through(t, host, backend.url));
  c.write(request);
  return c.response();
}

t.test('a chunked backend body cut mid-way is not presented as complete to an HTTP/1.0 client', async (t) => {
  const host = 'cut10.example.com';
  t.equal(
    await throughCutBody(t, host, `GET / HTTP/1.0\r\nHost: ${host}\r\n\r\n`),
    undefined,
    'the client can tell: no complete close-delimited response (the connection is reset)',
  );
});

t.test('a declined upgrade whose body is cut mid-way is not presented as complete', async (t) => {
  const host = 'declinedcut.example.com';
  t.equal(
    await throughCutBody(
      t,
      host,
      `GET /ws HTTP/1.1\r\nHost: ${host}\r\nConnection: Upgrade\r\nUpgrade: example/1\r\n\r\n`,
    ),
    undefined,
    'the client can tell: no complete close-delimited response (the connection is reset)',
  );
});

t.test('a close-delimited body cut by a backend reset is not presented as complete', async (t) => {
  const host = 'reset.example.com';
  const backend = await rawBackend(t, (socket) => {
    // The backend dies mid-body: a reset, not the close that would end the body. It
    // comes a moment after the bytes, as from a process that crashes while writing:
    // a reset right behind the data can make the receiving kernel drop both.
    socket.write('HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\npartial', () =>
      setTimeout(() => socket.resetAndDestroy(), 50),
    );
  });
  const port = await through(t, host, backend.url);
  const c = client(t, port);
  c.write(get(host, '/'));
  const r = await c.response();
  t.equal(r, undefined, 'the client can tell: no complete response (its chunked body never ends)');
});

t.test('an HTTP/2 request the relay answers before its body ends is closed, not left open', async (t) => {
  const port = await through(t, 'known-h2.example.com', 'http://127.0.0.1:9');
  const session = http2.connect(`http://127.0.0.1:${port}`);
  t.teardown(() => session.destroy());
  // An upload to a name no route serves: the 404 needs none of the body, which never ends.
  const stream = session.request({ ':method': 'POST', ':path': '/', ':authority': 'unknown.example.com' });
  stream.write('part of a body');
  const [headers] = (await once(stream, 'response')) as [http2.IncomingHttpHeaders];
  t.equal(headers[':status'], 404);
  stream.resume();
  await once(stream, 'close');
  t.equal(stream.rstCode, http2.constants.NGHTTP2_NO_ERROR, 'the relay asked it to stop, without error');
  t.notOk(session.closed, 'the session is still usable');
});

t.test('a TLS ClientHello on the plain HTTP port is answered 400 at once', async (t) => {
  const port = await through(t, 'plain.example.com', 'http://127.0.0.1:9');
  const c = client(t, port);
  // The start of a TLS record: what `https://` (or `wss://`) to this port sends, with no blank line ever.
  c.write(Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03]));
  const r = await c.response();
  t.equal(r?.status, 400, 'not left to time out (408)');
  t.same(field(r!, 'x-burrow-error'), ['malformed_request']);
});
