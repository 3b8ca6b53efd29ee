/**
 * Seeded, bounded fuzzing of the decoder and of a live session. Every seed is
 * fixed, so a failure names the seed that replays it.
 */
import t from 'tap';
import { BurrowError } from '../src/errors.js';
import { decodeFrame, decodeGoAway, decodeHello, decodeRst, decodeWindow } from '../src/protocol/decode.js';
import {
  encodeFrame,
  encodeGoAway,
  encodeHello,
  encodePing,
  encodeRst,
  encodeWindow,
} from '../src/protocol/encode.js';
import { FrameType, HEADER_LENGTH, MAX_STREAM_ID, MAX_WINDOW, Reason } from '../src/protocol/frame.js';
import type { SessionOptions } from '../src/protocol/session.js';
import { mulberry32, type Rng } from './helpers/prng.js';
import { rawPeer, recordEscaped } from './helpers/raw-peer.js';

const escaped = recordEscaped();

const REASONS = Object.values(Reason).filter((v): v is Reason => typeof v === 'number');

function streamId(rng: Rng): number {
  // Mostly ids a session could know about, so the fuzz reaches the stream state machines.
  return rng() < 0.8 ? rng.pick([1, 2, 3, 4, 5, 7, 9]) : rng.pick([0, MAX_STREAM_ID, rng.u32()]);
}

/** A frame that is well formed on its own (it may still be wrong for the session's state). */
function validFrame(rng: Rng): Buffer {
  switch (rng.int(10)) {
    case 0:
      return encodeHello({
        version: rng.int(3),
        maxConcurrentStreams: rng.pick([1, 2, 100, 2 ** 31]),
        initialWindow: rng.pick([1023, 1024, 65_536, MAX_WINDOW]),
        maxFramePayload: rng.pick([1024, 65_536, 2 ** 32 - 1]),
        maxMetadata: rng.pick([255, 256, 16_384]),
      });
    case 1:
      return encodeFrame(
        FrameType.Open,
        rng.pick([1, 3, 5, 7, 9, 2]),
        rng.bytes(rng.pick([0, 10, 256, 300])),
      );
    case 2:
    case 3:
      return encodeFrame(FrameType.Data, streamId(rng), rng.bytes(rng.pick([0, 1, 100, 1024, 1500])));
    case 4:
      return encodeWindow(streamId(rng), rng.pick([1, 1024, MAX_WINDOW, 2 ** 32 - 1, rng.u32() || 1]));
    case 5:
      return encodeFrame(FrameType.Fin, streamId(rng));
    case 6:
      return encodeRst(streamId(rng), rng.pick(REASONS), rng.pick(['', 'x', 'ünïcødé']));
    case 7:
      return encodePing(rng() < 0.5 ? FrameType.Ping : FrameType.Pong, rng.bytes(8));
    case 8:
      return encodeGoAway({
        lastStreamId: streamId(rng),
        reason: rng.pick(REASONS),
        message: rng.pick(['', 'drain']),
      });
    default:
      return encodeFrame(rng.int(FrameType.GoAway + 1), streamId(rng), rng.bytes(rng.int(40)));
  }
}

