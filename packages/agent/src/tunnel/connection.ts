import { EventEmitter, once } from 'node:events';
import {
  type AgentFeature,
  type AnnouncedPort,
  type AnnouncedRoute,
  createSession,
  encodeJson,
  HandshakeError,
  type Logger,
  MAX_RESULT_MESSAGE,
  MessageReader,
  maxMessageSize,
  type PortResult,
  ProtocolError,
  Reason,
  type RelayMessage,
  type RouteResult,
  relayMessageSchema,
  type Session,
  type SessionConfig,
  type Stream,
  WsTransport,
  writeMessage,
} from '@burrow/shared';
import type { WebSocket } from 'ws';
import { Backoff, type BackoffOptions } from './backoff.js';
import { describeDialFailure, dialRelay, RelayRefusedError } from './dial.js';
import type { FailureLog } from './failure-log.js';

/** Stream kinds this agent serves beyond `http` and `tcp` (docs/protocol.md §11). */
const FEATURES: AgentFeature[] = ['http1'];

export interface TunnelConnectionOptions {
  /** Position among the agent's connections, for logs and events. */
  index: number;
  /** Full tunnel endpoint URL (ws:// or wss://, with /v1/tunnel). */
  endpoint: string;
  token: () => string;
  session: Partial<SessionConfig>;
  /** Bound on the WebSocket opening handshake, ms. */
  connectTimeout: number;
  /** PEM of the CA that signed the relay's certificate, for wss:// with a private CA. */
  relayCa?: string;
  backoff: BackoffOptions;
  /** A connection up at least this long resets the backoff when it drops, ms. */
  healthyAfter: number;
  logger: Logger;
  failures: FailureLog;
  /** The route set to announce, read at every (re)announcement: hostname routes and TCP ports. */
  announcement: () => { routes: AnnouncedRoute[]; ports: AnnouncedPort[] };
  /** A stream the relay opened. */
  onStream: (stream: Stream) => void;
}

export interface TunnelConnectionEvents {
  /** The relay welcomed this connection on its control stream. */
  connected: [];
  /** A dial or handshake attempt failed; it retries after a backoff. */
  connectFailed: [reason: string];
  disconnected: [reason: string];
  /** The relay's answer to an announcement. */
  routes: [results: RouteResult[], ports: PortResult[]];
}

export type State = 'idle' | 'connecting' | 'handshake' | 'connected' | 'waiting' | 'closed';

/** How long a connection must have served for its GOAWAY to count as a relay restart, ms. */
const RESTART_MIN_UPTIME = 1_000;

/** GOAWAY reasons that mean "drain and reconnect", not "something broke". */
const GRACEFUL = new Set<Reason>([Reason.NoError, Reason.Shutdown, Reason.StreamIdsExhausted]);

/**
 * One of the agent's tunnel connections: dials the relay, runs the session
 * and its control stream, and reconnects on its own with jittered backoff.
 * After a GOAWAY from the relay it dials a fresh connection at once while the
 * old session finishes the requests already on it.
 */
export class TunnelConnection extends EventEmitter<TunnelConnectionEvents> {
  readonly index: number;
  readonly #opts: TunnelConnectionOptions;
  readonly #log: Logger;
  readonly #backoff: Backoff;
  #state: State = 'idle';
  #ws: WebSocket | undefined;
  #session: Session | undefined;
  #control: Stream | undefined;
  /** The control stream an announcement is being written to, until it has been. */
  #writing: Stream | undefined;
  /** The routes changed while an announcement was being written: another follows it. */
  #announceLater = false;
  /**
   * The `seq` of the latest announcement on the live control stream (0: none
   * yet), and of the latest the relay answered. A result that answers none
   * outstanding is ignored: each one may write every Service's status back to
   * Kubernetes, so only the agent's own announcing may set off those writes.
   */
  #sent = 0;
  #answered = 0;
  #timer: NodeJS.Timeout | undefined;
  #connectedAt = 0;
  /** Every session not yet closed (the live one and any draining after GOAWAY), with its socket. */
  readonly #sockets = new Map<Session, WebSocket>();

  constructor(options: TunnelConnectionOptions) {
    super();
    this.index = options.index;
    this.#opts = options;
    this.#log = options.logger.child({ conn: options.index });
    this.#backoff = new Backoff(options.backoff);
  }

  /** True while the relay has welcomed this connection and it is not draining. */
  get up(): boolean {
    return this.#state === 'connected';
  }

  /** Where this connection is in its life: connecting, handshake, connected, waiting (to retry), closed. */
  get state(): State {
    return this.#state;
  }

  /** The tunnel endpoint URL this connection dials. */
  get endpoint(): string {
    return this.#opts.endpoint;
  }

  /** The live session (absent while connecting or waiting to retry). */
  get session(): Session | undefined {
    return this.#session;
  }

