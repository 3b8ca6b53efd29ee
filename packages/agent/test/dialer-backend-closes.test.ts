// A backend that answers, ends its side and closes its connection while the
// client is still sending: what it sent reaches the relay whole, followed by a
// clean end. The client's bytes that the backend can no longer take are
// dropped; they do not turn the stream into a reset, nor stall it.
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { readFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { Socket } from 'node:net';
import { encodeJson, type Http1Open, type HttpOpen, type Stream, type TcpOpen } from '@burrow/shared';
import t, { type Test } from 'tap';
import { deferred, until, within } from '../../../test/helpers/deferred.js';
import { tcpBackend } from '../../../test/helpers/net.js';
import { testPki } from '../../../test/helpers/tls.js';
import type { Route } from '../src/routes/source.js';
import { agentOn } from './helpers/agent-on.js';
import { fakeRelay, listen, readHead, type Teardownable } from './helpers/fake-relay.js';

const KiB = 1024;
/**
 * More than the relay's stream window (256 KiB): the relay reads nothing until
 * the end, so bytes the agent has read stay queued in its stream when the
 * backend closes. Not much more, so that what the agent has not read yet, and
 * the backend's FIN, fit in the agent's kernel receive window.
 */
const ANSWER = 336 * KiB;
/** A bound on each wait that the failures under test turn into a stall. */
const BOUND = 10_000;

const digest = (b: Buffer) => createHash('sha256').update(b).digest('hex');

async function relayAndAgent(t: Teardownable, routes: Route[]) {
  const relay = await fakeRelay(t);
  await agentOn(t, relay, routes);
  const session = relay.live()[0]!.session;
  const open = (meta: TcpOpen | Http1Open): Stream => {
    const stream = session.openStream(encodeJson(meta));
    stream.on('error', () => {}); // read from resetReason
    return stream;
  };
  return { relay, open };
}

/** Answers every request with a 413 without reading its body, and closes the connection. */
function tooLarge(_req: IncomingMessage, res: ServerResponse): void {
  res.writeHead(413, { 'content-type': 'text/plain', 'content-length': 10, connection: 'close' });
  res.end('too large\n');
}

/**
 * Resolves once the kernel has acknowledged `socket`'s FIN (FIN_WAIT2 in
 * /proc/net/tcp): the peer's kernel holds everything it sent, and its end.
 */
function finAcknowledged(socket: Socket): Promise<void> {
  const hex = (port: number | undefined) => `:${(port ?? 0).toString(16).toUpperCase().padStart(4, '0')}`;
  const local = hex(socket.localPort);
  const remote = hex(socket.remotePort);
  return until(async () => {
    const table = await readFile('/proc/net/tcp', 'utf8');
    return table.split('\n').some((line) => {
      const [, from, to, state] = line.trim().split(/\s+/);
      return from?.endsWith(local) && to?.endsWith(remote) && state === '05';
    });
  }, 'the FIN from the backend is acknowledged');
}

/** Closes `socket` once its answer and FIN are with the agent's kernel; resolves when it is closed. */
async function closeOnceDelivered(socket: Socket): Promise<void> {
  await finAcknowledged(socket);
  const closed = once(socket, 'close');
  socket.destroy();
  await closed;
}

/** Writes `total` random bytes in pieces of at most `piece`, each after the one before is taken; stops if the stream fails. */
async function send(stream: Stream, total: number, piece = 64 * KiB): Promise<number> {
  let sent = 0;
  while (sent < total && !stream.destroyed) {
    const chunk = randomBytes(Math.min(piece, total - sent));
    const err = await new Promise<Error | null | undefined>((resolve) => stream.write(chunk, resolve));
    if (err) break;
    sent += chunk.length;
  }
  return sent;
}

/**
 * Uploads as a client does that reads only once it has sent everything: until
 * `answered()` holds (and at most `limit` bytes), then a megabyte more, then
 * FIN. Resolves with what was sent and whether the answer had come.
 */
async function uploadPast(
  stream: Stream,
  answered: () => boolean,
  limit: number,
): Promise<{ sent: number; answeredDuring: boolean }> {
  let sent = 0;
  while (!answered() && sent < limit && !stream.destroyed) sent += await send(stream, 64 * KiB);
  const answeredDuring = answered();
  sent += await send(stream, 1024 * KiB);
  stream.end();
  return { sent, answeredDuring };
}

/** Everything the stream delivers until it closes, and how it closed. */
async function drain(stream: Stream): Promise<{ data: Buffer; reset: number | undefined }> {
  const parts: Buffer[] = [];
  stream.on('data', (c: Buffer) => parts.push(c));
  stream.resume();
  if (!stream.closed) await new Promise((resolve) => stream.once('close', resolve));
  return { data: Buffer.concat(parts), reset: stream.resetReason };
}

/** A TCP backend that sends `answer` and its end when the first bytes arrive; `answered` has its socket. */
async function answeringBackend(t: Teardownable, answer: Buffer) {
  const answered = deferred<Socket>();
  const port = await tcpBackend(t, (s) => {
    s.once('data', () => {
      s.end(answer);
      answered.resolve(s);
    });
  });
  return { port, answered };
}

/** Uploads past half of `length` and checks that the backend's answer came while it did. */
async function uploadUntilAnswered(t: Test, stream: Stream, length: number) {
  let ended = false;
  stream.once('end', () => (ended = true));
  const { answeredDuring } = await within(
    BOUND,
    uploadPast(stream, () => ended, length / 2),
    'the upload is taken',
  );
  t.ok(answeredDuring, 'the backend answered during the upload');
}

const RESPONSE_413 = /^HTTP\/1\.1 413 Payload Too Large\r\n[\s\S]*\r\n\r\ntoo large\n$/;
const skip = process.platform === 'linux' ? false : 'reads connection states from /proc/net/tcp';

t.test(
  'tcp: the backend answers, ends and closes while the client sends; the answer arrives whole',
  { skip },
  async (t) => {
    const answer = randomBytes(ANSWER);
    const { port, answered } = await answeringBackend(t, answer);
    const { open } = await relayAndAgent(t, [
      { id: 'pass', hostnames: ['pass.example.com'], target: `tls-passthrough://127.0.0.1:${port}` },
    ]);
    const stream = open({
      kind: 'tcp',
      route: 'pass',
      serverName: 'pass.example.com',
      client: { ip: '127.0.0.1', port: 9 },
    });
    stream.write('hello');
    // The relay reads nothing yet: what the stream's window does not take waits at the agent.
    await closeOnceDelivered(await answered.promise);
    const sent = await within(BOUND, send(stream, 1024 * KiB), 'the client bytes are taken');
    t.equal(sent, 1024 * KiB, 'the client can still send after the backend closed');
    stream.end();
    const { data, reset } = await within(BOUND, drain(stream), 'the stream closes');
    t.equal(data.length, answer.length, 'every byte of the answer');
    t.equal(digest(data), digest(answer), 'in order');
    t.equal(reset, undefined, 'then a clean end, no reset');
  },
);

t.test('http1: a 413 before the body is read arrives whole while the upload goes on', async (t) => {
  const connection = deferred<Socket>();
  const server = createServer(tooLarge);
  server.on('connection', (s: Socket) => connection.resolve(s));
  const port = await listen(t, server);
  const { open } = await relayAndAgent(t, [
    { id: 'web', hostnames: ['web.example.com'], target: `http://127.0.0.1:${port}` },
  ]);
  const stream = open({ kind: 'http1', route: 'web' });
  const length = 16 * 1024 * KiB;
  stream.write(`POST /upload HTTP/1.1\r\nHost: web.example.com\r\nContent-Length: ${length}\r\n\r\n`);
  const received = drain(stream);
  let ended = false;
  stream.once('end', () => (ended = true));
  let closed = false;
  (await connection.promise).once('close', () => (closed = true));
  const { sent, answeredDuring } = await within(
    BOUND,
    uploadPast(stream, () => ended && closed, length / 2),
    'the upload is taken',
  );
  t.ok(answeredDuring, 'the backend answered and closed during the upload');
  const { data, reset } = await within(BOUND, received, 'the stream closes');
  t.match(data.toString('latin1'), RESPONSE_413);
  t.equal(reset, undefined, 'a clean end, no reset');
  t.ok(sent > 1024 * KiB, `the upload went on (${sent} bytes)`);
});

t.test('http1 to an https backend: a 413 before the body is read arrives whole', async (t) => {
  const pki = await testPki(t);
  const { certFile, keyFile } = await pki.issue('backend', ['127.0.0.1']);
  const server = createHttpsServer(
    { cert: await readFile(certFile), key: await readFile(keyFile) },
    tooLarge,
  );
  const port = await listen(t, server);
  const { open } = await relayAndAgent(t, [
    { id: 'web', hostnames: ['web.example.com'], target: `https://127.0.0.1:${port}`, tlsInsecure: true },
  ]);
  const stream = open({ kind: 'http1', route: 'web' });
  const length = 16 * 1024 * KiB;
  stream.write(`POST /upload HTTP/1.1\r\nHost: web.example.com\r\nContent-Length: ${length}\r\n\r\n`);
  const received = drain(stream);
  await uploadUntilAnswered(t, stream, length);
  const { data, reset } = await within(BOUND, received, 'the stream closes');
  t.match(data.toString('latin1'), RESPONSE_413);
  t.equal(reset, undefined, 'a clean end, no reset');
});

t.test(
  'http1: the backend ends a large response and closes before the agent read it all',
  { skip },
  async (t) => {
    const body = randomBytes(ANSWER);
    const head = `HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: ${body.length}\r\n\r\n`;
    const { port, answered } = await answeringBackend(t, Buffer.concat([Buffer.from(head), body]));
    const { open } = await relayAndAgent(t, [
      { id: 'web', hostnames: ['web.example.com'], target: `http://127.0.0.1:${port}` },
    ]);
    const stream = open({ kind: 'http1', route: 'web' });
    stream.write(`PUT /file HTTP/1.1\r\nHost: web.example.com\r\nContent-Length: ${2048 * KiB}\r\n\r\n`);
    // The relay reads nothing yet: what the stream's window does not take waits at the agent.
    await closeOnceDelivered(await answered.promise);
    const sent = await within(BOUND, send(stream, 1024 * KiB), 'the client bytes are taken');
    t.equal(sent, 1024 * KiB, 'the upload goes on after the backend closed');
    stream.end();
    const { data, reset } = await within(BOUND, drain(stream), 'the stream closes');
    t.equal(digest(data.subarray(data.length - body.length)), digest(body), 'the whole body');
    t.match(data.subarray(0, data.length - body.length).toString(), /^HTTP\/1\.1 200 OK\r\n/);
    t.equal(reset, undefined, 'a clean end, no reset');
  },
);

t.test('http: a 413 sent before the body is read arrives whole while the upload goes on', async (t) => {
  const port = await listen(t, createServer(tooLarge));
  const relay = await fakeRelay(t);
  await agentOn(t, relay, [
    { id: 'web', hostnames: ['web.example.com'], target: `http://127.0.0.1:${port}` },
  ]);
  const length = 16 * 1024 * KiB;
  const meta: Partial<HttpOpen> & { route: string } = {
    route: 'web',
    method: 'POST',
    path: '/upload',
    headers: [
      ['Host', 'web.example.com'],
      ['Content-Length', String(length)],
    ],
    body: true,
  };
  const stream = relay.openHttp(meta, undefined, true);
  const response = (async () => {
    const { head, rest } = await readHead(stream);
    const { data, reset } = await drain(stream);
    return { head, body: Buffer.concat([rest, data]), reset };
  })();
  await uploadUntilAnswered(t, stream, length);
  const { head, body, reset } = await within(BOUND, response, 'the stream closes');
  t.equal(head.status, 413);
  t.equal(body.toString(), 'too large\n');
  t.equal(reset, undefined, 'a clean end, no reset');
});

/** A masked binary WebSocket frame from the client (RFC 6455 §5.2), 64-bit length. */
function clientFrame(payload: Buffer): Buffer {
  const header = Buffer.alloc(14);
  header[0] = 0x82;
  header[1] = 0x80 | 127;
  header.writeBigUInt64BE(BigInt(payload.length), 2);
  const mask = randomBytes(4);
  mask.copy(header, 10);
  return Buffer.concat([header, Buffer.from(payload.map((b, i) => b ^ mask[i % 4]!))]);
}

t.test(
  'upgrade: the backend sends its last frames, ends and closes; they arrive whole, then the end',
  { skip },
  async (t) => {
    // An unmasked binary frame with a 64-bit length, then a close frame (1000).
    const payload = randomBytes(ANSWER);
    const frameHead = Buffer.alloc(10);
    frameHead[0] = 0x82;
    frameHead[1] = 127;
    frameHead.writeBigUInt64BE(BigInt(payload.length), 2);
    const frames = Buffer.concat([frameHead, payload, Buffer.from([0x88, 0x02, 0x03, 0xe8])]);
    const upgraded = deferred<Socket>();
    const server = createServer((_req, res) => res.end('not an upgrade'));
    server.on('upgrade', (_req, socket: Socket) => {
      socket.on('error', () => {});
      socket.write(
        'HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n' +
          'sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n',
      );
      socket.end(frames);
      upgraded.resolve(socket);
    });
    const port = await listen(t, server);
    const relay = await fakeRelay(t);
    await agentOn(t, relay, [
      { id: 'ws', hostnames: ['ws.example.com'], target: `http://127.0.0.1:${port}` },
    ]);
    const stream = relay.openHttp({
      route: 'ws',
      path: '/chat',
      upgrade: true,
      headers: [
        ['Host', 'ws.example.com'],
        ['Sec-WebSocket-Key', 'dGhlIHNhbXBsZSBub25jZQ=='],
        ['Sec-WebSocket-Version', '13'],
        ['Upgrade', 'websocket'],
        ['Connection', 'upgrade'],
      ],
    });
    const { head, rest } = await readHead(stream);
    t.equal(head.status, 101);
    // The relay reads no further yet: what the stream's window does not take waits at the agent.
    await closeOnceDelivered(await upgraded.promise);
    // The client still sends frames, as one does that has not seen the close frame yet.
    const sendFrames = async (count: number) => {
      let sent = 0;
      while (sent < count && !stream.destroyed) {
        const frame = clientFrame(randomBytes(256 * KiB));
        if (await new Promise<Error | null | undefined>((resolve) => stream.write(frame, resolve))) break;
        sent++;
      }
      return sent;
    };
    const sent = await within(BOUND, sendFrames(4), 'the client frames are taken');
    t.equal(sent, 4, 'the client can still send after the backend closed');
    stream.end();
    const { data, reset } = await within(BOUND, drain(stream), 'the stream closes');
    const got = Buffer.concat([rest, data]);
    t.equal(got.length, frames.length, 'every byte the backend sent');
    t.equal(digest(got), digest(frames), 'in order, the close frame last');
    t.equal(reset, undefined, 'then a clean end, no reset');
  },
);
