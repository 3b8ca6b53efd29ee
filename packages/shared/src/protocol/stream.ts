import { Duplex } from 'node:stream';
import { FlowControlError, ProtocolError, reasonOf, StreamResetError } from '../errors.js';
import { FrameType, MAX_WINDOW, Reason } from './frame.js';

/** What a stream needs from its session. Implemented by Session; kept small so the stream is testable. */
export interface StreamHost {
  /** Queues the stream for the fair DATA scheduler. */
  schedule(stream: Stream): void;
  /** Sends a control frame (WINDOW, FIN, RST) now. */
  sendControl(type: FrameType.Window | FrameType.Fin, streamId: number, value?: number): void;
  sendRst(streamId: number, reason: Reason, message: string): void;
  /** Sends one DATA frame. */
  sendData(streamId: number, payload: Buffer): void;
  /** The stream needs no more frames: both FINs seen or reset. */
  release(stream: Stream): void;
  /** The stream was marked raw (Stream.raw): a drain under way watches it for quiet from now. */
  watchQuiet(stream: Stream): void;
  /** Latest round-trip time in ms (0 while unknown); reading it may start a fresh probe. */
  readonly rtt: number;
  /** performance.now() of the latest round-trip sample. */
  readonly rttSampledAt: number;
  /** The path's round trip without queues: the lowest recent sample, ms (0 while unknown). */
  readonly baseRtt: number;
  /** Largest DATA payload the peer accepts. */
  readonly peerMaxFramePayload: number;
  /**
   * Asks to move a receive window from `window` by `resize` bytes (auto-tuning);
   * returns by how much it may, which is less than asked when growth past the
   * initial window would take the connection over its budget (WindowBudget).
   */
  resizeWindow(window: number, resize: number): number;
}

export interface StreamOptions {
  id: number;
  metadata: Buffer;
  /** True when this side opened the stream. */
  local: boolean;
  /** Credit for sending (the peer's initial window). */
  sendCredit: number;
  /** Our initial receive window. */
  recvWindow: number;
  /** Cap for receive-window auto-tuning. */
  maxRecvWindow: number;
  /** Queueing delay auto-tuning allows in front of this stream's data (at least one base round trip), ms; 0: no bound. */
  maxQueueDelay: number;
}

/** Auto-tuning never shrinks a receive window below this (nor below the initial window, if smaller). */
const MIN_TUNED_WINDOW = 16 * 1024;

interface PendingWrite {
  chunk: Buffer;
  offset: number;
  callback: (error?: Error | null) => void;
}

/**
 * One multiplexed stream: a Node Duplex with allowHalfOpen, so `pipeline` and
 * backpressure work as with a socket. Writes are held until the peer grants
 * credit; reads grant credit back as the application consumes data, so the
 * stream never buffers more than its receive window.
 */
export class Stream extends Duplex {
  readonly id: number;
  /** What the peer sent with OPEN; empty on a stream this side opened. */
  readonly metadata: Buffer;
  /** True when this side opened the stream. */
  readonly local: boolean;
  /** Set when the stream ended by RST: the reason code, sent or received. */
  resetReason: Reason | undefined;

  readonly #host: StreamHost;
  #sendCredit: number;
  #pending: PendingWrite | null = null;
  #queued = false;
  #localFin = false;
  #remoteFin = false;
  #released = false;

  #recvWindow: number;
  readonly #maxRecvWindow: number;
  readonly #minRecvWindow: number;
  readonly #maxQueueDelay: number;
  /** Bytes the peer may still send before it needs a WINDOW from us. */
  #recvCredit: number;
  #received = 0;
  #consumedReported = 0;
  #lastWindowUpdate = 0;
  /** rttSampledAt of the sample that last moved the window. */
  #tunedWith = 0;

  /** performance.now() of the last frame in either direction, for the idle timeout. */
  lastActivity = performance.now();
  /**
   * Never reset for idleness: the control stream, quiet for as long as the
   * routes do not change, lives as long as its session.
   */
  idleExempt = false;
  #raw = false;
  bytesIn = 0;
  bytesOut = 0;

  constructor(host: StreamHost, opts: StreamOptions) {
    // Flow control, not the readable high-water mark, bounds what is buffered:
    // a push past the mark is fine as long as it is within the granted window.
    super({ allowHalfOpen: true, writableHighWaterMark: 64 * 1024 });
    this.#host = host;
    this.id = opts.id;
    this.metadata = opts.metadata;
    this.local = opts.local;
    this.#sendCredit = opts.sendCredit;
    this.#recvWindow = opts.recvWindow;
    this.#recvCredit = opts.recvWindow;
    this.#maxRecvWindow = opts.maxRecvWindow;
    this.#minRecvWindow = Math.min(opts.recvWindow, MIN_TUNED_WINDOW);
    this.#maxQueueDelay = opts.maxQueueDelay;
  }

