// Hostile HTTP at the relay's public port: request smuggling shapes, oversized
// heads, slow heads. Each gets its status, never reaches an agent, and a
// steady request loop on another tenant's hostname sees no error meanwhile.
import type { Socket } from 'node:net';
import t from 'tap';
import { testAgent } from '../helpers/agent.js';
import { testServer } from '../helpers/http.js';
import { bystander } from '../helpers/load.js';
import { rawRequest } from '../helpers/raw-http.js';
import { relayProcess } from '../helpers/relay-process.js';

const H = 'Host: target.example.com\r\n';
/** Sent after a smuggling attempt's body: must never reach a backend as a request of its own. */
const SMUGGLED = `GET /smuggled HTTP/1.1\r\n${H}\r\n`;

const CASES: Array<[name: string, request: string, status: number, code?: string]> = [
  // Smuggling: two framings at once, or a framing one parser reads differently from another.
  [
    'Content-Length with Transfer-Encoding',
    `POST / HTTP/1.1\r\n${H}Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n${SMUGGLED}`,
    400,
  ],
  [
    'duplicate Content-Length',
    `POST / HTTP/1.1\r\n${H}Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!`,
    400,
  ],
  [
    'duplicate Content-Length, same value',
    `POST / HTTP/1.1\r\n${H}Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello`,
    400,
  ],
  ['Transfer-Encoding: xchunked', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n`, 400],
  [
    'space before the colon of Transfer-Encoding',
    `POST / HTTP/1.1\r\n${H}Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n${SMUGGLED}`,
    400,
  ],
  [
    'Transfer-Encoding twice, chunked not last',
    `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n`,
    400,
  ],
  [
    'Transfer-Encoding list, chunked not last',
    `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n`,
    400,
  ],
  [
    'vertical tab before chunked',
    `POST / HTTP/1.1\r\n${H}Transfer-Encoding:\x0bchunked\r\n\r\n0\r\n\r\n${SMUGGLED}`,
    400,
  ],
  [
    'bare LF after Transfer-Encoding',
    `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\n\r\n0\r\n\r\n${SMUGGLED}`,
    400,
  ],
  ['obs-fold in a header', `GET / HTTP/1.1\r\n${H}X-Folded: a\r\n b\r\n\r\n`, 400],
  [
    'obs-fold hiding chunked',
    `POST / HTTP/1.1\r\n${H}Transfer-Encoding: identity\r\n chunked\r\n\r\n0\r\n\r\n${SMUGGLED}`,
    400,
  ],
  // Header names and values outside the token / field-value grammar.
  ['space in a header name', `GET / HTTP/1.1\r\n${H}Fo o: b\r\n\r\n`, 400],
  ['NUL in a header name', `GET / HTTP/1.1\r\n${H}Fo\x00o: b\r\n\r\n`, 400],
  ['separator in a header name', `GET / HTTP/1.1\r\n${H}Fo(o: b\r\n\r\n`, 400],
  ['empty header name', `GET / HTTP/1.1\r\n${H}: b\r\n\r\n`, 400],
  ['NUL in a header value', `GET / HTTP/1.1\r\n${H}X-Bad: a\x00b\r\n\r\n`, 400],
  // Which host is meant must be unambiguous: the relay routes by it.
  ['two Host headers', `GET / HTTP/1.1\r\n${H}Host: bystander.example.com\r\n\r\n`, 400, 'multiple_hosts'],
  [
    'absolute-form target naming another host',
    `GET http://bystander.example.com/ HTTP/1.1\r\n${H}\r\n`,
    400,
    'host_mismatch',
  ],
  ['no Host header', 'GET / HTTP/1.1\r\n\r\n', 400, 'no_host'],
  // RFC 9112 §3.2: an HTTP/1.1 request without Host is a 400, whatever its target says.
  ['absolute-form target, no Host header', 'GET http://target.example.com/ HTTP/1.1\r\n\r\n', 400, 'no_host'],
  ['* as the target of GET (only OPTIONS may)', `GET * HTTP/1.1\r\n${H}\r\n`, 400],
  ['unknown HTTP version', `GET / HTTP/9.9\r\n${H}\r\n`, 400],
  // Size limits.
  ['one oversized header', `GET / HTTP/1.1\r\n${H}X-Big: ${'a'.repeat(20_000)}\r\n\r\n`, 431],
  ['oversized request line', `GET /${'a'.repeat(20_000)} HTTP/1.1\r\n${H}\r\n`, 431],
  ['thousands of small headers', `GET / HTTP/1.1\r\n${H}${'X-A: b\r\n'.repeat(3_000)}\r\n`, 431],
];

t.test('malformed and hostile requests at the public HTTP port', async (t) => {
  const relay = await relayProcess(t, ['--headers-timeout', '2s']);
  const seen: string[] = [];
  const target = await testServer(t, (req, res) => {
    seen.push(`${req.method} ${req.url}`);
    req.resume();
    req.on('end', () => res.end('target'));
  });
  await testAgent(t, relay.tunnelUrl, [{ id: 't', hostnames: ['target.example.com'], target: target.url }], {
    sub: 'target',
  });
  const loop = await bystander(t, relay);

  for (const [name, request, status, code] of CASES) {
    const r = await rawRequest(relay.httpPort, request);
    t.equal(r.status, status, `${name}: ${status}`);
    t.match(
      r.text,
      new RegExp(`\r\nx-burrow-error: ${code ?? '[a-z_]+'}\r\n`),
      `${name}: says why in x-burrow-error`,
    );
  }

  // Slowloris: heads that never finish, in parallel, one of them dribbling a
  // byte every 100 ms (the head deadline is absolute, not per byte).
  const partial = `GET / HTTP/1.1\r\n${H}X-Slow: `;
  const dribble = (socket: Socket) => {
    socket.write(partial);
    let sent = 0;
    const timer = setInterval(() => {
      if (socket.destroyed || ++sent > 150) return clearInterval(timer);
      socket.write('a');
    }, 100);
    socket.on('close', () => clearInterval(timer));
  };
  const slow = await Promise.all([
    rawRequest(relay.httpPort, dribble, 30_000),
    ...Array.from({ length: 20 }, () => rawRequest(relay.httpPort, partial, 30_000)),
  ]);
  t.same(
    slow.map((r) => r.status),
    slow.map(() => 408),
    'every slow head gets 408 Request Timeout',
  );
  t.match(slow[0]!.text, /\r\nx-burrow-error: head_timeout\r\n/);

  await loop.after(10);
  await loop.stop();
  t.same(loop.failures, [], `the bystander tenant saw no errors (${loop.summary()})`);
  t.ok(loop.done >= 20, `the loop kept running throughout (${loop.done} requests)`);
  t.same(seen, [], 'no hostile request reached the target backend');
  t.equal(relay.proc.child.exitCode, null, 'the relay process is alive');
  t.equal((await rawRequest(relay.httpPort, `GET / HTTP/1.1\r\n${H}\r\n`)).status, 200, 'and still serving');
});

t.test('a body whose framing cannot be read: one 400, then the connection closes', async (t) => {
  const relay = await relayProcess(t);
  const target = await testServer(t, (req, res) => {
    req.resume();
    req.on('end', () => res.end('target'));
  });
  await testAgent(t, relay.tunnelUrl, [{ id: 't', hostnames: ['target.example.com'], target: target.url }], {
    sub: 'target',
  });
  // RFC 9112 §6.1: where the body ends is unknown, so nothing after it can be read as a request.
  for (const te of ['xchunked', 'chunked, identity', 'gzip']) {
    const r = await rawRequest(
      relay.httpPort,
      `POST / HTTP/1.1\r\n${H}Transfer-Encoding: ${te}\r\n\r\n0\r\n\r\n${SMUGGLED}`,
      10_000,
      true,
    );
    t.equal(r.status, 400, `${te}: 400`);
    t.equal(r.text.match(/^HTTP\/1\.1 \d{3} /gm)?.length, 1, `${te}: one answer (${JSON.stringify(r.text)})`);
    t.ok(r.closed, `${te}: the relay closed the connection`);
  }
});

t.test('a body on a GET travels as that request’s body, never as a request of its own', async (t) => {
  const relay = await relayProcess(t);
  const seen: Array<{ request: string; body: string }> = [];
  const target = await testServer(t, (req, res) => {
    const parts: Buffer[] = [];
    req.on('data', (c: Buffer) => parts.push(c));
    req.on('end', () => {
      seen.push({ request: `${req.method} ${req.url}`, body: Buffer.concat(parts).toString() });
      res.end('target');
    });
  });
  await testAgent(t, relay.tunnelUrl, [{ id: 't', hostnames: ['target.example.com'], target: target.url }], {
    sub: 'target',
  });
  // A chunked body whose content is itself a request: sent on without framing, the
  // backend would read it as a second request from the relay (with forged headers).
  const chunk = (s: string) => `${Buffer.byteLength(s).toString(16)}\r\n${s}\r\n`;
  for (const method of ['GET', 'DELETE']) {
    const r = await rawRequest(
      relay.httpPort,
      `${method} /carrier HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n${chunk(SMUGGLED)}0\r\n\r\n`,
    );
    t.equal(r.status, 200, `${method} with a chunked body: 200`);
  }
  t.same(
    seen,
    [
      { request: 'GET /carrier', body: SMUGGLED },
      { request: 'DELETE /carrier', body: SMUGGLED },
    ],
    'the backend saw each request once, with its body, and nothing else',
  );
});
