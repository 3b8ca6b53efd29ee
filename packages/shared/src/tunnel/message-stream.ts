import type { Duplex } from 'node:stream';
import type { z } from 'zod';
import { ProtocolError } from '../errors.js';
import { decodeJson, encodeJson } from './messages.js';

/** Largest control message, bytes. A route set of 1024 routes fits comfortably. */
export const MAX_MESSAGE = 1024 * 1024;

/**
 * Length-prefixed JSON messages over a byte stream (the control stream and the
 * response head of HTTP streams): u32 big-endian length, then UTF-8 JSON.
 */
export function writeMessage(stream: Duplex, value: unknown): boolean {
  const body = encodeJson(value);
  const head = Buffer.allocUnsafe(4);
  head.writeUInt32BE(body.byteLength, 0);
  return stream.write(Buffer.concat([head, body]));
}

/**
 * Incremental reader for length-prefixed messages. `push` takes stream bytes
 * and returns the complete messages; leftover bytes after a message stay
 * available through `rest()` (for streams whose body follows a head).
 */
export class MessageReader<T> {
  #buf: Buffer = Buffer.alloc(0);
  readonly #schema: z.ZodType<T>;
  readonly #max: number;

  constructor(schema: z.ZodType<T>, max = MAX_MESSAGE) {
    this.#schema = schema;
    this.#max = max;
  }

  /** Returns complete messages; throws ProtocolError on an oversized or invalid message. */
  push(chunk: Buffer, limit = Number.POSITIVE_INFINITY): T[] {
    this.#buf = this.#buf.length === 0 ? chunk : Buffer.concat([this.#buf, chunk]);
    const out: T[] = [];
    while (out.length < limit && this.#buf.length >= 4) {
      const len = this.#buf.readUInt32BE(0);
      if (len > this.#max) throw new ProtocolError(`message of ${len} bytes exceeds ${this.#max}`);
      if (this.#buf.length < 4 + len) break;
      const decoded = decodeJson(this.#buf.subarray(4, 4 + len), this.#schema);
      this.#buf = this.#buf.subarray(4 + len);
      if (!decoded.ok) throw new ProtocolError(`invalid message: ${decoded.error}`);
      out.push(decoded.value);
    }
    return out;
  }

  /** Bytes received after the last complete message. */
  rest(): Buffer {
    return this.#buf;
  }
}
