// Edge cases of the tunnel protocol implementation: the session's send queue
// while opening streams, write callbacks of streams that end by RST,
// the sender's frame-size obligation for OPEN metadata, the cost of reading
// length-prefixed messages that arrive in small pieces, and what a session
// does with frames that follow a text WebSocket message.
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import t from 'tap';
import { WebSocket, WebSocketServer } from 'ws';
import { MAX_FRAME_PAYLOAD } from '../src/protocol/config.js';
import { decodeGoAway } from '../src/protocol/decode.js';
import { encodeFrame, encodeHello, encodeRst } from '../src/protocol/encode.js';
import { FrameType, Reason } from '../src/protocol/frame.js';
import { Session } from '../src/protocol/session.js';
import type { Stream } from '../src/protocol/stream.js';
import { WsTransport } from '../src/protocol/ws-transport.js';
import { MessageReader } from '../src/tunnel/message-stream.js';
import { agentMessageSchema } from '../src/tunnel/messages.js';
import { PEER_HELLO, rawPeer } from './helpers/raw-peer.js';

const server = { role: 'server' as const };

/** One turn of the event loop: every nextTick and microtask queued before it has run. */
const turn = () => new Promise<void>((resolve) => setImmediate(resolve));

/** Errors that reach process level while `fn` runs its course (tap reports them too). */
function watchUncaught(t: { teardown(fn: () => unknown): void }): unknown[] {
  const seen: unknown[] = [];
  const onUncaught = (err: unknown) => seen.push(err);
  process.on('uncaughtException', onUncaught);
  t.teardown(() => {
    process.off('uncaughtException', onUncaught);
  });
  return seen;
}

t.test(
  'openStream refuses new streams while the send queue is backed up, and the session stays up',
  async (t) => {
    const uncaught = watchUncaught(t);
    const peer = rawPeer(t, { ...server, maxSendQueue: 1024 * 1024 });
    peer.hello({ maxConcurrentStreams: 1000 });
    await peer.session.ready;
    // The peer reads nothing during this burst: OPENs pile up in the transport.
    // Past half of maxSendQueue new streams are refused, before the queue can
    // reach the limit that ends the session ("peer is not reading").
    const metadata = Buffer.alloc(PEER_HELLO.maxMetadata, 0x6d);
    let thrown: unknown;
    let opened = 0;
    for (let i = 0; i < 1000; i++) {
      try {
        const s = peer.session.openStream(metadata);
        s.on('error', () => {}); // every stream the caller receives is observed
        opened++;
      } catch (err) {
        thrown = err;
        break;
      }
    }
    t.ok(opened > 0, `${opened} streams opened before the queue backed up`);
    t.match(thrown, { code: 'BURROW_ERR_STREAM_REFUSED', message: /send queue is backed up/ });
    t.notOk(peer.session.closed, 'the session is still up');
    // Once the peer has read the queue, streams open again.
    await turn();
    await turn();
    const later = peer.session.openStream(metadata);
    later.on('error', () => {});
    t.ok(later, 'a stream opens once the queue has drained');
    t.same(
      uncaught.map((e) => (e as Error).message),
      [],
      'no error escapes from a stream the caller never got',
    );
  },
);

t.test('a graceful GOAWAY goes out on a session whose send queue is backed up with DATA', async (t) => {
  // DATA may fill the transport past maxSendQueue (the transport's own high-water mark paces it);
  // the one GOAWAY of a drain must then start the drain, not end the session as a peer that
  // does not read.
  const peer = rawPeer(t, { ...server, maxSendQueue: 1024 * 1024 }, { highWater: 8 * 1024 * 1024 });
  peer.hello({ initialWindow: 8 * 1024 * 1024 });
  await peer.session.ready;
  const stream = peer.session.openStream();
  stream.on('error', () => {});
  stream.write(Buffer.alloc(4 * 1024 * 1024, 1));
  t.ok(peer.sessionEnd.bufferedAmount > 1024 * 1024, 'the queue is past maxSendQueue');
  const drained = peer.session.goAway(Reason.Shutdown, 'restarting');
  t.notOk(peer.session.closed, 'the session drains');
  const goAway = await peer.waitFor((f) => f.type === FrameType.GoAway);
  t.match(decodeGoAway(goAway.payload), { reason: Reason.Shutdown, message: 'restarting' });
  // The stream still finishes: its data arrives whole, and then the session closes.
  stream.end();
  await peer.waitFor((f) => f.type === FrameType.Fin && f.streamId === stream.id);
  t.equal(
    peer.frames
      .filter((f) => f.type === FrameType.Data && f.streamId === stream.id)
      .reduce((n, f) => n + f.payload.byteLength, 0),
    4 * 1024 * 1024,
    'all of its data went out',
  );
  peer.send(encodeFrame(FrameType.Fin, stream.id));
  await drained;
  t.equal(await peer.sessionClosed, undefined, 'closed without an error');
});

