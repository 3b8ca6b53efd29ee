import t from 'tap';
import { BurrowError, FrameSizeError, ProtocolError } from '../src/errors.js';
import { decodeFrame, decodeGoAway, decodeHello, decodeRst, decodeWindow } from '../src/protocol/decode.js';
import {
  encodeFrame,
  encodeGoAway,
  encodeHello,
  encodePing,
  encodeRst,
  encodeWindow,
} from '../src/protocol/encode.js';
import {
  FRAME_VERSION,
  FrameType,
  HEADER_LENGTH,
  HELLO_LENGTH,
  MAX_REASON_MESSAGE,
  MAX_STREAM_ID,
  MAX_WINDOW,
  PING_LENGTH,
  Reason,
} from '../src/protocol/frame.js';

const MAX_PAYLOAD = 64 * 1024;
const PROTOCOL = { name: 'ProtocolError', code: 'BURROW_ERR_PROTOCOL', reason: Reason.ProtocolError };
const FRAME_SIZE = { name: 'FrameSizeError', code: 'BURROW_ERR_FRAME_SIZE', reason: Reason.FrameSizeError };

const hello = {
  version: 1,
  maxConcurrentStreams: 8192,
  initialWindow: 256 * 1024,
  maxFramePayload: 64 * 1024,
  maxMetadata: 16 * 1024,
};
const metadata = Buffer.from(JSON.stringify({ route: 'web.example', head: 'GET / HTTP/1.1' }));
const pingPayload = Buffer.from('0123abcd');

/** One valid frame of every type, with what its payload decodes to. */
const table: Array<{
  name: string;
  bytes: Buffer;
  type: FrameType;
  streamId: number;
  check: (p: Buffer) => unknown;
  want: unknown;
}> = [
  {
    name: 'HELLO',
    bytes: encodeHello(hello),
    type: FrameType.Hello,
    streamId: 0,
    check: decodeHello,
    want: hello,
  },
  {
    name: 'HELLO at the field limits',
    bytes: encodeHello({
      version: 0xffff,
      maxConcurrentStreams: 2 ** 31,
      initialWindow: MAX_WINDOW,
      maxFramePayload: 2 ** 32 - 1,
      maxMetadata: 2 ** 32 - 1,
    }),
    type: FrameType.Hello,
    streamId: 0,
    check: decodeHello,
    want: {
      version: 0xffff,
      maxConcurrentStreams: 2 ** 31,
      initialWindow: MAX_WINDOW,
      maxFramePayload: 2 ** 32 - 1,
      maxMetadata: 2 ** 32 - 1,
    },
  },
  {
    name: 'OPEN with metadata',
    bytes: encodeFrame(FrameType.Open, 1, metadata),
    type: FrameType.Open,
    streamId: 1,
    check: (p) => Buffer.from(p),
    want: metadata,
  },
  {
    name: 'OPEN without metadata',
    bytes: encodeFrame(FrameType.Open, 2),
    type: FrameType.Open,
    streamId: 2,
    check: (p) => p.byteLength,
    want: 0,
  },
  {
    name: 'DATA',
    bytes: encodeFrame(FrameType.Data, MAX_STREAM_ID, Buffer.from('hello, tunnel')),
    type: FrameType.Data,
    streamId: MAX_STREAM_ID,
    check: (p) => p.toString(),
    want: 'hello, tunnel',
  },
  {
    name: 'empty DATA',
    bytes: encodeFrame(FrameType.Data, 3, Buffer.alloc(0)),
    type: FrameType.Data,
    streamId: 3,
    check: (p) => p.byteLength,
    want: 0,
  },
  {
    name: 'WINDOW',
    bytes: encodeWindow(5, 65_536),
    type: FrameType.Window,
    streamId: 5,
    check: decodeWindow,
    want: 65_536,
  },
  {
    name: 'WINDOW of 2^31-1',
    bytes: encodeWindow(5, MAX_WINDOW),
    type: FrameType.Window,
    streamId: 5,
    check: decodeWindow,
    want: MAX_WINDOW,
  },
  {
    name: 'FIN',
    bytes: encodeFrame(FrameType.Fin, 7),
    type: FrameType.Fin,
    streamId: 7,
    check: (p) => p.byteLength,
    want: 0,
  },
  {
    name: 'RST with message',
    bytes: encodeRst(9, Reason.ConnectRefused, 'backend said no ✓'),
    type: FrameType.Rst,
    streamId: 9,
    check: decodeRst,
    want: { reason: Reason.ConnectRefused, message: 'backend said no ✓' },
  },
  {
    name: 'RST without message',
    bytes: encodeRst(9, Reason.Cancel),
    type: FrameType.Rst,
    streamId: 9,
    check: decodeRst,
    want: { reason: Reason.Cancel, message: '' },
  },
  {
    name: 'PING',
    bytes: encodePing(FrameType.Ping, pingPayload),
    type: FrameType.Ping,
    streamId: 0,
    check: (p) => p.toString(),
    want: '0123abcd',
  },
  {
    name: 'PONG',
    bytes: encodePing(FrameType.Pong, pingPayload),
    type: FrameType.Pong,
    streamId: 0,
    check: (p) => p.toString(),
    want: '0123abcd',
  },
  {
    name: 'GOAWAY',
    bytes: encodeGoAway({ lastStreamId: 41, reason: Reason.Shutdown, message: 'relay restarting' }),
    type: FrameType.GoAway,
    streamId: 0,
    check: decodeGoAway,
    want: { lastStreamId: 41, reason: Reason.Shutdown, message: 'relay restarting' },
  },
];

