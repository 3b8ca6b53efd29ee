/**
 * The HTTP/1.1 reading the relay's fast path needs (see http1-connection.ts):
 * request heads it may forward as bytes, response heads and the framing of
 * the bodies that follow. It accepts a deliberately narrow subset: a request
 * outside it is handed to Node's parser, which answers every oddity; a
 * response outside it is a 502.
 */
import { normalizeHost } from '@burrow/shared';
import { FORWARDING_FIELDS, isForwardingField, TOKEN } from './validate-request.js';

const CRLF2 = '\r\n\r\n';
/** A field value: visible characters, spaces, tabs and obs-text; never CR, LF or NUL. */
const VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;
/** Methods whose requests the fast path carries; CONNECT, TRACE and extensions take Node's parser. */
const REQUEST_LINE = /^(GET|HEAD|POST|PUT|DELETE|OPTIONS|PATCH) (\/[\x21-\x7e]*) HTTP\/1\.1$/;
const STATUS_LINE = /^HTTP\/1\.([01]) ([1-9]\d\d)(?: ([\t\x20-\x7e\x80-\xff]*))?$/;
const DIGITS = /^\d{1,15}$/;
const OWS_AROUND = /^[ \t]+|[ \t]+$/g;

/**
 * A field value without the optional whitespace around it: spaces and tabs
 * only (RFC 9110 §5.6.3). String.prototype.trim would also take vertical
 * tabs, form feeds and no-break spaces, which VALUE must see and refuse: a
 * backend may read such a line differently (`Content-Length:\v5`).
 */
function ows(value: string): string {
  return value.replace(OWS_AROUND, '');
}

/** A request head the fast path forwards, rewritten (http1-connection.ts). */
export interface RequestHead {
  method: string;
  /** The request target, origin form. */
  target: string;
  /** The Host header's name, normalised (lower case, no port, no trailing dot): what routes it. */
  host: string;
  /** The Host header as sent (what the backend gets as Host and X-Forwarded-Host). */
  hostField: string;
  /** Body length from Content-Length; 0 without one. */
  length: number;
  /** The client asked to close the connection after this exchange. */
  close: boolean;
  /** `Expect: 100-continue`: the relay answers it (as Node's server does), the backend never sees it. */
  expectContinue: boolean;
  /** The header lines passed on as received (Content-Length among them), each followed by CRLF: no Host, hop-by-hop or forwarding field. */
  fields: string;
  /** Offset just past the blank line that ends the head. */
  end: number;
}

/** Not yet a whole head in the buffer. */
export const INCOMPLETE = 0;
/** A request the fast path does not carry: Node's parser takes the connection from here. */
export const OTHER = 1;

const LF_LF = Buffer.from('\n\n');
const LF_CRLF = Buffer.from('\n\r\n');

/**
 * Whether `buf`, which holds no CRLF CRLF, ends a head with a line ended by
 * LF alone: such a head never gets its CRLF CRLF, and Node's parser refuses
 * it at once (400) rather than waiting for the rest. Two native searches, as
 * cheap as the one for CRLF CRLF while a head trickles in.
 */
function endsWithBareLf(buf: Buffer): boolean {
  return buf.includes(LF_LF) || buf.includes(LF_CRLF);
}

/**
 * Reads the request head at the start of `buf`. Anything but a plain
 * HTTP/1.1 request with one valid Host, at most one Content-Length, no
 * Transfer-Encoding or Upgrade, and no Expect but `100-continue`, is OTHER; so is a Connection header
 * naming anything but close or keep-alive, and a head over `maxHead` bytes or
 * `maxFields` fields.
 */
