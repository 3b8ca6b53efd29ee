import type { WebSocket } from 'ws';
import { ProtocolError } from '../errors.js';
import type { MessageTransport, TransportHandlers } from './transport.js';

export interface WsTransportOptions {
  /**
   * Bytes queued in the socket beyond which the transport reports not writable.
   * Default 512 KiB: the session's fair scheduler picks which stream sends next only
   * while the queue is below it, so a small response waits behind at most this
   * much of a bulk transfer (bench/head-of-line.mjs: loaded p50 26 → 11 ms
   * against 4 MiB, with no loss of bulk throughput).
   */
  highWater?: number;
  /**
   * Send each large DATA frame as one WebSocket message in two fragments
   * (header, then the payload as it is) instead of joining them. Fragments
   * save the sender a copy of every payload byte; ws on the receiving side
   * then joins the fragments, one copy there. Default true. The agent turns
   * it off so that the relay, the hop all tenants share, copies less.
   */
  fragmentLargeFrames?: boolean;
}

const CONNECTING = 0;
const OPEN = 1;

/**
 * Adapts a `ws` WebSocket to the session's MessageTransport. It listens from
 * construction, so messages that arrive before the session attaches (the
 * peer's HELLO often rides in right behind the upgrade response) are held, not
 * lost; sends made before the socket opens are held until it does.
 * Backpressure is counted from ws's own send callbacks (called once the bytes
 * reach the kernel), so it uses only ws's public API.
 */
export class WsTransport implements MessageTransport {
  readonly #ws: WebSocket;
  readonly #highWater: number;
  #queued = 0;
  #wantDrain = false;
  #handlers: TransportHandlers | undefined;
  #error: Error | undefined;
  /** Messages received before attach(). */
  #early: Buffer[] | undefined = [];
  #closedEarly = false;
  /** Messages sent before the socket opened. */
  #unsent: Buffer[] = [];
  #corked = false;
  /** Set on a text message: the connection is closing and later messages are dropped. */
  #refused = false;
  readonly #fragment: boolean;

  constructor(ws: WebSocket, options: WsTransportOptions = {}) {
    this.#ws = ws;
    this.#highWater = options.highWater ?? 512 * 1024;
    this.#fragment = options.fragmentLargeFrames ?? true;
    ws.binaryType = 'nodebuffer';
    ws.on('message', (data, isBinary) => {
      // After a text message the peer is not speaking the protocol: nothing more it sends counts.
      if (this.#refused) return;
      if (!isBinary) {
        this.#refused = true;
        this.#error = new ProtocolError('text WebSocket message on a tunnel; frames are binary');
        ws.close(1003, 'binary frames only');
        return;
      }
      if (this.#early) this.#early.push(data as Buffer);
      else this.#handlers?.message(data as Buffer);
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
      for (const m of this.#unsent) this.#queued -= m.byteLength;
      this.#unsent = [];
      if (this.#handlers) this.#handlers.close(this.#error);
      else this.#closedEarly = true;
    });
    if (ws.readyState === CONNECTING) {
      ws.once('open', () => {
        const pending = this.#unsent;
        this.#unsent = [];
        for (const m of pending) this.#transmit(m);
      });
    }
  }

  attach(handlers: TransportHandlers): void {
    this.#handlers = handlers;
    const early = this.#early ?? [];
    this.#early = undefined;
    for (const m of early) handlers.message(m);
    if (this.#closedEarly || this.#ws.readyState > OPEN) {
      queueMicrotask(() => handlers.close(this.#error ?? new Error('WebSocket already closed')));
    }
  }

  get writable(): boolean {
    return this.#queued < this.#highWater;
  }

  get bufferedAmount(): number {
    return this.#queued;
  }

  send(data: Buffer): void {
    this.#queued += data.byteLength;
    if (this.#queued >= this.#highWater) this.#wantDrain = true;
    if (this.#ws.readyState === CONNECTING) this.#unsent.push(data);
    else this.#transmit(data);
  }

  sendParts(head: Buffer, body: Buffer): void {
    if (!this.#fragment || this.#ws.readyState === CONNECTING) {
      this.send(Buffer.concat([head, body]));
      return;
    }
    const n = head.byteLength + body.byteLength;
    this.#queued += n;
    if (this.#queued >= this.#highWater) this.#wantDrain = true;
    if (this.#ws.readyState !== OPEN) {
      this.#queued -= n;
      return;
    }
    this.#corkForTick();
    // Two WebSocket frames, one message: the receiver sees header and body joined.
    this.#ws.send(head, { binary: true, compress: false, fin: false });
    this.#ws.send(body, { binary: true, compress: false, fin: true }, () => {
      this.#queued -= n;
      if (this.#wantDrain && this.#queued < this.#highWater / 2) {
        this.#wantDrain = false;
        this.#handlers?.drain();
      }
    });
  }

  /**
   * Corks the socket until the event loop's check phase, so the frames that
   * every I/O callback of this loop iteration produced (OPEN, DATA, FIN,
   * WINDOW... of many requests at once under load) leave in one writev, not
   * one write each. Uncorking on nextTick instead would flush after each
   * callback: twice the write system calls per request at 64 connections
   * (bench/http.mjs: 6.2 → 3.2 across the stack). ws exposes no public hook
   * for this; `_socket` is its net.Socket.
   */
  #corkForTick(): void {
    if (this.#corked) return;
    const socket = (
      this.#ws as unknown as { _socket?: { cork(): void; uncork(): void; destroyed?: boolean } }
    )._socket;
    if (!socket || typeof socket.cork !== 'function') return;
    this.#corked = true;
    socket.cork();
    setImmediate(() => {
      this.#corked = false;
      if (!socket.destroyed) socket.uncork();
    });
  }

  /** Hands a counted message to ws; the count drops when ws reports it written. */
  #transmit(data: Buffer): void {
    const n = data.byteLength;
    if (this.#ws.readyState !== OPEN) {
      this.#queued -= n;
      return;
    }
    this.#corkForTick();
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