t.test('every frame type round-trips through encode, decodeFrame and its payload decoder', async (t) => {
  for (const row of table) {
    const frame = decodeFrame(row.bytes, MAX_PAYLOAD);
    t.match(
      frame,
      {
        version: FRAME_VERSION,
        type: row.type,
        flags: 0,
        streamId: row.streamId,
        length: row.bytes.byteLength - HEADER_LENGTH,
      },
      `${row.name}: header`,
    );
    t.same(row.check(frame.payload), row.want, `${row.name}: payload`);
  }
  t.equal(new Set(table.map((r) => r.type)).size, FrameType.GoAway + 1, 'the table covers every frame type');
});

t.test('header layout is big-endian as docs/protocol.md draws it', async (t) => {
  const bytes = encodeWindow(0x01020304, 0x0a0b0c0d);
  t.same([...bytes], [1, FrameType.Window, 0, 0, 1, 2, 3, 4, 0, 0, 0, 4, 0x0a, 0x0b, 0x0c, 0x0d]);
});

t.test('reason messages are cut to the limit on a character boundary', async (t) => {
  // 200 two-byte characters = 400 bytes; the 256-byte cut would split one in half at odd offsets.
  const long = 'é'.repeat(100) + 'x' + 'é'.repeat(100);
  const rst = decodeRst(decodeFrame(encodeRst(1, Reason.Cancel, long), MAX_PAYLOAD).payload);
  t.ok(Buffer.byteLength(rst.message) <= MAX_REASON_MESSAGE, 'within the limit');
  t.ok(long.startsWith(rst.message), 'a prefix of the original');
  t.equal(Buffer.byteLength(rst.message), 255, 'backs off over the split character');
  const goAway = decodeGoAway(
    decodeFrame(
      encodeGoAway({ lastStreamId: 0, reason: Reason.Shutdown, message: '€'.repeat(200) }),
      MAX_PAYLOAD,
    ).payload,
  );
  t.equal(goAway.message, '€'.repeat(85), '3-byte characters: 85 fit in 256 bytes');
});

t.test('a frame split at any offset is rejected: one message is one frame', async (t) => {
  for (const row of table) {
    for (let cut = 0; cut < row.bytes.byteLength; cut++) {
      t.throws(
        () => decodeFrame(row.bytes.subarray(0, cut), MAX_PAYLOAD),
        PROTOCOL,
        `${row.name} cut at ${cut}`,
      );
    }
    // The whole message still decodes: the cut, not the frame, is what failed.
    t.doesNotThrow(() => decodeFrame(row.bytes, MAX_PAYLOAD), `${row.name} whole`);
  }
  for (const [first, second] of [
    [table[0]!, table[2]!],
    [table[4]!, table[8]!],
    [table[8]!, table[8]!],
  ] as const) {
    t.throws(
      () => decodeFrame(Buffer.concat([first.bytes, second.bytes]), MAX_PAYLOAD),
      { ...PROTOCOL, message: /length field/ },
      `${first.name} + ${second.name} in one message`,
    );
  }
});

