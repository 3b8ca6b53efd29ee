/**
 * A response body framed as records, so that trailer fields can follow it
 * (docs/protocol.md §11, `trailers` in the response head). Each record is
 *
 *   u8 kind | u32 length (big-endian) | payload
 *
 * kind 0 carries body bytes, kind 1 the trailer fields as a JSON array of
 * name/value pairs and ends the body. FIN without a trailers record ends a
 * body that has none.
 */
import { Transform, type TransformCallback, type Writable } from 'node:stream';
import { ProtocolError } from '../errors.js';
import type { HeaderPairs } from '../http-headers.js';
import { decodeJson, describeIssue, encodeJson, headerPairsSchema } from './messages.js';

export const RecordKind = { Data: 0, Trailers: 1 } as const;

/** Bytes before each record's payload. */
const PREFIX = 5;
/** Largest body record: a sender splits larger chunks. */
export const MAX_BODY_RECORD = 1024 * 1024;
/** Largest trailers record. */
export const MAX_TRAILERS_RECORD = 64 * 1024;
/** Body chunks up to this size go out with their prefix in one write. */
const COPY_BELOW = 16 * 1024;

function prefix(kind: number, length: number): Buffer {
  const head = Buffer.allocUnsafe(PREFIX);
  head.writeUInt8(kind, 0);
  head.writeUInt32BE(length, 1);
  return head;
}

/** Writes `chunk` as body records; returns what the last write returned (false: wait for 'drain'). */
export function writeBodyRecord(out: Writable, chunk: Buffer): boolean {
  let ok = true;
  for (let at = 0; at < chunk.byteLength; at += MAX_BODY_RECORD) {
    const part = chunk.subarray(at, at + MAX_BODY_RECORD);
    const head = prefix(RecordKind.Data, part.byteLength);
    // A small chunk is copied once rather than sent as two stream writes (two DATA frames).
    if (part.byteLength <= COPY_BELOW) ok = out.write(Buffer.concat([head, part]));
    else {
      out.write(head);
      ok = out.write(part);
    }
  }
  return ok;
}

/**
 * Writes the trailers record, which ends the body (the stream's FIN follows).
 * Throws a RangeError for fields the reader would refuse (too many, too long,
 * over the record's bound), before writing anything.
 */
export function writeTrailersRecord(out: Writable, trailers: HeaderPairs): boolean {
  const valid = headerPairsSchema.safeParse(trailers);
  if (!valid.success) throw new RangeError(`trailer fields refused: ${describeIssue(valid.error)}`);
  const json = encodeJson(trailers);
  if (json.byteLength > MAX_TRAILERS_RECORD) {
    throw new RangeError(`trailer fields of ${json.byteLength} bytes exceed ${MAX_TRAILERS_RECORD}`);
  }
  return out.write(Buffer.concat([prefix(RecordKind.Trailers, json.byteLength), json]));
}

/**
 * Turns a framed body back into its bytes; `onTrailers` gets the trailer
 * fields when their record arrives. A record of an unknown kind, one over its
 * bound, bytes after the trailers, or an end inside a record fail the
 * transform with a ProtocolError.
 */
export class FramedBodyReader extends Transform {
  readonly #onTrailers: (trailers: HeaderPairs) => void;
  /** The current record's prefix while it is incomplete. */
  #prefix = Buffer.alloc(PREFIX);
  #prefixHave = 0;
  #kind = -1;
  /** Payload bytes of the current record still to come (-1: reading a prefix). */
  #left = -1;
  /** A trailers record's payload so far. */
  #trailer: Buffer[] = [];
  #ended = false;
  #bodyBytes = 0;

  constructor(onTrailers: (trailers: HeaderPairs) => void) {
    super();
    this.#onTrailers = onTrailers;
  }

  /** Body bytes read so far: the records' payloads, without their framing or the trailers. */
  get bodyBytes(): number {
    return this.#bodyBytes;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    try {
      this.#read(chunk);
      callback();
    } catch (err) {
      callback(err as Error);
    }
  }

  override _flush(callback: TransformCallback): void {
    callback(
      this.#left >= 0 || this.#prefixHave > 0 ? new ProtocolError('body ended inside a record') : null,
    );
  }

  #read(chunk: Buffer): void {
    let at = 0;
    while (at < chunk.byteLength) {
      if (this.#ended) throw new ProtocolError('bytes after the trailers record');
      if (this.#left < 0) {
        const n = Math.min(PREFIX - this.#prefixHave, chunk.byteLength - at);
        chunk.copy(this.#prefix, this.#prefixHave, at, at + n);
        this.#prefixHave += n;
        at += n;
        if (this.#prefixHave < PREFIX) return;
        this.#startRecord();
        continue;
      }
      const n = Math.min(this.#left, chunk.byteLength - at);
      const part = chunk.subarray(at, at + n);
      at += n;
      this.#left -= n;
      if (this.#kind === RecordKind.Data) {
        this.#bodyBytes += n;
        this.push(part);
      } else this.#trailer.push(part);
      if (this.#left === 0) this.#endRecord();
    }
  }

  #startRecord(): void {
    this.#prefixHave = 0;
    this.#kind = this.#prefix.readUInt8(0);
    const length = this.#prefix.readUInt32BE(1);
    if (this.#kind === RecordKind.Data) {
      if (length > MAX_BODY_RECORD) throw new ProtocolError(`body record of ${length} bytes`);
    } else if (this.#kind === RecordKind.Trailers) {
      if (length > MAX_TRAILERS_RECORD) throw new ProtocolError(`trailers record of ${length} bytes`);
    } else {
      throw new ProtocolError(`unknown body record kind ${this.#kind}`);
    }
    this.#left = length;
    if (length === 0) this.#endRecord();
  }

  #endRecord(): void {
    this.#left = -1;
    if (this.#kind !== RecordKind.Trailers) return;
    const decoded = decodeJson(Buffer.concat(this.#trailer), headerPairsSchema);
    this.#trailer = [];
    if (!decoded.ok) throw new ProtocolError(`invalid trailers record: ${decoded.error}`);
    this.#ended = true;
    this.#onTrailers(decoded.value);
  }
}