/** A valid frame with one to three mutations: bit flips, truncation, extension, header field changes. */
function mutatedFrame(rng: Rng): Buffer {
  let buf = Buffer.from(validFrame(rng));
  for (let n = 1 + rng.int(3); n > 0; n--) {
    switch (rng.int(6)) {
      case 0: // flip one bit
        if (buf.byteLength > 0) {
          const i = rng.int(buf.byteLength);
          buf[i] = buf[i]! ^ (1 << rng.int(8));
        }
        break;
      case 1: // truncate
        buf = buf.subarray(0, rng.int(buf.byteLength + 1));
        break;
      case 2: // extend
        buf = Buffer.concat([buf, rng.bytes(1 + rng.int(16))]);
        break;
      case 3: // change a header byte: version, type, flags or reserved
        if (buf.byteLength >= 4) buf[rng.int(4)] = rng.pick([0, 1, 2, 8, 9, 0x80, 0xff, rng.int(256)]);
        break;
      case 4: // change the stream id
        if (buf.byteLength >= 8) buf.writeUInt32BE(streamId(rng), 4);
        break;
      default: // change the length field, sometimes keeping it consistent with the payload
        if (buf.byteLength >= HEADER_LENGTH) {
          const consistent = rng() < 0.3;
          if (consistent) {
            buf = Buffer.concat([buf.subarray(0, HEADER_LENGTH), rng.bytes(rng.int(64))]);
            buf.writeUInt32BE(buf.byteLength - HEADER_LENGTH, 8);
          } else {
            buf.writeUInt32BE(rng.pick([0, 4, 8, 20, 2 ** 32 - 1, rng.u32()]), 8);
          }
        }
    }
  }
  return buf;
}

/**
 * A peer's side of a conversation: OPENs with the right parity and rising ids,
 * then DATA, WINDOW, FIN, RST and PING on streams that exist. Still able to
 * break rules (DATA after FIN, DATA beyond credit), as a buggy peer would.
 */
function plausibleFrames(rng: Rng, role: 'client' | 'server', ownIds: number[], count: number): Buffer[] {
  let next = role === 'server' ? 1 : 2;
  const known = [...ownIds];
  const frames: Buffer[] = [];
  for (let i = 0; i < count; i++) {
    const r = rng.int(7);
    if (r === 0 || known.length === 0) {
      known.push(next);
      frames.push(encodeFrame(FrameType.Open, next, rng.bytes(rng.int(200))));
      next += 2;
      continue;
    }
    const id = rng.pick(known);
    if (r <= 2) frames.push(encodeFrame(FrameType.Data, id, rng.bytes(rng.int(600))));
    else if (r === 3) frames.push(encodeWindow(id, 1 + rng.int(65_536)));
    else if (r === 4) frames.push(encodeFrame(FrameType.Fin, id));
    else if (r === 5) frames.push(encodeRst(id, rng.pick(REASONS), 'fuzz'));
    else frames.push(encodePing(FrameType.Ping, rng.bytes(8)));
  }
  return frames;
}

function randomBytes(rng: Rng): Buffer {
  const buf = rng.bytes(rng.int(48));
  // Often give random junk a plausible version byte so it gets past the first check.
  if (buf.byteLength > 0 && rng() < 0.5) buf[0] = 1;
  return buf;
}

function fuzzMessage(rng: Rng): Buffer {
  const r = rng();
  return r < 0.4 ? validFrame(rng) : r < 0.8 ? mutatedFrame(rng) : randomBytes(rng);
}

/** What decodeFrame plus the matching payload decoder does with `msg`: a frame, or a thrown error. */
function decodeFully(msg: Buffer, maxFramePayload: number): unknown {
  const frame = decodeFrame(msg, maxFramePayload);
  switch (frame.type) {
    case FrameType.Hello:
      return decodeHello(frame.payload);
    case FrameType.Window:
      return decodeWindow(frame.payload);
    case FrameType.Rst:
      return decodeRst(frame.payload);
    case FrameType.GoAway:
      return decodeGoAway(frame.payload);
    default:
      return frame;
  }
}

function isBurrowError(err: unknown): boolean {
  return err instanceof BurrowError && /^BURROW_ERR_[A-Z_]+$/.test(err.code);
}

t.test('decodeFrame returns a frame or throws a BurrowError, nothing else', async (t) => {
  const rng = mulberry32(0xdec0de);
  let decoded = 0;
  let rejected = 0;
  const bad: string[] = [];
  for (let i = 0; i < 20_000; i++) {
    const msg = fuzzMessage(rng);
    const limit = rng.pick([1024, 64 * 1024]);
    try {
      decodeFully(msg, limit);
      decoded++;
    } catch (err) {
      rejected++;
      if (!isBurrowError(err) && bad.length < 5) bad.push(`${msg.toString('hex')}: ${String(err)}`);
    }
  }
  t.same(bad, [], 'only BurrowErrors are thrown');
  // A fuzzer that only ever hits one branch proves little.
  t.ok(decoded > 2000, `${decoded} inputs decoded`);
  t.ok(rejected > 2000, `${rejected} inputs rejected`);
});