export function parseRequestHead(
  buf: Buffer,
  maxHead: number,
  maxFields: number,
): RequestHead | typeof INCOMPLETE | typeof OTHER {
  // Every method the fast path carries starts with an upper-case letter. Anything else (a TLS
  // ClientHello sent to the plain port, an empty line before the request) is Node's to answer, at
  // once: waiting for a blank line would leave a client that never sends one without an answer.
  if (buf.length > 0 && !(buf[0]! >= 0x41 && buf[0]! <= 0x5a)) return OTHER;
  const blank = buf.indexOf(CRLF2, 0, 'latin1');
  if (blank === -1) return buf.length > maxHead || endsWithBareLf(buf) ? OTHER : INCOMPLETE;
  if (blank + 4 > maxHead) return OTHER;
  const lines = buf.toString('latin1', 0, blank).split('\r\n');
  const start = REQUEST_LINE.exec(lines[0]!);
  // `maxFields` or more is a 431 at Node's parser, which keeps no more than that many.
  if (!start || lines.length > maxFields) return OTHER;
  let host: string | undefined;
  let hostField = '';
  let length: number | undefined;
  let close = false;
  let expectContinue = false;
  let fields = '';
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i]!;
    const colon = line.indexOf(':');
    if (colon <= 0) return OTHER;
    const name = line.slice(0, colon);
    const value = ows(line.slice(colon + 1));
    if (!TOKEN.test(name) || !VALUE.test(value)) return OTHER;
    switch (fieldKind(name)) {
      case Field.Host:
        if (host !== undefined) return OTHER;
        hostField = value;
        host = normalizeHost(value);
        if (!host) return OTHER;
        break;
      case Field.ContentLength:
        if (length !== undefined || !DIGITS.test(value)) return OTHER;
        length = Number(value);
        fields += `${line}\r\n`;
        break;
      case Field.Connection:
        for (const token of value.split(',')) {
          const t = token.trim().toLowerCase();
          if (t === 'close') close = true;
          else if (t !== 'keep-alive' && t !== '') return OTHER;
        }
        break;
      case Field.Expect:
        // Anything else (or the field twice) is Node's to refuse with 417.
        if (expectContinue || value.toLowerCase() !== '100-continue') return OTHER;
        expectContinue = true;
        break;
      case Field.Dropped:
        break;
      case Field.Other:
        return OTHER;
      default:
        fields += `${line}\r\n`;
    }
  }
  if (host === undefined) return OTHER;
  return {
    method: start[1]!,
    target: start[2]!,
    host,
    hostField,
    length: length ?? 0,
    close,
    expectContinue,
    fields,
    end: blank + 4,
  };
}

/** What the fast path does with a request field. */
const Field = {
  Passed: 0,
  Host: 1,
  ContentLength: 2,
  Connection: 3,
  /** Hop-by-hop or forwarding fields the relay removes or sets itself. */
  Dropped: 4,
  /** Fields whose requests take Node's parser. */
  Other: 5,
  Expect: 6,
} as const;
type Field = (typeof Field)[keyof typeof Field];

/** Request fields the fast path does not simply pass on, by lower-case name. */
const SPECIAL_FIELDS = new Map<string, Field>([
  ['host', Field.Host],
  ['content-length', Field.ContentLength],
  ['connection', Field.Connection],
  ['keep-alive', Field.Dropped],
  ['te', Field.Dropped],
  ['trailer', Field.Dropped],
  ['proxy-connection', Field.Dropped],
  ['proxy-authenticate', Field.Dropped],
  ['proxy-authorization', Field.Dropped],
  ...FORWARDING_FIELDS.map((name): [string, Field] => [name, Field.Dropped]),
  ['transfer-encoding', Field.Other],
  ['upgrade', Field.Other],
  ['expect', Field.Expect],
  ['http2-settings', Field.Other],
]);
const SPECIAL_LENGTHS = new Set([...SPECIAL_FIELDS.keys()].map((name) => name.length));

/** How the relay treats a request field; most names are never lower-cased (their length rules them out). */
function fieldKind(name: string): Field {
  if (!SPECIAL_LENGTHS.has(name.length)) return Field.Passed;
  const lower = name.toLowerCase();
  const kind = SPECIAL_FIELDS.get(lower);
  if (kind !== undefined) return kind;
  return isForwardingField(lower) ? Field.Dropped : Field.Passed;
}

/**
 * How the body after a response head ends: `none` (HEAD, 204, 304),
 * `length` (Content-Length bytes), `chunked` (passed on as it is; ends after
 * the last chunk and the trailer section), `close` (when the backend closes;
 * the relay sends it on chunked).
 */
export type Framing = 'none' | 'length' | 'chunked' | 'close';

/** A response head as read from the backend. */
export interface ResponseHead {
  status: number;
  /** The status line and fields as they go to the client, hop-by-hop fields removed, each line ending in CRLF. */
  head: string;
  framing: Framing;
  /** Body length for `length` framing. */
  length: number;
  /**
   * The backend's connection is not used again after this response: the
   * backend said it closes, or the response ends with its head where a
   * misbehaving backend may still send a body (below).
   */
  close: boolean;
  /** Offset just past the head. */
  end: number;
  /** Server-sent events (`Content-Type: text/event-stream`): a client reconnects when it ends. */
  eventStream: boolean;
}

