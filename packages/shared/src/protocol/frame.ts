/**
 * Frame layout of Burrow tunnel protocol version 1 (docs/protocol.md).
 *
 * One binary WebSocket message carries exactly one frame:
 *
 *   0       1       2       3       4               8              12
 *   +-------+-------+-------+-------+---------------+---------------+---------
 *   |version| type  | flags |  rsv  |   stream id   | payload length| payload…
 *   +-------+-------+-------+-------+---------------+---------------+---------
 *
 * All integers are unsigned big-endian.
 */

/** Framing version carried in every header. Bumped only for incompatible layout changes. */
export const FRAME_VERSION = 1;

/** Protocol versions this implementation speaks, newest first; negotiated by HELLO. */
export const SUPPORTED_PROTOCOL_VERSIONS: readonly number[] = [1];

/** Size of the fixed frame header in bytes. */
export const HEADER_LENGTH = 12;

export enum FrameType {
  /** Stream 0. First frame each side sends: protocol version and the limits it enforces. */
  Hello = 0x0,
  /** Opens a new stream; the payload is the stream's metadata (route and request head). */
  Open = 0x1,
  /** Stream payload bytes; consumes flow-control credit. */
  Data = 0x2,
  /** Grants the peer more credit on a stream. Payload: u32 increment. */
  Window = 0x3,
  /** Half-close: the sender will send no more DATA on this stream. No payload. */
  Fin = 0x4,
  /** Aborts a stream in both directions. Payload: u32 reason code, optional UTF-8 message. */
  Rst = 0x5,
  /** Stream 0. Liveness probe; payload is 8 opaque bytes the peer echoes in PONG. */
  Ping = 0x6,
  /** Stream 0. Answer to PING, echoing its payload. */
  Pong = 0x7,
  /** Stream 0. No new streams; payload: u32 last accepted stream id, u32 reason, optional message. */
  GoAway = 0x8,
}

/** The highest frame type value defined in version 1. */
export const MAX_FRAME_TYPE = FrameType.GoAway;

/**
 * Reason codes carried by RST and GOAWAY frames and in WebSocket close codes
 * (as 4000 + code). Values are part of the wire format and never change meaning.
 */
export enum Reason {
  /** Graceful: nothing went wrong. */
  NoError = 0,
  /** The peer violated the protocol (malformed frame, bad state transition). */
  ProtocolError = 1,
  /** The sender hit an unexpected internal failure. */
  InternalError = 2,
  /** The peer sent more than its credit, or a WINDOW pushed credit past 2^31-1. */
  FlowControlError = 3,
  /** The stream was refused: concurrency limit reached or the session is draining. */
  RefusedStream = 4,
  /** The stream is no longer wanted by the side that sent RST. */
  Cancel = 5,
  /** A frame exceeded the receiver's maximum size. */
  FrameSizeError = 6,
  /** No protocol version in common. */
  UnsupportedVersion = 7,
  /** Three PING intervals passed without a PONG. */
  KeepaliveTimeout = 8,
  /** A stream saw no frames in either direction for its idle timeout. */
  IdleTimeout = 9,
  /** The side ran out of stream ids; it opens no more streams on this session. */
  StreamIdsExhausted = 10,
  /** OPEN metadata was larger than the receiver allows. */
  MetadataTooLarge = 11,
  /** The sender is shutting down (drain). */
  Shutdown = 12,
  /** HELLO was missing, late or malformed. */
  HandshakeFailed = 13,
  // Application reasons (used by relay and agent on top of the multiplexer).
  /** The stream named a route this side does not serve. */
  RouteUnknown = 16,
  /** The backend refused the connection. */
  ConnectRefused = 17,
  /** The backend did not answer in time. */
  ConnectTimeout = 18,
  /** The backend connection failed after it was established. */
  BackendError = 19,
  /** The stream's metadata was not valid for its route. */
  BadMetadata = 20,
  /** The client was not allowed (e.g. outside the route's allowlist). */
  Forbidden = 21,
  /** The relay revoked the token this tunnel authenticated with (GOAWAY, then close). */
  TokenRevoked = 22,
  /**
   * The backend refused the request before processing any of it (HTTP/2
   * REFUSED_STREAM, RFC 9113 §8.7): it may be sent again.
   */
  BackendRefusedStream = 23,
  /**
   * The backend's response head cannot be passed on: malformed, over the size
   * limit, or with framing a proxy must not guess at (RFC 9112 §6.3).
   */
  InvalidResponse = 24,
}

/** Fields of a frame header. */
export interface FrameHeader {
  version: number;
  type: FrameType;
  flags: number;
  streamId: number;
  length: number;
}

export interface Frame extends FrameHeader {
  /** Payload bytes; a view into the received message, not a copy. */
  payload: Buffer;
}

/** HELLO payload: the limits the sender enforces on what it receives. */
export interface Hello {
  /** Protocol version the sender speaks (the highest it supports). */
  version: number;
  /** Streams the peer may have open towards the sender at once. */
  maxConcurrentStreams: number;
  /** Credit each new stream starts with, in bytes, for data sent to the sender. */
  initialWindow: number;
  /** Largest frame payload the sender accepts, in bytes. */
  maxFramePayload: number;
  /** Largest OPEN metadata the sender accepts, in bytes. */
  maxMetadata: number;
}

/** Fixed size of a version 1 HELLO payload. Longer payloads are allowed; extra bytes are ignored. */
export const HELLO_LENGTH = 20;

export interface GoAway {
  lastStreamId: number;
  reason: Reason;
  message: string;
}

export interface Rst {
  reason: Reason;
  message: string;
}

/** Largest credit a stream may hold (as in HTTP/2). */
export const MAX_WINDOW = 2 ** 31 - 1;
/** Largest stream id. */
export const MAX_STREAM_ID = 2 ** 32 - 1;
/** Longest diagnostic message accepted in RST and GOAWAY, in bytes. */
export const MAX_REASON_MESSAGE = 256;
/** PING and PONG payloads are exactly this long. */
export const PING_LENGTH = 8;