t.test('a drain resets raw streams once quiet and waits for the others', async (t) => {
  // The drain timeout is far beyond the test: only the quiet rule ends the raw streams.
  const peer = rawPeer(t, { ...server, drainQuietPeriod: 20, drainTimeout: 600_000 });
  // The session's timers do not hold the process (its sockets do); this in-memory pair has none.
  const alive = setInterval(() => {}, 1_000);
  t.teardown(() => clearInterval(alive));
  peer.hello();
  await peer.session.ready;
  const open = () => {
    const s = peer.session.openStream();
    s.on('error', () => {});
    return s;
  };
  const request = open();
  const raw = open();
  raw.markRaw();
  // An upgrade still waiting for its 101 when the drain starts: raw only from then on.
  const upgrade = open();
  // A raw stream whose reader is behind: bytes it has not read yet are traffic still under way.
  const behind = open();
  behind.markRaw();
  peer.send(encodeFrame(FrameType.Data, behind.id, Buffer.from('unread')));
  await peer.roundTrip('data');
  t.equal(behind.unconsumed, 6, 'the bytes wait unread');
  const drained = peer.session.goAway(Reason.Shutdown, 'restarting');
  const resetOf = (s: Stream) => peer.rst(s.id);
  t.match(await resetOf(raw), { reason: Reason.Shutdown, message: /quiet/ }, 'the quiet raw stream is reset');
  t.notOk(request.destroyed || upgrade.destroyed, 'the others are waited for');
  upgrade.markRaw();
  t.match(await resetOf(upgrade), { reason: Reason.Shutdown }, 'one marked raw during the drain, once quiet');
  t.notOk(behind.destroyed, 'one holding unread bytes is not quiet');
  t.equal(behind.read()?.toString(), 'unread');
  t.match(await resetOf(behind), { reason: Reason.Shutdown }, 'once read, and then quiet, it goes too');
  t.equal(peer.session.closedQuiet, 3);
  t.notOk(request.destroyed || peer.session.closed, 'the request still holds the drain');
  request.end();
  peer.send(encodeFrame(FrameType.Fin, request.id));
  await drained;
  t.equal(await peer.sessionClosed, undefined, 'closed without an error once the request finished');
});

t.test(
  'writes waiting for credit get their callbacks, with an error, when the peer resets the stream',
  async (t) => {
    const peer = rawPeer(t, server);
    peer.hello({ initialWindow: 1024 });
    await peer.session.ready;
    const stream = peer.session.openStream();
    stream.on('error', () => {});
    const results: Array<Error | null | undefined | 'pending'> = ['pending', 'pending'];
    stream.write(Buffer.alloc(4096, 1), (err) => {
      results[0] = err;
    });
    stream.write(Buffer.alloc(10, 2), (err) => {
      results[1] = err;
    });
    // The first 1024 bytes go out; the rest waits for a WINDOW that never comes.
    await peer.waitFor((f) => f.type === FrameType.Data && f.streamId === stream.id);
    const closed = new Promise((resolve) => stream.once('close', resolve));
    peer.send(encodeRst(stream.id, Reason.Cancel, 'no thanks'));
    await closed;
    await turn();
    await turn();
    t.not(results[0], 'pending', 'the write in progress was called back');
    t.type(results[0], Error, 'with an error');
    t.not(results[1], 'pending', 'the write queued behind it was called back');
    t.type(results[1], Error, 'with an error');
  },
);

