import type { MessageTransport, TransportHandlers } from './transport.js';

export interface MemoryTransportOptions {
  /** Undelivered bytes beyond which `writable` turns false. Default 1 MiB. */
  highWater?: number;
}

/**
 * One end of an in-memory transport pair. Messages are delivered in order on
 * a later macrotask, never re-entrantly, so the session sees the same
 * asynchrony it would on a socket. Tests can drop messages with `filter`.
 */
export class MemoryTransport implements MessageTransport {
  peer!: MemoryTransport;
  /** Return false to drop a message this end sends (e.g. to lose PONGs). */
  filter: ((data: Buffer) => boolean) | undefined;
  #handlers: TransportHandlers | undefined;
  readonly #highWater: number;
  #inbox: Buffer[] = [];
  #scheduled = false;
  #queued = 0;
  #wantDrain = false;
  #closed = false;
  closeCode: number | undefined;
  closeReason: string | undefined;

  constructor(options: MemoryTransportOptions = {}) {
    this.#highWater = options.highWater ?? 1024 * 1024;
  }

  attach(handlers: TransportHandlers): void {
    this.#handlers = handlers;
  }

  get writable(): boolean {
    return this.#queued < this.#highWater;
  }

  get bufferedAmount(): number {
    return this.#queued;
  }

  send(data: Buffer): void {
    if (this.#closed || this.peer.#closed) return;
    if (this.filter && !this.filter(data)) return;
    this.#queued += data.byteLength;
    if (this.#queued >= this.#highWater) this.#wantDrain = true;
    this.peer.#enqueue(data, this);
  }

  #enqueue(data: Buffer, from: MemoryTransport): void {
    this.#inbox.push(data);
    if (this.#scheduled) return;
    this.#scheduled = true;
    setImmediate(() => {
      this.#scheduled = false;
      const batch = this.#inbox;
      this.#inbox = [];
      for (const msg of batch) {
        from.#queued -= msg.byteLength;
        if (!this.#closed) this.#handlers?.message(msg);
      }
      if (from.#wantDrain && from.#queued < from.#highWater / 2 && !from.#closed) {
        from.#wantDrain = false;
        from.#handlers?.drain();
      }
    });
  }

  close(code: number, reason: string): void {
    if (this.#closed) return;
    this.closeCode = code;
    this.closeReason = reason;
    this.#shutdown(undefined);
    // The peer sees the close after the messages already in flight, as on a socket.
    setImmediate(() =>
      setImmediate(() =>
        this.peer.#shutdown(
          code === 1000 ? undefined : new Error(`closed by peer with code ${code}: ${reason}`),
        ),
      ),
    );
  }

  /** Simulates a broken connection: both ends close with an error at once. */
  destroy(error = new Error('transport destroyed')): void {
    this.#shutdown(error);
    this.peer.#shutdown(error);
  }

  #shutdown(error: Error | undefined): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#handlers?.close(error);
  }
}

export function memoryTransportPair(
  options: MemoryTransportOptions = {},
): [MemoryTransport, MemoryTransport] {
  const a = new MemoryTransport(options);
  const b = new MemoryTransport(options);
  a.peer = b;
  b.peer = a;
  return [a, b];
}
