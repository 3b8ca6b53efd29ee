/**
 * A bounded reader of the TLS ClientHello (RFC 8446 §4.1.2, RFC 5246 §7.4.1.2):
 * just enough to route a connection by SNI (RFC 6066 §3) and see the offered
 * ALPN protocols (RFC 7301 §3.1) without terminating TLS. The relay replays the
 * bytes it read, untouched, to whoever handles the connection next.
 *
 * The hello may arrive split across TCP reads and across TLS records (a record
 * holds at most 2^14 bytes; a large hello with post-quantum key shares may span
 * two). Every length field is checked against the bytes that contain it; any
 * inconsistency is a rejection, never an exception.
 */

import { isValidHostname } from '@burrow/shared';

/** TLS record content type for handshake messages. */
const CONTENT_HANDSHAKE = 22;
/** Handshake message type of a ClientHello. */
const HANDSHAKE_CLIENT_HELLO = 1;
/** Largest plaintext record payload (RFC 8446 §5.1). */
const MAX_RECORD = 1 << 14;
const EXT_SERVER_NAME = 0;
const EXT_ALPN = 16;
const NAME_TYPE_HOST = 0;

/** Largest ClientHello accepted, in bytes of handshake message; real ones are well under 4 KiB. */
export const MAX_CLIENT_HELLO = 16 * 1024;
/** Largest number of bytes buffered while waiting for a complete hello (records add 5-byte headers). */
export const MAX_HELLO_BYTES = MAX_CLIENT_HELLO + 4 + 5 * 3;

export interface ClientHello {
  /** The host_name from SNI, lower-cased; undefined when the client sent none. */
  serverName: string | undefined;
  /** ALPN protocols in the client's order; empty when it offered none. */
  alpn: string[];
}

export type HelloResult =
  | { status: 'incomplete' }
  | { status: 'ok'; hello: ClientHello }
  | { status: 'invalid'; reason: string };

const incomplete: HelloResult = { status: 'incomplete' };
const invalid = (reason: string): HelloResult => ({ status: 'invalid', reason });

/**
 * Parses the bytes a client sent so far. `incomplete` means "read more" (the
 * caller bounds how much and for how long); `invalid` means close the connection.
 */
export function parseClientHello(data: Buffer): HelloResult {
  return new HelloRecords().read(data);
}

/**
 * The records of a ClientHello that arrives in pieces, each walked once: a
 * client may send its hello as thousands of 1-byte records, and walking them
 * all again for every piece would cost the relay time quadratic in their number.
 */
export class HelloRecords {
  /** Where each record's part of the handshake message starts and ends in `data`, in pairs. */
  readonly #spans: number[] = [];
  #gathered = 0;
  /** Total handshake bytes (header and body), once the header is known; -1 before. */
  #need = -1;
  /** Where the next record starts. */
  #offset = 0;

