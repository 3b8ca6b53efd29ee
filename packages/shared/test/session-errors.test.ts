import { once } from 'node:events';
import t, { type Test } from 'tap';
import {
  encodeFrame,
  encodeGoAway,
  encodeHello,
  encodePing,
  encodeRst,
  encodeWindow,
} from '../src/protocol/encode.js';
import { FrameType, MAX_STREAM_ID, MAX_WINDOW, Reason } from '../src/protocol/frame.js';
import type { SessionOptions } from '../src/protocol/session.js';
import { holdEventLoop } from './helpers/event-loop.js';
import { PEER_HELLO, type RawPeer, rawPeer, recordEscaped } from './helpers/raw-peer.js';

const escaped = recordEscaped();

interface Abort {
  code: string;
  reason: Reason;
  message?: RegExp;
}

/** The session closed itself with `want`: close event, GOAWAY on the wire, WebSocket-style close code. */
async function expectAbort(t: Test, peer: RawPeer, want: Abort): Promise<void> {
  const err = await peer.sessionClosed;
  t.match(
    err,
    { code: want.code, reason: want.reason, ...(want.message && { message: want.message }) },
    'close error',
  );
  // The close code reaches the peer after every frame sent before it.
  await peer.transportClosed;
  const goAways = peer.goAways();
  t.equal(goAways.length, 1, 'one GOAWAY');
  t.equal(goAways[0]?.reason, want.reason, `GOAWAY reason ${Reason[want.reason]}`);
  t.match(goAways[0]?.message, want.message ?? /./, 'GOAWAY carries the diagnostic');
  t.equal(peer.sessionEnd.closeCode, 4000 + want.reason, `transport closed with ${4000 + want.reason}`);
  t.ok(peer.session.closed, 'session reports closed');
  t.same(escaped, [], 'nothing escaped the session');
}

const server = { role: 'server' as const };

/** A session (a server unless `options` say otherwise) that has had the peer's HELLO. */
function helloedPeer(t: Test, options: SessionOptions = server): RawPeer {
  const peer = rawPeer(t, options);
  peer.hello();
  return peer;
}

/** The abort for a PROTOCOL_ERROR whose diagnostic matches `message`. */
function protocolError(message: RegExp): Abort {
  return { code: 'BURROW_ERR_PROTOCOL', reason: Reason.ProtocolError, message };
}

t.test('frames before HELLO fail the handshake', async (t) => {
  const frames: Array<[string, Buffer]> = [
    ['PING', encodePing(FrameType.Ping, Buffer.alloc(8))],
    ['OPEN', encodeFrame(FrameType.Open, 1)],
    ['GOAWAY', encodeFrame(FrameType.GoAway, 0, Buffer.alloc(8))],
  ];
  for (const [name, frame] of frames) {
    await t.test(name, async (t) => {
      const peer = rawPeer(t, server);
      peer.send(frame, encodeHello(PEER_HELLO));
      await expectAbort(t, peer, {
        code: 'BURROW_ERR_HANDSHAKE',
        reason: Reason.HandshakeFailed,
        message: new RegExp(`expected HELLO as the first frame, got ${FrameType[frame[1]!]}`),
      });
      t.equal(peer.frames[0]?.type, FrameType.Hello, 'the session still sent its own HELLO first');
      await t.rejects(peer.session.ready, { code: 'BURROW_ERR_SESSION_CLOSED' }, 'ready rejects');
    });
  }
});

t.test('HELLO with an unsupported version', async (t) => {
  const peer = rawPeer(t, server);
  peer.hello({ version: 0 });
  await expectAbort(t, peer, {
    code: 'BURROW_ERR_UNSUPPORTED_VERSION',
    reason: Reason.UnsupportedVersion,
    message: /version 0/,
  });
});

t.test('a newer peer negotiates down to the version both speak', async (t) => {
  const peer = rawPeer(t, server);
  peer.hello({ version: 9 });
  await peer.session.ready;
  t.equal(peer.session.peer?.version, 1);
});

t.test('HELLO with limits below the protocol minimums', async (t) => {
  for (const bad of [{ initialWindow: 1023 }, { maxFramePayload: 1023 }, { maxMetadata: 255 }]) {
    await t.test(JSON.stringify(bad), async (t) => {
      const peer = rawPeer(t, server);
      peer.hello(bad);
      await expectAbort(t, peer, { code: 'BURROW_ERR_HANDSHAKE', reason: Reason.HandshakeFailed });
    });
  }
});

t.test('a second HELLO', async (t) => {
  const peer = helloedPeer(t);
  peer.hello();
  await expectAbort(t, peer, protocolError(/second HELLO/));
});

