import { randomBytes } from 'node:crypto';
import { PassThrough } from 'node:stream';
import t from 'tap';
import {
  FramedBodyReader,
  type HeaderPairs,
  MAX_BODY_RECORD,
  MAX_TRAILERS_RECORD,
  writeBodyRecord,
  writeTrailersRecord,
} from '../src/index.js';

/** What a writer put on the wire, as one buffer. */
function framed(write: (out: PassThrough) => void): Buffer {
  const out = new PassThrough();
  const chunks: Buffer[] = [];
  out.on('data', (c: Buffer) => chunks.push(c));
  write(out);
  out.end();
  return Buffer.concat(chunks);
}

/** Feeds `wire` to a reader in pieces of `step` bytes; the body, the trailers, or the error. */
async function read(
  wire: Buffer,
  step = wire.byteLength,
): Promise<{ body: Buffer; trailers?: HeaderPairs; error?: Error }> {
  let trailers: HeaderPairs | undefined;
  const reader = new FramedBodyReader((t) => {
    trailers = t;
  });
  const chunks: Buffer[] = [];
  reader.on('data', (c: Buffer) => chunks.push(c));
  const done = new Promise<Error | undefined>((resolve) => {
    reader.on('end', () => resolve(undefined));
    reader.on('error', resolve);
  });
  for (let at = 0; at < wire.byteLength; at += step) reader.write(wire.subarray(at, at + step));
  reader.end();
  const error = await done;
  return { body: Buffer.concat(chunks), ...(trailers ? { trailers } : {}), ...(error ? { error } : {}) };
}

t.test('body and trailers come back whatever the pieces they arrive in', async (t) => {
  const small = randomBytes(300);
  const large = randomBytes(MAX_BODY_RECORD + 70_000); // split into two records
  const trailers: HeaderPairs = [
    ['grpc-status', '0'],
    ['x-note', 'a value, with commas'],
  ];
  const wire = framed((out) => {
    writeBodyRecord(out, small);
    writeBodyRecord(out, Buffer.alloc(0));
    writeBodyRecord(out, large);
    writeTrailersRecord(out, trailers);
  });
  for (const step of [1, 4, 5, 6, 4096, wire.byteLength]) {
    const got = await read(step === 1 ? wire.subarray(0, 400) : wire, step);
    if (step === 1) {
      // Byte by byte over the first record and the start of the next.
      t.same(got.body, Buffer.concat([small, large]).subarray(0, got.body.byteLength));
      t.ok(got.error, 'and an end inside a record is an error');
      continue;
    }
    t.error(got.error, `pieces of ${step}`);
    t.ok(got.body.equals(Buffer.concat([small, large])), `body intact in pieces of ${step}`);
    t.same(got.trailers, trailers);
  }
  const none = await read(framed((out) => writeBodyRecord(out, small)));
  t.error(none.error, 'a body may end without trailers');
  t.equal(none.trailers, undefined);
});

t.test('records that break the format fail the body', async (t) => {
  const record = (kind: number, length: number, payload = Buffer.alloc(0)) => {
    const head = Buffer.alloc(5);
    head.writeUInt8(kind, 0);
    head.writeUInt32BE(length, 1);
    return Buffer.concat([head, payload]);
  };
  const json = (v: unknown) => Buffer.from(JSON.stringify(v));
  const cases: Array<[string, Buffer, RegExp]> = [
    ['unknown kind', record(7, 0), /unknown body record kind 7/],
    ['body record over the bound', record(0, MAX_BODY_RECORD + 1), /body record of/],
    ['trailers record over the bound', record(1, MAX_TRAILERS_RECORD + 1), /trailers record of/],
    ['trailers not JSON', record(1, 3, Buffer.from('{{{')), /invalid trailers record: not valid JSON/],
    ['trailers not pairs', record(1, 7, json({ a: 1 })), /invalid trailers record: message: /],
    [
      'bytes after the trailers',
      Buffer.concat([record(1, 2, json([])), record(0, 1, Buffer.from('x'))]),
      /bytes after the trailers record/,
    ],
    ['an end inside a prefix', Buffer.from([0, 0]), /body ended inside a record/],
    ['an end inside a payload', record(0, 10, Buffer.from('abc')), /body ended inside a record/],
  ];
  for (const [what, wire, message] of cases) {
    const got = await read(wire);
    t.match(got.error?.message, message, what);
    t.equal(got.error?.name, 'ProtocolError', `${what}: a protocol error`);
  }
});

t.test('trailers over the bound are refused by the writer', async (t) => {
  const big: HeaderPairs = [['x-big', 'v'.repeat(MAX_TRAILERS_RECORD)]];
  t.throws(() => framed((out) => writeTrailersRecord(out, big)), RangeError);
  const many: HeaderPairs = Array.from({ length: 513 }, (_, i) => [`x-${i}`, 'v']);
  t.throws(
    () => framed((out) => writeTrailersRecord(out, many)),
    { name: 'RangeError', message: /trailer fields refused/ },
    'more fields than the reader takes',
  );
  t.throws(
    () => framed((out) => writeTrailersRecord(out, [['x'.repeat(8193), 'v']])),
    RangeError,
    'a name too long',
  );
});
