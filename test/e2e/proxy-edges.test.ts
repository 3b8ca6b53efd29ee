// Edges of the relay's HTTP proxying: a Connection header naming Host, upgrades
// a backend declines or cannot take, or pipelined behind another request, a
// client that leaves before its response, and the HTTPS redirect of an
// absolute-form request.
import { once } from 'node:events';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { connect } from 'node:net';
import type { AccessInfo, RelayOptions } from '@burrow/relay';
import t from 'tap';
import { memoryLogger } from '../../packages/agent/test/helpers/log.js';
import { testAgent } from '../helpers/agent.js';
import { deferred, within } from '../helpers/deferred.js';
import { get, testServer } from '../helpers/http.js';
import { metricValue } from '../helpers/metrics.js';
import { freePort } from '../helpers/net.js';
import { rawRequest } from '../helpers/raw-http.js';
import { client, get as rawGet, tlsClient } from '../helpers/raw-wire.js';
import { streamKinds, type Teardownable, testRelay } from '../helpers/relay.js';
import { h2Session, testPki } from '../helpers/tls.js';

/** A backend that answers with the headers it received, as JSON. */
function echoHeaders(req: import('node:http').IncomingMessage, res: import('node:http').ServerResponse) {
  req.resume();
  req.on('end', () => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ method: req.method, url: req.url, headers: req.headers }));
  });
}

const UPGRADE = 'GET /ws HTTP/1.1\r\nHost: ws.edge.test\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n';

/**
 * A relay whose HTTP/1.1 goes through Node's parser (the fast path off), an
 * agent, and a backend on app.edge.test that records each path it gets and
 * answers through `answer`, which may hold a response until `release`.
 */
async function generalPath(
  t: Teardownable,
  answer: (req: IncomingMessage, res: ServerResponse, released: Promise<void>) => void,
) {
  const log = memoryLogger('info', 'relay');
  const relay = await testRelay(t, { http1FastPath: false, logger: log.logger });
  const release = deferred();
  const paths: string[] = [];
  const backend = await testServer(t, (req, res) => {
    paths.push(req.url ?? '');
    answer(req, res, release.promise);
  });
  await testAgent(t, relay, [{ id: 'app', hostnames: ['app.edge.test'], target: backend.url }]);
  return { log, relay, release, paths, H: 'Host: app.edge.test\r\n' };
}

t.test('a client cannot strip Host with Connection: host (the backend sees the public name)', async (t) => {
  const relay = await testRelay(t);
  const backend = await testServer(t, echoHeaders);
  await testAgent(t, relay, [{ id: 'site', hostnames: ['site.edge.test'], target: backend.url }]);
  const r = await get(relay.httpAddress.port, 'site.edge.test', '/whoami', {
    headers: { connection: 'host' },
  });
  t.equal(r.status, 200);
  const seen = JSON.parse(String(r.body));
  t.equal(seen.headers.host, 'site.edge.test', 'the backend gets the Host the relay routed by');
});

t.test('an upgrade the backend declines: its tunnel stream closes with the response', async (t) => {
  let done = 0;
  const relay = await testRelay(t, { onRequestDone: () => done++ });
  const backend = await testServer(t, (_req, res) => {
    res.writeHead(426, { 'content-type': 'text/plain', 'content-length': '2' });
    res.end('no');
  });
  await testAgent(t, relay, [{ id: 'ws', hostnames: ['ws.edge.test'], target: backend.url }]);
  const { text: reply } = await rawRequest(relay.httpAddress.port, UPGRADE, 15_000, true);
  t.match(reply, /^HTTP\/1\.1 426 /);
  // The client has the whole response and its end: the relay read the agent's FIN before that.
  const text = await relay.metrics.registry.metrics();
  t.equal(metricValue(text, 'burrow_relay_streams_active', { host: 'ws.edge.test' }), 0, 'no stream left');
  t.equal(
    [...relay.connections].reduce((n, c) => n + c.inFlight, 0),
    0,
    'no stream in flight on any agent connection',
  );
  t.equal(done, 1, 'the exchange was logged and counted');
});