t.test('no HELLO within handshakeTimeout', async (t) => {
  holdEventLoop(t);
  const peer = rawPeer(t, { ...server, handshakeTimeout: 50 });
  await expectAbort(t, peer, {
    code: 'BURROW_ERR_HANDSHAKE',
    reason: Reason.HandshakeFailed,
    message: /no HELLO from peer within 50 ms/,
  });
});

t.test('DATA on stream 0', async (t) => {
  const peer = helloedPeer(t);
  peer.send(encodeFrame(FrameType.Data, 0, Buffer.from('x')));
  await expectAbort(t, peer, protocolError(/on stream 0/));
});

t.test('an oversize frame', async (t) => {
  const peer = helloedPeer(t, { ...server, maxFramePayload: 1024, maxMetadata: 256 });
  peer.send(encodeFrame(FrameType.Open, 1), encodeFrame(FrameType.Data, 1, Buffer.alloc(1025)));
  await expectAbort(t, peer, { code: 'BURROW_ERR_FRAME_SIZE', reason: Reason.FrameSizeError });
});

t.test('WINDOW pushing send credit past 2^31-1', async (t) => {
  const peer = helloedPeer(t);
  peer.send(encodeFrame(FrameType.Open, 1), encodeWindow(1, MAX_WINDOW - PEER_HELLO.initialWindow));
  await peer.roundTrip('credit');
  t.equal(peer.accepted[0]?.sendCredit, MAX_WINDOW, 'exactly 2^31-1 is allowed');
  t.notOk(peer.session.closed);
  peer.send(encodeWindow(1, 1));
  await expectAbort(t, peer, {
    code: 'BURROW_ERR_FLOW_CONTROL',
    reason: Reason.FlowControlError,
    message: /overflows credit/,
  });
});

t.test('DATA beyond the granted credit', async (t) => {
  const peer = helloedPeer(t, { ...server, initialWindow: 1024, maxFramePayload: 1024, maxMetadata: 256 });
  // Nobody reads the accepted stream, so no WINDOW ever tops the credit up.
  peer.send(encodeFrame(FrameType.Open, 1), encodeFrame(FrameType.Data, 1, Buffer.alloc(1024, 1)));
  await peer.roundTrip('full');
  t.equal(peer.accepted[0]?.unconsumed, 1024, 'the whole window is buffered');
  t.notOk(peer.session.closed, 'using all the credit is fine');
  t.notOk(
    peer.frames.some((f) => f.type === FrameType.Window),
    'no WINDOW was granted for unread data',
  );
  peer.send(encodeFrame(FrameType.Data, 1, Buffer.alloc(1, 2)));
  await expectAbort(t, peer, {
    code: 'BURROW_ERR_FLOW_CONTROL',
    reason: Reason.FlowControlError,
    message: /1 bytes sent with 0 bytes of credit/,
  });
});

t.test('OPEN on an id in use', async (t) => {
  const peer = helloedPeer(t);
  peer.send(encodeFrame(FrameType.Open, 1), encodeFrame(FrameType.Open, 1));
  await expectAbort(t, peer, protocolError(/in use/));
});

t.test('OPEN reusing the id of a finished stream', async (t) => {
  const peer = helloedPeer(t);
  peer.send(encodeFrame(FrameType.Open, 1), encodeRst(1, Reason.Cancel));
  await peer.roundTrip('reset');
  t.equal(peer.session.streamCount, 0, 'stream 1 is gone');
  peer.send(encodeFrame(FrameType.Open, 1));
  await expectAbort(t, peer, protocolError(/reuses stream id 1/));
});

t.test('OPEN with a lower id than one already opened', async (t) => {
  const peer = helloedPeer(t);
  peer.send(encodeFrame(FrameType.Open, 5), encodeFrame(FrameType.Open, 3));
  await expectAbort(t, peer, protocolError(/reuses stream id 3/));
});

t.test("OPEN with the other side's id parity", async (t) => {
  for (const [role, id] of [
    ['server', 2],
    ['client', 1],
  ] as const) {
    await t.test(`${role} gets OPEN ${id}`, async (t) => {
      const peer = helloedPeer(t, { role });
      peer.send(encodeFrame(FrameType.Open, id));
      await expectAbort(t, peer, protocolError(/parity/));
    });
  }
});

t.test('frames on a stream that was never opened', async (t) => {
  const cases: Array<[string, Buffer, RegExp]> = [
    [
      'DATA on a peer id',
      encodeFrame(FrameType.Data, 7, Buffer.from('x')),
      /stream 7, which the peer never opened/,
    ],
    ['FIN on a peer id', encodeFrame(FrameType.Fin, 9), /stream 9, which the peer never opened/],
    ['WINDOW on a local id', encodeWindow(4, 100), /stream 4, which this side never opened/],
    ['RST on a local id', encodeRst(2, Reason.Cancel), /stream 2, which this side never opened/],
  ];
  for (const [name, frame, message] of cases) {
    await t.test(name, async (t) => {
      const peer = helloedPeer(t);
      peer.send(frame);
      await expectAbort(t, peer, protocolError(message));
    });
  }
});

