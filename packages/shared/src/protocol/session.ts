import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import {
  BurrowError,
  GoAwayError,
  HandshakeError,
  InternalSessionError,
  KeepaliveTimeoutError,
  MetadataTooLargeError,
  ProtocolError,
  reasonOf,
  SessionClosedError,
  StreamIdleTimeoutError,
  StreamIdsExhaustedError,
  StreamRefusedError,
  UnsupportedVersionError,
} from '../errors.js';
import { MIN_FRAME_PAYLOAD, type SessionConfig, verifyConfig } from './config.js';
import { decodeFrame, decodeGoAway, decodeHello, decodeRst, decodeWindow } from './decode.js';
import { encodeFrame, encodeGoAway, encodeHello, encodePing, encodeRst, encodeWindow } from './encode.js';
import {
  type Frame,
  FrameType,
  HEADER_LENGTH,
  type Hello,
  MAX_STREAM_ID,
  MAX_WINDOW,
  PING_LENGTH,
  Reason,
  SUPPORTED_PROTOCOL_VERSIONS,
} from './frame.js';
import { Stream, type StreamHost } from './stream.js';
import { closeCodeFor, type MessageTransport } from './transport.js';
import { WindowBudget } from './window-budget.js';

const NO_METADATA = Buffer.alloc(0);
/** Length of one period of the base round-trip minimum, ms (see #baseRtt). */
const BASE_RTT_PERIOD = 30_000;

export interface SessionOptions extends Partial<SessionConfig> {
  /**
   * 'client' for the side that dialed the WebSocket (the agent): it opens odd
   * stream ids. 'server' (the relay) opens even ids.
   */
  role: 'client' | 'server';
  /** First stream id this side opens; only for tests of id exhaustion. */
  firstStreamId?: number;
}

export interface SessionStats {
  streams: number;
  bytesIn: number;
  bytesOut: number;
  framesIn: number;
  framesOut: number;
  rtt: number;
}

export interface SessionEvents {
  /** The peer opened a stream. Read `stream.metadata` to learn what it is for. */
  stream: [stream: Stream];
  /** The peer sent GOAWAY: no new streams on this session. */
  goaway: [info: { reason: Reason; message: string; lastStreamId: number }];
  /** The session ended; `error` says why unless it closed cleanly. */
  close: [error?: Error];
}

/**
 * A multiplexed tunnel session over one message transport (docs/protocol.md).
 * Runs the HELLO handshake, the stream state machines, per-stream flow control
 * with a fair DATA scheduler, keepalive and GOAWAY drain. Anything malformed
 * from the peer ends the session with a protocol reason; nothing thrown by a
 * peer's bytes escapes this class.
 */
export class Session extends EventEmitter<SessionEvents> {
  readonly role: 'client' | 'server';
  readonly config: SessionConfig;
  /** Resolves once both HELLOs are exchanged; rejects if the session closes first. */
  readonly ready: Promise<void>;

  readonly #transport: MessageTransport;
  readonly #streams = new Map<number, Stream>();
  /** Streams with data and credit, in round-robin order (a Set keeps insertion order). */
  readonly #sendQueue = new Set<Stream>();
  #flushing = false;
  #nextLocalId: number;
  #lastPeerId = 0;
  #localActive = 0;
  #peerActive = 0;
  #peer: Hello | undefined;
  #resolveReady!: () => void;
  #rejectReady!: (err: Error) => void;

  #closed = false;
  #closeError: Error | undefined;
  #goAwaySent = false;
  #goAwayReceived = false;
  #drainResolvers: Array<() => void> = [];