/**
 * The field lines after a status line, each ending in CRLF: a token, a colon
 * and a value of visible characters, spaces, tabs and obs-text. One pass over
 * the whole section; no CR, LF or NUL inside a line, no obs-fold.
 */
const FIELD_LINES = /^(?:[!#$%&'*+.^_`|~0-9A-Za-z-]+:[\t\x20-\x7e\x80-\xff]*\r\n)*$/;
/** Response fields that never cross a proxy; Connection may name more. */
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'te',
  'trailer',
  'upgrade',
  'transfer-encoding',
  'http2-settings',
]);
/** Name lengths of the response fields the relay reads or drops: any other name is passed on unread. */
const SPECIAL_RESPONSE_LENGTHS = new Set(
  [...HOP_BY_HOP, 'content-length', 'content-type'].map((name) => name.length),
);
/** The media type of server-sent events, with or without parameters. */
export const EVENT_STREAM = /^text\/event-stream(?:[\t ;]|$)/i;

const CRLF2_BYTES = Buffer.from(CRLF2, 'latin1');

/**
 * Collects a response head that arrives in pieces (a backend may write it a
 * byte at a time) without copying or rescanning what came before: each byte
 * is looked at once, and the pieces are joined once, when the blank line
 * that ends the head is there.
 */
export class HeadBytes {
  #parts: Buffer[] = [];
  #length = 0;
  /** The last three bytes so far, for a blank line split across pieces. */
  #tail: Buffer = Buffer.alloc(0);
  readonly #maxHead: number;

  constructor(maxHead: number) {
    this.#maxHead = maxHead;
  }

  /** Nothing collected. */
  get empty(): boolean {
    return this.#length === 0;
  }