  /**
   * `data`: every byte received so far (those of the last call, and more).
   * Records are kept as offsets into it, not as slices: a slice would keep
   * alive each buffer the caller has since outgrown.
   */
  read(data: Buffer): HelloResult {
    const spans = this.#spans;
    // Gather the handshake message from as many records as it spans.
    while (this.#need === -1 || this.#gathered < this.#need) {
      const offset = this.#offset;
      if (data.length - offset < 5)
        return data.length > MAX_HELLO_BYTES ? invalid('hello too large') : incomplete;
      const type = data[offset]!;
      const major = data[offset + 1]!;
      const length = data.readUInt16BE(offset + 3);
      if (type !== CONTENT_HANDSHAKE) return invalid(`not a TLS handshake record (content type ${type})`);
      if (major !== 3) return invalid(`unknown record version ${major}.${data[offset + 2]}`);
      if (length === 0 || length > MAX_RECORD) return invalid(`record length ${length} out of range`);
      if (data.length - offset - 5 < length) {
        return offset + 5 + length > MAX_HELLO_BYTES ? invalid('hello too large') : incomplete;
      }
      spans.push(offset + 5, offset + 5 + length);
      this.#gathered += length;
      this.#offset += 5 + length;
      if (this.#need === -1 && this.#gathered >= 4) {
        const head = message(data, spans);
        if (head[0] !== HANDSHAKE_CLIENT_HELLO) return invalid(`first handshake message is type ${head[0]}`);
        const bodyLength = head.readUIntBE(1, 3);
        if (bodyLength > MAX_CLIENT_HELLO) return invalid(`ClientHello of ${bodyLength} bytes is too large`);
        this.#need = 4 + bodyLength;
      }
    }
    // Bytes past the hello in the last record belong to a second handshake message: not allowed.
    if (this.#gathered !== this.#need) return invalid('unexpected data after the ClientHello in its record');
    return parseBody(message(data, spans).subarray(4));
  }
}

/** The handshake bytes of the records at `spans` in `data`, joined (a slice when there is one). */
function message(data: Buffer, spans: number[]): Buffer {
  if (spans.length === 2) return data.subarray(spans[0], spans[1]);
  const parts: Buffer[] = [];
  for (let i = 0; i < spans.length; i += 2) parts.push(data.subarray(spans[i], spans[i + 1]));
  return Buffer.concat(parts);
}

/** A cursor over a byte range that reports overruns instead of throwing. */
class Reader {
  #buf: Buffer;
  #pos = 0;
  constructor(buf: Buffer) {
    this.#buf = buf;
  }
  get left(): number {
    return this.#buf.length - this.#pos;
  }
  u8(): number | undefined {
    if (this.left < 1) return undefined;
    return this.#buf[this.#pos++];
  }
  u16(): number | undefined {
    if (this.left < 2) return undefined;
    const v = this.#buf.readUInt16BE(this.#pos);
    this.#pos += 2;
    return v;
  }
  bytes(n: number): Buffer | undefined {
    if (this.left < n) return undefined;
    const b = this.#buf.subarray(this.#pos, this.#pos + n);
    this.#pos += n;
    return b;
  }
  /** A vector with a 1- or 2-byte length prefix. */
  vector(prefix: 1 | 2): Buffer | undefined {
    const n = prefix === 1 ? this.u8() : this.u16();
    return n === undefined ? undefined : this.bytes(n);
  }
}

function parseBody(body: Buffer): HelloResult {
  const r = new Reader(body);
  const version = r.u16();
  if (version === undefined || version >> 8 !== 3) return invalid('bad client version');
  if (!r.bytes(32)) return invalid('truncated random');
  const session = r.vector(1);
  if (!session || session.length > 32) return invalid('bad session id');
  const suites = r.vector(2);
  if (!suites || suites.length < 2 || suites.length % 2 !== 0) return invalid('bad cipher suites');
  const compression = r.vector(1);
  if (!compression || compression.length < 1) return invalid('bad compression methods');
  const hello: ClientHello = { serverName: undefined, alpn: [] };
  if (r.left === 0) return { status: 'ok', hello }; // no extensions at all (old clients)
  const extensions = r.vector(2);
  if (!extensions || r.left !== 0) return invalid('bad extensions block');
  const ext = new Reader(extensions);
  const seen = new Set<number>();
  while (ext.left > 0) {
    const type = ext.u16();
    const data = ext.vector(2);
    if (type === undefined || !data) return invalid('truncated extension');
    if (seen.has(type)) return invalid(`extension ${type} appears twice`);
    seen.add(type);
    if (type === EXT_SERVER_NAME) {
      const name = parseServerName(data);
      if (typeof name !== 'string' || name === '') {
        if (name === undefined) return invalid('malformed server_name extension');
        continue;
      }
      hello.serverName = name;
    } else if (type === EXT_ALPN) {
      const alpn = parseAlpn(data);
      if (!alpn) return invalid('malformed ALPN extension');
      hello.alpn = alpn;
    }
  }
  return { status: 'ok', hello };
}

/** The host_name in a server_name extension ('' when it holds none), or undefined when malformed. */
function parseServerName(data: Buffer): string | undefined {
  const r = new Reader(data);
  const list = r.vector(2);
  if (!list || list.length === 0 || r.left !== 0) return undefined;
  const entries = new Reader(list);
  let host = '';
  while (entries.left > 0) {
    const type = entries.u8();
    const name = entries.vector(2);
    if (type === undefined || !name) return undefined;
    if (type !== NAME_TYPE_HOST) continue;
    if (host) return undefined; // RFC 6066: at most one name of each type
    // DNS names only (no IP literals per RFC 6066), label by label: `x..example.com` or
    // `-x.example.com` must not reach a wildcard route as if it were a name under it.
    host = name.toString('latin1').toLowerCase().replace(/\.$/, '');
    if (!isValidHostname(host)) return undefined;
  }
  return host;
}

function parseAlpn(data: Buffer): string[] | undefined {
  const r = new Reader(data);
  const list = r.vector(2);
  if (!list || list.length < 2 || r.left !== 0) return undefined;
  const names = new Reader(list);
  const out: string[] = [];
  while (names.left > 0) {
    const name = names.vector(1);
    if (!name || name.length === 0) return undefined;
    out.push(name.toString('latin1'));
  }
  return out;
}
