import type { Duplex } from 'node:stream';
import type { z } from 'zod';
import { ProtocolError } from '../errors.js';
import { decodeJson, encodeJson } from './messages.js';

/** Largest control message, bytes. A route set of 1024 routes fits comfortably. */
export const MAX_MESSAGE = 1024 * 1024;

/**
 * Largest announce-result an agent reads. The relay answers each hostname of
 * an announcement (up to MAX_MESSAGE) with a result that repeats the route id
 * and adds a URL, about five times the hostname's share of the announcement:
 * 16,384 short names in 0.4 MiB came back as 1.4 MiB.
 */
export const MAX_RESULT_MESSAGE = 8 * MAX_MESSAGE;

/**
 * Length-prefixed JSON messages over a byte stream (the control stream and the
 * response head of HTTP streams): u32 big-endian length, then UTF-8 JSON.
 */
export function writeMessage(
  stream: Duplex,
  value: unknown,
  written?: (err?: Error | null) => void,
): boolean {
  const body = encodeJson(value);
  const head = Buffer.allocUnsafe(4);
  head.writeUInt32BE(body.byteLength, 0);
  return stream.write(Buffer.concat([head, body]), written);
}

/**
 * Incremental reader for length-prefixed messages. `push` takes stream bytes
 * and returns the complete messages; leftover bytes after a message stay
 * available through `rest()` (for streams whose body follows a head).
 */
export class MessageReader<T> {
  /** Bytes received and not yet part of a returned message, in arrival order. */
  #chunks: Buffer[] = [];
  #length = 0;
  /** The next message's length, once its 4-byte prefix is in. */
  #next: number | undefined;
  readonly #schema: z.ZodType<T>;
  readonly #max: number;

  constructor(schema: z.ZodType<T>, max = MAX_MESSAGE) {
    this.#schema = schema;
    this.#max = max;
  }

  /**
   * Returns complete messages; throws ProtocolError on an oversized or invalid
   * message. Chunks are kept as they come and joined once per message, so a
   * message trickling in a byte at a time costs no more than one arriving whole.
   */
  push(chunk: Buffer, limit = Number.POSITIVE_INFINITY): T[] {
    if (chunk.byteLength > 0) {
      this.#chunks.push(chunk);
      this.#length += chunk.byteLength;
    }
    const out: T[] = [];
    while (out.length < limit && this.#length >= 4) {
      const len = (this.#next ??= this.#prefix());
      if (len > this.#max) throw new ProtocolError(`message of ${len} bytes exceeds ${this.#max}`);
      if (this.#length < 4 + len) break;
      this.#next = undefined;
      const all = this.#joined();
      const decoded = decodeJson(all.subarray(4, 4 + len), this.#schema);
      const rest = all.subarray(4 + len);
      this.#chunks = rest.byteLength > 0 ? [rest] : [];
      this.#length = rest.byteLength;
      if (!decoded.ok) throw new ProtocolError(`invalid message: ${decoded.error}`);
      out.push(decoded.value);
    }
    return out;
  }

  /** Bytes received after the last complete message. */
  rest(): Buffer {
    return this.#joined();
  }

  /** The length prefix of the next message (at least 4 bytes are buffered). */
  #prefix(): number {
    const first = this.#chunks[0]!;
    return (first.byteLength >= 4 ? first : this.#joined()).readUInt32BE(0);
  }

  /** Everything buffered as one Buffer (joined at most once: the result replaces the chunks). */
  #joined(): Buffer {
    if (this.#chunks.length === 1) return this.#chunks[0]!;
    const all = Buffer.concat(this.#chunks, this.#length);
    this.#chunks = all.byteLength > 0 ? [all] : [];
    return all;
  }
}
