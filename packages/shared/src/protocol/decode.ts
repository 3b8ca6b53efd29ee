import { FrameSizeError, ProtocolError } from '../errors.js';
import {
  FRAME_VERSION,
  type Frame,
  FrameType,
  type GoAway,
  HEADER_LENGTH,
  HELLO_LENGTH,
  type Hello,
  MAX_FRAME_TYPE,
  MAX_REASON_MESSAGE,
  PING_LENGTH,
  type Rst,
} from './frame.js';

/**
 * Parses one WebSocket message into a frame, checking every header field.
 * The payload is a view into `msg`, not a copy. Throws ProtocolError or
 * FrameSizeError; callers turn those into a session abort, never a crash.
 */
export function decodeFrame(msg: Buffer, maxFramePayload: number): Frame {
  if (msg.byteLength < HEADER_LENGTH) {
    throw new ProtocolError(`frame shorter than its ${HEADER_LENGTH}-byte header (${msg.byteLength} bytes)`);
  }
  const version = msg[0]!;
  const type = msg[1]!;
  const flags = msg[2]!;
  const reserved = msg[3]!;
  const streamId = msg.readUInt32BE(4);
  const length = msg.readUInt32BE(8);
  if (version !== FRAME_VERSION) throw new ProtocolError(`unknown frame version ${version}`);
  if (type > MAX_FRAME_TYPE) throw new ProtocolError(`unknown frame type ${type}`);
  if (flags !== 0 || reserved !== 0)
    throw new ProtocolError(`reserved header bits set in ${FrameType[type]} frame`);
  if (length !== msg.byteLength - HEADER_LENGTH) {
    throw new ProtocolError(
      `frame length field ${length} does not match payload of ${msg.byteLength - HEADER_LENGTH} bytes`,
    );
  }
  if (length > maxFramePayload)
    throw new FrameSizeError(`frame payload of ${length} bytes exceeds limit of ${maxFramePayload}`);

  const payload = msg.subarray(HEADER_LENGTH);
  const connectionLevel =
    type === FrameType.Hello ||
    type === FrameType.Ping ||
    type === FrameType.Pong ||
    type === FrameType.GoAway;
  if (connectionLevel && streamId !== 0)
    throw new ProtocolError(`${FrameType[type]} frame on stream ${streamId}, must be 0`);
  if (!connectionLevel && streamId === 0) throw new ProtocolError(`${FrameType[type]} frame on stream 0`);
  switch (type) {
    case FrameType.Hello:
      if (length < HELLO_LENGTH)
        throw new ProtocolError(`HELLO payload of ${length} bytes, need ${HELLO_LENGTH}`);
      break;
    case FrameType.Window:
      if (length !== 4) throw new ProtocolError(`WINDOW payload of ${length} bytes, must be 4`);
      break;
    case FrameType.Fin:
      if (length !== 0) throw new ProtocolError(`FIN carries ${length} payload bytes, must be 0`);
      break;
    case FrameType.Rst:
      if (length < 4 || length > 4 + MAX_REASON_MESSAGE)
        throw new ProtocolError(`RST payload of ${length} bytes`);
      break;
    case FrameType.GoAway:
      if (length < 8 || length > 8 + MAX_REASON_MESSAGE)
        throw new ProtocolError(`GOAWAY payload of ${length} bytes`);
      break;
    case FrameType.Ping:
    case FrameType.Pong:
      if (length !== PING_LENGTH)
        throw new ProtocolError(`${FrameType[type]} payload of ${length} bytes, must be ${PING_LENGTH}`);
      break;
  }
  return { version, type, flags, streamId, length, payload };
}

export function decodeHello(payload: Buffer): Hello {
  const hello: Hello = {
    version: payload.readUInt16BE(0),
    maxConcurrentStreams: payload.readUInt32BE(4),
    initialWindow: payload.readUInt32BE(8),
    maxFramePayload: payload.readUInt32BE(12),
    maxMetadata: payload.readUInt32BE(16),
  };
  if (payload.readUInt16BE(2) !== 0) throw new ProtocolError('HELLO reserved field is not zero');
  return hello;
}

export function decodeWindow(payload: Buffer): number {
  const increment = payload.readUInt32BE(0);
  if (increment === 0) throw new ProtocolError('WINDOW increment of 0');
  return increment;
}

function decodeText(b: Buffer): string {
  // fatal: a peer that sends invalid UTF-8 in a diagnostic is misbehaving.
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(b);
  } catch {
    throw new ProtocolError('reason message is not valid UTF-8');
  }
}

export function decodeRst(payload: Buffer): Rst {
  return { reason: payload.readUInt32BE(0), message: decodeText(payload.subarray(4)) };
}

export function decodeGoAway(payload: Buffer): GoAway {
  return {
    lastStreamId: payload.readUInt32BE(0),
    reason: payload.readUInt32BE(4),
    message: decodeText(payload.subarray(8)),
  };
}