t.test('an upgrade request cannot smuggle bytes to the backend', async (t) => {
  const relay = await testRelay(t);
  const paths: string[] = [];
  let connections = 0;
  const backend = await testServer(t, (req, res) => {
    paths.push(req.url ?? '');
    res.writeHead(426, { 'content-type': 'text/plain', 'content-length': '2' });
    res.end('no');
  });
  backend.server.on('connection', () => connections++);
  await testAgent(t, relay, [{ id: 'ws', hostnames: ['ws.edge.test'], target: backend.url }]);

  // A body on an upgrade would never be sent on: the backend would read the next request as it.
  const smuggled = 'GET /admin HTTP/1.1\r\nHost: ws.edge.test\r\n\r\n';
  const withBody = await rawRequest(
    relay.httpAddress.port,
    UPGRADE.replace('\r\n\r\n', `\r\nContent-Length: ${smuggled.length}\r\n\r\n${smuggled}`),
    15_000,
    true,
  );
  t.match(withBody.text, /^HTTP\/1\.1 400 /, 'refused with 400');
  t.match(withBody.text, /x-burrow-error: upgrade_with_body/);
  t.same(paths, [], 'nothing reached the backend');

  // A declined upgrade's backend connection is not used again: its request may have said more than it sent.
  for (let i = 0; i < 2; i++) {
    const { text } = await rawRequest(relay.httpAddress.port, UPGRADE, 15_000, true);
    t.match(text, /^HTTP\/1\.1 426 /);
  }
  t.same(paths, ['/ws', '/ws']);
  t.equal(connections, 2, 'each upgrade on a connection of its own');
});

t.test('a malformed request after one in flight: the response goes out whole, then the 400', async (t) => {
  // Node's parser reads these (the fast path is off): its parse error comes while /slow is answered.
  const { log, relay, release, paths, H } = await generalPath(t, (req, res, released) => {
    req.resume();
    res.writeHead(200, { 'content-length': '10' });
    res.write('AAAAA');
    void released.then(() => res.end('BBBBB'));
  });
  const bad = log.waitFor((l) => l['msg'] === 'bad request from client');
  const reply = rawRequest(
    relay.httpAddress.port,
    (socket) => {
      socket.write(`GET /slow HTTP/1.1\r\n${H}\r\n`);
      socket.once('data', () => socket.write('BOGUS\0 garbage\r\n\r\n'));
    },
    15_000,
    true,
  );
  await bad;
  release.resolve();
  const { text } = await reply;
  t.match(
    text,
    /^HTTP\/1\.1 200 [\s\S]*\r\n\r\nAAAAABBBBBHTTP\/1\.1 400 Bad Request\r\n/,
    'the whole body, then the 400',
  );

  // Bytes after a request that ends the connection are ignored: its response, then the close.
  const { text: closing } = await rawRequest(
    relay.httpAddress.port,
    `GET /a HTTP/1.0\r\n${H}\r\nGET /b HTTP/1.0\r\n${H}\r\n`,
    15_000,
    true,
  );
  t.match(closing, /^HTTP\/1\.1 200 [\s\S]*AAAAABBBBB$/, "/a's response, nothing after it");
  t.same(paths, ['/slow', '/a']);
});

t.test('pipelined requests reach the backend one at a time, in order', async (t) => {
  // Node's parser reads these (the fast path is off) and emits them all at once.
  const relay = await testRelay(t, { http1FastPath: false });
  let active = 0;
  let most = 0;
  const seen: string[] = [];
  const backend = await testServer(t, (req, res) => {
    active++;
    most = Math.max(most, active);
    seen.push(`${req.method} ${req.url}`);
    req.resume();
    req.on('end', () =>
      setImmediate(() => {
        active--;
        res.end(req.url);
      }),
    );
  });
  await testAgent(t, relay, [{ id: 'app', hostnames: ['app.edge.test'], target: backend.url }]);
  const H = 'Host: app.edge.test\r\n';
  const gets = Array.from({ length: 20 }, (_, i) => `GET /g${i} HTTP/1.1\r\n${H}\r\n`).join('');
  const { text } = await rawRequest(
    relay.httpAddress.port,
    `POST /first HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n3\r\none\r\n0\r\n\r\n` +
      `POST /second HTTP/1.1\r\n${H}Content-Length: 3\r\n\r\ntwo${gets}` +
      `GET /last HTTP/1.1\r\n${H}Connection: close\r\n\r\n`,
    15_000,
    true,
  );
  t.same(seen, [
    'POST /first',
    'POST /second',
    ...Array.from({ length: 20 }, (_, i) => `GET /g${i}`),
    'GET /last',
  ]);
  t.equal(most, 1, 'never two at once from one connection');
  t.equal((text.match(/HTTP\/1\.1 200 /g) ?? []).length, 23, 'every response, in order');
});