/** A valid frame with one header byte changed. */
function patched(bytes: Buffer, offset: number, value: number): Buffer {
  const copy = Buffer.from(bytes);
  copy[offset] = value;
  return copy;
}
function withLength(bytes: Buffer, length: number): Buffer {
  const copy = Buffer.from(bytes);
  copy.writeUInt32BE(length, 8);
  return copy;
}

t.test('malformed headers are rejected with their specific error', async (t) => {
  const data = encodeFrame(FrameType.Data, 1, Buffer.from('abc'));
  for (const version of [0, 2, 255]) {
    t.throws(
      () => decodeFrame(patched(data, 0, version), MAX_PAYLOAD),
      { ...PROTOCOL, message: /version/ },
      `version ${version}`,
    );
  }
  for (const type of [FrameType.GoAway + 1, 0x0f, 0xff]) {
    t.throws(
      () => decodeFrame(patched(data, 1, type), MAX_PAYLOAD),
      { ...PROTOCOL, message: /unknown frame type/ },
      `type ${type}`,
    );
  }
  for (const [offset, value] of [
    [2, 0x01],
    [2, 0x80],
    [3, 0x01],
    [3, 0xff],
  ] as const) {
    t.throws(
      () => decodeFrame(patched(data, offset, value), MAX_PAYLOAD),
      { ...PROTOCOL, message: /reserved header bits/ },
      `byte ${offset} = ${value}`,
    );
  }
  for (const length of [0, 2, 4, 2 ** 32 - 1]) {
    t.throws(
      () => decodeFrame(withLength(data, length), MAX_PAYLOAD),
      { ...PROTOCOL, message: /length field/ },
      `length ${length}`,
    );
  }
  t.throws(
    () => decodeFrame(Buffer.alloc(0), MAX_PAYLOAD),
    { ...PROTOCOL, message: /shorter than/ },
    'empty message',
  );
});

t.test('a payload over the limit is a frame-size error; at the limit it is fine', async (t) => {
  const atLimit = encodeFrame(FrameType.Data, 1, Buffer.alloc(MAX_PAYLOAD));
  t.equal(decodeFrame(atLimit, MAX_PAYLOAD).length, MAX_PAYLOAD);
  const over = encodeFrame(FrameType.Data, 1, Buffer.alloc(MAX_PAYLOAD + 1));
  t.throws(() => decodeFrame(over, MAX_PAYLOAD), FRAME_SIZE);
  t.type(
    catchError(() => decodeFrame(over, MAX_PAYLOAD)),
    FrameSizeError,
  );
  const bigOpen = encodeFrame(FrameType.Open, 1, Buffer.alloc(2000));
  t.throws(() => decodeFrame(bigOpen, 1024), FRAME_SIZE, 'OPEN too');
});

t.test('frames on the wrong stream are protocol errors', async (t) => {
  for (const type of [FrameType.Open, FrameType.Data, FrameType.Fin]) {
    t.throws(
      () => decodeFrame(encodeFrame(type, 0), MAX_PAYLOAD),
      { ...PROTOCOL, message: /on stream 0/ },
      `${FrameType[type]} on 0`,
    );
  }
  t.throws(
    () => decodeFrame(encodeWindow(0, 1), MAX_PAYLOAD),
    { ...PROTOCOL, message: /on stream 0/ },
    'WINDOW on 0',
  );
  t.throws(
    () => decodeFrame(encodeRst(0, Reason.Cancel), MAX_PAYLOAD),
    { ...PROTOCOL, message: /on stream 0/ },
    'RST on 0',
  );
  const connectionLevel: Array<[string, Buffer]> = [
    ['PING', encodePing(FrameType.Ping, pingPayload)],
    ['PONG', encodePing(FrameType.Pong, pingPayload)],
    ['HELLO', encodeHello(hello)],
    ['GOAWAY', encodeGoAway({ lastStreamId: 0, reason: Reason.NoError, message: '' })],
  ];
  for (const [name, bytes] of connectionLevel) {
    for (const id of [1, 2, MAX_STREAM_ID]) {
      const moved = Buffer.from(bytes);
      moved.writeUInt32BE(id, 4);
      t.throws(
        () => decodeFrame(moved, MAX_PAYLOAD),
        { ...PROTOCOL, message: /must be 0/ },
        `${name} on stream ${id}`,
      );
    }
  }
});

