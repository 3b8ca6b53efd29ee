import {
  FRAME_VERSION,
  FrameType,
  type GoAway,
  HEADER_LENGTH,
  HELLO_LENGTH,
  type Hello,
  MAX_REASON_MESSAGE,
  type Reason,
} from './frame.js';

/**
 * Writes a frame into one buffer: header and payload. One allocation per frame;
 * the payload copy is the only copy the sender makes (see docs/performance.md).
 */
export function encodeFrame(type: FrameType, streamId: number, payload?: Uint8Array, flags = 0): Buffer {
  const length = payload ? payload.byteLength : 0;
  const buf = Buffer.allocUnsafe(HEADER_LENGTH + length);
  buf[0] = FRAME_VERSION;
  buf[1] = type;
  buf[2] = flags;
  buf[3] = 0;
  buf.writeUInt32BE(streamId, 4);
  buf.writeUInt32BE(length, 8);
  if (payload && length > 0) buf.set(payload, HEADER_LENGTH);
  return buf;
}

export function encodeHello(hello: Hello): Buffer {
  const p = Buffer.alloc(HELLO_LENGTH);
  p.writeUInt16BE(hello.version, 0);
  p.writeUInt32BE(hello.maxConcurrentStreams, 4);
  p.writeUInt32BE(hello.initialWindow, 8);
  p.writeUInt32BE(hello.maxFramePayload, 12);
  p.writeUInt32BE(hello.maxMetadata, 16);
  return encodeFrame(FrameType.Hello, 0, p);
}

export function encodeWindow(streamId: number, increment: number): Buffer {
  const p = Buffer.allocUnsafe(4);
  p.writeUInt32BE(increment, 0);
  return encodeFrame(FrameType.Window, streamId, p);
}

function reasonPayload(prefix: number[], reason: Reason, message: string): Buffer {
  const text = truncateUtf8(message, MAX_REASON_MESSAGE);
  const p = Buffer.allocUnsafe(4 * prefix.length + 4 + text.byteLength);
  let off = 0;
  for (const n of prefix) off = p.writeUInt32BE(n, off);
  off = p.writeUInt32BE(reason, off);
  p.set(text, off);
  return p;
}

export function encodeRst(streamId: number, reason: Reason, message = ''): Buffer {
  return encodeFrame(FrameType.Rst, streamId, reasonPayload([], reason, message));
}

export function encodeGoAway(goAway: GoAway): Buffer {
  return encodeFrame(
    FrameType.GoAway,
    0,
    reasonPayload([goAway.lastStreamId], goAway.reason, goAway.message),
  );
}

export function encodePing(type: FrameType.Ping | FrameType.Pong, payload: Uint8Array): Buffer {
  return encodeFrame(type, 0, payload);
}

/** UTF-8 bytes of `s`, cut to at most `max` bytes without splitting a character. */
export function truncateUtf8(s: string, max: number): Buffer {
  const b = Buffer.from(s, 'utf8');
  if (b.byteLength <= max) return b;
  let end = max;
  // Back off over continuation bytes (10xxxxxx) so the cut lands on a boundary.
  while (end > 0 && ((b[end] ?? 0) & 0xc0) === 0x80) end--;
  return b.subarray(0, end);
}