t.test(
  'a parse error behind pipelined requests: the one in flight is answered, the waiting ones never start',
  async (t) => {
    const { log, relay, release, paths, H } = await generalPath(t, (req, res, released) => {
      req.resume();
      void released.then(() => res.end('done'));
    });
    const bad = log.waitFor((l) => l['msg'] === 'bad request from client');
    const reply = rawRequest(
      relay.httpAddress.port,
      `GET /a HTTP/1.1\r\n${H}\r\nGET /b HTTP/1.1\r\n${H}\r\nBOGUS\0 garbage\r\n\r\n`,
      15_000,
      true,
    );
    await bad;
    release.resolve();
    const { text, closed } = await reply;
    t.match(
      text,
      /^HTTP\/1\.1 200 [\s\S]*\r\n\r\ndone$/,
      "/a's response and nothing after it: no 400 to take for /b's",
    );
    t.ok(closed, 'then the connection closes, and the client may retry /b');
    t.same(paths, ['/a'], '/b never reached the backend');
  },
);

t.test('a client that pipelines more than 64 requests behind a slow one is cut off', async (t) => {
  const { log, relay, release, paths, H } = await generalPath(t, (_req, res, released) => {
    void released.then(() => res.end('late'));
  });
  t.teardown(() => release.resolve());
  const many = Array.from({ length: 70 }, (_, i) => `GET /p${i} HTTP/1.1\r\n${H}\r\n`).join('');
  const { closed } = await rawRequest(relay.httpAddress.port, many, 15_000, true);
  t.ok(closed, 'the connection is closed');
  t.ok(log.lines.some((l) => l['msg'] === 'too many pipelined requests; connection closed'));
  // The first may or may not have reached the backend before the cut; none behind it did.
  t.same(
    paths.filter((p) => p !== '/p0'),
    [],
    'no waiting request reached the backend',
  );
});

t.test(
  "a download cut by the relay's drain timeout is logged as that, on the general path too",
  async (t) => {
    const infos: AccessInfo[] = [];
    const logged = deferred();
    const relay = await testRelay(t, {
      http1FastPath: false,
      drainTimeout: 200,
      onRequestDone: (info) => {
        infos.push(info);
        logged.resolve();
      },
    });
    const backend = await testServer(t, (_req, res) => {
      res.writeHead(200, { 'content-length': String(1024 * 1024) });
      res.write(Buffer.alloc(1024)); // and never the rest
    });
    await testAgent(t, relay, [{ id: 'dl', hostnames: ['dl.edge.test'], target: backend.url }]);
    const socket = connect(relay.httpAddress.port, '127.0.0.1');
    t.teardown(() => socket.destroy());
    socket.on('error', () => {});
    socket.write('GET /big HTTP/1.1\r\nHost: dl.edge.test\r\n\r\n');
    await once(socket, 'data');
    await relay.close();
    await logged.promise;
    t.match(infos[0], { status: 200, error: 'drain_timeout' }, 'not backend_error, not client_closed');
  },
);

