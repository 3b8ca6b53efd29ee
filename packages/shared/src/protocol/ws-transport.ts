import type { WebSocket } from 'ws';
import { FrameSizeError, ProtocolError } from '../errors.js';
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
}

const CONNECTING = 0;
const OPEN = 1;

/** What the transport needs of ws's net.Socket (ws keeps it as `_socket`). */
interface RawSocket {
  write(data: Buffer, cb?: (err?: Error | null) => void): boolean;
  cork(): void;
  uncork(): void;
  readonly destroyed?: boolean;
}

/**
 * What a queued message costs beyond its bytes (its write request, callback
 * and buffer objects; about 450 bytes of heap measured with 20-byte PONGs),
 * counted with the bytes: a peer that provokes a flood of tiny frames and
 * never reads reaches `maxSendQueue` by what the queue really holds.
 */
const MESSAGE_COST = 512;

/** Messages up to this size are written with their WebSocket header in one buffer (one copy, one write). */
const JOIN_BELOW = 4096;

/**
 * The head of one unfragmented binary WebSocket frame (RFC 6455 §5.2) of
 * `length` payload bytes, followed by `prefix` (the start of that payload).
 * A client's frame carries the MASK bit with an all-zero key, which leaves
 * the payload as it is: masking protects proxies that misread cleartext
 * WebSocket as HTTP, and inside the TLS the tunnel runs in (wss://) it would
 * only cost a pass over every byte (packages/agent/src/tunnel/dial.ts).
 */
export function binaryFrameHead(length: number, masked: boolean, prefix?: Uint8Array): Buffer {
  const extended = length < 126 ? 0 : length < 65_536 ? 2 : 8;
  const size = 2 + extended + (masked ? 4 : 0);
  const buf = Buffer.allocUnsafe(size + (prefix?.byteLength ?? 0));
  buf[0] = 0x82; // FIN, opcode 2 (binary)
  const mask = masked ? 0x80 : 0;
  if (extended === 0) {
    buf[1] = mask | length;
  } else if (extended === 2) {
    buf[1] = mask | 126;
    buf.writeUInt16BE(length, 2);
  } else {
    buf[1] = mask | 127;
    buf.writeUInt32BE(Math.floor(length / 2 ** 32), 2);
    buf.writeUInt32BE(length >>> 0, 6);
  }
  if (masked) buf.fill(0, 2 + extended, size);
  if (prefix) buf.set(prefix, size);
  return buf;
}

