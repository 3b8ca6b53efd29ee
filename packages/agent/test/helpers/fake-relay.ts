// A tiny stand-in for the relay's tunnel endpoint: a real `ws` server on
// 127.0.0.1 with a server-role Session that answers the control stream per the
// contract in @burrow/shared (welcome, then one announce-result per announce).
// Tests drive it to open HTTP streams, drop connections, refuse tokens or send GOAWAY.
import { EventEmitter, once } from 'node:events';
import { createServer, type IncomingMessage, type Server, STATUS_CODES } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import {
  type AgentMessage,
  type AnnouncedRoute,
  agentMessageSchema,
  createSession,
  encodeJson,
  type HttpOpen,
  MessageReader,
  type ResponseHead,
  type RouteResult,
  responseHeadSchema,
  type Session,
  type Stream,
  TUNNEL_PATH,
  TUNNEL_SUBPROTOCOL,
  WsTransport,
  writeMessage,
} from '@burrow/shared';
import { type WebSocket, WebSocketServer } from 'ws';

export interface Teardownable {
  teardown(fn: () => unknown): void;
}

export interface FakeConnection {
  session: Session;
  ws: WebSocket;
  /** Every announcement received on this connection, in order. */
  announcements: AnnouncedRoute[][];
  /** The `seq` of each of them (undefined where the agent sent none). */
  seqs: (number | undefined)[];
  /** The control stream, once the agent has opened it (to write what a hostile relay would). */
  control?: Stream;
  /**
   * Hostnames this connection alone answers as refused, with this reason (as
   * one relay replica of several may, while another serves the name).
   */
  refusedHosts: Map<string, string>;
}

export interface FakeRelayEvents {
  /** An upgrade attempt arrived (accepted or refused). */
  attempt: [authorization: string | undefined];
  connection: [conn: FakeConnection];
  announce: [conn: FakeConnection, routes: AnnouncedRoute[]];
}

export class FakeRelay extends EventEmitter<FakeRelayEvents> {
  readonly port: number;
  readonly connections: FakeConnection[] = [];
  /** When set, upgrades are refused with this status and body. */
  refuse: { status: number; body: string } | undefined;
  /** Hostnames answered as refused, with this reason. */
  readonly refusedHosts = new Map<string, string>();
  /** `retryAfter` of every refusal, as it is (a relay of another version may send anything). */
  refusedRetryAfter: unknown;
  /** Results added to every announce-result, for names the agent never announced (a hostile relay). */
  foreignResults: RouteResult[] = [];
  /** The URL reported for an active hostname (a hostile relay may report anything). */
  urlOf = (hostname: string) => `http://${hostname}`;
  /** Whether announce-results echo the announcement's `seq` (false: as a relay that predates it). */
  echoSeq = true;
  /** Whether announcements are answered (false: the test writes the answers on `control`). */
  answering = true;
  /** What the welcome says (a hostile relay may say anything). */
  welcome = { subject: 'test-agent', relayId: 'fake-relay' };
  readonly #server: ReturnType<typeof createServer>;

  constructor(server: ReturnType<typeof createServer>) {
    super();
    this.#server = server;
    this.port = (server.address() as AddressInfo).port;
  }

  get url(): string {
    return `ws://127.0.0.1:${this.port}`;
  }

  /** Connections whose session is still open. */
  live(): FakeConnection[] {
    return this.connections.filter((c) => !c.session.closed);
  }

  /** Resolves once `n` announcements have arrived after this call. */
  async nextAnnouncements(n: number): Promise<void> {
    let seen = 0;
    await new Promise<void>((resolve) => {
      const on = () => {
        if (++seen < n) return;
        this.off('announce', on);
        resolve();
      };
      this.on('announce', on);
    });
  }

  /** Resolves with the next connection that announced (or the first live one that already has). */
  async announced(): Promise<FakeConnection> {
    const ready = this.live().find((c) => c.announcements.length > 0);
    if (ready) return ready;
    const [conn] = await once(this, 'announce');
    return conn as FakeConnection;
  }

  /**
   * Opens an HTTP stream on `conn` (default: the first live connection). Like the
   * relay for a request without a body, it half-closes at once unless `open` is set.
   */
  openHttp(meta: Partial<HttpOpen> & { route: string }, conn?: FakeConnection, open = false): Stream {
    const target = conn ?? this.live()[0];
    if (!target) throw new Error('no live agent connection');
    const full: HttpOpen = {
      kind: 'http',
      method: 'GET',
      path: '/',
      headers: [['Host', 'app.example.com']],
      upgrade: false,
      client: { ip: '127.0.0.1', port: 1234 },
      ...meta,
    };
    const stream = target.session.openStream(encodeJson(full));
    stream.on('error', () => {}); // tests read resets from stream.errored / resetReason
    if (!open && !full.upgrade) stream.end();
    return stream;
  }

  /** Cuts every connection without a close handshake. */
  dropAll(): void {
    for (const c of this.connections) c.ws.terminate();
  }

