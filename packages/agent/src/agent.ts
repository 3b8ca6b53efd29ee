import { EventEmitter } from 'node:events';
import {
  type AnnouncedPort,
  type AnnouncedRoute,
  ConfigError,
  createLogger,
  type Logger,
  MAX_ANNOUNCED_HOSTNAMES,
  MAX_ANNOUNCED_PORTS,
  MAX_ANNOUNCED_ROUTES,
  MAX_MESSAGE,
  MAX_RETRY_AFTER,
  type PortResult,
  type RouteResult,
  type Session,
  type SessionConfig,
  verifyConfig,
} from '@burrow/shared';
import { createDialer, type Dialer } from './dialer/http.js';
import { DEFAULT_CONNECT_TIMEOUT } from './dialer/pool.js';
import { checkRelayUrl } from './relay-url.js';
import {
  isRouteSource,
  type Route,
  type RouteSource,
  type StaticRoute,
  StaticRouteSource,
} from './routes/source.js';
import {
  checkRoute,
  claimedNames,
  isTcp,
  normalizeRoute,
  portName,
  toAnnounced,
  toAnnouncedPorts,
  validateRoutes,
} from './routes/validate.js';
import { checkToken } from './token.js';
import { acceptStream, RefusalLog } from './tunnel/accept.js';
import { type BackoffOptions, DEFAULT_BACKOFF } from './tunnel/backoff.js';
import { TunnelConnection, type State as TunnelState } from './tunnel/connection.js';
import { tunnelEndpoint } from './tunnel/dial.js';
import { FailureLog } from './tunnel/failure-log.js';
import { Verdicts } from './verdicts.js';

/** The soonest the agent announces again when a refusal asks it to (retryAfter), ms. */
const MIN_RETRY = 1000;
/**
 * Up to this share of the wait later, and at most RETRY_JITTER ms, so that
 * replicas refused alike do not all ask at once.
 */
const RETRY_SPREAD = 0.2;
const RETRY_JITTER = 2000;

/** Route changes from one announce-result logged a line each; the rest are counted. */
const LOGGED_CHANGES = 10;

export interface AgentOptions {
  /** Relay tunnel address: ws://HOST:PORT or wss://HOST:PORT (the /v1/tunnel path is added). */
  relayUrl: string;
  /**
   * Agent token (JWT) the relay verifies. Never logged. A function is called
   * before every connection attempt, so a token file rotated in place (a
   * Kubernetes Secret update) is used from the next reconnect on; when it
   * throws, the last good token is used and the error is logged.
   */
  token: string | (() => string);
  /** Routes to expose: a fixed list (validated now; a mistake throws ConfigError) or a live source. */
  routes: RouteSource | StaticRoute[];
  /** Tunnel connections kept to the relay, each reconnecting on its own. Default 2. */
  connections?: number;
  logger?: Logger;
  /** Multiplexer settings (keepaliveInterval, drainTimeout, …). */
  session?: Partial<SessionConfig>;
  /** PEM of the CA that signed the relay's TLS certificate (wss:// with a private CA). */
  relayCa?: string;
  /** Time allowed to connect to a backend, and for the relay's WebSocket handshake, ms. Default 10 s. */
  connectTimeout?: number;
  /** Reconnect backoff, ms. Default base 500, cap 30 s. */
  backoff?: BackoffOptions;
  /** A connection up this long resets its backoff when it drops, ms. Default 30 s. */
  healthyAfter?: number;
  /** How long a fast-path stream of a withdrawn or changed route lives on, ms (DialerOptions). Default 10 s. */
  withdrawGrace?: number;
}

export interface AgentEvents {
  /** Connection `index` is up: the relay welcomed it. */
  connected: [index: number];
  /** Connection `index` went down (or is draining after a relay GOAWAY); it reconnects by itself. */
  disconnected: [index: number, reason: string];
  /**
   * A relay answered an announcement, or a connection whose answer decided a
   * name's or port's state went down: the combined state (routeStatus(),
   * portStatus()), one result per hostname and one per TCP port.
   */
  routes: [results: RouteResult[], ports: PortResult[]];
  /** Connection `index` failed to connect (dial, refusal or handshake); it retries by itself. */
  connectFailed: [index: number, reason: string];
  /** A backend exchange failed; `reason` is the wire reason name (ConnectRefused, BackendError, ...). */
  dialError: [reason: string];
}