  /** Aborts the stream in both directions, telling the peer `reason`. */
  reset(reason: Reason = Reason.Cancel, message = ''): void {
    if (this.destroyed) return;
    this.#sendRst(reason, message);
    this.destroy(new StreamResetError(reason, message || 'reset locally', { local: true }));
  }

  /**
   * A raw byte stream (an upgraded connection, a TCP connection) rather than
   * a request/response exchange: nothing says when it is done, so a drain
   * resets it once it has been quiet for the session's drainQuietPeriod
   * instead of waiting for it until drainTimeout.
   */
  get raw(): boolean {
    return this.#raw;
  }

  /** Marks the stream raw (see `raw`), once whoever serves it knows: an upgrade becomes one on its 101. */
  markRaw(): void {
    if (this.#raw) return;
    this.#raw = true;
    if (!this.destroyed) this.#host.watchQuiet(this);
  }

  /** Bytes the stream holds: written and waiting for credit, or received and not yet read. */
  get holdsData(): boolean {
    return this.#pending !== null || this.writableLength > 0 || this.unconsumed > 0;
  }

  /** Current receive window (grows with auto-tuning). */
  get receiveWindow(): number {
    return this.#recvWindow;
  }

  /** Bytes received from the peer and not yet read by the application. */
  get unconsumed(): number {
    return this.#received - this.#consumedNow();
  }

  /** Credit left for sending. */
  get sendCredit(): number {
    return this.#sendCredit;
  }

  // ---- Writable side ----

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    if (chunk.byteLength === 0) return callback();
    this.#pending = { chunk, offset: 0, callback };
    this.#wantSend();
  }

  override _final(callback: (error?: Error | null) => void): void {
    // _final runs after every write callback, so all DATA is already with the transport.
    this.#localFin = true;
    this.#host.sendControl(FrameType.Fin, this.id);
    this.#maybeRelease();
    callback();
  }

  /** @internal Called by the scheduler: sends at most one frame. Returns true if more can be sent now. */
  sendSome(): boolean {
    this.#queued = false;
    const p = this.#pending;
    if (!p || this.#sendCredit <= 0 || this.destroyed) return false;
    const n = Math.min(p.chunk.byteLength - p.offset, this.#sendCredit, this.#host.peerMaxFramePayload);
    const payload =
      p.offset === 0 && n === p.chunk.byteLength ? p.chunk : p.chunk.subarray(p.offset, p.offset + n);
    this.#host.sendData(this.id, payload);
    this.#sendCredit -= n;
    this.bytesOut += n;
    this.lastActivity = performance.now();
    p.offset += n;
    if (p.offset === p.chunk.byteLength) {
      this.#pending = null;
      p.callback();
    }
    return this.#pending !== null && this.#sendCredit > 0 && !this.#queued;
  }

  /** @internal Marks whether the stream sits in the scheduler queue. */
  set queued(v: boolean) {
    this.#queued = v;
  }

  #wantSend(): void {
    if (this.#pending && this.#sendCredit > 0 && !this.#queued) {
      this.#queued = true;
      this.#host.schedule(this);
    }
  }

  // ---- Readable side ----

  override _read(): void {
    this.#maybeSendWindow();
  }

  // Credit goes back as data leaves the readable buffer. Readable calls _read
  // only once per push, so consumption is tracked here: flow(), pipe() and
  // async iteration all pull through read().
  override read(size?: number): Buffer | null {
    const chunk = super.read(size);
    if (chunk !== null) this.#maybeSendWindow();
    return chunk;
  }

  #consumedNow(): number {
    return this.#received - this.readableLength;
  }

