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
  /** Latest round-trip time in ms (0 while unknown); reading it may start a fresh probe. */
  readonly rtt: number;
  /** Largest DATA payload the peer accepts. */
  readonly peerMaxFramePayload: number;
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
}

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
  /** Bytes the peer may still send before it needs a WINDOW from us. */
  #recvCredit: number;
  #received = 0;
  #consumedReported = 0;
  #lastWindowUpdate = 0;

  /** performance.now() of the last frame in either direction, for the idle timeout. */
  lastActivity = performance.now();
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
  }

  /** Aborts the stream in both directions, telling the peer `reason`. */
  reset(reason: Reason = Reason.Cancel, message = ''): void {
    if (this.destroyed) return;
    this.#sendRst(reason, message);
    this.destroy(new StreamResetError(reason, message || 'reset locally'));
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
    // Auto-tuning: if half the window drained in under ~2 RTTs, the window (not
    // the reader) limits throughput, so double it up to the cap.
    const now = performance.now();
    let extra = 0;
    // Reading the round trip may send a probe PING: only a stream that can still grow asks.
    if (this.#recvWindow < this.#maxRecvWindow) {
      const rtt = this.#host.rtt;
      if (this.#lastWindowUpdate > 0 && rtt > 0 && now - this.#lastWindowUpdate < 2 * rtt) {
        const next = Math.min(this.#recvWindow * 2, this.#maxRecvWindow);
        extra = next - this.#recvWindow;
        this.#recvWindow = next;
      }
    }
    this.#lastWindowUpdate = now;
    this.#consumedReported = consumed;
    this.#recvCredit += delta + extra;
    this.#host.sendControl(FrameType.Window, this.id, delta + extra);
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
