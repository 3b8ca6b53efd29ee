/**
 * HTTP/1.1 on the wire, for framing tests: a backend that parses requests
 * and answers with hand-written bytes, a client that reads responses one at
 * a time as they arrive (1xx kept apart), and a relay with one agent between.
 */
import { once } from 'node:events';
import { type AddressInfo, connect, createServer as createTcpServer, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { testAgent } from './agent.js';
import { type Teardownable, testRelay } from './relay.js';

/** A relay (with `options`) and an agent serving `host` from `target`; returns the relay's HTTP port. */
export async function through(
  t: Teardownable,
  host: string,
  target: string,
  options: Parameters<typeof testRelay>[1] = {},
): Promise<number> {
  const relay = await testRelay(t, options);
  await testAgent(t, relay, [{ id: host.split('.')[0]!, hostnames: [host], target }], { connections: 1 });
  return relay.httpAddress.port;
}

export interface RawRequest {
  head: string;
  body: Buffer;
  /** Index of the connection it came on (0 for the first the backend accepted). */
  conn: number;
  /** Index of the request on that connection. */
  seq: number;
}

/**
 * A TCP server that parses request heads (and Content-Length bodies) and lets
 * `answer` write whatever bytes it likes on the socket.
 */
export async function rawBackend(
  t: Teardownable,
  answer: (socket: Socket, req: RawRequest) => void,
): Promise<{ url: string; requests: RawRequest[]; connections: Socket[] }> {
  const requests: RawRequest[] = [];
  const connections: Socket[] = [];
  const server = createTcpServer((socket) => {
    const conn = connections.push(socket) - 1;
    let seq = 0;
    let buf = Buffer.alloc(0);
    socket.on('error', () => {});
    socket.on('data', (c: Buffer) => {
      buf = Buffer.concat([buf, c]);
      for (;;) {
        const end = buf.indexOf('\r\n\r\n');
        if (end === -1) return;
        const head = buf.subarray(0, end).toString('latin1');
        const length = Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1] ?? 0);
        if (buf.length < end + 4 + length) return;
        const req = { head, body: buf.subarray(end + 4, end + 4 + length), conn, seq: seq++ };
        buf = buf.subarray(end + 4 + length);
        requests.push(req);
        answer(socket, req);
      }
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => {
    for (const s of connections) s.destroy();
    return new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, requests, connections };
}

export interface Parsed {
  status: number;
  /** Header fields exactly as received (latin1), in order. */
  headers: Array<[string, string]>;
  body: Buffer;
  trailers: Array<[string, string]>;
  /** How the body was delimited. */
  framing: 'none' | 'length' | 'chunked' | 'close';
}

export function field(p: { headers: Array<[string, string]> }, name: string): string[] {
  return p.headers.filter(([k]) => k.toLowerCase() === name).map(([, v]) => v);
}

/** One response from the front of `buf`, or undefined while incomplete. */
function parseResponse(
  buf: Buffer,
  method: string,
  closed: boolean,
): { res: Parsed; used: number } | undefined {
  const end = buf.indexOf('\r\n\r\n');
  if (end === -1) return undefined;
  const lines = buf.subarray(0, end).toString('latin1').split('\r\n');
  const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(lines[0]!)?.[1] ?? 0);
  const headers = lines.slice(1).map((l): [string, string] => {
    const i = l.indexOf(':');
    return [l.slice(0, i), l.slice(i + 1).trim()];
  });
  const start = end + 4;
  const res: Parsed = { status, headers, body: Buffer.alloc(0), trailers: [], framing: 'none' };
  if (status < 200 || status === 204 || status === 304 || method === 'HEAD') return { res, used: start };
  const te = field(res, 'transfer-encoding').join(',');
  if (/chunked\s*$/i.test(te)) {
    res.framing = 'chunked';
    const parts: Buffer[] = [];
    let at = start;
    for (;;) {
      const eol = buf.indexOf('\r\n', at);
      if (eol === -1) return undefined;
      const size = Number.parseInt(buf.subarray(at, eol).toString('latin1'), 16);
      at = eol + 2;
      if (size === 0) {
        for (;;) {
          const e = buf.indexOf('\r\n', at);
          if (e === -1) return undefined;
          const line = buf.subarray(at, e).toString('latin1');
          at = e + 2;
          if (line === '') break;
          const i = line.indexOf(':');
          res.trailers.push([line.slice(0, i), line.slice(i + 1).trim()]);
        }
        res.body = Buffer.concat(parts);
        return { res, used: at };
      }
      if (buf.length < at + size + 2) return undefined;
      parts.push(buf.subarray(at, at + size));
      at += size + 2;
    }
  }
  const cl = field(res, 'content-length')[0];
  if (cl !== undefined) {
    res.framing = 'length';
    const n = Number(cl);
    if (buf.length < start + n) return undefined;
    res.body = buf.subarray(start, start + n);
    return { res, used: start + n };
  }
  if (!closed) return undefined;
  res.framing = 'close';
  res.body = buf.subarray(start);
  return { res, used: buf.length };
}

/** A raw client connection to the relay that reads responses one at a time (1xx skipped). */
export class Client {
  readonly socket: Socket;
  #buf = Buffer.alloc(0);
  closed = false;
  /** The connection was reset (ECONNRESET), not closed with a FIN. */
  reset = false;
  /** Informational responses seen. */
  readonly interim: Parsed[] = [];
  readonly #waiters = new Set<() => void>();

  /** A connection to the relay: plain (`client()`) or TLS (`tlsClient()`). */
  constructor(socket: Socket) {
    this.socket = socket;
    this.socket.on('error', () => {
      this.reset = true;
    });
    this.socket.on('data', (c: Buffer) => {
      this.#buf = Buffer.concat([this.#buf, c]);
      this.#wake();
    });
    this.socket.on('close', () => {
      this.closed = true;
      this.#wake();
    });
  }

  #wake(): void {
    for (const w of this.#waiters) w();
  }

  /** Bytes received and not yet read as a response (raw bytes after an upgrade, say). */
  get buffered(): Buffer {
    return this.#buf;
  }

  /** Drops the first `n` buffered bytes, read by the test itself. */
  consume(n: number): void {
    this.#buf = this.#buf.subarray(n);
  }

  /** Resolves at the next change: bytes arrived or the connection closed. */
  changed(): Promise<void> {
    return new Promise((resolve) => {
      const w = () => {
        this.#waiters.delete(w);
        resolve();
      };
      this.#waiters.add(w);
    });
  }

  write(data: string | Buffer): boolean {
    return this.socket.write(typeof data === 'string' ? Buffer.from(data, 'latin1') : data);
  }

  /** The next final response; undefined when the connection closed first. */
  async response(method = 'GET'): Promise<Parsed | undefined> {
    for (;;) {
      const got = parseResponse(this.#buf, method, this.closed);
      // A body delimited by the connection's end is complete only if that end was a FIN.
      if (got?.res.framing === 'close' && this.reset) return undefined;
      if (got) {
        this.#buf = this.#buf.subarray(got.used);
        if (got.res.status >= 100 && got.res.status < 200) {
          this.interim.push(got.res);
          continue;
        }
        return got.res;
      }
      if (this.closed) return undefined;
      await this.changed();
    }
  }

  /** Resolves once an informational (1xx) or final response head has arrived. */
  async anyHead(): Promise<void> {
    while (this.#buf.indexOf('\r\n\r\n') === -1 && !this.closed) await this.changed();
  }

  /** Resolves when the connection has closed. */
  async untilClosed(): Promise<void> {
    while (!this.closed) await this.changed();
  }

  /** Sends a GET (see `get`) and reads its response. */
  request(host: string, path = '/', extra = ''): Promise<Parsed | undefined> {
    this.write(get(host, path, extra));
    return this.response();
  }

  destroy(): void {
    this.socket.destroy();
  }
}

export function client(t: Teardownable, port: number): Client {
  const c = new Client(connect(port, '127.0.0.1'));
  t.teardown(() => c.destroy());
  return c;
}

/** A client over TLS to the relay's TLS port, handshake done (no ALPN offered unless `alpn`). */
export async function tlsClient(
  t: Teardownable,
  port: number,
  servername: string,
  ca: string,
  alpn?: string[],
): Promise<Client> {
  const socket = tlsConnect({
    host: '127.0.0.1',
    port,
    servername,
    ca,
    ...(alpn ? { ALPNProtocols: alpn } : {}),
  });
  const c = new Client(socket);
  t.teardown(() => c.destroy());
  await once(socket, 'secureConnect');
  return c;
}

export const get = (host: string, path = '/', extra = '') =>
  `GET ${path} HTTP/1.1\r\nHost: ${host}\r\n${extra}\r\n`;
