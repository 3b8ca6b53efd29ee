/**
 * Burrow's error catalogue. Every error a user or operator can meet has a class
 * here with a literal `name`, a stable `code` (documented in docs/errors.md) and
 * a default message. Protocol errors also carry the wire `reason` they map to,
 * so aborting a session or stream sends the right code to the peer.
 */
import { Reason } from './protocol/frame.js';

export abstract class BurrowError extends Error {
  abstract override readonly name: string;
  abstract readonly code: string;
}

function define<N extends string, C extends string>(name: N, code: C, defaultMessage: string) {
  return class extends BurrowError {
    override readonly name = name;
    readonly code = code;
    constructor(message: string = defaultMessage, options?: ErrorOptions) {
      super(message, options);
    }
  };
}

function defineWire<N extends string, C extends string>(
  name: N,
  code: C,
  reason: Reason,
  defaultMessage: string,
) {
  return class extends BurrowError {
    override readonly name = name;
    readonly code = code;
    readonly reason: Reason = reason;
    constructor(message: string = defaultMessage, options?: ErrorOptions) {
      super(message, options);
    }
  };
}

// ---- Session and frame errors (fatal to the session) ----

export class ProtocolError extends defineWire(
  'ProtocolError',
  'BURROW_ERR_PROTOCOL',
  Reason.ProtocolError,
  'peer violated the tunnel protocol',
) {}
export class FrameSizeError extends defineWire(
  'FrameSizeError',
  'BURROW_ERR_FRAME_SIZE',
  Reason.FrameSizeError,
  'frame larger than allowed',
) {}
export class FlowControlError extends defineWire(
  'FlowControlError',
  'BURROW_ERR_FLOW_CONTROL',
  Reason.FlowControlError,
  'peer exceeded its flow-control credit',
) {}
export class UnsupportedVersionError extends defineWire(
  'UnsupportedVersionError',
  'BURROW_ERR_UNSUPPORTED_VERSION',
  Reason.UnsupportedVersion,
  'no tunnel protocol version in common with the peer',
) {}
export class MetadataTooLargeError extends defineWire(
  'MetadataTooLargeError',
  'BURROW_ERR_METADATA_TOO_LARGE',
  Reason.MetadataTooLarge,
  'stream metadata larger than the peer allows',
) {}
export class HandshakeError extends defineWire(
  'HandshakeError',
  'BURROW_ERR_HANDSHAKE',
  Reason.HandshakeFailed,
  'tunnel handshake failed',
) {}
export class KeepaliveTimeoutError extends defineWire(
  'KeepaliveTimeoutError',
  'BURROW_ERR_KEEPALIVE_TIMEOUT',
  Reason.KeepaliveTimeout,
  'peer stopped answering pings',
) {}
export class InternalSessionError extends defineWire(
  'InternalSessionError',
  'BURROW_ERR_INTERNAL',
  Reason.InternalError,
  'internal error while handling the tunnel session',
) {}
export class SessionClosedError extends defineWire(
  'SessionClosedError',
  'BURROW_ERR_SESSION_CLOSED',
  Reason.Cancel,
  'tunnel session is closed',
) {}

// ---- Stream errors (fatal to one stream) ----

/** The peer reset the stream; `reason` is the code it sent. */
export class StreamResetError extends BurrowError {
  override readonly name = 'StreamResetError';
  readonly code = 'BURROW_ERR_STREAM_RESET';
  readonly reason: Reason;
  /** True when this side reset the stream (`Stream.reset`), not the peer. */
  readonly local: boolean;
  constructor(reason: Reason, message?: string, options?: ErrorOptions & { local?: boolean }) {
    const by = options?.local ? 'stream reset' : 'stream reset by peer';
    super(
      message ? `${by}: ${Reason[reason] ?? reason}: ${message}` : `${by}: ${Reason[reason] ?? reason}`,
      options,
    );
    this.reason = reason;
    this.local = options?.local === true;
  }
}
export class StreamRefusedError extends defineWire(
  'StreamRefusedError',
  'BURROW_ERR_STREAM_REFUSED',
  Reason.RefusedStream,
  'stream refused: too many concurrent streams or session draining',
) {}
export class StreamIdleTimeoutError extends defineWire(
  'StreamIdleTimeoutError',
  'BURROW_ERR_STREAM_IDLE_TIMEOUT',
  Reason.IdleTimeout,
  'stream idle for too long',
) {}
export class StreamIdsExhaustedError extends defineWire(
  'StreamIdsExhaustedError',
  'BURROW_ERR_STREAM_IDS_EXHAUSTED',
  Reason.StreamIdsExhausted,
  'no stream ids left on this session',
) {}
export class GoAwayError extends defineWire(
  'GoAwayError',
  'BURROW_ERR_GOAWAY',
  Reason.RefusedStream,
  'session is draining: no new streams',
) {}

// ---- Operator-facing errors ----

/** A configuration mistake: printed as one line naming the field, exit code 1. */
export class ConfigError extends define('ConfigError', 'BURROW_ERR_CONFIG', 'invalid configuration') {}
/** A token could not be verified or does not allow what was asked. */
export class TokenError extends define('TokenError', 'BURROW_ERR_TOKEN', 'token rejected') {}
/**
 * The relay's revocation list names this tunnel's token (by `jti`): the
 * session ends with GOAWAY TOKEN_REVOKED and reconnects get HTTP 401.
 */
export class TokenRevokedError extends defineWire(
  'TokenRevokedError',
  'BURROW_ERR_TOKEN_REVOKED',
  Reason.TokenRevoked,
  'token revoked',
) {}
/** A backend sent no response head within the relay's response timeout. */
export class UpstreamTimeoutError extends define(
  'UpstreamTimeoutError',
  'BURROW_ERR_UPSTREAM_TIMEOUT',
  'backend sent no response in time',
) {}

/** Every error class with a stable code, for documentation checks. */
export const ERROR_CODES: readonly string[] = [
  'BURROW_ERR_PROTOCOL',
  'BURROW_ERR_FRAME_SIZE',
  'BURROW_ERR_FLOW_CONTROL',
  'BURROW_ERR_UNSUPPORTED_VERSION',
  'BURROW_ERR_METADATA_TOO_LARGE',
  'BURROW_ERR_HANDSHAKE',
  'BURROW_ERR_KEEPALIVE_TIMEOUT',
  'BURROW_ERR_SESSION_CLOSED',
  'BURROW_ERR_STREAM_RESET',
  'BURROW_ERR_STREAM_REFUSED',
  'BURROW_ERR_STREAM_IDLE_TIMEOUT',
  'BURROW_ERR_STREAM_IDS_EXHAUSTED',
  'BURROW_ERR_GOAWAY',
  'BURROW_ERR_CONFIG',
  'BURROW_ERR_TOKEN',
  'BURROW_ERR_TOKEN_REVOKED',
  'BURROW_ERR_UPSTREAM_TIMEOUT',
  'BURROW_ERR_INTERNAL',
];

/** The wire reason an error maps to when it aborts a stream or session. */
export function reasonOf(err: unknown): Reason {
  if (err && typeof err === 'object' && 'reason' in err && typeof err.reason === 'number') return err.reason;
  return Reason.InternalError;
}