t.test('a session fed fuzzed frames stays up or closes with a BURROW_ERR_ code', async (t) => {
  const ITERATIONS = 2000;
  const outcomes = { open: 0, closedWithError: 0, closedByGoAway: 0 };
  const codes = new Set<string>();
  const bad: string[] = [];
  for (let seed = 1; seed <= ITERATIONS; seed++) {
    const rng = mulberry32(seed);
    const small = rng() < 0.5;
    const options: SessionOptions = {
      role: rng() < 0.5 ? 'server' : 'client',
      // Small limits make flow-control and size errors reachable with short frames.
      ...(small && { initialWindow: 1024, maxFramePayload: 1024, maxMetadata: 256, maxConcurrentStreams: 2 }),
    };
    const peer = rawPeer(t, options, { accept: false });
    const session = peer.session;
    let goAwayReceived = false;
    session.on('goaway', () => {
      goAwayReceived = true;
    });
    session.on('stream', (s) => {
      s.on('error', () => {});
      const mode = rng.int(3);
      if (mode === 0) s.pipe(s);
      else if (mode === 1) s.resume();
      // mode 2: never read, so credit runs out
    });
    peer.hello();
    const ownIds: number[] = [];
    if (rng() < 0.5) {
      // A stream of our own, so frames on this side's ids can be valid too.
      await session.ready;
      const own = session.openStream(rng.bytes(rng.int(64)));
      own.on('error', () => {});
      own.write(rng.bytes(rng.int(4096)));
      ownIds.push(own.id);
    }
    const count = 1 + rng.int(8);
    const mode = rng();
    if (mode < 0.4) {
      // Plausible conversations probe the stream state machines rather than the decoder.
      peer.send(...plausibleFrames(rng, options.role, ownIds, count));
    } else {
      for (let i = 0; i < count; i++) peer.send(mode < 0.6 ? validFrame(rng) : fuzzMessage(rng));
    }

    // A PING after the fuzz: its PONG proves the session processed everything and is alive.
    const alive = peer.roundTrip(`f${seed}`).then(
      () => true,
      () => false,
    );
    const closed = peer.sessionClosed.then(() => false);
    const stillOpen = await Promise.race([alive, closed]);
    const error = session.closed ? await peer.sessionClosed : undefined;
    if (stillOpen && !session.closed) {
      outcomes.open++;
    } else if (!session.closed) {
      bad.push(`seed ${seed}: no PONG, yet the session is open`);
    } else if (error === undefined) {
      if (goAwayReceived) outcomes.closedByGoAway++;
      else bad.push(`seed ${seed}: closed without an error and without a GOAWAY`);
    } else if (isBurrowError(error)) {
      outcomes.closedWithError++;
      codes.add((error as BurrowError).code);
    } else {
      bad.push(`seed ${seed}: closed with ${String(error)}`);
    }
    session.destroy(); // now, not at teardown: 2,000 idle sessions add up
    if (bad.length >= 5) break;
  }
  t.same(bad, [], 'every session stayed up or closed with a BURROW_ERR_ code');
  t.same(escaped, [], 'nothing escaped a session');
  t.ok(outcomes.open > 100, `${outcomes.open} sessions survived`);
  t.ok(outcomes.closedWithError > 100, `${outcomes.closedWithError} sessions closed with an error`);
  t.comment(`outcomes ${JSON.stringify(outcomes)}; codes ${[...codes].sort().join(', ')}`);
  for (const code of ['BURROW_ERR_PROTOCOL', 'BURROW_ERR_FRAME_SIZE', 'BURROW_ERR_FLOW_CONTROL']) {
    t.ok(codes.has(code), `reached ${code}`);
  }
});