t.test(
  'a client cannot pose as a proxy: look-alike forwarding fields are dropped, X-Real-IP is set',
  async (t) => {
    const backend = await testServer(t, (req, res) => res.end(JSON.stringify(req.headers)));
    for (const http1FastPath of [true, false]) {
      const relay = await testRelay(t, { http1FastPath });
      await testAgent(t, relay, [{ id: 'who', hostnames: ['who.edge.test'], target: backend.url }]);
      const r = await get(relay.httpAddress.port, 'who.edge.test', '/', {
        headers: {
          'x-real-ip': '203.0.113.9',
          'x-client-ip': '203.0.113.9',
          'true-client-ip': '203.0.113.9',
          'x-forwarded-ssl': 'on',
          'x-forwarded-scheme': 'https',
          'x-forwarded-port': '443',
          'client-ip': '203.0.113.9',
          'x-forwarded-prefix': '/evil',
          x_real_ip: '203.0.113.9',
          x_forwarded_proto: 'https',
        },
      });
      const seen = JSON.parse(r.body.toString()) as Record<string, string>;
      t.equal(
        seen['x-real-ip'],
        '127.0.0.1',
        `fast path ${http1FastPath}: X-Real-IP is the client's address`,
      );
      for (const name of [
        'x-client-ip',
        'true-client-ip',
        'x-forwarded-ssl',
        'x-forwarded-scheme',
        'x-forwarded-port',
        'client-ip',
        'x-forwarded-prefix',
        'x_real_ip', // read as HTTP_X_REAL_IP by CGI-style servers, as X-Real-IP is
        'x_forwarded_proto',
      ])
        t.equal(seen[name], undefined, `fast path ${http1FastPath}: ${name} dropped`);
    }
  },
);

t.test("a download cut by the agent's drain deadline is logged as drain_timeout", async (t) => {
  for (const http1FastPath of [true, false]) {
    const logged = deferred<AccessInfo>();
    const relay = await testRelay(t, { http1FastPath, onRequestDone: (info) => logged.resolve(info) });
    const backend = await testServer(t, (_req, res) => {
      res.writeHead(200, { 'content-length': String(1024 * 1024) });
      res.write(Buffer.alloc(1024)); // and never the rest
    });
    const agent = await testAgent(
      t,
      relay,
      [{ id: 'dl', hostnames: ['dl.edge.test'], target: backend.url }],
      {
        connections: 1,
        session: { drainTimeout: 100 },
      },
    );
    const socket = connect(relay.httpAddress.port, '127.0.0.1');
    t.teardown(() => socket.destroy());
    socket.on('error', () => {});
    socket.write('GET /big HTTP/1.1\r\nHost: dl.edge.test\r\n\r\n');
    await once(socket, 'data');
    await agent.close();
    t.match(await logged.promise, { status: 200, error: 'drain_timeout' }, `fast path ${http1FastPath}`);
  }
});

t.test("a request cut by the agent's drain deadline is not called unprocessed", async (t) => {
  for (const http1FastPath of [true, false]) {
    const relay = await testRelay(t, { http1FastPath });
    const arrived = deferred();
    const backend = await testServer(t, (req) => {
      req.resume();
      arrived.resolve(); // and no answer before the agent's drain deadline
    });
    const agent = await testAgent(
      t,
      relay,
      [{ id: 'slow', hostnames: ['slow.edge.test'], target: backend.url }],
      {
        connections: 1,
        session: { drainTimeout: 100 },
      },
    );
    const reply = rawRequest(
      relay.httpAddress.port,
      'POST /order HTTP/1.1\r\nHost: slow.edge.test\r\nContent-Length: 2\r\n\r\nhi',
    );
    await arrived.promise;
    await agent.close();
    const { status, text } = await reply;
    t.equal(status, 503, `fast path ${http1FastPath}`);
    t.match(text, /\r\nx-burrow-error: drain_timeout\r\n/, 'its own code, not agent_busy');
    t.match(text, /may have been processed/, 'and a page that does not invite a blind retry');
  }
});

