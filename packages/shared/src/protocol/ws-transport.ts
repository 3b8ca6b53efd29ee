import type { WebSocket } from 'ws';
import { ProtocolError } from '../errors.js';
import type { MessageTransport, TransportHandlers } from './transport.js';

export interface WsTransportOptions {
  /** Bytes queued in the socket beyond which the transport reports not writable. Default 4 MiB. */
  highWater?: number;
}

const OPEN = 1;

/**
 * Adapts a `ws` WebSocket to the session's MessageTransport. Backpressure is
 * counted from ws's own send callbacks (called once the bytes reach the
 * kernel), so it uses only ws's public API.
 */
export class WsTransport implements MessageTransport {
  readonly #ws: WebSocket;
  readonly #highWater: number;
  #queued = 0;
  #wantDrain = false;
  #handlers: TransportHandlers | undefined;
  #error: Error | undefined;

  constructor(ws: WebSocket, options: WsTransportOptions = {}) {
    this.#ws = ws;
    this.#highWater = options.highWater ?? 4 * 1024 * 1024;
    ws.binaryType = 'nodebuffer';
  }

  attach(handlers: TransportHandlers): void {
    this.#handlers = handlers;
    const ws = this.#ws;
    ws.on('message', (data, isBinary) => {
      if (!isBinary) {
        this.#error = new ProtocolError('text WebSocket message on a tunnel; frames are binary');
        ws.close(1003, 'binary frames only');
        return;
      }
      handlers.message(data as Buffer);
    });
    ws.on('error', (err) => {
      this.#error ??= err;
    });
    ws.on('close', (code, reason) => {
      if (!this.#error && code !== 1000 && code !== 1001) {
        this.#error = new Error(
          `WebSocket closed with code ${code}${reason.length ? `: ${reason.toString()}` : ''}`,
        );
      }
      handlers.close(this.#error);
    });
    if (ws.readyState > OPEN) queueMicrotask(() => handlers.close(new Error('WebSocket already closed')));
  }

  get writable(): boolean {
    return this.#queued < this.#highWater;
  }

  get bufferedAmount(): number {
    return this.#queued;
  }

  send(data: Buffer): void {
    if (this.#ws.readyState !== OPEN) return;
    const n = data.byteLength;
    this.#queued += n;
    if (this.#queued >= this.#highWater) this.#wantDrain = true;
    this.#ws.send(data, { binary: true, compress: false }, () => {
      this.#queued -= n;
      if (this.#wantDrain && this.#queued < this.#highWater / 2) {
        this.#wantDrain = false;
        this.#handlers?.drain();
      }
    });
  }

  close(code: number, reason: string): void {
    if (this.#ws.readyState > OPEN) return;
    this.#ws.close(code, reason);
    // A peer that ignores the close handshake must not hold the socket forever.
    const timer = setTimeout(() => this.#ws.terminate(), 5_000);
    timer.unref();
    this.#ws.once('close', () => clearTimeout(timer));
  }
}
