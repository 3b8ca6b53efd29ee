import { ConfigError } from '../errors.js';
import { HEADER_LENGTH, MAX_WINDOW } from './frame.js';

/** Shortest keepalive interval a session takes, ms. */
export const MIN_KEEPALIVE_INTERVAL = 10;

/** Tunables of one multiplexed session. Every value is what this side enforces or uses. */
export interface SessionConfig {
  /** Streams the peer may have open towards us at once (advertised in HELLO). Default 8192. */
  maxConcurrentStreams: number;
  /** Credit a new stream starts with, bytes (advertised in HELLO). Default 256 KiB. */
  initialWindow: number;
  /** Upper bound for per-stream window auto-tuning, bytes. Default 16 MiB. */
  maxWindow: number;
  /**
   * Queueing delay window auto-tuning steers each stream's receive window to,
   * ms: the window grows while the round trip runs less than this (or one base
   * round trip, if longer) above the path's base round trip, and shrinks while
   * it runs more. Bounds how long other streams' frames wait behind a bulk
   * transfer on the same connection. 0 turns the bound off: windows only grow,
   * up to maxWindow. Default 5 ms.
   */
  maxQueueDelay: number;
  /** Largest frame payload we accept and send, bytes (advertised in HELLO). Default 64 KiB. */
  maxFramePayload: number;
  /** Largest OPEN metadata we accept, bytes (advertised in HELLO). Default 16 KiB. */
  maxMetadata: number;
  /** Interval between PINGs, ms; the session is dead after `keepaliveMisses` unanswered intervals. Default 20 s. */
  keepaliveInterval: number;
  /** Unanswered PING intervals before the session is declared dead. Default 3. */
  keepaliveMisses: number;
  /** Time allowed for the peer's HELLO, ms. Default 10 s. */
  handshakeTimeout: number;
  /** After GOAWAY, time allowed for open streams to finish before they are reset, ms. Default 30 s. */
  drainTimeout: number;
  /**
   * After GOAWAY, a raw byte stream (Stream.raw: an upgraded connection, a
   * TCP connection) with no frames in either direction for this long, and no
   * bytes waiting in it, is reset rather than waited for until drainTimeout,
   * ms. Default 1 s.
   */
  drainQuietPeriod: number;
  /** A stream with no frames in either direction for this long is reset, ms; 0 disables. Default 15 min. */
  streamIdleTimeout: number;
  /**
   * Bytes queued in the transport beyond which the peer counts as not reading
   * and the session is closed, bytes; the WebSocket transport counts each
   * message as 512 bytes more than its length, what it holds in memory. DATA
   * stops at the transport's own high-water mark long before; this bounds
   * control frames (PONG, WINDOW, RST) a peer can provoke without reading.
   * Default 16 MiB.
   */
  maxSendQueue: number;
}

export const DEFAULT_SESSION_CONFIG: Readonly<SessionConfig> = Object.freeze({
  maxConcurrentStreams: 8192,
  initialWindow: 256 * 1024,
  maxWindow: 16 * 1024 * 1024,
  maxQueueDelay: 5,
  maxFramePayload: 64 * 1024,
  maxMetadata: 16 * 1024,
  keepaliveInterval: 20_000,
  keepaliveMisses: 3,
  handshakeTimeout: 10_000,
  drainTimeout: 30_000,
  drainQuietPeriod: 1_000,
  streamIdleTimeout: 15 * 60_000,
  maxSendQueue: 16 * 1024 * 1024,
});

/** Smallest frame payload a peer may advertise: keeps per-frame overhead sane. */
export const MIN_FRAME_PAYLOAD = 1024;
/** Largest frame payload anyone may advertise: bounds one message's memory. */
export const MAX_FRAME_PAYLOAD = 16 * 1024 * 1024 - HEADER_LENGTH;

/**
 * The largest WebSocket message a session configured with `config` accepts:
 * each carries one frame, no larger than the maxFramePayload its HELLO
 * advertised. A transport that buffers more for a message still arriving
 * would let a peer hold that much of this side's memory.
 */