t.test('an upgrade to a backend that is down gets the 502 page, not a bare close', async (t) => {
  const relay = await testRelay(t);
  const down = `http://127.0.0.1:${await freePort()}`;
  await testAgent(t, relay, [{ id: 'ws', hostnames: ['ws.edge.test'], target: down }]);
  const { text: reply } = await rawRequest(relay.httpAddress.port, UPGRADE, 15_000, true);
  t.match(reply, /^HTTP\/1\.1 502 /, 'like the same request without Upgrade');
  t.match(reply, /x-burrow-error: backend_refused/);
});

t.test('a client that leaves before the response is not counted as a 200', async (t) => {
  const infos: AccessInfo[] = [];
  const logged = deferred();
  const relay = await testRelay(t, {
    onRequestDone: (info) => {
      infos.push(info);
      logged.resolve();
    },
  });
  const arrived = deferred();
  const backend = await testServer(t, (req) => {
    req.resume();
    arrived.resolve(); // and never answers
  });
  await testAgent(t, relay, [{ id: 'slow', hostnames: ['slow.edge.test'], target: backend.url }]);
  const client = connect(relay.httpAddress.port, '127.0.0.1');
  client.write('GET /slow HTTP/1.1\r\nHost: slow.edge.test\r\n\r\n');
  await arrived.promise;
  client.destroy();
  await logged.promise;
  t.equal(infos.length, 1);
  t.not(infos[0]!.status, 200, 'no response was sent: the request is not a success');
  t.ok(infos[0]!.error, 'and the access line says why');
  const text = await relay.metrics.registry.metrics();
  t.equal(
    metricValue(text, 'burrow_relay_requests_total', { host: 'slow.edge.test', status_class: '2xx' }),
    undefined,
    'no 2xx counted',
  );
});

t.test('the HTTPS redirect of an absolute-form request names the same URL', async (t) => {
  const pki = await testPki(t);
  const cert = await pki.issue('redir', ['redir.edge.test']);
  const relay = await testRelay(t, {
    tls: { host: '127.0.0.1', port: 0 },
    certFiles: { pairs: [{ cert: cert.certFile, key: cert.keyFile }] },
  });
  const backend = await testServer(t, echoHeaders);
  await testAgent(t, relay, [{ id: 'redir', hostnames: ['redir.edge.test'], target: backend.url }]);
  // RFC 9112 §3.2.2: a server must accept the absolute form (what clients send through a proxy).
  const r = await rawRequest(
    relay.httpAddress.port,
    'GET http://redir.edge.test/page?q=1 HTTP/1.1\r\nHost: redir.edge.test\r\n\r\n',
  );
  t.equal(r.status, 301);
  const location = /\r\nlocation: ([^\r]*)/i.exec(r.text)?.[1];
  t.equal(location, `https://redir.edge.test:${relay.tlsAddress!.port}/page?q=1`);
});

t.test(
  'an h2c upgrade is served as HTTP/1.1: the client never gets a raw HTTP/2 line to the backend',
  async (t) => {
    const relay = await testRelay(t);
    const backend = await testServer(t, echoHeaders);
    let upgraded = 0;
    // A backend that would take the switch if it were asked.
    backend.server.on('upgrade', (_req, socket) => {
      upgraded++;
      socket.end('HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\n');
    });
    await testAgent(t, relay, [{ id: 'h2c', hostnames: ['h2c.edge.test'], target: backend.url }]);
    const { text: reply } = await rawRequest(
      relay.httpAddress.port,
      'GET /page HTTP/1.1\r\nHost: h2c.edge.test\r\nConnection: Upgrade, HTTP2-Settings\r\n' +
        'Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\nX-Forwarded-For: 203.0.113.9\r\n\r\n',
      15_000,
      true,
    );
    t.match(reply, /^HTTP\/1\.1 200 /, 'an ordinary HTTP/1.1 response');
    t.match(reply, /\r\nconnection: close\r\n/i, 'and the connection ends with it');
    const seen = JSON.parse(reply.slice(reply.indexOf('\r\n\r\n') + 4));
    t.equal(upgraded, 0, 'the backend was never asked to switch');
    t.equal(seen.headers.upgrade, undefined);
    t.equal(seen.headers['http2-settings'], undefined);
    t.equal(seen.headers['x-forwarded-for'], '127.0.0.1', "the relay's forwarding headers, not the client's");

    const withBody = await rawRequest(
      relay.httpAddress.port,
      'POST /page HTTP/1.1\r\nHost: h2c.edge.test\r\nConnection: Upgrade, HTTP2-Settings\r\n' +
        'Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\nContent-Length: 2\r\n\r\nhi',
      15_000,
      true,
    );
    t.match(withBody.text, /^HTTP\/1\.1 400 /, 'with a body: refused, with the reason');
    t.match(withBody.text, /x-burrow-error: upgrade_with_body/);
    t.equal(upgraded, 0);
  },
);