t.test('payload lengths are checked per type', async (t) => {
  const cases: Array<[string, Buffer]> = [
    ['HELLO of 19 bytes', encodeFrame(FrameType.Hello, 0, Buffer.alloc(HELLO_LENGTH - 1))],
    ['WINDOW of 3 bytes', encodeFrame(FrameType.Window, 1, Buffer.alloc(3))],
    ['WINDOW of 5 bytes', encodeFrame(FrameType.Window, 1, Buffer.alloc(5))],
    ['FIN with a payload', encodeFrame(FrameType.Fin, 1, Buffer.alloc(1))],
    ['RST of 3 bytes', encodeFrame(FrameType.Rst, 1, Buffer.alloc(3))],
    ['RST of 4 + 257 bytes', encodeFrame(FrameType.Rst, 1, Buffer.alloc(4 + MAX_REASON_MESSAGE + 1))],
    ['GOAWAY of 7 bytes', encodeFrame(FrameType.GoAway, 0, Buffer.alloc(7))],
    ['GOAWAY of 8 + 257 bytes', encodeFrame(FrameType.GoAway, 0, Buffer.alloc(8 + MAX_REASON_MESSAGE + 1))],
    ['PING of 7 bytes', encodeFrame(FrameType.Ping, 0, Buffer.alloc(PING_LENGTH - 1))],
    ['PING of 9 bytes', encodeFrame(FrameType.Ping, 0, Buffer.alloc(PING_LENGTH + 1))],
    ['PONG of 0 bytes', encodeFrame(FrameType.Pong, 0)],
  ];
  for (const [name, bytes] of cases) t.throws(() => decodeFrame(bytes, MAX_PAYLOAD), PROTOCOL, name);
  // The boundaries themselves are valid.
  t.doesNotThrow(() =>
    decodeFrame(encodeFrame(FrameType.Rst, 1, Buffer.alloc(4 + MAX_REASON_MESSAGE)), MAX_PAYLOAD),
  );
  t.doesNotThrow(() =>
    decodeFrame(encodeFrame(FrameType.GoAway, 0, Buffer.alloc(8 + MAX_REASON_MESSAGE)), MAX_PAYLOAD),
  );
  // Longer HELLOs are allowed (future fields); the extra bytes are ignored.
  const longHello = encodeFrame(
    FrameType.Hello,
    0,
    Buffer.concat([encodeHello(hello).subarray(HEADER_LENGTH), Buffer.alloc(8, 0xee)]),
  );
  t.same(decodeHello(decodeFrame(longHello, MAX_PAYLOAD).payload), hello);
});

t.test('payload contents are checked by the payload decoders', async (t) => {
  t.throws(
    () => decodeWindow(Buffer.alloc(4)),
    { ...PROTOCOL, message: /increment of 0/ },
    'WINDOW increment 0',
  );
  const helloPayload = Buffer.from(encodeHello(hello).subarray(HEADER_LENGTH));
  helloPayload[3] = 1;
  t.throws(() => decodeHello(helloPayload), { ...PROTOCOL, message: /reserved/ }, 'HELLO reserved field');
  const badUtf8 = [
    Buffer.from([0xff]),
    Buffer.from([0xc3]),
    Buffer.from([0xe2, 0x82]),
    Buffer.from([0xed, 0xa0, 0x80]),
  ];
  for (const bad of badUtf8) {
    const rst = Buffer.concat([Buffer.from([0, 0, 0, Reason.Cancel]), Buffer.from('ok '), bad]);
    t.throws(
      () => decodeRst(rst),
      { ...PROTOCOL, message: /UTF-8/ },
      `RST message with ${bad.toString('hex')}`,
    );
    const goAway = Buffer.concat([Buffer.alloc(4), Buffer.from([0, 0, 0, Reason.Shutdown]), bad]);
    t.throws(
      () => decodeGoAway(goAway),
      { ...PROTOCOL, message: /UTF-8/ },
      `GOAWAY message with ${bad.toString('hex')}`,
    );
  }
});

t.test('every decoder failure is a BurrowError carrying a wire reason', async (t) => {
  const err = catchError(() => decodeFrame(patched(encodeFrame(FrameType.Fin, 1), 0, 9), MAX_PAYLOAD));
  t.type(err, ProtocolError);
  t.type(err, BurrowError);
  t.equal((err as ProtocolError).reason, Reason.ProtocolError);
});

function catchError(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  throw new Error('expected a throw');
}