t.test('OPEN with metadata over maxMetadata is refused; the session stays up', async (t) => {
  const peer = helloedPeer(t, { ...server, maxMetadata: 256 });
  peer.send(encodeFrame(FrameType.Open, 1, Buffer.alloc(257, 0x61)));
  const rst = await peer.rst(1);
  t.equal(rst.reason, Reason.MetadataTooLarge);
  t.equal(peer.accepted.length, 0, 'no stream event');
  const exact = Buffer.alloc(256, 0x62);
  peer.send(encodeFrame(FrameType.Open, 3, exact));
  await peer.roundTrip('after');
  t.equal(peer.accepted.length, 1, 'a stream at the limit is accepted');
  t.same(peer.accepted[0]?.metadata, exact);
  t.notOk(peer.session.closed, 'session still open');
  t.same(peer.goAways(), [], 'no GOAWAY');
  t.same(escaped, []);
});

t.test('OPEN beyond maxConcurrentStreams is refused; the session stays up', async (t) => {
  const peer = helloedPeer(t, { ...server, maxConcurrentStreams: 2 });
  peer.send(encodeFrame(FrameType.Open, 1), encodeFrame(FrameType.Open, 3), encodeFrame(FrameType.Open, 5));
  const rst = await peer.rst(5);
  t.equal(rst.reason, Reason.RefusedStream);
  t.equal(peer.accepted.length, 2);
  // Ending one stream makes room for the next.
  peer.send(encodeRst(1, Reason.Cancel), encodeFrame(FrameType.Open, 7));
  await peer.roundTrip('room');
  t.same(
    peer.accepted.map((s) => s.id),
    [1, 3, 7],
  );
  t.notOk(peer.session.closed, 'session still open');
  t.same(peer.goAways(), []);
  t.same(escaped, []);
});

t.test("openStream beyond the peer's concurrency limit throws StreamRefusedError", async (t) => {
  const peer = rawPeer(t, server);
  peer.hello({ maxConcurrentStreams: 1 });
  t.throws(() => peer.session.openStream(), { code: 'BURROW_ERR_HANDSHAKE' }, 'not before ready');
  await peer.session.ready;
  const first = peer.session.openStream();
  first.on('error', () => {});
  t.throws(() => peer.session.openStream(), {
    name: 'StreamRefusedError',
    code: 'BURROW_ERR_STREAM_REFUSED',
  });
  t.throws(
    () => peer.session.openStream(Buffer.alloc(PEER_HELLO.maxMetadata + 1)),
    { code: 'BURROW_ERR_STREAM_REFUSED' },
    'the concurrency check comes first',
  );
  peer.send(encodeRst(first.id, Reason.Cancel));
  await peer.roundTrip('freed');
  const second = peer.session.openStream();
  second.on('error', () => {});
  t.equal(second.id, first.id + 2, 'the slot is free again once the peer reset the first stream');
  t.throws(() => peer.session.openStream(), { code: 'BURROW_ERR_STREAM_REFUSED' });
  t.notOk(peer.session.closed);
});

t.test("openStream with metadata over the peer's limit throws MetadataTooLargeError", async (t) => {
  const peer = rawPeer(t, server);
  peer.hello({ maxMetadata: 300 });
  await peer.session.ready;
  t.throws(() => peer.session.openStream(Buffer.alloc(301)), { code: 'BURROW_ERR_METADATA_TOO_LARGE' });
  const ok = peer.session.openStream(Buffer.alloc(300, 7));
  ok.on('error', () => {});
  const open = await peer.waitFor((f) => f.type === FrameType.Open && f.streamId === ok.id);
  t.same(open.payload, Buffer.alloc(300, 7), 'metadata at the limit goes out whole');
  t.equal(ok.metadata.byteLength, 0, 'the opener does not keep what it sent');
});