t.test('HTTP2-Settings stays with the client connection on every path', async (t) => {
  const backend = await testServer(t, (req, res) => res.end(JSON.stringify(req.headers)));
  for (const http1FastPath of [true, false]) {
    const relay = await testRelay(t, { http1FastPath });
    await testAgent(t, relay, [{ id: 'h2s', hostnames: ['h2s.edge.test'], target: backend.url }]);
    // Not listed in Connection, as RFC 7540 §3.2.1 asks: it is connection-specific all the same.
    const r = await get(relay.httpAddress.port, 'h2s.edge.test', '/', {
      headers: { 'http2-settings': 'AAMAAABkAAQAAP__' },
    });
    const seen = JSON.parse(r.body.toString()) as Record<string, string>;
    t.equal(seen['http2-settings'], undefined, `fast path ${http1FastPath}`);
  }
});

t.test(
  'HTTP/2 clients get what HTTP/1.1 ones get: repeated response fields, a 100 KB head, 200 request fields',
  async (t) => {
    const pki = await testPki(t);
    const cert = await pki.issue('heads', ['heads.edge.test']);
    const relay = await testRelay(t, {
      tls: { host: '127.0.0.1', port: 0 },
      certFiles: { pairs: [{ cert: cert.certFile, key: cert.keyFile }] },
    });
    const backend = await testServer(t, (req, res) => {
      if (req.url === '/repeated') {
        // An app and its middleware both set these.
        res.writeHead(200, [
          'X-Content-Type-Options',
          'nosniff',
          'X-Content-Type-Options',
          'nosniff',
          'Content-Type',
          'text/plain',
          'Content-Type',
          'text/html',
        ]);
      } else {
        const cookies = Array.from({ length: 10 }, (_, i) => `c${i}=${'v'.repeat(10_000)}`);
        res.writeHead(200, { 'set-cookie': cookies });
      }
      res.end('ok');
    });
    await testAgent(t, relay, [{ id: 'heads', hostnames: ['heads.edge.test'], target: backend.url }]);
    const session = await h2Session(t, relay.tlsAddress!.port, 'heads.edge.test', pki.caPem);
    const fetch = async (path: string) => {
      const s = session.request({ ':path': path });
      const [headers] = (await once(s, 'response')) as [Record<string, string | string[]>];
      const chunks: Buffer[] = [];
      for await (const c of s) chunks.push(c as Buffer);
      return { headers, body: Buffer.concat(chunks).toString() };
    };
    const repeated = await fetch('/repeated');
    t.equal(Number(repeated.headers[':status']), 200, 'a repeated single-value field is no 502');
    // Joined, as an HTTP/1.1 recipient reads them (RFC 9110 §5.3): one value is not silently lost.
    t.equal(repeated.headers['x-content-type-options'], 'nosniff, nosniff');
    t.equal(repeated.headers['content-type'], 'text/plain, text/html');
    t.equal(repeated.body, 'ok');
    const big = await fetch('/big');
    t.equal(Number(big.headers[':status']), 200, 'a 100 KB head reaches the client');
    t.equal((big.headers['set-cookie'] as string[]).length, 10);
    t.equal(big.body, 'ok');
    t.equal((await fetch('/repeated')).body, 'ok', 'and the connection is still usable');
    // 200 request fields, as an HTTP/1.1 client may send: not reset for being over Node's 128.
    const many: Record<string, string> = { ':path': '/repeated' };
    for (let i = 0; i < 200; i++) many[`x-field-${i}`] = String(i);
    const s = session.request(many);
    const [manyHead] = (await once(s, 'response')) as [Record<string, string>];
    s.resume();
    t.equal(Number(manyHead[':status']), 200, '200 request fields go through');
    // :authority routes; a Host naming another host is refused, not passed to the backend.
    const two = session.request({
      ':path': '/repeated',
      ':authority': 'heads.edge.test',
      host: 'other.edge.test',
    });
    const [twoHead] = (await once(two, 'response')) as [Record<string, string>];
    two.resume();
    t.equal(Number(twoHead[':status']), 400, ':authority and Host that differ: 400');
    t.equal(twoHead['x-burrow-error'], 'host_mismatch');
  },
);