  #handshakeTimer: NodeJS.Timeout | undefined;
  #keepaliveTimer: NodeJS.Timeout | undefined;
  #idleTimer: NodeJS.Timeout | undefined;
  #drainTimer: NodeJS.Timeout | undefined;
  /** During a drain, when the raw stream quiet the longest is due (see #closeQuietStreams). */
  #quietTimer: NodeJS.Timeout | undefined;
  #closedQuiet = 0;
  #unansweredPings = 0;
  readonly #pings = new Map<
    bigint,
    { sentAt: number; resolve?: (rtt: number) => void; reject?: (e: Error) => void }
  >();
  #rtt = 0;
  /** The latest RTT sample and when it was taken, for window auto-tuning. */
  #rttSample = 0;
  #rttSampledAt = 0;
  #rttProbe = false;
  /**
   * The path's base round trip: the lowest sample of the current and the
   * previous period of BASE_RTT_PERIOD ms. Probes taken during a transfer
   * include its queues, so the minimum is what the path costs without them;
   * keeping it for a period or two lets it follow a path that got slower.
   */
  #baseRtt = { current: 0, previous: 0, since: 0 };

  #stats = { bytesIn: 0, bytesOut: 0, framesIn: 0, framesOut: 0 };
  readonly #host: StreamHost;
  /** Receive-window growth of all streams together (WindowBudget): twice one stream's maxWindow. */
  readonly #windows: WindowBudget;

