import {
  type AgentClaims,
  type AgentMessage,
  agentMessageSchema,
  controlOpenSchema,
  decodeJson,
  encodeJson,
  type Http1Open,
  type HttpOpen,
  type Logger,
  MessageReader,
  type PortResult,
  Reason,
  type RelayMessage,
  type RouteResult,
  type Session,
  type Stream,
  type TcpOpen,
  writeMessage,
} from '@burrow/shared';
import type { RefusalReason } from '../metrics.js';
import { PortTable } from '../routes/ports.js';
import type { RouteTable, RouteTarget } from '../routes/table.js';
import type { AnnounceGate } from './announce-gate.js';

let nextConnectionId = 1;

/** The port table of a relay without --tcp-ports: it refuses every port, saying so. */
const NO_PORTS = new PortTable<AgentConnection>({ ports: [] });

/** Refused routes of one announcement logged a line each; the rest are counted. */
const LOGGED_REFUSALS = 10;

/** One refusal, as compared from one announcement to the next. */
function refusalKey(r: RouteResult | PortResult): string {
  return `${r.id}\n${'port' in r ? r.port : r.hostname}\n${r.error ?? ''}`;
}

/**
 * The relay's side of one agent tunnel: the session, the agent's identity
 * from its token, and the control stream over which it announces routes.
 */
export class AgentConnection implements RouteTarget {
  readonly id = nextConnectionId++;
  readonly subject: string;
  readonly claims: AgentClaims;
  readonly session: Session;
  readonly remoteAddress: string;
  /** The agent's source port as the relay sees it (after any NAT on the way). */
  readonly remotePort: number;
  readonly connectedAt = Date.now();
  readonly #table: RouteTable<AgentConnection>;
  readonly #ports: PortTable<AgentConnection>;
  readonly #log: Logger;
  readonly #relayId: string;
  readonly #onRefused: ((reason: RefusalReason) => void) | undefined;
  readonly #gate: AnnounceGate | undefined;
  #control: Stream | undefined;
  #inFlight = 0;
  /** Streams open but idle: kept-alive HTTP/1.1 upstreams waiting in the relay's pool. */
  #parked = 0;
  #routesVersion = 0;
  /** The refusals the last announcement logged (refusalKey), so that the same ones again are quieter. */
  #refusedBefore = new Set<string>();
  #refusedStreams = 0;
  #http1 = false;

  constructor(opts: {
    session: Session;
    claims: AgentClaims;
    table: RouteTable<AgentConnection>;
    /** The relay's public TCP ports; absent: the relay has none, and every announced port is refused. */
    ports?: PortTable<AgentConnection>;
    logger: Logger;
    relayId: string;
    remoteAddress: string;
    remotePort?: number;
    onRefused?: (reason: RefusalReason) => void;
    /** Paces announcements per subject; without it each is applied as it arrives. */
    gate?: AnnounceGate;
  }) {
    this.#onRefused = opts.onRefused;
    this.#gate = opts.gate;
    this.session = opts.session;
    this.claims = opts.claims;
    this.subject = opts.claims.sub;
    this.#table = opts.table;
    this.#ports = opts.ports ?? NO_PORTS;
    this.#relayId = opts.relayId;
    this.remoteAddress = opts.remoteAddress;
    this.remotePort = opts.remotePort ?? 0;
    this.#log = opts.logger.child({ conn: this.id, subject: this.subject });
    this.session.on('stream', (s) => this.#onStream(s));
    // An agent draining (a pod stopping) waits for its streams; an event stream the relay
    // recognised (the agent passes it on as bytes) is the relay's to end once quiet.
    this.session.on('goaway', ({ reason }) => {
      if (reason === Reason.Shutdown || reason === Reason.NoError) this.session.closeQuietStreams();
    });
    this.session.on('close', (err) => {
      this.#gate?.drop(this.subject, this);
      const started = performance.now();
      this.#table.remove(this);
      this.#ports.remove(this);
      // Removing thousands of names costs as much as announcing them: reconnecting is no way round the pace.
      this.#gate?.charge(this.subject, performance.now() - started);
      if (err)
        this.#log.warn(
          { err: { code: (err as { code?: string }).code, message: err.message } },
          'agent disconnected',
        );
      else this.#log.info('agent disconnected');
    });
  }

  /** Streams carrying something now (what lookups balance on): open ones less those parked idle. */
  get inFlight(): number {
    return this.#inFlight - this.#parked;
  }

  /** An open stream goes idle in a pool (+1) or leaves it (-1). */
  parkStream(delta: 1 | -1): void {
    this.#parked += delta;
  }

  /** Streams parked idle in pools now. */
  get parked(): number {
    return this.#parked;
  }

  /**
   * Counts the agent's announcements: a stream opened before the latest may
   * reach a target the route no longer has (pooled upstreams are not reused).
   */
  get routesVersion(): number {
    return this.#routesVersion;
  }

  /** Whether the agent serves `http1` connection streams (it said so in its last announcement). */
  get servesHttp1(): boolean {
    return this.#http1;
  }

  get usable(): boolean {
    return !this.session.closed && !this.session.draining;
  }

  /**
   * GOAWAY, then lets in-flight requests finish; raw connections (WebSocket,
   * TCP) are closed once quiet (Session.goAway). The control stream stays open
   * on both sides for the connection's whole life, so it is reset here: the
   * drain then ends when the last busy stream does, whatever the agent does.
   * Resolves with how many quiet raw connections it closed.
   */
  async drain(): Promise<number> {
    const drained = this.session.goAway();
    this.#control?.reset(Reason.Cancel, 'relay draining');
    await drained;
    return this.session.closedQuiet;
  }