  #maybeSendWindow(): void {
    if (this.#remoteFin || this.#released) return;
    const consumed = this.#consumedNow();
    const delta = consumed - this.#consumedReported;
    if (delta < this.#recvWindow / 2) return;
    const now = performance.now();
    let resize = this.#lastWindowUpdate > 0 ? this.#autoTune(delta, now - this.#lastWindowUpdate) : 0;
    if (resize !== 0) resize = this.#host.resizeWindow(this.#recvWindow, resize);
    this.#lastWindowUpdate = now;
    this.#consumedReported = consumed;
    this.#recvWindow += resize;
    // A shrink is taken out of the credit handed back. It is never more than half the window
    // and `delta` is at least half of it, so the increment is never negative; when it is 0 the
    // peer still holds the whole (smaller) window as credit and buffered data.
    const increment = delta + resize;
    if (increment === 0) return;
    this.#recvCredit += increment;
    this.#host.sendControl(FrameType.Window, this.id, increment);
  }

  /**
   * Receive-window auto-tuning (docs/protocol.md §6.2): by how many bytes the
   * window grows (> 0) or shrinks (< 0), now that half of it, `delta` bytes,
   * was consumed in `elapsed` ms.
   *
   * Half a window draining in under two round trips means the window, not the
   * reader, limits the stream, so it may grow. But the round trip includes the
   * queues in front of the stream's data, and once the path is full a bigger
   * window only lengthens them: without a bound, one bulk transfer over a slow
   * link grows its window to `maxWindow` and every other stream on the
   * connection waits behind megabytes. So the window is steered to keep the
   * queueing delay, the round trip above the path's base, at the allowed
   * delay: `maxQueueDelay` or one base round trip, whichever is longer. Each
   * fresh round-trip sample moves it by what the stream drains in the
   * difference, at most doubling or halving it.
   */
  #autoTune(delta: number, elapsed: number): number {
    const window = this.#recvWindow;
    const canGrow = window < this.#maxRecvWindow;
    const canShrink = this.#maxQueueDelay > 0 && window > this.#minRecvWindow;
    if (!canGrow && !canShrink) return 0;
    // Reading the round trip may send a probe PING: only a stream whose window can change asks.
    const rtt = this.#host.rtt;
    if (rtt <= 0) return 0;
    const base = this.#host.baseRtt;
    const drainedFast = elapsed < 2 * rtt;
    if (this.#maxQueueDelay === 0 || base <= 0) {
      return canGrow && drainedFast ? Math.min(window * 2, this.#maxRecvWindow) - window : 0;
    }
    // One step per sample: a sample that already moved the window says nothing about the move.
    const sampledAt = this.#host.rttSampledAt;
    if (sampledAt <= this.#tunedWith) return 0;
    this.#tunedWith = sampledAt;
    const queued = rtt - base;
    const allowed = Math.max(this.#maxQueueDelay, base);
    const rate = delta / Math.max(elapsed, 0.001); // bytes per ms
    if (queued > allowed) {
      if (!canShrink) return 0;
      return (
        Math.ceil(Math.max(this.#minRecvWindow, window / 2, window - rate * (queued - allowed))) - window
      );
    }
    if (!canGrow || !drainedFast) return 0;
    return Math.floor(Math.min(window * 2, this.#maxRecvWindow, window + rate * (allowed - queued))) - window;
  }

  // ---- Frames from the peer (called by Session) ----

  /** @internal */
  onData(payload: Buffer): void {
    if (this.#remoteFin) throw new ProtocolError(`DATA after FIN on stream ${this.id}`);
    if (payload.byteLength > this.#recvCredit) {
      throw new FlowControlError(
        `stream ${this.id}: ${payload.byteLength} bytes sent with ${this.#recvCredit} bytes of credit`,
      );
    }
    this.#recvCredit -= payload.byteLength;
    this.#received += payload.byteLength;
    this.bytesIn += payload.byteLength;
    this.lastActivity = performance.now();
    if (payload.byteLength > 0) this.push(payload);
    this.#maybeSendWindow();
  }

  /** @internal */
  onFin(): void {
    if (this.#remoteFin) throw new ProtocolError(`second FIN on stream ${this.id}`);
    this.#remoteFin = true;
    this.lastActivity = performance.now();
    this.push(null);
    this.#maybeRelease();
  }

  /** @internal */
  onWindow(increment: number): void {
    if (this.#sendCredit + increment > MAX_WINDOW) {
      throw new FlowControlError(`stream ${this.id}: WINDOW of ${increment} overflows credit past 2^31-1`);
    }
    this.#sendCredit += increment;
    this.lastActivity = performance.now();
    this.#wantSend();
  }

  /** @internal */
  onRst(reason: Reason, message: string): void {
    this.resetReason = reason;
    this.#released = true; // the peer forgot the stream; never answer with RST
    this.#host.release(this);
    this.destroy(new StreamResetError(reason, message));
  }

  #maybeRelease(): void {
    if (this.#localFin && this.#remoteFin && !this.#released) {
      this.#released = true;
      this.#host.release(this);
    }
  }

  #sendRst(reason: Reason, message: string): void {
    if (this.#released) return;
    this.#released = true;
    this.resetReason = reason;
    this.#host.sendRst(this.id, reason, message);
    this.#host.release(this);
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    // A write still waiting for credit will never be sent: its callback (and,
    // through Node, those of the writes queued behind it) must still be called.
    const pending = this.#pending;
    this.#pending = null;
    if (!this.#released) {
      // Destroyed before both directions finished: the peer must learn the stream is gone.
      this.#sendRst(error ? reasonOf(error) : Reason.Cancel, error ? error.message : '');
    }
    pending?.callback(
      error ?? Object.assign(new Error('stream destroyed'), { code: 'ERR_STREAM_DESTROYED' }),
    );
    callback(error);
  }
}