t.test(
  'CONNECT gets 501 with the reason, over HTTP/1.1 and HTTP/2: the relay is no forward proxy',
  async (t) => {
    const pki = await testPki(t);
    const cert = await pki.issue('tunnel', ['tunnel.edge.test']);
    const infos: AccessInfo[] = [];
    const bothLogged = deferred();
    const relay = await testRelay(t, {
      tls: { host: '127.0.0.1', port: 0 },
      certFiles: { pairs: [{ cert: cert.certFile, key: cert.keyFile }] },
      onRequestDone: (info) => {
        if (infos.push(info) === 2) bothLogged.resolve();
      },
    });
    const backend = await testServer(t, echoHeaders);
    await testAgent(t, relay, [{ id: 'tunnel', hostnames: ['tunnel.edge.test'], target: backend.url }]);

    const { text: reply } = await rawRequest(
      relay.httpAddress.port,
      'CONNECT tunnel.edge.test:443 HTTP/1.1\r\nHost: tunnel.edge.test:443\r\n\r\n',
      15_000,
      true,
    );
    t.match(reply, /^HTTP\/1\.1 501 /, 'HTTP/1.1: 501, not a bare close');
    t.match(reply, /x-burrow-error: connect_method/);

    const session = await h2Session(t, relay.tlsAddress!.port, 'tunnel.edge.test', pki.caPem);
    const s = session.request({ ':method': 'CONNECT', ':authority': 'tunnel.edge.test:443' });
    const [headers] = await once(s, 'response');
    t.equal(Number(headers[':status']), 501, 'HTTP/2: 501 too');
    t.equal(headers['x-burrow-error'], 'connect_method');
    s.close();
    await bothLogged.promise;
    t.same(
      infos.map((i) => [i.method, i.status, i.error]),
      [
        ['CONNECT', 501, 'connect_method'],
        ['CONNECT', 501, 'connect_method'],
      ],
      'both logged and counted',
    );
  },
);

/**
 * A relay (TLS-terminated or plain, fast path on or off) and an agent for
 * pipe.edge.test, whose backend holds POST /slow until `release` (then
 * answers it, or with `cut` breaks it off) and accepts WebSocket upgrades
 * with a 101 and the bytes `RAW`. Returns a client
 * connection and the kinds of the streams the relay opens from then on.
 */