/** One tunnel connection's state, for metrics and status. */
export interface ConnectionState {
  index: number;
  /** The tunnel endpoint URL (from the agent's configuration). */
  relay: string;
  state: TunnelState;
}

/** A running agent. */
export interface Agent extends EventEmitter<AgentEvents> {
  /** Resolves once a connection is up and the relay answered its announcement. */
  ready(): Promise<void>;
  /**
   * The relay's verdicts, one per hostname, combined over the connections that
   * are up: each connection's latest answer counts, and a name is active when
   * any of them has it active, refused only when all that answered for it
   * refuse it.
   */
  routeStatus(): RouteResult[];
  /** The same for TCP routes, one per port. */
  portStatus(): PortResult[];
  /** Routes of the current set left out of the announcement, by id, with the reason. */
  skippedRoutes(): ReadonlyMap<string, string>;
  /** Connections currently up. */
  readonly connectionCount: number;
  /**
   * Every session not yet closed: one per connection that is up or
   * handshaking, and those draining after a GOAWAY, whose requests still run.
   */
  sessions(): Session[];
  /** Every tunnel connection's state. */
  connectionStates(): ConnectionState[];
  /** Stops reconnecting and drains every connection (bounded by the session drainTimeout). */
  close(): Promise<void>;
}

/** Starts an agent: connects to the relay, announces the routes and serves the relay's streams. */
export function startAgent(options: AgentOptions): Agent {
  return new AgentImpl(options);
}

class AgentImpl extends EventEmitter<AgentEvents> implements Agent {
  readonly #log: Logger;
  readonly #source: RouteSource;
  readonly #dialer: Dialer;
  readonly #connections: TunnelConnection[] = [];
  readonly #onChange = (routes: readonly Route[]) => this.#apply(routes);
  #routes = new Map<string, Route>();
  #announced: AnnouncedRoute[] = [];
  #announcedPorts: AnnouncedPort[] = [];
  /**
   * The latest answer of each connection, by its index, while it is up. The
   * connections may reach different relay replicas, and each answers its own
   * announcement: they can disagree for a while (a name another agent still
   * holds on one replica, a route's protocol changing), so no single answer is
   * the agent's state. The answers for each hostname (by routeKey), combined as they come.
   */
  readonly #names = new Verdicts<RouteResult>();
  /** The same for each TCP port (by portKey). */
  readonly #ports = new Verdicts<PortResult>();
  /** The answers combined (#combine), in the order of the announcement. */
  #results: RouteResult[] = [];
  #portResults: PortResult[] = [];
  /** Last logged state per hostname, so each change is logged once, not once per connection. */
  #logged = new Map<string, string>();
  /** The same per TCP port. */
  #loggedPorts = new Map<number, string>();
  /** The relay's host name (or address) from --relay: where its TCP ports are, unless it says. */
  readonly #relayHost: string;
  /** Whether a relay's silence about the announced ports was reported. */
  #portsUnanswered = false;
  /** Invalid routes from a live source already warned about. */
  #warned = new Set<string>();
  #skipped: ReadonlyMap<string, string> = new Map();
  readonly #ready: Promise<void>;
  #resolveReady!: () => void;
  #rejectReady!: (err: Error) => void;
  #closing: Promise<void> | undefined;
  readonly #refusals: RefusalLog;
  /** The announcement again that refusals asked for (their retryAfter), and when it is due (performance.now()). */
  #retryTimer: NodeJS.Timeout | undefined;
  #retryDue = Number.POSITIVE_INFINITY;

