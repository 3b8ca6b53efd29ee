// The response-head timeout (--response-timeout) bounds the backend's answer
// once the whole request has reached it, not the client's upload: a body that
// takes longer to arrive than the timeout is carried to the end and the
// backend's answer comes back, on both paths. An upload that stops, or turns
// out malformed, is refused without waiting for the rest of it.
import { once } from 'node:events';
import { connect as netConnect } from 'node:net';
import type { AccessInfo } from '@burrow/relay';
import t from 'tap';
import { testAgent } from '../helpers/agent.js';
import { deferred, within } from '../helpers/deferred.js';
import { testServer } from '../helpers/http.js';
import { testRelay } from '../helpers/relay.js';

/** Paces the upload: the test is about an upload that outlasts the timeout. */
const pace = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** A raw client connection to the relay's HTTP port, what it has received so far, and its close. */
async function rawClient(port: number) {
  const socket = netConnect(port, '127.0.0.1');
  socket.on('error', () => {});
  await once(socket, 'connect');
  const received = { text: '' };
  socket.on('data', (d: Buffer) => (received.text += d.toString('latin1')));
  return { socket, received, closed: once(socket, 'close') };
}

const cases = [
  { name: 'general path (chunked body)', fast: true, framing: 'chunked' },
  { name: 'general path (fast path off, Content-Length)', fast: false, framing: 'length' },
  { name: 'fast path (Content-Length)', fast: true, framing: 'length' },
] as const;

for (const { name, fast, framing } of cases) {
  t.test(
    `${name}: an upload that outlasts the response timeout is answered by the backend, not 504`,
    async (t) => {
      const timeout = 400;
      const relay = await testRelay(t, { responseHeadTimeout: timeout, http1FastPath: fast });
      const firstBytes = deferred();
      const backend = await testServer(t, (req, res) => {
        let n = 0;
        req.on('data', (c: Buffer) => {
          n += c.length;
          firstBytes.resolve();
        });
        // The backend answers once it has the whole body, as any upload handler does.
        req.on('end', () => res.end(`got ${n}`));
      });
      await testAgent(t, relay, [{ id: 'up', hostnames: ['up.example.test'], target: backend.url }], {
        connections: 1,
      });
      const c = netConnect(relay.httpAddress.port, '127.0.0.1');
      c.on('error', () => {});
      await once(c, 'connect');
      let text = '';
      const headSeen = new Promise<void>((resolve) =>
        c.on('data', (d: Buffer) => {
          text += d.toString('latin1');
          if (text.includes('\r\n\r\n')) resolve();
        }),
      );
      const pieces = 8;
      const piece = '0123456789';
      c.write(
        `POST /upload HTTP/1.1\r\nHost: up.example.test\r\n${
          framing === 'chunked' ? 'Transfer-Encoding: chunked' : `Content-Length: ${pieces * piece.length}`
        }\r\n\r\n`,
      );
      // 8 pieces, 100 ms apart: the body takes about twice the response timeout to arrive.
      for (let i = 0; i < pieces && !text; i++) {
        c.write(framing === 'chunked' ? `a\r\n${piece}\r\n` : piece);
        if (i === 0) await within(5_000, firstBytes.promise, 'the upload reaches the backend');
        await pace(timeout / 4);
      }
      if (framing === 'chunked' && !text) c.write('0\r\n\r\n');
      await within(5_000, headSeen, 'a response');
      t.match(text, /^HTTP\/1\.1 200 /, `the backend's answer, not ${text.split('\r\n')[0]}`);
      t.match(text, new RegExp(`got ${pieces * piece.length}$`), 'after the whole body');
      c.destroy();
    },
  );
}

for (const fast of [true, false]) {
  t.test(
    `${fast ? 'fast' : 'general'} path: an upload that stops is answered 408 and its connection closed`,
    async (t) => {
      const relay = await testRelay(t, { responseHeadTimeout: 300, http1FastPath: fast });
      const backend = await testServer(t, (req, res) => req.on('end', () => res.end('never')));
      await testAgent(t, relay, [{ id: 'up', hostnames: ['up.example.com'], target: backend.url }], {
        connections: 1,
      });
      const { socket, received, closed } = await rawClient(relay.httpAddress.port);
      socket.write('POST /upload HTTP/1.1\r\nHost: up.example.com\r\nContent-Length: 100000\r\n\r\nabc');
      await within(5_000, closed, 'the relay closes the connection');
      t.match(received.text, /^HTTP\/1\.1 408 /, received.text.split('\r\n')[0] ?? '');
      t.match(received.text, /x-burrow-error: upload_stalled/i);
    },
  );
}

for (const fast of [true, false]) {
  t.test(
    `fast path ${fast ? 'on' : 'off'}: a malformed chunk size is answered 400 at once, not 408 at the timeout`,
    async (t) => {
      const logged = deferred<AccessInfo>();
      // The answer must not wait for this: the rest of the body will never come.
      const relay = await testRelay(t, {
        responseHeadTimeout: 60_000,
        http1FastPath: fast,
        onRequestDone: (info) => logged.resolve(info),
      });
      const received = deferred();
      const cancelled = deferred();
      const backend = await testServer(t, (req, res) => {
        req.once('data', () => received.resolve());
        req.on('end', () => res.end('never'));
        res.on('close', () => cancelled.resolve());
      });
      await testAgent(t, relay, [{ id: 'up', hostnames: ['up.example.com'], target: backend.url }], {
        connections: 1,
      });
      const { socket, received: got, closed } = await rawClient(relay.httpAddress.port);
      // A chunked body is Node's parser's to read, with the fast path on too.
      socket.write(
        'POST /upload HTTP/1.1\r\nHost: up.example.com\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n',
      );
      await within(10_000, received.promise, 'the upload reaches the backend');
      socket.write('zz\r\nworld\r\n0\r\n\r\n');
      await within(10_000, closed, 'the relay answers and closes the connection');
      t.match(got.text, /^HTTP\/1\.1 400 /, got.text.split('\r\n')[0] ?? '');
      t.match(got.text, /x-burrow-error: bad_framing/i);
      await within(10_000, cancelled.promise, 'the backend request is cancelled');
      t.match(await logged.promise, { status: 400, error: 'bad_framing' }, 'and logged as such');
    },
  );
}