t.test(
  'openStream refuses metadata that would not fit the largest frame the peer may be sent (16 MiB - 12)',
  async (t) => {
    const peer = rawPeer(t, server);
    // Limits above 16 MiB - 12 count as 16 MiB - 12 (docs/protocol.md §4).
    peer.hello({ maxFramePayload: 0xffffffff, maxMetadata: 0xffffffff });
    await peer.session.ready;
    t.equal(peer.session.peer?.maxFramePayload, MAX_FRAME_PAYLOAD, 'frame payload capped');
    let stream: Stream | undefined;
    t.throws(
      () => {
        stream = peer.session.openStream(Buffer.alloc(MAX_FRAME_PAYLOAD + 1));
      },
      { code: 'BURROW_ERR_METADATA_TOO_LARGE' },
      'refused locally, nothing sent',
    );
    if (stream) {
      // It went out: an OPEN frame above every receiver's limit. Cut the pair before it lands.
      stream.on('error', () => {});
      peer.end.destroy();
    }
  },
);

t.test('MessageReader assembles a message that arrives a byte at a time with linear copying', async (t) => {
  const hostnames = Array.from({ length: 60 }, (_, i) => `h${i}.${'a'.repeat(200)}.example.com`);
  const body = Buffer.from(JSON.stringify({ type: 'announce', routes: [{ id: 'r', hostnames }] }));
  const wire = Buffer.alloc(4 + body.byteLength);
  wire.writeUInt32BE(body.byteLength, 0);
  body.copy(wire, 4);

  const concat = Buffer.concat;
  let copied = 0;
  Buffer.concat = ((list: readonly Uint8Array[], totalLength?: number) => {
    const out = concat(list, totalLength);
    copied += out.byteLength;
    return out;
  }) as typeof Buffer.concat;
  t.teardown(() => {
    Buffer.concat = concat;
  });

  const reader = new MessageReader(agentMessageSchema);
  const got = [];
  for (let i = 0; i < wire.byteLength; i++) got.push(...reader.push(wire.subarray(i, i + 1)));
  Buffer.concat = concat;
  t.equal(got.length, 1, 'one message');
  t.equal(got[0]?.routes[0]?.hostnames.length, 60, 'intact');
  t.ok(
    copied <= 8 * wire.byteLength,
    `copied ${copied} bytes to assemble a ${wire.byteLength}-byte message (at most 8x is linear)`,
  );
});

t.test('a session processes no frame that follows a text WebSocket message', async (t) => {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await once(wss, 'listening');
  t.teardown(() => new Promise<void>((resolve) => wss.close(() => resolve())));
  const accepted = once(wss, 'connection') as Promise<[WebSocket]>;
  const client = new WebSocket(`ws://127.0.0.1:${(wss.address() as AddressInfo).port}/`);
  t.teardown(() => client.terminate());
  client.on('error', () => {});
  const [ws] = await accepted;
  t.teardown(() => ws.terminate());
  const session = new Session(new WsTransport(ws), server);
  const streams: Stream[] = [];
  session.on('stream', (s) => {
    s.on('error', () => {});
    streams.push(s);
  });
  const sessionClosed = once(session, 'close');
  const clientClosed = once(client, 'close');
  if (client.readyState !== WebSocket.OPEN) await once(client, 'open');
  client.send(encodeHello(PEER_HELLO));
  client.send('not a frame');
  client.send(encodeFrame(FrameType.Open, 1, Buffer.from('{"kind":"control"}')));
  client.send(encodeFrame(FrameType.Open, 3, Buffer.from('{"kind":"control"}')));
  const [code] = (await clientClosed) as [number];
  t.equal(code, 1003, 'closed with 1003');
  const [err] = (await sessionClosed) as [Error | undefined];
  t.match(err, { code: 'BURROW_ERR_PROTOCOL' }, 'the session ends with the violation');
  t.same(
    streams.map((s) => s.id),
    [],
    'no stream opened after the violation reached the application',
  );
});