  /**
   * Opens a stream to the agent: a request (`http`), a passthrough connection
   * (`tcp`) or an HTTP/1.1 upstream (`http1`). Throws when the session cannot
   * take one.
   */
  openStream(meta: HttpOpen | TcpOpen | Http1Open): Stream {
    const stream = this.session.openStream(encodeJson(meta));
    this.#inFlight++;
    stream.on('close', () => this.#inFlight--); // 'close' comes once; `on` costs less than `once`
    return stream;
  }

  #onStream(stream: Stream): void {
    // Agents may open exactly one stream: the control stream, first.
    const meta = decodeJson(stream.metadata, controlOpenSchema);
    if (!meta.ok || this.#control) {
      // reset() destroys the stream with an error; with no listener that error
      // would be unhandled and take the whole relay down.
      stream.on('error', () => {});
      // Once per connection at warn: a flood of OPENs must not become a flood of log lines.
      this.#refusedStreams++;
      if (this.#refusedStreams === 1)
        this.#log.warn(
          { stream: stream.id },
          'agent opened an unexpected stream; refused (further ones at debug)',
        );
      else this.#log.debug({ stream: stream.id, refused: this.#refusedStreams }, 'unexpected stream refused');
      stream.reset(Reason.RefusedStream, 'agents may only open one control stream');
      return;
    }
    this.#control = stream;
    stream.idleExempt = true; // quiet for as long as the agent's routes do not change
    stream.on('error', () => {}); // ends with the session; reported there
    this.#reply(stream, { type: 'welcome', subject: this.subject, relayId: this.#relayId });
    const reader = new MessageReader(agentMessageSchema);
    stream.on('data', (chunk: Buffer) => {
      // Bytes that arrived just before the session ended may still be handed
      // over after its close, when its routes are already gone: an announcement
      // read now would bind names to a connection nobody removes again.
      if (this.session.closed) return;
      let messages: AgentMessage[];
      const started = performance.now();
      try {
        messages = reader.push(chunk);
      } catch (err) {
        // Charged like a message read whole: the subject's next announcement waits for it.
        this.#gate?.charge(this.subject, performance.now() - started);
        this.#log.warn({ reason: (err as Error).message }, 'invalid control message; closing the tunnel');
        this.session.destroy(err as Error);
        return;
      }
      // Reading an announcement (JSON, the schema) costs as much as applying it: both are paced.
      if (messages.length > 0) this.#gate?.charge(this.subject, performance.now() - started);
      for (const m of messages) this.#onMessage(stream, m);
    });
  }

  /**
   * Answers on the control stream. An agent that leaves the answers unread
   * gets no more of its messages read either, so the answers queued here stay
   * bounded by what it has already sent.
   */
  #reply(stream: Stream, message: RelayMessage): void {
    if (writeMessage(stream, message) || stream.isPaused()) return;
    stream.pause();
    stream.once('drain', () => stream.resume());
  }

  #onMessage(stream: Stream, message: AgentMessage): void {
    if (message.type !== 'announce') return;
    // Applied now, or when the subject's turn comes. Meanwhile nothing more is read from the
    // control stream: an agent sending announcements in a loop waits for its turn, and its
    // messages wait in the stream's window rather than being read and thrown away.
    const apply = () => {
      stream.resume();
      if (this.session.closed) return;
      try {
        this.#announce(stream, message);
      } catch (err) {
        // Run from the gate's timer, outside the session's own guard: a bug here costs this
        // tunnel (INTERNAL_ERROR), as it would have inside the session, not the process.
        this.#log.error({ err }, 'applying an announcement failed');
        this.session.destroy(err as Error);
      }
    };
    if (!this.#gate) apply();
    else if (!this.#gate.submit(this.subject, this, apply)) stream.pause();
  }

  #announce(stream: Stream, message: AgentMessage & { type: 'announce' }): void {
    this.#http1 = message.features?.includes('http1') ?? false;
    this.#routesVersion++;
    const results = this.#table.announce(this, this.claims.hosts, message.routes, this.#onRefused);
    // Absent from an agent that has none: any it announced before are withdrawn.
    const ports = this.#ports.announce(this, this.claims.ports, message.ports ?? [], this.#onRefused);
    const refused = [...results, ...ports].filter((r) => r.status === 'refused');
    // One announcement may refuse tens of thousands of names: a line each for the first few only.
    // An agent asks again for names another agent holds (retryAfter): the same refusal again is
    // at debug, so that asking every few minutes does not repeat the warning each time.
    const before = this.#refusedBefore;
    this.#refusedBefore = new Set(refused.slice(0, LOGGED_REFUSALS).map(refusalKey));
    for (const r of refused.slice(0, LOGGED_REFUSALS)) {
      const what = 'port' in r ? { port: r.port } : { hostname: r.hostname };
      const fields = { route: r.id, ...what, reason: r.error };
      if (before.has(refusalKey(r))) this.#log.debug(fields, 'route refused again');
      else this.#log.warn(fields, 'route refused');
    }
    this.#log.info(
      {
        active: results.length + ports.length - refused.length,
        refused: refused.length,
        ...(refused.length > LOGGED_REFUSALS ? { refusalsNotLogged: refused.length - LOGGED_REFUSALS } : {}),
      },
      'routes announced',
    );
    this.#reply(stream, {
      type: 'announce-result',
      routes: results,
      ...(message.ports ? { ports } : {}),
      // Which announcement this answers: when the gate let a later one replace those waiting
      // (announce-gate.ts), this one answer stands for them all.
      ...(message.seq !== undefined ? { seq: message.seq } : {}),
    });
  }
}