/**
 * Adapts a `ws` WebSocket to the session's MessageTransport. It listens from
 * construction, so messages that arrive before the session attaches (the
 * peer's HELLO often rides in right behind the upgrade response) are held, not
 * lost; sends made before the socket opens are held until it does.
 *
 * Receiving is ws's. Sending writes each message as one binary WebSocket
 * frame straight to ws's socket: a large DATA frame leaves as the frame's
 * heads in one small buffer and the payload as it is, so no side copies a
 * payload to send it, and the receiver gets one frame, not fragments to join.
 * ws's own sender stays in use for close and pong frames; it writes to the
 * socket at once (no permessage-deflate, no Blobs), so the order of all
 * writes is the order of the calls. Backpressure is counted from the write
 * callbacks, called once the bytes reach the kernel.
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
  /** A client's frames are masked (with a zero key); ws gives a client's WebSocket its URL. */
  readonly #masked: boolean;

  constructor(ws: WebSocket, options: WsTransportOptions = {}) {
    this.#ws = ws;
    this.#highWater = options.highWater ?? 512 * 1024;
    this.#masked = Boolean(ws.url);
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
    ws.on('error', (err: Error & { code?: string }) => {
      // A message over the WebSocket's maxPayload (one frame of our maxFramePayload, set
      // where the socket is made): ws stops reading it and closes with 1009 itself.
      this.#error ??=
        err.code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH'
          ? new FrameSizeError(`WebSocket message larger than a frame may be: ${err.message}`)
          : err;
    });
    ws.on('close', (code, reason) => {
      if (!this.#error && code !== 1000 && code !== 1001) {
        this.#error = new Error(
          `WebSocket closed with code ${code}${reason.length ? `: ${reason.toString()}` : ''}`,
        );
      }
      for (const m of this.#unsent) this.#queued -= m.byteLength + MESSAGE_COST;
      this.#unsent = [];
      if (this.#handlers) this.#handlers.close(this.#error);
      else this.#closedEarly = true;
    });
    if (ws.readyState === CONNECTING) {
      ws.once('open', () => {
        if (!this.#checkSocket()) return;
        const pending = this.#unsent;
        this.#unsent = [];
        for (const m of pending) this.#transmit(m);
      });
    } else if (ws.readyState === OPEN) {
      this.#checkSocket();
    }
  }

  /**
   * The transport writes to ws's socket, which ws keeps as `_socket`. Should a
   * ws release ever keep it otherwise, the tunnel fails at once, saying why,
   * instead of dropping every frame in silence.
   */
  #checkSocket(): boolean {
    const socket: Partial<RawSocket> | undefined = this.#rawSocket;
    if (socket && typeof socket.write === 'function' && typeof socket.cork === 'function') return true;
    this.#error = new Error('this ws release keeps no _socket to write tunnel frames to');
    this.#ws.terminate();
    return false;
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
    this.#count(data.byteLength);
    if (this.#ws.readyState === CONNECTING) this.#unsent.push(data);
    else this.#transmit(data);
  }

  sendParts(head: Buffer, body: Buffer): void {
    if (this.#ws.readyState === CONNECTING) return this.send(Buffer.concat([head, body]));
    this.#count(head.byteLength + body.byteLength);
    this.#transmit(head, body);
  }

  /** Counts a message of `length` bytes into the queue, at what it costs in memory. */
  #count(length: number): void {
    this.#queued += length + MESSAGE_COST;
    if (this.#queued >= this.#highWater) this.#wantDrain = true;
  }

  /**
   * Writes one counted message, `first` then `rest`, as one frame: the frame
   * head joined with `rest`'s header part (or with a small message whole),
   * the payload as it is. The count drops when it is written, or at once if
   * the socket is gone (the message is dropped).
   */
  #transmit(first: Buffer, rest?: Buffer): void {
    const length = first.byteLength + (rest?.byteLength ?? 0);
    const socket = this.#socket();
    const done = () => {
      this.#queued -= length + MESSAGE_COST;
      if (this.#wantDrain && this.#queued < this.#highWater / 2) {
        this.#wantDrain = false;
        this.#handlers?.drain();
      }
    };
    if (!socket) return done();
    if (rest) {
      socket.write(binaryFrameHead(length, this.#masked, first));
      socket.write(rest, done);
    } else if (length < JOIN_BELOW) {
      socket.write(binaryFrameHead(length, this.#masked, first), done);
    } else {
      socket.write(binaryFrameHead(length, this.#masked));
      socket.write(first, done);
    }
  }

  /**
   * ws's socket, corked until the event loop's check phase, while the
   * WebSocket is open; undefined otherwise (the message is dropped). Corking
   * makes the frames that every I/O callback of this loop iteration produced
   * (OPEN, DATA, FIN, WINDOW... of many requests at once under load) leave in
   * one writev, not one write each. Uncorking on nextTick instead would flush
   * after each callback: twice the write system calls per request at 64
   * connections (bench/http.mjs: 6.2 → 3.2 across the stack).
   */
  #socket(): RawSocket | undefined {
    if (this.#ws.readyState !== OPEN) return undefined;
    const socket = this.#rawSocket;
    if (!socket || socket.destroyed) return undefined;
    if (!this.#corked) {
      this.#corked = true;
      socket.cork();
      setImmediate(() => {
        this.#corked = false;
        if (!socket.destroyed) socket.uncork();
      });
    }
    return socket;
  }

  /** ws's net.Socket: ws exposes no public handle on it and keeps it as `_socket`. */
  get #rawSocket(): RawSocket | undefined {
    return (this.#ws as unknown as { _socket?: RawSocket })._socket;
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