  constructor(transport: MessageTransport, options: SessionOptions) {
    super();
    this.role = options.role;
    this.config = verifyConfig(options);
    this.#windows = new WindowBudget(this.config.initialWindow, 2 * this.config.maxWindow);
    this.#transport = transport;
    this.#nextLocalId = options.firstStreamId ?? (this.role === 'client' ? 1 : 2);
    if (this.#nextLocalId % 2 !== (this.role === 'client' ? 1 : 0)) {
      throw new RangeError(`firstStreamId ${this.#nextLocalId} has the wrong parity for role ${this.role}`);
    }
    this.ready = new Promise<void>((resolve, reject) => {
      this.#resolveReady = resolve;
      this.#rejectReady = reject;
    });
    this.ready.catch(() => {}); // observed through 'close' too; never an unhandled rejection

    const session = this;
    this.#host = {
      schedule: (s) => this.#schedule(s),
      sendControl: (type, id, value) => {
        if (type === FrameType.Window) this.#writeControl(encodeWindow(id, value!));
        else this.#writeControl(encodeFrame(FrameType.Fin, id));
      },
      sendRst: (id, reason, message) => this.#writeControl(encodeRst(id, reason, message)),
      sendData: (id, payload) => this.#writeData(id, payload),
      release: (s) => this.#release(s),
      watchQuiet: () => {
        // Any raw stream already watched is due no later than one marked now.
        if (this.draining && !this.#closed && !this.#quietTimer) this.#closeQuietStreams();
      },
      get rtt() {
        return session.#currentRtt();
      },
      get rttSampledAt() {
        return session.#rttSampledAt;
      },
      get baseRtt() {
        return session.#lowestRtt();
      },
      get peerMaxFramePayload() {
        return session.#peer?.maxFramePayload ?? MIN_FRAME_PAYLOAD;
      },
      resizeWindow: (window, resize) => this.#windows.resize(window, resize),
    };

    // HELLO goes first: attach() may replay messages the transport already
    // holds, and handling the peer's HELLO sends a PING, which must follow ours.
    this.#write(
      encodeHello({
        version: SUPPORTED_PROTOCOL_VERSIONS[0]!,
        maxConcurrentStreams: this.config.maxConcurrentStreams,
        initialWindow: this.config.initialWindow,
        maxFramePayload: this.config.maxFramePayload,
        maxMetadata: this.config.maxMetadata,
      }),
    );
    this.#handshakeTimer = setTimeout(
      () => this.destroy(new HandshakeError(`no HELLO from peer within ${this.config.handshakeTimeout} ms`)),
      this.config.handshakeTimeout,
    );
    this.#handshakeTimer.unref();
    transport.attach({
      message: (data) => this.#onMessage(data),
      drain: () => this.#flush(),
      close: (error) => this.#onTransportClose(error),
    });
  }

  /** The peer's advertised limits, once its HELLO has arrived. */
  get peer(): Readonly<Hello> | undefined {
    return this.#peer;
  }

  /** Smoothed round-trip time in ms, from PING/PONG (0 until measured). */
  get rtt(): number {
    return this.#rtt;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** True once GOAWAY was sent or received: no new streams. */
  get draining(): boolean {
    return this.#goAwaySent || this.#goAwayReceived;
  }

  /** Open streams in both directions. */
  get streamCount(): number {
    return this.#streams.size;
  }

  /** Raw streams (Stream.raw) this side's drain reset because they had been quiet. */
  get closedQuiet(): number {
    return this.#closedQuiet;
  }

  get stats(): SessionStats {
    return { streams: this.#streams.size, rtt: this.#rtt, ...this.#stats };
  }

  /**
   * Opens a stream carrying `metadata`. Throws (synchronously) when the session
   * is not ready, closed or draining, the peer's concurrency limit is reached,
   * the metadata is larger than the peer accepts, or stream ids ran out.
   */
  openStream(metadata: Uint8Array = NO_METADATA): Stream {
    if (this.#closed) throw new SessionClosedError();
    if (!this.#peer)
      throw new HandshakeError('session not ready: wait for session.ready before opening streams');
    if (this.draining) throw new GoAwayError();
    if (this.#localActive >= this.#peer.maxConcurrentStreams) {
      throw new StreamRefusedError(`peer allows ${this.#peer.maxConcurrentStreams} concurrent streams`);
    }
    // Control frames queued past half the limit that ends the session: the peer
    // reads slower than streams are opened (a flood of requests its clients
    // cancel at once, say). New streams are refused until the queue drains, so
    // that a flood costs its own requests, not the whole tunnel.
    if (this.#transport.bufferedAmount > this.config.maxSendQueue / 2) {
      throw new StreamRefusedError(
        `the tunnel's send queue is backed up (${this.#transport.bufferedAmount} bytes): the peer reads slower than streams open`,
      );
    }
    if (metadata.byteLength > this.#peer.maxMetadata) {
      throw new MetadataTooLargeError(
        `metadata of ${metadata.byteLength} bytes, peer allows ${this.#peer.maxMetadata}`,
      );
    }
    if (this.#nextLocalId > MAX_STREAM_ID) {
      this.goAway(Reason.StreamIdsExhausted, 'stream ids exhausted');
      throw new StreamIdsExhaustedError();
    }
    const id = this.#nextLocalId;
    this.#nextLocalId += 2;
    const meta = Buffer.from(metadata.buffer, metadata.byteOffset, metadata.byteLength);
    // The stream does not keep what it sent: the opener knows it, and a stream
    // may live for hours (its Buffer would also pin an 8 KiB pool slab).
    const stream = this.#newStream(id, NO_METADATA, true);
    this.#writeControl(encodeFrame(FrameType.Open, id, meta));
    if (this.#closed) {
      // The OPEN tripped the send-queue limit: the stream died with the session
      // and the caller never gets it, so its error has no one else to hear it.
      stream.on('error', () => {});
      throw new SessionClosedError('tunnel session closed while opening a stream');
    }
    return stream;
  }

  /** Sends a PING and resolves with the round-trip time in ms. */
  ping(): Promise<number> {
    if (this.#closed) return Promise.reject(new SessionClosedError());
    return new Promise((resolve, reject) => this.#sendPing(resolve, reject));
  }

  /**
   * Starts a graceful drain: tells the peer to open no new streams, lets open
   * streams finish, then closes. Raw streams (Stream.raw) are reset once they
   * have been quiet for `drainQuietPeriod`; streams still open after
   * `drainTimeout` are reset. Resolves when the session has closed.
   */
  goAway(reason: Reason = Reason.Shutdown, message = ''): Promise<void> {
    const done = new Promise<void>((resolve) => {
      if (this.#closed) resolve();
      else this.#drainResolvers.push(resolve);
    });
    if (this.#closed || this.#goAwaySent) return done;
    this.#goAwaySent = true;
    // Not held to maxSendQueue as other control frames are: it goes once per session, so it
    // cannot grow the queue, and a drain must start even while DATA has the transport backed up.
    this.#write(encodeGoAway({ lastStreamId: this.#lastPeerId, reason, message }));
    this.#drainTimer = setTimeout(() => {
      for (const s of [...this.#streams.values()]) s.reset(Reason.Shutdown, 'drain timeout');
      this.#finish(undefined, Reason.NoError, 'drained');
    }, this.config.drainTimeout);
    this.#drainTimer.unref();
    // Already under way when the peer's GOAWAY came first.
    if (!this.#quietTimer) this.#closeQuietStreams();
    this.#maybeFinishDrain();
    return done;
  }

  /**
   * Applies the drain's rule for quiet raw streams (see goAway) while the peer
   * drains: for raw streams only this side knows to be raw, which the peer's
   * own drain would otherwise wait for until its deadline. Call it on the
   * peer's graceful GOAWAY ('goaway'); a no-op unless the session is draining.
   */
  closeQuietStreams(): void {
    if (this.draining && !this.#quietTimer) this.#closeQuietStreams();
  }

  /**
   * Resets the raw streams that have been quiet for drainQuietPeriod, and
   * comes back when the quietest of the others would be. An idle WebSocket or
   * TCP connection never ends by itself: waiting for it would hold the drain
   * until drainTimeout and cut it then anyway. One still carrying bytes is
   * left to finish, as a request is.
   */
  #closeQuietStreams(): void {
    this.#quietTimer = undefined;
    if (this.#closed) return;
    const period = this.config.drainQuietPeriod;
    const now = performance.now();
    let due = Number.POSITIVE_INFINITY;
    for (const s of [...this.#streams.values()]) {
      if (!s.raw || s.destroyed) continue;
      if (s.lastActivity > now - period) due = Math.min(due, s.lastActivity + period);
      // Bytes waiting on flow control are traffic too, only slow: a reader that catches up moves them.
      else if (s.holdsData) due = Math.min(due, now + period);
      else {
        this.#closedQuiet++;
        s.reset(Reason.Shutdown, `quiet for ${period} ms while draining`);
      }
    }
    if (due === Number.POSITIVE_INFINITY || this.#closed) return;
    // Bytes may have moved since: the check then finds it busy and looks again later.
    this.#quietTimer = setTimeout(() => this.#closeQuietStreams(), Math.max(1, due - performance.now()));
    this.#quietTimer.unref();
  }

  /** Closes now: open streams fail with `error` (or SessionClosedError). */
  destroy(error?: Error): void {
    if (this.#closed) return;
    if (error) {
      const reason = error instanceof BurrowError ? reasonOf(error) : Reason.InternalError;
      // Tell the peer why before closing, so its log names the real cause.
      if (!this.#goAwaySent) {
        this.#goAwaySent = true;
        this.#write(encodeGoAway({ lastStreamId: this.#lastPeerId, reason, message: error.message }));
      }
      this.#finish(error, reason, (error as { code?: string }).code ?? error.name);
    } else {
      this.#finish(undefined, Reason.NoError, 'closed');
    }
  }

  // ---- Sending ----

  #write(buf: Buffer): void {
    if (this.#closed) return;
    this.#stats.bytesOut += buf.byteLength;
    this.#stats.framesOut++;
    this.#transport.send(buf);
  }

  /**
   * Large payloads go out as header + body fragments where the transport can,
   * so the sender never copies them; small ones are cheaper joined.
   */
  #writeData(id: number, payload: Buffer): void {
    if (this.#closed) return;
    const send = this.#transport.sendParts;
    if (!send || payload.byteLength < 16 * 1024) {
      this.#write(encodeFrame(FrameType.Data, id, payload));
      return;
    }
    const head = encodeFrame(FrameType.Data, id);
    head.writeUInt32BE(payload.byteLength, 8); // the length field counts the body sent separately
    this.#stats.bytesOut += head.byteLength + payload.byteLength;
    this.#stats.framesOut++;
    send.call(this.#transport, head, payload);
  }

  /** Control frames skip the DATA scheduler but not the transport's order. */
  #writeControl(buf: Buffer): void {
    if (this.#closed) return;
    // A peer that never reads while provoking control frames (PINGs, OPENs we
    // refuse) would grow our queue without bound: cut it off instead.
    if (this.#transport.bufferedAmount > this.config.maxSendQueue) {
      this.destroy(new ProtocolError('peer is not reading: send queue over its limit'));
      return;
    }
    this.#write(buf);
  }

  #schedule(stream: Stream): void {
    this.#sendQueue.add(stream);
    this.#flush();
  }

  /** Round-robin: one frame per stream per turn, while the transport takes more. */
  #flush(): void {
    if (this.#flushing) return;
    this.#flushing = true;
    try {
      while (this.#sendQueue.size > 0 && this.#transport.writable && !this.#closed) {
        const stream = this.#sendQueue.values().next().value!;
        this.#sendQueue.delete(stream);
        if (stream.sendSome()) {
          stream.queued = true;
          this.#sendQueue.add(stream);
        }
      }
    } finally {
      this.#flushing = false;
    }
  }

  /**
   * The round-trip time window auto-tuning compares a stream's drain time with.
   * Keepalive samples are up to an interval old and taken when idle; under a
   * bulk transfer the real round trip includes the queues in front of the
   * data, so a stream that asks for it while busy gets a fresh probe: its PONG
   * comes back behind the peer's queued DATA. At most one probe in flight, and
   * one per probe interval.
   */
  #currentRtt(): number {
    const now = performance.now();
    if (!this.#rttProbe && this.#peer && !this.#closed && now - this.#rttSampledAt > this.#probeInterval()) {
      this.#rttProbe = true;
      this.#sendPing();
    }
    return this.#rttSample;
  }

  /**
   * How old the latest sample may be before a stream that asks gets a probe:
   * four base round trips, at least 10 ms (100 ms while the base is unknown).
   * Auto-tuning moves a window once per sample, so this is how fast it reacts
   * to a queue; four round trips keep the probes a small share of the traffic.
   */
  #probeInterval(): number {
    const base = this.#lowestRtt();
    return base > 0 ? Math.max(10, 4 * base) : 100;
  }

  #lowestRtt(): number {
    const { current, previous } = this.#baseRtt;
    return previous === 0 ? current : Math.min(current, previous);
  }

  #sendPing(resolve?: (rtt: number) => void, reject?: (e: Error) => void): void {
    // Random, not a counter: a peer that stopped reading (while our queue to it grows)
    // cannot answer a PING it never read, so the keepalive finds it.
    const payload = randomBytes(PING_LENGTH);
    const seq = payload.readBigUInt64BE(0);
    this.#pings.set(seq, { sentAt: performance.now(), ...(resolve && reject ? { resolve, reject } : {}) });
    // Bound the table: a peer that answers nothing is caught by the keepalive.
    // Evict only keepalive entries: an evicted ping() caller would wait forever.
    if (this.#pings.size > 64) {
      for (const [key, entry] of this.#pings) {
        if (!entry.resolve) {
          this.#pings.delete(key);
          break;
        }
      }
    }
    this.#writeControl(encodePing(FrameType.Ping, payload));
  }

  #startKeepalive(): void {
    this.#keepaliveTimer = setInterval(() => {
      if (this.#unansweredPings >= this.config.keepaliveMisses) {
        this.destroy(
          new KeepaliveTimeoutError(
            `no PONG for ${this.config.keepaliveMisses} intervals of ${this.config.keepaliveInterval} ms`,
          ),
        );
        return;
      }
      this.#unansweredPings++;
      this.#sendPing();
    }, this.config.keepaliveInterval);
    this.#keepaliveTimer.unref();
    if (this.config.streamIdleTimeout > 0) {
      const every = Math.max(10, Math.min(this.config.streamIdleTimeout / 4, 30_000));
      this.#idleTimer = setInterval(() => this.#sweepIdle(), every);
      this.#idleTimer.unref();
    }
  }

  #sweepIdle(): void {
    const cutoff = performance.now() - this.config.streamIdleTimeout;
    for (const s of [...this.#streams.values()]) {
      if (!s.idleExempt && s.lastActivity < cutoff) s.destroy(new StreamIdleTimeoutError());
    }
  }

  // ---- Receiving ----

  #onMessage(data: Buffer): void {
    if (this.#closed) return;
    try {
      const frame = decodeFrame(data, this.config.maxFramePayload);
      this.#stats.bytesIn += data.byteLength;
      this.#stats.framesIn++;
      this.#dispatch(frame);
    } catch (err) {
      // BurrowErrors come from checking the peer's bytes. Anything else was
      // thrown by application code running in a listener (e.g. 'data'): that is
      // our bug, not the peer's, so the peer is told INTERNAL_ERROR.
      this.destroy(
        err instanceof BurrowError
          ? err
          : new InternalSessionError('a stream or session listener threw while handling a frame', {
              cause: err,
            }),
      );
    }
  }

  #dispatch(frame: Frame): void {
    if (!this.#peer && frame.type !== FrameType.Hello) {
      throw new HandshakeError(`expected HELLO as the first frame, got ${FrameType[frame.type]}`);
    }
    switch (frame.type) {
      case FrameType.Hello:
        return this.#onHello(decodeHello(frame.payload));
      case FrameType.Open:
        return this.#onOpen(frame.streamId, frame.payload);
      case FrameType.Data: {
        const s = this.#lookup(frame.streamId);
        if (s) s.onData(frame.payload);
        return;
      }
      case FrameType.Window: {
        const increment = decodeWindow(frame.payload);
        const s = this.#lookup(frame.streamId);
        if (s) s.onWindow(increment);
        return;
      }
      case FrameType.Fin: {
        const s = this.#lookup(frame.streamId);
        if (s) s.onFin();
        return;
      }
      case FrameType.Rst: {
        const { reason, message } = decodeRst(frame.payload);
        const s = this.#lookup(frame.streamId);
        if (s) s.onRst(reason, message);
        return;
      }
      case FrameType.Ping:
        this.#writeControl(encodePing(FrameType.Pong, frame.payload));
        return;
      case FrameType.Pong:
        return this.#onPong(frame.payload);
      case FrameType.GoAway:
        return this.#onGoAway(decodeGoAway(frame.payload));
    }
  }

  #onHello(hello: Hello): void {
    if (this.#peer) throw new ProtocolError('second HELLO');
    const version = Math.min(hello.version, SUPPORTED_PROTOCOL_VERSIONS[0]!);
    if (!SUPPORTED_PROTOCOL_VERSIONS.includes(version)) {
      throw new UnsupportedVersionError(
        `peer speaks protocol version ${hello.version}, this side supports ${SUPPORTED_PROTOCOL_VERSIONS.join(', ')}`,
      );
    }
    if (hello.initialWindow < 1024 || hello.initialWindow > MAX_WINDOW) {
      throw new HandshakeError(`peer initial window ${hello.initialWindow} outside 1024..2^31-1`);
    }
    if (hello.maxFramePayload < MIN_FRAME_PAYLOAD) {
      throw new HandshakeError(`peer max frame payload ${hello.maxFramePayload} below ${MIN_FRAME_PAYLOAD}`);
    }
    if (hello.maxMetadata < 256 || hello.maxMetadata > hello.maxFramePayload) {
      throw new HandshakeError(`peer max metadata ${hello.maxMetadata} outside 256..maxFramePayload`);
    }
    // No frame may exceed 16 MiB, whatever the peer says it accepts (§4); an OPEN carries metadata.
    const maxFramePayload = Math.min(hello.maxFramePayload, 16 * 1024 * 1024 - HEADER_LENGTH);
    this.#peer = {
      ...hello,
      version,
      maxFramePayload,
      maxMetadata: Math.min(hello.maxMetadata, maxFramePayload),
    };
    clearTimeout(this.#handshakeTimer);
    this.#startKeepalive();
    this.#sendPing(); // a first RTT sample for window auto-tuning
    this.#resolveReady();
  }

  /** A stream by id, or undefined for a stream that existed and is gone (frames in flight are dropped). */
  #lookup(id: number): Stream | undefined {
    const s = this.#streams.get(id);
    if (s) return s;
    const peerParity = this.role === 'client' ? 0 : 1;
    if (id % 2 === peerParity) {
      if (id > this.#lastPeerId)
        throw new ProtocolError(`frame on stream ${id}, which the peer never opened`);
    } else if (id >= this.#nextLocalId) {
      throw new ProtocolError(`frame on stream ${id}, which this side never opened`);
    }
    return undefined;
  }

  #onOpen(id: number, metadata: Buffer): void {
    const peerParity = this.role === 'client' ? 0 : 1;
    if (id % 2 !== peerParity) throw new ProtocolError(`peer opened stream ${id} with this side's id parity`);
    if (this.#streams.has(id)) throw new ProtocolError(`OPEN on stream ${id}, which is in use`);
    if (id <= this.#lastPeerId) throw new ProtocolError(`OPEN reuses stream id ${id}`);
    this.#lastPeerId = id;
    if (this.draining) {
      this.#writeControl(encodeRst(id, Reason.RefusedStream, 'session draining'));
      return;
    }
    if (metadata.byteLength > this.config.maxMetadata) {
      this.#writeControl(
        encodeRst(id, Reason.MetadataTooLarge, `metadata over ${this.config.maxMetadata} bytes`),
      );
      return;
    }
    if (this.#peerActive >= this.config.maxConcurrentStreams) {
      this.#writeControl(
        encodeRst(id, Reason.RefusedStream, `over ${this.config.maxConcurrentStreams} concurrent streams`),
      );
      return;
    }
    if (this.listenerCount('stream') === 0) {
      this.#writeControl(encodeRst(id, Reason.RefusedStream, 'this side accepts no streams'));
      return;
    }
    // The payload is a view into the WebSocket message; copy the small metadata so
    // the whole message is not retained for the stream's lifetime.
    const stream = this.#newStream(id, Buffer.from(metadata), false);
    try {
      this.emit('stream', stream);
    } catch {
      // A throwing handler is a bug in the embedding code; it costs one stream, not the session.
      stream.reset(Reason.InternalError, 'stream handler failed');
    }
  }

  #onPong(payload: Buffer): void {
    const seq = payload.readBigUInt64BE(0);
    const ping = this.#pings.get(seq);
    if (!ping) return; // late or unsolicited: harmless
    this.#pings.delete(seq);
    this.#unansweredPings = 0;
    const sample = performance.now() - ping.sentAt;
    // Exponentially weighted, as TCP's SRTT (RFC 6298, alpha = 1/8).
    this.#rtt = this.#rtt === 0 ? sample : this.#rtt * 0.875 + sample * 0.125;
    this.#rttSample = sample;
    this.#rttSampledAt = performance.now();
    this.#rttProbe = false;
    const base = this.#baseRtt;
    if (this.#rttSampledAt - base.since > BASE_RTT_PERIOD) {
      base.previous = base.current;
      base.current = 0;
      base.since = this.#rttSampledAt;
    }
    if (base.current === 0 || sample < base.current) base.current = sample;
    ping.resolve?.(sample);
  }

  #onGoAway(info: { lastStreamId: number; reason: Reason; message: string }): void {
    this.#goAwayReceived = true;
    // Streams we opened that the peer never accepted are refused: safe to retry elsewhere.
    for (const s of [...this.#streams.values()]) {
      if (s.local && s.id > info.lastStreamId) {
        s.onRst(Reason.RefusedStream, 'not accepted before GOAWAY');
      }
    }
    this.emit('goaway', info);
    const graceful = [Reason.NoError, Reason.Shutdown, Reason.StreamIdsExhausted];
    if (!graceful.includes(info.reason)) {
      // An error GOAWAY: the peer gave the session up. Its close should follow; this side
      // does not wait for it (a peer that never closes would leave a session that only
      // refuses streams), and echoes the peer's close code.
      this.#closeError = new ProtocolError(
        `peer closed the session: ${Reason[info.reason] ?? info.reason}: ${info.message}`,
      );
      this.#finish(this.#closeError, info.reason, 'GOAWAY with an error received');
      return;
    }
    this.#maybeFinishDrain();
  }

  #onTransportClose(error?: Error): void {
    if (this.#closed) return;
    // After an error GOAWAY the peer closes with 4000+reason, which the transport
    // reports as a bare error: the GOAWAY's reason and message say more.
    this.#finish(this.#closeError ?? error, undefined, '');
  }

  // ---- Stream bookkeeping ----

  #newStream(id: number, metadata: Buffer, local: boolean): Stream {
    const stream = new Stream(this.#host, {
      id,
      metadata,
      local,
      sendCredit: this.#peer?.initialWindow ?? 0,
      recvWindow: this.config.initialWindow,
      maxRecvWindow: this.config.maxWindow,
      maxQueueDelay: this.config.maxQueueDelay,
    });
    this.#streams.set(id, stream);
    if (local) this.#localActive++;
    else this.#peerActive++;
    return stream;
  }

  #release(stream: Stream): void {
    if (this.#streams.get(stream.id) !== stream) return;
    this.#streams.delete(stream.id);
    this.#windows.release(stream.receiveWindow);
    this.#sendQueue.delete(stream);
    if (stream.local) this.#localActive--;
    else this.#peerActive--;
    this.#maybeFinishDrain();
  }

  #maybeFinishDrain(): void {
    if (this.draining && this.#streams.size === 0 && !this.#closed) {
      // A peer that sent an error GOAWAY did not drain: report its reason, not a clean close.
      this.#finish(this.#closeError, Reason.NoError, 'drained');
    }
  }

  #finish(error: Error | undefined, reason: Reason | undefined, text: string): void {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#handshakeTimer);
    clearInterval(this.#keepaliveTimer);
    clearInterval(this.#idleTimer);
    clearTimeout(this.#drainTimer);
    clearTimeout(this.#quietTimer);
    this.#sendQueue.clear();
    const streamError = new SessionClosedError(
      error ? `tunnel session closed: ${error.message}` : 'tunnel session closed',
      error ? { cause: error } : undefined,
    );
    for (const s of [...this.#streams.values()]) {
      this.#streams.delete(s.id);
      s.destroy(streamError);
    }
    if (reason !== undefined) this.#transport.close(closeCodeFor(reason), text.slice(0, 120));
    for (const p of this.#pings.values()) p.reject?.(streamError);
    this.#pings.clear();
    this.#rejectReady(streamError);
    for (const resolve of this.#drainResolvers) resolve();
    this.#drainResolvers = [];
    this.emit('close', error);
  }
}

export function createSession(transport: MessageTransport, options: SessionOptions): Session {
  return new Session(transport, options);
}