  close(): Promise<void> {
    this.dropAll();
    this.#server.closeAllConnections();
    return new Promise((resolve) => this.#server.close(() => resolve()));
  }

  /** @internal */
  accept(conn: FakeConnection): void {
    this.connections.push(conn);
    conn.session.on('stream', (control) => {
      conn.control = control;
      control.on('error', () => {});
      writeMessage(control, { type: 'welcome', ...this.welcome });
      const reader = new MessageReader(agentMessageSchema);
      control.on('data', (chunk: Buffer) => {
        let messages: AgentMessage[];
        try {
          messages = reader.push(chunk);
        } catch (err) {
          conn.session.destroy(err as Error);
          return;
        }
        for (const m of messages) {
          conn.announcements.push(m.routes);
          conn.seqs.push(m.seq);
          if (!this.answering) {
            this.emit('announce', conn, m.routes);
            continue;
          }
          const refusal = (h: string) => conn.refusedHosts.get(h) ?? this.refusedHosts.get(h);
          const results = m.routes.flatMap((r) =>
            r.hostnames.map((h) =>
              refusal(h) !== undefined
                ? {
                    id: r.id,
                    hostname: h,
                    status: 'refused' as const,
                    error: refusal(h)!,
                    ...(this.refusedRetryAfter !== undefined ? { retryAfter: this.refusedRetryAfter } : {}),
                  }
                : { id: r.id, hostname: h, status: 'active' as const, url: this.urlOf(h) },
            ),
          );
          writeMessage(control, {
            type: 'announce-result',
            routes: [...results, ...this.foreignResults],
            ...(this.echoSeq && m.seq !== undefined ? { seq: m.seq } : {}),
          });
          this.emit('announce', conn, m.routes);
        }
      });
    });
    this.emit('connection', conn);
  }
}

function reject(socket: Duplex, status: number, body: string): void {
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\ncontent-type: text/plain\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
  );
}

/** Starts a fake relay on 127.0.0.1:0, closed at teardown. */
export async function fakeRelay(
  t: Teardownable,
  session: { keepaliveInterval?: number } = {},
): Promise<FakeRelay> {
  const server = createServer();
  const wss = new WebSocketServer({
    noServer: true,
    perMessageDeflate: false,
    handleProtocols: (protocols) => (protocols.has(TUNNEL_SUBPROTOCOL) ? TUNNEL_SUBPROTOCOL : false),
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const relay = new FakeRelay(server);
  t.teardown(() => relay.close());
  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on('error', () => {});
    relay.emit('attempt', req.headers.authorization);
    if (req.url !== TUNNEL_PATH) return reject(socket, 404, `no tunnel endpoint at ${req.url}`);
    if (relay.refuse) return reject(socket, relay.refuse.status, `${relay.refuse.body}\n`);
    wss.handleUpgrade(req, socket, head, (ws) => {
      const s = createSession(new WsTransport(ws), { role: 'server', maxMetadata: 32 * 1024, ...session });
      relay.accept({ session: s, ws, announcements: [], seqs: [], refusedHosts: new Map() });
    });
  });
  return relay;
}

/** Reads the agent's response head, then the body until the stream ends. */
export async function readResponse(stream: Stream): Promise<{ head: ResponseHead; body: Buffer }> {
  const reader = new MessageReader(responseHeadSchema);
  let head: ResponseHead | undefined;
  const body: Buffer[] = [];
  for await (const chunk of stream) {
    if (head) {
      body.push(chunk as Buffer);
      continue;
    }
    [head] = reader.push(chunk as Buffer, 1);
    if (head && reader.rest().length > 0) body.push(reader.rest());
  }
  if (!head) throw new Error('stream ended without a response head');
  return { head, body: Buffer.concat(body) };
}

/** Reads only the response head; the stream stays readable for what follows (returned as `rest`). */
export function readHead(stream: Stream): Promise<{ head: ResponseHead; rest: Buffer }> {
  return new Promise((resolve, reject) => {
    const reader = new MessageReader(responseHeadSchema);
    const onData = (chunk: Buffer) => {
      const [head] = reader.push(chunk, 1);
      if (!head) return;
      stream.off('data', onData);
      stream.off('error', reject);
      stream.pause();
      resolve({ head, rest: reader.rest() });
    };
    stream.on('data', onData);
    stream.once('error', reject);
  });
}

/** The next chunk a (paused) stream delivers; the stream is paused again after it. */
export function nextChunk(stream: Stream): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    stream.once('data', (chunk: Buffer) => {
      stream.pause();
      stream.off('error', reject);
      resolve(chunk);
    });
    stream.once('error', reject);
    stream.resume();
  });
}

/** A stream's RST reason once it closes (undefined if it closed cleanly). */
export async function resetReason(stream: Stream): Promise<number | undefined> {
  if (!stream.closed) {
    stream.resume();
    await new Promise((resolve) => stream.once('close', resolve)); // events.once would reject on 'error'
  }
  return stream.resetReason;
}

/** Listens on 127.0.0.1 (any port) until teardown; resolves with the port. */
export async function listen(t: Teardownable, server: Server): Promise<number> {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => {
    server.closeAllConnections();
    server.close();
  });
  return (server.address() as AddressInfo).port;
}