  /**
   * Adds `piece`. Returns all the bytes so far once they hold a blank line
   * (and starts over), INCOMPLETE before, or what is wrong with a head that
   * can never be whole: too long, or a line ended by a bare LF.
   */
  add(piece: Buffer): Buffer | typeof INCOMPLETE | string {
    const tail = this.#tail;
    let whole = piece.indexOf(CRLF2_BYTES) !== -1;
    if (!whole && tail.length > 0) {
      whole = Buffer.concat([tail, piece.subarray(0, 3)]).indexOf(CRLF2_BYTES) !== -1;
    }
    if (whole) {
      const bytes =
        this.#parts.length === 0
          ? piece
          : Buffer.concat([...this.#parts, piece], this.#length + piece.length);
      this.clear();
      return bytes;
    }
    this.#length += piece.length;
    if (this.#length > this.#maxHead) return `response head over ${this.#maxHead} bytes`;
    // A head with bare LF line ends would never show its CRLF CRLF: say so now, not at the timeout.
    for (let lf = piece.indexOf(10); lf !== -1; lf = piece.indexOf(10, lf + 1)) {
      const before = lf > 0 ? piece[lf - 1] : tail[tail.length - 1];
      if (before !== 13) return 'a line of the response head ends in LF without CR';
    }
    this.#parts.push(piece);
    this.#tail =
      piece.length >= 3 ? piece.subarray(piece.length - 3) : Buffer.concat([tail, piece]).subarray(-3);
    return INCOMPLETE;
  }

  clear(): void {
    this.#parts = [];
    this.#length = 0;
    this.#tail = Buffer.alloc(0);
  }
}

/**
 * Reads the response head at the start of `buf` (for a request with
 * `method`). Returns INCOMPLETE until the head is whole, and a string saying
 * what is wrong with a head that cannot be passed on.
 */
export function parseResponseHead(
  buf: Buffer,
  method: string,
  maxHead: number,
): ResponseHead | typeof INCOMPLETE | string {
  const blank = buf.indexOf(CRLF2, 0, 'latin1');
  if (blank === -1) return new HeadBytes(maxHead).add(buf) as typeof INCOMPLETE | string;
  if (blank + 4 > maxHead) return `response head over ${maxHead} bytes`;
  // Up to and with the last field line's CRLF.
  const text = buf.toString('latin1', 0, blank + 2);
  const eol = text.indexOf('\r\n');
  const start = STATUS_LINE.exec(text.slice(0, eol));
  if (!start) return 'malformed status line';
  const fields = text.slice(eol + 2);
  if (!FIELD_LINES.test(fields)) return 'malformed header line';
  const status = Number(start[2]);
  // Line starts, and whether each is dropped; fields named in Connection are
  // only known once it is read, so a second pass removes them.
  const starts: number[] = [];
  const dropped: boolean[] = [];
  let named: Set<string> | undefined;
  let codings: string | undefined;
  let length: string | undefined;
  let eventStream = false;
  // "close" wins over "keep-alive", wherever each stands.
  let close = false;
  let keepAlive = start[1] === '1';
  for (let at = 0; at < fields.length; ) {
    const colon = fields.indexOf(':', at);
    const end = fields.indexOf('\r\n', colon);
    let drop = false;
    if (SPECIAL_RESPONSE_LENGTHS.has(colon - at)) {
      const name = fields.slice(at, colon).toLowerCase();
      const value = ows(fields.slice(colon + 1, end));
      if (name === 'content-length') {
        // One value only: a repeated one, even the same, is refused as the general path does.
        if (length !== undefined || !DIGITS.test(value)) return 'invalid Content-Length';
        length = value;
        // Never sent with 1xx or 204 (RFC 9110 §8.6); an HTTP/2 client would refuse the stream.
        if (status < 200 || status === 204) drop = true;
      } else if (name === 'content-type') {
        eventStream = EVENT_STREAM.test(value);
      } else if (HOP_BY_HOP.has(name)) {
        drop = true;
        if (name === 'transfer-encoding') codings = codings === undefined ? value : `${codings}, ${value}`;
        else if (name === 'connection') {
          for (const token of value.split(',')) {
            const t = token.trim().toLowerCase();
            if (t === 'close') close = true;
            else if (t === 'keep-alive') keepAlive = true;
            // Content-Length is the framing the relay passes on: Connection cannot take it away.
            else if (t && t !== 'content-length') (named ??= new Set()).add(t);
          }
        }
      }
    }
    starts.push(at);
    dropped.push(drop);
    at = end + 2;
  }
  let framing: Framing;
  if (method === 'HEAD' || status === 204 || status === 304 || status < 200) framing = 'none';
  else if (codings !== undefined) {
    // Chunked alone can be passed on as it is; any other coding would reach the
    // client unmarked once Transfer-Encoding is rewritten.
    // Values are trimmed of spaces and tabs only: "\xa0chunked" is not chunked.
    if (codings.toLowerCase() !== 'chunked')
      return `the backend sent Transfer-Encoding "${codings}"; only chunked can be passed on`;
    // Both framings at once may be an attempt at response splitting (RFC 9112 §6.3): the general
    // path's parser refuses it, and so does this one.
    if (length !== undefined) return 'both Content-Length and Transfer-Encoding';
    framing = 'chunked';
  } else framing = length !== undefined ? 'length' : 'close';
  if (named) {
    for (let i = 0; i < starts.length; i++) {
      const at = starts[i]!;
      if (!dropped[i] && named.has(fields.slice(at, fields.indexOf(':', at)).toLowerCase()))
        dropped[i] = true;
    }
  }
  // The kept lines, copied in runs.
  let head = `HTTP/1.1 ${status} ${start[3] ?? ''}\r\n`;
  let run = -1;
  for (let i = 0; i <= starts.length; i++) {
    const keep = i < starts.length && !dropped[i];
    if (keep && run === -1) run = starts[i]!;
    else if (!keep && run !== -1) {
      head += fields.slice(run, i < starts.length ? starts[i] : fields.length);
      run = -1;
    }
  }
  // A body that ends with the connection is sent on chunked (the relay frames it), so the client keeps its connection.
  if (framing === 'chunked' || framing === 'close') head += 'Transfer-Encoding: chunked\r\n';
  return {
    status,
    head,
    framing,
    length: framing === 'length' ? Number(length) : 0,
    close: close || !keepAlive || framing === 'close' || mayTrail(method, status, length, codings),
    end: blank + 4,
    eventStream,
  };
}

/**
 * Whether a response that ends with its head may still be followed by a body
 * the backend sends anyway, in a later write: a response to HEAD (servers that
 * answer HEAD as GET), or a 204 or 304 that declares a body: a length (a 304
 * may give the representation's, RFC 9110 §8.6, and so does a server that
 * sends the body anyway; most drop the field from a 304) or a transfer
 * coding. On a reused connection those bytes would be read as the next
 * exchange's response, which may be another client's; undici closes after
 * every HEAD for the same reason.
 */
function mayTrail(
  method: string,
  status: number,
  length: string | undefined,
  codings: string | undefined,
): boolean {
  if (method === 'HEAD') return true;
  if (status !== 204 && status !== 304) return false;
  return (length !== undefined && Number(length) > 0) || codings !== undefined;
}

/**
 * A chunk-size line: the size, then extensions (RFC 9112 §7.1.1), each a
 * token with an optional token or quoted-string value; whitespace only around
 * ";" and "=". The line passes on as it is, so it must be one every client reads.
 */
const CHUNK_SIZE =
  /^([0-9A-Fa-f]{1,12})(?:[\t ]*;[\t ]*[!#$%&'*+.^_`|~0-9A-Za-z-]+(?:[\t ]*=[\t ]*(?:[!#$%&'*+.^_`|~0-9A-Za-z-]+|"(?:[\t\x20\x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t\x20-\x7e\x80-\xff])*"))?)*$/;

/** Longest chunk-size line (size, extensions) and trailer section accepted. */
const MAX_CHUNK_LINE = 4096;
const MAX_TRAILERS = 64 * 1024;

/** Where a chunked body's scan is: a size line, chunk data, the CRLF after it, trailers, or past the end. */
const Chunk = { Size: 0, Data: 1, DataEnd: 2, Trailers: 3, Done: 4 } as const;
type Chunk = (typeof Chunk)[keyof typeof Chunk];

/**
 * Finds where a chunked body ends without decoding it: the bytes pass on
 * untouched, trailers included.
 */
export class ChunkedEnd {
  #state: Chunk = Chunk.Size;
  /** Bytes of the current line so far (size line or trailer line), or data left in the chunk. */
  #left = 0;
  #line = '';
  #trailerBytes = 0;

  get done(): boolean {
    return this.#state === Chunk.Done;
  }

  /** Between two chunks (or before the first): a last chunk written now ends the body well-formed. */
  get atBoundary(): boolean {
    return this.#state === Chunk.Size && this.#line === '';
  }

  /**
   * Scans `buf` from `from`; returns the offset just past the body's end, or
   * -1 when the body goes on past `buf`. Throws on malformed framing.
   */
  scan(buf: Buffer, from = 0): number {
    let i = from;
    while (i < buf.length) {
      switch (this.#state) {
        case Chunk.Data: {
          const n = Math.min(this.#left, buf.length - i);
          i += n;
          this.#left -= n;
          if (this.#left === 0) {
            this.#state = Chunk.DataEnd;
            this.#line = '';
          }
          break;
        }
        case Chunk.Size:
        case Chunk.DataEnd:
        case Chunk.Trailers: {
          const lf = buf.indexOf(10, i);
          const upto = lf === -1 ? buf.length : lf + 1;
          this.#line += buf.toString('latin1', i, upto);
          i = upto;
          if (this.#line.length > MAX_CHUNK_LINE) throw new Error('chunk line too long');
          if (lf === -1) break;
          if (this.#endLine()) return i;
          break;
        }
        default:
          throw new Error('data after the end of a chunked body');
      }
    }
    return -1;
  }

  /** Takes a whole line; true when it was the last of the body. */
  #endLine(): boolean {
    const line = this.#line;
    this.#line = '';
    if (!line.endsWith('\r\n')) throw new Error('chunk line without CRLF');
    const text = line.slice(0, -2);
    if (this.#state === Chunk.DataEnd) {
      if (text !== '') throw new Error('chunk data longer than its size');
      this.#state = Chunk.Size;
      return false;
    }
    if (this.#state === Chunk.Trailers) {
      this.#trailerBytes += line.length;
      if (this.#trailerBytes > MAX_TRAILERS) throw new Error('trailer section too large');
      if (text === '') this.#state = Chunk.Done;
      else if (!FIELD_LINES.test(line)) throw new Error('malformed trailer line');
      return text === '';
    }
    const size = CHUNK_SIZE.exec(text);
    if (!size) throw new Error('malformed chunk size');
    const n = Number.parseInt(size[1]!, 16);
    if (n === 0) this.#state = Chunk.Trailers;
    else {
      this.#state = Chunk.Data;
      this.#left = n;
    }
    return false;
  }
}