t.test('stream id exhaustion throws StreamIdsExhaustedError and sends GOAWAY', async (t) => {
  for (const [role, first] of [
    ['client', MAX_STREAM_ID],
    ['server', MAX_STREAM_ID - 1],
  ] as const) {
    await t.test(role, async (t) => {
      const peer = helloedPeer(t, { role, firstStreamId: first });
      await peer.session.ready;
      const last = peer.session.openStream(Buffer.from('last'));
      last.on('error', () => {});
      t.equal(last.id, first);
      const open = await peer.waitFor((f) => f.type === FrameType.Open);
      t.equal(open.streamId, first, 'the highest id goes on the wire intact');
      t.throws(() => peer.session.openStream(), {
        name: 'StreamIdsExhaustedError',
        code: 'BURROW_ERR_STREAM_IDS_EXHAUSTED',
      });
      await peer.waitFor((f) => f.type === FrameType.GoAway);
      t.same(
        peer.goAways().map((g) => g.reason),
        [Reason.StreamIdsExhausted],
      );
      t.ok(peer.session.draining, 'draining');
      t.notOk(peer.session.closed, 'the last stream may still finish');
      t.throws(() => peer.session.openStream(), { code: 'BURROW_ERR_GOAWAY' }, 'later opens see the drain');

      // Both sides finish the last stream; the drained session then closes cleanly.
      last.end();
      await peer.waitFor((f) => f.type === FrameType.Fin && f.streamId === first);
      peer.send(encodeFrame(FrameType.Fin, first));
      t.equal(await peer.sessionClosed, undefined, 'clean close');
      await peer.transportClosed;
      t.equal(peer.sessionEnd.closeCode, 1000);
      t.same(escaped, []);
    });
  }
});

t.test("the peer's GOAWAY", async (t) => {
  await t.test('Shutdown with no streams open: a clean close', async (t) => {
    const peer = helloedPeer(t);
    const goaway = once(peer.session, 'goaway');
    peer.send(encodeGoAway({ lastStreamId: 0, reason: Reason.Shutdown, message: 'bye' }));
    t.match((await goaway)[0], { reason: Reason.Shutdown, message: 'bye', lastStreamId: 0 });
    t.equal(await peer.sessionClosed, undefined);
    await peer.transportClosed;
    t.equal(peer.sessionEnd.closeCode, 1000);
  });

  await t.test('an error reason with no streams open: the close reports it', async (t) => {
    const peer = helloedPeer(t);
    peer.send(encodeGoAway({ lastStreamId: 0, reason: Reason.InternalError, message: 'boom' }));
    t.match(await peer.sessionClosed, {
      code: 'BURROW_ERR_PROTOCOL',
      message: 'peer closed the session: InternalError: boom',
    });
    await peer.transportClosed;
    t.same(peer.goAways(), [], 'no GOAWAY back: this side is not at fault');
  });

  await t.test('an error reason, then the transport close: the close reports the GOAWAY', async (t) => {
    const peer = helloedPeer(t);
    peer.send(encodeFrame(FrameType.Open, 1));
    await peer.roundTrip('open');
    peer.send(encodeGoAway({ lastStreamId: 0, reason: Reason.KeepaliveTimeout, message: 'no PONG' }));
    peer.end.close(4000 + Reason.KeepaliveTimeout, 'BURROW_ERR_KEEPALIVE_TIMEOUT');
    const err = await peer.sessionClosed;
    t.match(err, {
      code: 'BURROW_ERR_PROTOCOL',
      message: 'peer closed the session: KeepaliveTimeout: no PONG',
    });
    t.match(
      peer.accepted[0]?.errored,
      { code: 'BURROW_ERR_SESSION_CLOSED', cause: err },
      'open streams fail with it',
    );
  });

  await t.test('an error reason and no close: the session does not wait for one', async (t) => {
    const peer = helloedPeer(t);
    peer.send(encodeFrame(FrameType.Open, 1));
    await peer.roundTrip('open');
    peer.send(encodeGoAway({ lastStreamId: 0, reason: Reason.InternalError, message: 'gave up' }));
    const err = await peer.sessionClosed;
    t.match(err, { message: 'peer closed the session: InternalError: gave up' });
    t.match(peer.accepted[0]?.errored, { code: 'BURROW_ERR_SESSION_CLOSED', cause: err });
    await peer.transportClosed;
    t.equal(peer.sessionEnd.closeCode, 4000 + Reason.InternalError, "closed with the peer's own code");
    t.same(peer.goAways(), [], 'no GOAWAY back');
  });

  await t.test('streams this side opened past lastStreamId are refused', async (t) => {
    const peer = helloedPeer(t);
    await peer.session.ready;
    const kept = peer.session.openStream();
    kept.on('error', () => {});
    const refused = peer.session.openStream();
    const error = once(refused, 'error');
    peer.send(encodeGoAway({ lastStreamId: kept.id, reason: Reason.Shutdown, message: '' }));
    t.match((await error)[0], { code: 'BURROW_ERR_STREAM_RESET', reason: Reason.RefusedStream });
    t.notOk(kept.destroyed, 'the accepted stream carries on');
    t.notOk(peer.session.closed, 'draining, not closed');
    t.throws(() => peer.session.openStream(), { code: 'BURROW_ERR_GOAWAY' });
  });
});