  /** Every session not yet closed: the live one and those still draining after GOAWAY. */
  get sessions(): Session[] {
    return [...this.#sockets.keys()];
  }

  start(): void {
    if (this.#state === 'idle') this.#connect();
  }

  /** Sends the current route set on the live control stream (no-op while disconnected: connecting announces). */
  announce(): void {
    if (this.#control) this.#announceOn(this.#control);
  }

  #announceOn(control: Stream): void {
    // Until the relay has taken the last announcement off the stream (it reads
    // slowly, or not at all), route changes do not queue up one by one: the
    // latest set goes once it has.
    if (this.#writing === control) {
      this.#announceLater = true;
      return;
    }
    this.#writing = control;
    this.#announceLater = false;
    const seq = ++this.#sent;
    const { routes, ports } = this.#opts.announcement();
    // Without ports the field is left out: relays before ports need not see it.
    const message = {
      type: 'announce',
      routes,
      ...(ports.length ? { ports } : {}),
      features: FEATURES,
      seq,
    };
    writeMessage(control, message, () => {
      if (this.#writing !== control) return;
      this.#writing = undefined;
      if (this.#announceLater && this.#control === control) this.#announceOn(control);
    });
  }

  /**
   * Stops reconnecting and drains: GOAWAY on every session, in-flight streams
   * finish (bounded by the session's drainTimeout) while WebSocket and TCP
   * connections are closed once quiet, then the sockets close.
   */
  async close(): Promise<void> {
    if (this.#state === 'closed') return;
    const wasUp = this.#state === 'connected';
    this.#state = 'closed';
    clearTimeout(this.#timer);
    if (this.#ws && !this.#session) this.#ws.terminate(); // still dialing
    const live = this.#session;
    this.#session = undefined;
    if (wasUp) this.emit('disconnected', 'agent shutting down');
    await Promise.all(
      [...this.#sockets].map(async ([session, ws]) => {
        const closed = ws.readyState === ws.CLOSED ? Promise.resolve() : once(ws, 'close');
        const drained = session.goAway(Reason.Shutdown, 'agent shutting down');
        if (session === live) this.#releaseControl();
        await drained;
        if (session.closedQuiet > 0)
          this.#log.info({ connections: session.closedQuiet }, 'drain closed quiet long-lived connections');
        // The relay has processed everything we sent once its close frame is back.
        await closed;
      }),
    );
  }

  #connect(): void {
    this.#state = 'connecting';
    this.#ws = dialRelay(
      this.#opts.endpoint,
      this.#opts.token(),
      this.#opts.connectTimeout,
      {
        open: (ws) => this.#onOpen(ws),
        fail: (err) => this.#onDialFailed(err),
      },
      this.#opts.relayCa,
      maxMessageSize(this.#opts.session),
    );
  }

  #onOpen(ws: WebSocket): void {
    if (this.#state === 'closed') {
      ws.close(1000, 'closed');
      return;
    }
    this.#state = 'handshake';
    // Created synchronously in 'open': the relay's HELLO may be emitted right after.
    const session = createSession(new WsTransport(ws), {
      role: 'client',
      maxMetadata: 32 * 1024,
      // --connect-timeout bounds the whole handshake: the upgrade, then HELLO, then the welcome.
      handshakeTimeout: this.#opts.connectTimeout,
      ...this.#opts.session,
    });
    this.#session = session;
    this.#sockets.set(session, ws);
    session.on('stream', this.#opts.onStream);
    session.on('goaway', (info) => this.#onGoAway(session, info));
    session.once('close', (err) => this.#onSessionClose(session, err));
    session.ready.then(
      () => this.#onReady(session),
      () => {}, // reported by 'close'
    );
  }

  #onReady(session: Session): void {
    if (session !== this.#session) return;
    let control: Stream;
    try {
      control = session.openStream(encodeJson({ kind: 'control' }));
    } catch (err) {
      session.destroy(err as Error);
      return;
    }
    this.#control = control;
    this.#sent = 0;
    this.#answered = 0;
    control.idleExempt = true; // quiet for as long as the routes do not change
    const reader = new MessageReader(relayMessageSchema, MAX_RESULT_MESSAGE);
    const broken = (why: string) => {
      // Without its control stream a connection can neither learn nor change its routes.
      if (this.#control === control && !session.closed) session.destroy(new ProtocolError(why));
    };
    control.on('data', (chunk: Buffer) => {
      let messages: RelayMessage[];
      try {
        messages = reader.push(chunk);
      } catch (err) {
        broken(`invalid control message from the relay: ${(err as Error).message}`);
        return;
      }
      for (const m of messages) this.#onMessage(m);
    });
    control.on('error', (err) => broken(`control stream failed: ${err.message}`));
    control.on('end', () => broken('the relay closed the control stream'));
    this.#announceOn(control);
    // HELLO is bounded by the session; the welcome that follows needs its own bound.
    const limit = session.config.handshakeTimeout;
    const timer = setTimeout(() => {
      if (this.#session === session && this.#state === 'handshake') {
        session.destroy(new HandshakeError(`no welcome from the relay within ${limit} ms`));
      }
    }, limit);
    timer.unref();
    session.once('close', () => clearTimeout(timer));
  }

  #onMessage(message: RelayMessage): void {
    if (message.type === 'welcome') {
      if (this.#state !== 'handshake') return;
      this.#state = 'connected';
      this.#connectedAt = performance.now();
      const failures = this.#opts.failures.recovered();
      this.#log.info(
        {
          relay: this.#opts.endpoint,
          relayId: message.relayId,
          subject: message.subject,
          ...(failures ? { afterFailures: failures } : {}),
        },
        'tunnel connected',
      );
      this.emit('connected');
      return;
    }
    // A relay may answer several waiting announcements with one result for the latest, whose
    // seq it echoes: all up to it are answered. A result without one (a relay that predates
    // seq) answers the oldest outstanding; after such a relay has answered several at once,
    // some stay outstanding until the control stream is replaced.
    const answers = message.seq ?? this.#answered + 1;
    if (answers <= this.#answered || answers > this.#sent) {
      this.#log.debug('announce-result with no announcement outstanding; ignored');
      return;
    }
    this.#answered = answers;
    this.emit('routes', message.routes, message.ports ?? []);
  }

  /** Moves the live session aside: it keeps serving its streams but gets no new work from us. */
  #releaseControl(): void {
    const control = this.#control;
    this.#control = undefined;
    // Both sides count the control stream as open; resetting it lets a drain finish
    // as soon as the request streams are done instead of waiting for the drain timeout.
    control?.reset(Reason.Cancel, 'draining');
  }

  #onGoAway(session: Session, info: { reason: Reason; message: string }): void {
    // An error GOAWAY: the session closes at once, and 'close' reconnects.
    if (session !== this.#session || !GRACEFUL.has(info.reason)) return;
    const wasUp = this.#state === 'connected';
    this.#session = undefined;
    const upFor = this.#uptimeAtEnd();
    // Only a connection that served a while takes GOAWAY for a restart: a relay
    // that says goodbye right after every welcome (stuck draining) gets the
    // growing schedule, not fast retries forever.
    const delay = upFor >= RESTART_MIN_UPTIME ? this.#backoff.expectRestart() : this.#backoff.next();
    const reason = `relay draining${info.message ? `: ${info.message}` : ''}`;
    this.#log.info(
      { reason, inFlight: session.streamCount - 1, retryIn: delay },
      'tunnel draining; reconnecting',
    );
    this.#schedule(delay);
    if (wasUp) this.emit('disconnected', reason);
    this.#releaseControl();
    this.#boundDrain(session);
  }

  /**
   * The relay's drain timer bounds a drain it started; the agent does not
   * rely on it. A relay that never ends the session (and sends GOAWAY again on
   * every new connection) would otherwise pile up draining sessions and the
   * backend connections of their streams: past the agent's own drainTimeout
   * the session's streams are cut and it closes.
   */
  #boundDrain(session: Session): void {
    const timer = setTimeout(() => {
      if (session.closed) return;
      this.#log.warn(
        { inFlight: session.streamCount, drainTimeout: session.config.drainTimeout },
        'tunnel drain outlasted the drain timeout; closing it',
      );
      session.destroy();
    }, session.config.drainTimeout);
    timer.unref();
    session.once('close', () => clearTimeout(timer));
  }

  /**
   * How long the connection that just ended was up (0 if it never was); one
   * that served for the healthy period starts the backoff over, however it ended.
   */
  #uptimeAtEnd(): number {
    const upFor = this.#state === 'connected' ? performance.now() - this.#connectedAt : 0;
    if (upFor >= this.#opts.healthyAfter) this.#backoff.reset();
    return upFor;
  }

  #onSessionClose(session: Session, err?: Error): void {
    this.#sockets.delete(session);
    if (session !== this.#session) return; // a drained session finishing, or the agent closing
    this.#session = undefined;
    this.#control = undefined;
    if (this.#state === 'closed') return;
    const reason = err ? err.message : 'closed by the relay';
    if (this.#state === 'connected') {
      this.#uptimeAtEnd();
      const delay = this.#backoff.next();
      this.#log.warn({ reason, retryIn: delay }, 'tunnel disconnected');
      this.#schedule(delay);
      this.emit('disconnected', reason);
      return;
    }
    // Upgraded but never welcomed: a failed attempt like any other.
    const delay = this.#backoff.next();
    this.#opts.failures.failed(this.index, reason, delay);
    this.#schedule(delay);
    this.emit('connectFailed', reason);
  }

  #onDialFailed(err: Error): void {
    if (this.#state === 'closed') return;
    const reason = describeDialFailure(err, this.#opts.endpoint);
    const auth = err instanceof RelayRefusedError && err.authFailure;
    // A refused token cannot start working by itself soon: retry at the capped delay.
    const delay = auth ? this.#backoff.capped() : this.#backoff.next();
    this.#opts.failures.failed(this.index, reason, delay, auth ? 'error' : 'warn');
    this.#schedule(delay);
    this.emit('connectFailed', reason);
  }

  #schedule(delay: number): void {
    this.#state = 'waiting';
    this.#ws = undefined;
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => {
      if (this.#state === 'waiting') this.#connect();
    }, delay);
  }
}