async function slowThenUpgrade(
  t: Teardownable,
  tls: boolean,
  fast: boolean,
  {
    cut = false,
    behind = rawGet('pipe.edge.test', '/ws', 'Upgrade: websocket\r\nConnection: Upgrade\r\n'),
    ...extra
  }: Partial<RelayOptions> & { cut?: boolean; behind?: string } = {},
) {
  const host = 'pipe.edge.test';
  const pki = await testPki(t);
  const cert = await pki.issue('pipe', [host]);
  const relay = await testRelay(t, {
    http1FastPath: fast,
    ...(tls
      ? {
          tls: { host: '127.0.0.1', port: 0 },
          certFiles: { pairs: [{ cert: cert.certFile, key: cert.keyFile }] },
          httpsRedirect: false,
        }
      : {}),
    ...extra,
  });
  const release = deferred();
  const arrived = deferred();
  const paths: string[] = [];
  const backend = await testServer(t, (req, res) => {
    paths.push(req.url ?? '');
    req.resume();
    arrived.resolve();
    // Cut: its body stops short, and the relay resets the client connection.
    if (cut) {
      res.writeHead(200, { 'content-length': '10' });
      res.write('slow');
      void release.promise.then(() => res.destroy());
    } else void release.promise.then(() => res.end('slow'));
  });
  backend.server.on('upgrade', (req, socket) => {
    paths.push(req.url ?? '');
    t.teardown(() => socket.destroy());
    socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nRAW');
  });
  await testAgent(t, relay, [{ id: 'pipe', hostnames: [host], target: backend.url }], { connections: 1 });
  const kinds = streamKinds(relay);
  const c = tls
    ? await tlsClient(t, relay.tlsAddress!.port, host, pki.caPem, ['http/1.1'])
    : client(t, relay.httpAddress.port);
  // Chunked: Node's parser reads it, with the fast path on too.
  c.write(
    `POST /slow HTTP/1.1\r\nHost: ${host}\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n` + behind,
  );
  return { c, kinds, paths, arrived: arrived.promise, release };
}

for (const tls of [false, true]) {
  for (const fast of [false, true]) {
    t.test(
      `${tls ? 'TLS' : 'plain'}, fast path ${fast ? 'on' : 'off'}: an upgrade pipelined behind a request is answered after it`,
      async (t) => {
        const { c, kinds, arrived, release } = await slowThenUpgrade(t, tls, fast);
        await within(10_000, arrived, 'POST /slow reaches the backend');
        // Node parsed both heads at once; the upgrade has not started.
        t.same(kinds, ['http'], 'no stream for the upgrade while /slow is unanswered');
        release.resolve();
        const raw = async () => {
          while (!c.buffered.includes('RAW') && !c.closed) await c.changed();
          return c.buffered.toString('latin1');
        };
        const text = await within(10_000, raw(), 'both responses');
        t.match(
          text,
          /^HTTP\/1\.1 200 OK\r\n[\s\S]*\r\n\r\nslowHTTP\/1\.1 101 Switching Protocols\r\n[\s\S]*\r\n\r\nRAW$/,
          "/slow's 200, then the 101 and the upgraded bytes",
        );
      },
    );
  }
}

for (const tls of [false, true]) {
  t.test(
    `${tls ? 'TLS' : 'plain'}: a CONNECT pipelined behind a request is refused after its response`,
    async (t) => {
      const { c, arrived, release } = await slowThenUpgrade(t, tls, false, {
        behind: 'CONNECT pipe.edge.test:443 HTTP/1.1\r\nHost: pipe.edge.test:443\r\n\r\n',
      });
      await within(10_000, arrived, 'POST /slow reaches the backend');
      t.equal(c.buffered.length, 0, 'nothing answered while /slow is unanswered');
      release.resolve();
      await within(10_000, c.untilClosed(), 'both responses, then the close');
      t.match(
        c.buffered.toString('latin1'),
        /^HTTP\/1\.1 200 OK\r\n[\s\S]*\r\n\r\nslowHTTP\/1\.1 501 Not Implemented\r\n/,
        "/slow's 200, then the 501",
      );
    },
  );
}

t.test('an upgrade whose connection closes before its turn never starts, and is logged', async (t) => {
  const infos: AccessInfo[] = [];
  const bothLogged = deferred();
  const { c, paths, arrived, release } = await slowThenUpgrade(t, false, false, {
    cut: true,
    onRequestDone: (info) => {
      if (infos.push(info) === 2) bothLogged.resolve();
    },
  });
  await within(10_000, arrived, 'POST /slow reaches the backend');
  release.resolve();
  await within(10_000, c.untilClosed(), 'the relay resets the connection');
  await within(10_000, bothLogged.promise, 'both requests logged');
  t.same(
    infos.map((i) => [i.method, i.path, i.status]),
    [
      ['POST', '/slow', 200],
      ['GET', '/ws', 499],
    ],
  );
  t.ok(infos[1]?.error, 'the upgrade is logged as not answered');
  t.same(paths, ['/slow'], 'the upgrade never reached the backend');
});