export function maxMessageSize(config: Partial<SessionConfig> = {}): number {
  return (config.maxFramePayload ?? DEFAULT_SESSION_CONFIG.maxFramePayload) + HEADER_LENGTH;
}

function check(ok: boolean, field: string, rule: string, value: unknown): void {
  if (!ok) throw new ConfigError(`session.${field} ${rule} (got ${String(value)})`);
}

/** Merges `partial` over the defaults and checks every field; throws ConfigError naming the field. */
export function verifyConfig(partial: Partial<SessionConfig> = {}): SessionConfig {
  const c: SessionConfig = { ...DEFAULT_SESSION_CONFIG, ...partial };
  const int = (n: number) => Number.isSafeInteger(n);
  check(
    int(c.maxConcurrentStreams) && c.maxConcurrentStreams >= 1 && c.maxConcurrentStreams <= 2 ** 31,
    'maxConcurrentStreams',
    'must be an integer from 1 to 2^31',
    c.maxConcurrentStreams,
  );
  check(
    int(c.initialWindow) && c.initialWindow >= 1024 && c.initialWindow <= MAX_WINDOW,
    'initialWindow',
    'must be an integer from 1024 to 2^31-1 bytes',
    c.initialWindow,
  );
  check(
    int(c.maxWindow) && c.maxWindow >= c.initialWindow && c.maxWindow <= MAX_WINDOW,
    'maxWindow',
    'must be an integer from initialWindow to 2^31-1 bytes',
    c.maxWindow,
  );
  check(
    Number.isFinite(c.maxQueueDelay) && c.maxQueueDelay >= 0 && c.maxQueueDelay <= 60_000,
    'maxQueueDelay',
    'must be from 0 to 60000 ms (0 turns the bound off)',
    c.maxQueueDelay,
  );
  check(
    int(c.maxFramePayload) &&
      c.maxFramePayload >= MIN_FRAME_PAYLOAD &&
      c.maxFramePayload <= MAX_FRAME_PAYLOAD,
    'maxFramePayload',
    `must be an integer from ${MIN_FRAME_PAYLOAD} to ${MAX_FRAME_PAYLOAD} bytes`,
    c.maxFramePayload,
  );
  check(
    int(c.maxMetadata) && c.maxMetadata >= 256 && c.maxMetadata <= c.maxFramePayload,
    'maxMetadata',
    'must be an integer from 256 bytes to maxFramePayload',
    c.maxMetadata,
  );
  check(
    int(c.keepaliveInterval) && c.keepaliveInterval >= MIN_KEEPALIVE_INTERVAL,
    'keepaliveInterval',
    `must be at least ${MIN_KEEPALIVE_INTERVAL} ms`,
    c.keepaliveInterval,
  );
  check(
    int(c.keepaliveMisses) && c.keepaliveMisses >= 1,
    'keepaliveMisses',
    'must be at least 1',
    c.keepaliveMisses,
  );
  check(
    int(c.handshakeTimeout) && c.handshakeTimeout >= 1,
    'handshakeTimeout',
    'must be a positive number of ms',
    c.handshakeTimeout,
  );
  check(int(c.drainTimeout) && c.drainTimeout >= 0, 'drainTimeout', 'must be >= 0 ms', c.drainTimeout);
  check(
    int(c.drainQuietPeriod) && c.drainQuietPeriod >= 0,
    'drainQuietPeriod',
    'must be >= 0 ms',
    c.drainQuietPeriod,
  );
  check(
    int(c.streamIdleTimeout) && c.streamIdleTimeout >= 0,
    'streamIdleTimeout',
    'must be >= 0 ms (0 disables)',
    c.streamIdleTimeout,
  );
  check(
    int(c.maxSendQueue) && c.maxSendQueue >= 1024 * 1024,
    'maxSendQueue',
    'must be at least 1 MiB',
    c.maxSendQueue,
  );
  return c;
}