  constructor(options: AgentOptions) {
    super();
    checkRelayUrl(options.relayUrl);
    const firstToken = typeof options.token === 'function' ? options.token() : options.token;
    checkToken(firstToken, 'token');
    const count = options.connections ?? 2;
    if (!Number.isInteger(count) || count < 1 || count > 64) {
      throw new ConfigError(`connections must be an integer from 1 to 64 (got ${count})`);
    }
    const connectTimeout = options.connectTimeout ?? DEFAULT_CONNECT_TIMEOUT;
    if (!(connectTimeout > 0))
      throw new ConfigError(`connectTimeout must be positive (got ${connectTimeout})`);
    const backoff = options.backoff ?? DEFAULT_BACKOFF;
    if (!(backoff.base > 0 && backoff.cap >= backoff.base)) {
      throw new ConfigError(`backoff needs 0 < base <= cap (got base ${backoff.base}, cap ${backoff.cap})`);
    }
    const session = { ...options.session };
    verifyConfig({ maxMetadata: 32 * 1024, ...session }); // fail now, not on the first connection
    this.#log = options.logger ?? createLogger({ name: 'burrow-agent' });
    this.#refusals = new RefusalLog(this.#log);
    this.#source = isRouteSource(options.routes)
      ? options.routes
      : new StaticRouteSource(validateRoutes(options.routes));
    this.#ready = new Promise<void>((resolve, reject) => {
      this.#resolveReady = resolve;
      this.#rejectReady = reject;
    });
    this.#ready.catch(() => {});
    this.#dialer = createDialer({
      logger: this.#log,
      connectTimeout,
      onFailure: (reason) => this.emit('dialError', reason),
      ...(options.withdrawGrace !== undefined ? { withdrawGrace: options.withdrawGrace } : {}),
    });

    this.#apply(this.#source.routes());
    this.#source.on('change', this.#onChange);

    const failures = new FailureLog(this.#log);
    const token = this.#tokenSource(options.token, firstToken);
    const endpoint = tunnelEndpoint(options.relayUrl);
    this.#relayHost = new URL(endpoint).hostname;
    for (let index = 0; index < count; index++) {
      const conn = new TunnelConnection({
        index,
        endpoint,
        token,
        session,
        connectTimeout,
        ...(options.relayCa ? { relayCa: options.relayCa } : {}),
        backoff,
        healthyAfter: options.healthyAfter ?? 30_000,
        logger: this.#log,
        failures,
        announcement: () => ({ routes: this.#announced, ports: this.#announcedPorts }),
        onStream: (stream) =>
          acceptStream(stream, (id) => this.#routes.get(id), this.#dialer, this.#log, this.#refusals),
      });
      conn.on('connected', () => this.emit('connected', index));
      conn.on('disconnected', (reason) => {
        this.#forget(index);
        this.emit('disconnected', index, reason);
      });
      conn.on('connectFailed', (reason) => {
        this.#forget(index);
        this.emit('connectFailed', index, reason);
      });
      conn.on('routes', (results, ports) => this.#onResults(index, results, ports));
      this.#connections.push(conn);
    }
    this.#log.info(
      {
        relay: endpoint,
        connections: count,
        routes: this.#announced.length,
        ...(this.#announcedPorts.length ? { ports: this.#announcedPorts.length } : {}),
        source: this.#source.name,
      },
      'agent starting',
    );
    for (const conn of this.#connections) conn.start();
  }

  ready(): Promise<void> {
    return this.#ready;
  }

  routeStatus(): RouteResult[] {
    return [...this.#results];
  }

  portStatus(): PortResult[] {
    return [...this.#portResults];
  }

  skippedRoutes(): ReadonlyMap<string, string> {
    return this.#skipped;
  }

  get connectionCount(): number {
    return this.#connections.filter((c) => c.up).length;
  }

  sessions(): Session[] {
    return this.#connections.flatMap((c) => c.sessions);
  }

  connectionStates(): ConnectionState[] {
    return this.#connections.map((c) => ({ index: c.index, relay: c.endpoint, state: c.state }));
  }

  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#source.off('change', this.#onChange);
      this.#log.info({ inFlight: this.#inFlight() }, 'agent draining');
      this.#rejectReady(new Error('agent closed before a tunnel was ready'));
      clearTimeout(this.#retryTimer);
      await Promise.all(this.#connections.map((c) => c.close()));
      this.#dialer.close();
      this.#log.info('agent stopped');
    })();
    return this.#closing;
  }

  #inFlight(): number {
    // A connection's live session also holds its control stream; a draining one has let it go.
    let n = 0;
    for (const c of this.#connections) {
      for (const s of c.sessions) n += Math.max(0, s.streamCount - (s === c.session ? 1 : 0));
    }
    return n;
  }

  /** Takes a new route set: keeps the valid routes, re-announces on every connection. */
  #apply(offered: readonly Route[]): void {
    // Names here are hostnames and public TCP ports (`tcp:PORT`): both are held the same way.
    const asked = new Set(offered.flatMap((r) => claimedNames(r).map((h) => `${r.id} ${h}`)));
    const ids = new Set(offered.map((r) => r.id));
    const held = new Map<string, string>();
    // A name goes where the source's record says (Services' burrow.dev/holds), so that every
    // replica decides alike: one that started later, or one that gave a name away while it could
    // not see the record's Service (a namespace it could not list yet). A record of a route out of
    // the set reserves its names: no route is given them, and none serves them.
    for (const [h, id] of this.#source.holders?.() ?? []) {
      if (asked.has(`${id} ${h}`) || !ids.has(id)) held.set(h, id);
    }
    // Otherwise a name stays with the route that has it while that route still asks for it: a
    // route asking for it (a new one, or an older one edited to add it) is refused, whatever the
    // source's order.
    for (const r of this.#routes.values()) {
      for (const h of claimedNames(r)) if (!held.has(h) && asked.has(`${r.id} ${h}`)) held.set(h, r.id);
    }
    // Routes that hold names go first, so they also keep their places under the announcement limits.
    const routes = [
      ...offered.filter((r) => this.#routes.has(r.id)),
      ...offered.filter((r) => !this.#routes.has(r.id)),
    ];
    let plan = this.#plan(routes, held);
    // A holder refused for another reason (edited into an invalid route) does not keep its names,
    // unless the source reserves them (a route it has left out of the set for now).
    const lapsed = [...held].filter(([, id]) => ids.has(id) && !plan.next.has(id));
    if (lapsed.length > 0) {
      for (const [h] of lapsed) held.delete(h);
      plan = this.#plan(routes, held);
    }
    for (const [id, reason] of plan.skipped) {
      const key = `${id} ${reason}`;
      if (this.#warned.has(key)) continue;
      this.#warned.add(key);
      this.#log.warn({ route: id, source: this.#source.name, reason }, 'invalid route skipped');
    }
    this.#routes = plan.next;
    this.#skipped = plan.skipped;
    const planned = [...plan.next.values()];
    this.#announced = planned.filter((r) => !isTcp(r)).map(toAnnounced);
    this.#announcedPorts = planned.filter(isTcp).flatMap(toAnnouncedPorts);
    this.#dialer.retain([...plan.next.values()]);
    for (const conn of this.#connections) conn.announce();
  }

  /**
   * Which of `routes` are announced, in order, and why each other one is not.
   * `held` maps a hostname to the route that has it and keeps it.
   */
  #plan(
    routes: readonly Route[],
    held: ReadonlyMap<string, string>,
  ): { next: Map<string, Route>; skipped: Map<string, string> } {
    const next = new Map<string, Route>();
    const skipped = new Map<string, string>();
    let announcedBytes = 0;
    /** Hostname → the id of the route that has it. */
    const hostnames = new Map<string, string>();
    /** Public TCP port → the id of the route that has it. */
    const ports = new Map<number, string>();
    const portHolder = (p: number, id: string) => {
      const holder = ports.get(p) ?? held.get(portName(p));
      return holder === id ? undefined : holder;
    };
    const holderOf = (h: string, id: string) => {
      const holder = hostnames.get(h) ?? held.get(h);
      return holder === id ? undefined : holder;
    };
    for (const route of routes) {
      const problem = checkRoute(route);
      const taken = problem ? undefined : route.hostnames.find((h) => holderOf(h, route.id) !== undefined);
      const takenPort = problem ? undefined : route.ports?.find((p) => portHolder(p, route.id) !== undefined);
      const why = problem
        ? `${problem[0]}: ${problem[1]}`
        : next.has(route.id)
          ? `id "${route.id}" is used by another route`
          : taken
            ? `hostname "${taken}" is already in route "${holderOf(taken, route.id)}"`
            : takenPort !== undefined
              ? `port ${takenPort} is already in route "${portHolder(takenPort, route.id)}"`
              : '';
      const size = why ? 0 : announcedSize(route);
      const reason =
        why ||
        this.#overAnnouncementLimit(
          next.size,
          hostnames.size + route.hostnames.length,
          ports.size + (route.ports?.length ?? 0),
          announcedBytes + size,
        );
      if (reason) {
        skipped.set(route.id, reason);
        continue;
      }
      for (const h of route.hostnames) hostnames.set(h, route.id);
      for (const p of route.ports ?? []) ports.set(p, route.id);
      next.set(route.id, normalizeRoute(route));
      announcedBytes += size;
    }
    return { next, skipped };
  }

  /**
   * Why an announcement of `count` routes plus one more, with `names` hostnames,
   * `portCount` ports and `bytes` in all, cannot be sent, or ''.
   */
  #overAnnouncementLimit(count: number, names: number, portCount: number, bytes: number): string {
    if (portCount > MAX_ANNOUNCED_PORTS) {
      return `this route's ports would take the announcement over ${MAX_ANNOUNCED_PORTS}, the most one carries`;
    }
    if (count >= MAX_ANNOUNCED_ROUTES) {
      return `this agent already announces ${MAX_ANNOUNCED_ROUTES} routes, the most one announcement carries`;
    }
    if (names > MAX_ANNOUNCED_HOSTNAMES) {
      return `this route's hostnames would take the announcement over ${MAX_ANNOUNCED_HOSTNAMES}, the most one carries`;
    }
    // Room for the message's own framing besides the routes.
    if (bytes > MAX_MESSAGE - 1024)
      return `the announcement would exceed ${MAX_MESSAGE} bytes with this route`;
    return '';
  }

  /** Connection `index` answered an announcement. */
  #onResults(index: number, all: RouteResult[], allPorts: PortResult[]): void {
    // Only what this agent announced: a relay cannot put other names in its logs or write-back.
    const announced = new Set(this.#announced.flatMap((r) => r.hostnames.map((h) => routeKey(r.id, h))));
    const routes = all.filter((r) => announced.has(routeKey(r.id, r.hostname)));
    const announcedPorts = new Set(this.#announcedPorts.map((p) => portKey(p.id, p.port)));
    // A relay that does not know its public name (--tcp-public-host) sends no URL: the port is on
    // the host the agent dials, which is where clients go too unless something stands between.
    const ports = allPorts
      .filter((r) => announcedPorts.has(portKey(r.id, r.port)))
      .map((r) =>
        r.status === 'active' && !r.url ? { ...r, url: `tcp://${this.#relayHost}:${r.port}` } : r,
      );
    this.#names.answer(
      index,
      routes.map((r) => [routeKey(r.id, r.hostname), r]),
    );
    this.#ports.answer(
      index,
      ports.map((r) => [portKey(r.id, r.port), r]),
    );
    this.#checkPortsAnswered(allPorts);
    this.#combine();
    // Each connection's refusals count, even of a name another connection serves: the relay
    // replica behind this one would not send its clients here until asked again.
    this.#retryLater([...routes, ...ports]);
    this.#resolveReady();
    this.emit('routes', this.#results, this.#portResults);
  }

  /** Connection `index` went down: its answer no longer says what the relay serves. */
  #forget(index: number): void {
    const names = this.#names.forget(index);
    const ports = this.#ports.forget(index);
    if (!names && !ports) return; // it had not answered
    // Written back to Kubernetes only when a name's state changed: one that lost its last answer
    // keeps what it showed until a connection answers again.
    if (this.#combine()) this.emit('routes', this.#results, this.#portResults);
  }

  /**
   * Combines the connections' answers into #results and #portResults, and
   * logs each name or port whose state changed. A name is active when any
   * connection has it active, with the URL the lowest-numbered of those
   * reported; refused when every connection that answered for it refuses it,
   * with the refusal of the lowest-numbered one; absent when none answered.
   * The order of arrival never decides. True when a state changed.
   */
  #combine(): boolean {
    // Each answer was combined per name as it came (Verdicts): this costs one lookup a name,
    // however many connections there are.
    this.#results = this.#announced.flatMap((r) =>
      r.hostnames.flatMap((h) => this.#names.get(routeKey(r.id, h)) ?? []),
    );
    this.#portResults = this.#announcedPorts.flatMap((p) => this.#ports.get(portKey(p.id, p.port)) ?? []);
    const names = this.#logRouteChanges();
    const ports = this.#logPortChanges();
    return names || ports;
  }

  /** Logs each hostname whose combined state changed, once; true if one did. */
  #logRouteChanges(): boolean {
    const results = this.#results;
    let changes = 0;
    for (const r of results) {
      const state = stateOf(r);
      const name = r.hostname.toLowerCase();
      if (this.#logged.get(name) === state) continue;
      this.#logged.set(name, state);
      // A line per change for the first few; an agent of many routes counts the rest.
      if (++changes > LOGGED_CHANGES) continue;
      if (r.status === 'active')
        this.#log.info({ route: r.id, hostname: r.hostname, url: r.url }, 'route active');
      else
        this.#log.warn({ route: r.id, hostname: r.hostname, reason: r.error }, 'route refused by the relay');
    }
    if (changes > LOGGED_CHANGES) {
      const refused = results.filter((r) => r.status === 'refused').length;
      this.#log.info(
        { active: results.length - refused, refused, changesNotLogged: changes - LOGGED_CHANGES },
        'route changes beyond these were not logged one by one',
      );
    }
    // A name no connection has answered for (all down, or the answer on its way) keeps its entry,
    // so that the same answer after a reconnect is not logged again; one no longer announced goes.
    const announced = new Set(this.#announced.flatMap((r) => r.hostnames.map((h) => h.toLowerCase())));
    for (const h of this.#logged.keys()) if (!announced.has(h)) this.#logged.delete(h);
    return changes > 0;
  }

  /** Logs each change of a TCP port's combined state once (there are at most 256); true if one did. */
  #logPortChanges(): boolean {
    let changed = false;
    for (const r of this.#portResults) {
      const state = stateOf(r);
      if (this.#loggedPorts.get(r.port) === state) continue;
      this.#loggedPorts.set(r.port, state);
      changed = true;
      const fields = { route: r.id, port: r.port };
      if (r.status === 'active')
        this.#log.info({ ...fields, ...(r.url ? { url: r.url } : {}) }, 'port active');
      else this.#log.warn({ ...fields, reason: r.error }, 'port refused by the relay');
    }
    const announced = new Set(this.#announcedPorts.map((p) => p.port));
    for (const p of this.#loggedPorts.keys()) if (!announced.has(p)) this.#loggedPorts.delete(p);
    return changed;
  }

  /**
   * Announces again when the soonest refusal that says when asking again may
   * succeed (a name another agent held, or holds while it reconnects) asks:
   * nothing else would, and the route would stay refused until a reconnect.
   */
  #retryLater(results: ReadonlyArray<{ status: string; retryAfter?: number | undefined }>): void {
    let after = Number.POSITIVE_INFINITY;
    for (const r of results) {
      if (r.status === 'refused' && r.retryAfter !== undefined) after = Math.min(after, r.retryAfter);
    }
    if (after === Number.POSITIVE_INFINITY || this.#closing) return;
    const wait = Math.min(MAX_RETRY_AFTER, Math.max(MIN_RETRY, after));
    const delay = wait + Math.random() * Math.min(RETRY_JITTER, wait * RETRY_SPREAD);
    const due = performance.now() + delay;
    if (this.#retryTimer && this.#retryDue <= due) return;
    clearTimeout(this.#retryTimer);
    this.#retryDue = due;
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = undefined;
      this.#log.debug('announcing again: the relay said a refused name or port may be free by now');
      for (const conn of this.#connections) conn.announce();
    }, delay);
    this.#retryTimer.unref();
  }

  /** Warns once while it lasts that a relay answers nothing for the announced ports. */
  #checkPortsAnswered(all: PortResult[]): void {
    // A relay that predates ports answers none: said once while it lasts, not once per reconnect.
    // (The answer to an announcement sent before the ports were added has none either.)
    if (all.length > 0) this.#portsUnanswered = false;
    else if (this.#announcedPorts.length > 0 && !this.#portsUnanswered) {
      this.#portsUnanswered = true;
      this.#log.warn(
        { ports: this.#announcedPorts.length },
        "the relay's answer has no results for the announced TCP ports; a relay that predates them ignores them (upgrade the relay)",
      );
    }
  }

  /** Reads the token for each connection attempt, falling back to the last good one. */
  #tokenSource(source: string | (() => string), first: string): () => string {
    if (typeof source === 'string') return () => source;
    let last = first;
    let lastError: string | undefined;
    return () => {
      try {
        const next = source();
        checkToken(next, 'token');
        if (next !== last) this.#log.info('agent token changed; using the new one from this connection on');
        last = next;
        lastError = undefined;
      } catch (err) {
        const message = (err as Error).message;
        if (message !== lastError) {
          this.#log.warn({ error: message }, 'cannot read the agent token again; using the previous one');
          lastError = message;
        }
      }
      return last;
    };
  }
}

/** Bytes a route adds to the announcement's JSON. */
function announcedSize(route: Route): number {
  const announced = isTcp(route) ? toAnnouncedPorts(route) : toAnnounced(route);
  return Buffer.byteLength(JSON.stringify(announced)) + 1;
}

function routeKey(id: string, hostname: string): string {
  return `${id} ${hostname.toLowerCase()}`;
}

function portKey(id: string, port: number): string {
  return `${id} ${port}`;
}

/** What a change is logged by: the status and what goes with it. */
function stateOf(r: RouteResult | PortResult): string {
  return r.status === 'active' ? `active ${r.url ?? ''}` : `refused ${r.error ?? ''}`;
}
