import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import type { PublicListener } from './listeners/connection-limit.js';
import type { AccessInfo } from './proxy/forward.js';
import type { RouteTable } from './routes/table.js';
import type { AgentConnection } from './tunnel/agent-connection.js';

/** Label for requests that matched no route: client-chosen Host values never become labels. */
export const UNROUTED = '_unrouted';

/** Why the relay refused an agent or one of its routes (the `reason` label of burrow_relay_refusals_total). */
export type RefusalReason =
  | 'token_missing'
  | 'token_invalid'
  | 'token_revoked'
  | 'protocol_version'
  | 'tunnels_per_subject'
  | 'route_not_allowed'
  | 'route_taken'
  | 'route_invalid'
  | 'route_limit';

export interface RelayMetricsSources {
  connections: ReadonlySet<AgentConnection>;
  routes: RouteTable<AgentConnection>;
  /** Revoked token ids currently loaded. */
  revokedTokens: () => number;
}

/**
 * What a route's requests add up to between two scrapes, in plain numbers:
 * prom-client looks a series up by its labels on every update, which cost the
 * relay about 1.7 µs per request for four updates (bench/metrics.mjs).
 */
interface RouteTally {
  /** Finished requests by status class, 1xx to 5xx, since the last scrape. */
  requests: number[];
  bytesIn: number;
  bytesOut: number;
  /** Streams open now. */
  streams: number;
}

/**
 * The relay's Prometheus metrics, in a registry of its own (several relays in
 * one process, as in tests, never share series). Gauges are read from the live
 * objects at scrape time. Every label is bounded: `host` is a route name the
 * route table holds, or UNROUTED; never a client address, a path or a
 * client-supplied Host. A name that left the table keeps its series until a
 * scrape has seen all it counted, then they go: a wildcard token lets its
 * agent announce names without end, one after another.
 */
export class RelayMetrics {
  readonly registry = new Registry();
  readonly #requests: Counter<'host' | 'status_class'>;
  readonly #duration: Histogram<'host'>;
  readonly #bytes: Counter<'host' | 'direction'>;
  readonly #errors: Counter<'reason'>;
  readonly #refusals: Counter<'reason'>;
  readonly #streams: Gauge<'host'>;
  readonly #certExpiry: Gauge<'name'>;
  readonly #reloads: Counter<'result'>;
  readonly #revocations: Counter;
  readonly #dropped: Counter<'listener'>;
  readonly #tallies = new Map<string, RouteTally>();
  readonly #routes: RouteTable<AgentConnection>;

  constructor(sources: RelayMetricsSources) {
    this.#routes = sources.routes;
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry });
    new Gauge({
      name: 'burrow_relay_agents_connected',
      help: 'Distinct agents (token subjects) with at least one tunnel connection.',
      registers,
      collect() {
        this.set(new Set([...sources.connections].map((c) => c.subject)).size);
      },
    });
    new Gauge({
      name: 'burrow_relay_tunnel_connections',
      help: 'Tunnel connections (WebSocket sessions) from agents, draining ones included.',
      registers,
      collect() {
        this.set(sources.connections.size);
      },
    });
    new Gauge({
      name: 'burrow_relay_routes',
      help: 'Hostnames (exact or wildcard) bound to at least one agent connection.',
      registers,
      collect() {
        this.set(sources.routes.size);
      },
    });
    new Gauge({
      name: 'burrow_relay_revoked_tokens',
      help: 'Token ids on the loaded revocation list.',
      registers,
      collect() {
        this.set(sources.revokedTokens());
      },
    });
    const handOver = () => this.#handOver();
    this.#streams = new Gauge({
      name: 'burrow_relay_streams_active',
      help: 'Request streams open through tunnels, by route hostname.',
      labelNames: ['host'],
      registers,
      // prom-client collects each metric just before it reads it, in the order they were
      // registered: this one comes before every series #forgetGone removes.
      collect: () => {
        this.#forgetGone();
        this.#handOver();
      },
    });
    this.#requests = new Counter({
      name: 'burrow_relay_requests_total',
      help: 'Finished HTTP requests, by route hostname and status class (2xx, 3xx, 4xx, 5xx).',
      labelNames: ['host', 'status_class'],
      registers,
      collect: handOver,
    });
    this.#duration = new Histogram({
      name: 'burrow_relay_request_duration_seconds',
      help: 'Time from request head to the end of the response, by route hostname.',
      labelNames: ['host'],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
      registers,
    });
    this.#bytes = new Counter({
      name: 'burrow_relay_http_bytes_total',
      help: 'Body bytes through the tunnels: direction "in" is client to backend, "out" backend to client.',
      labelNames: ['host', 'direction'],
      registers,
      collect: handOver,
    });
    this.#errors = new Counter({
      name: 'burrow_relay_request_errors_total',
      help: 'Requests the relay answered itself, by reason (unknown_host, agent_offline, backend_refused, ...).',
      labelNames: ['reason'],
      registers,
    });
    this.#refusals = new Counter({
      name: 'burrow_relay_refusals_total',
      help: 'Agent tunnels and announced routes the relay refused, by reason.',
      labelNames: ['reason'],
      registers,
    });
    this.#dropped = new Counter({
      name: 'burrow_relay_connections_dropped_total',
      help: 'Connections closed on arrival, by listener: http, tls and tcp because it held --max-connections, tunnel because too many connections were waiting to upgrade.',
      labelNames: ['listener'],
      registers,
    });
    this.#revocations = new Counter({
      name: 'burrow_relay_revoked_connections_total',
      help: 'Tunnel connections closed because their token was revoked.',
      registers,
    });
    this.#certExpiry = new Gauge({
      name: 'burrow_relay_certificate_expiry_timestamp_seconds',
      help: 'notAfter of each certificate the relay serves, Unix seconds; set by the TLS layer.',
      labelNames: ['name'],
      registers,
    });
    this.#reloads = new Counter({
      name: 'burrow_relay_config_reloads_total',
      help: 'Configuration reloads (SIGHUP or a changed file), by result (success, failure).',
      labelNames: ['result'],
      registers,
    });
    // Series exist from the start, so rate() and absent() work before the first event.
    for (const result of ['success', 'failure']) this.#reloads.inc({ result }, 0);
    this.#revocations.inc(0);
  }

  /** One finished request (the access log entry); `route` is the bound hostname or UNROUTED. */
  requestDone(info: AccessInfo): void {
    const host = info.route || UNROUTED;
    const tally = this.#tally(host);
    tally.requests[Math.min(5, Math.max(1, Math.floor(info.status / 100))) - 1]! += 1;
    tally.bytesIn += info.bytesIn;
    tally.bytesOut += info.bytesOut;
    this.#duration.observe({ host }, info.durationMs / 1000);
    if (info.error) this.#errors.inc({ reason: info.error });
  }

  /**
   * A request stream opened to an agent for route `host`; the gauge drops when
   * `closed` fires. Returns how to count it under another name of its route
   * from now on (a kept upstream lent to a request for that name).
   */
  streamOpened(host: string, onClose: (fn: () => void) => void): (host: string) => void {
    let tally = this.#tally(host);
    tally.streams += 1;
    onClose(() => {
      tally.streams -= 1;
    });
    return (next) => {
      tally.streams -= 1;
      tally = this.#tally(next);
      tally.streams += 1;
    };
  }

  #tally(host: string): RouteTally {
    let tally = this.#tallies.get(host);
    if (!tally) {
      tally = { requests: [0, 0, 0, 0, 0], bytesIn: 0, bytesOut: 0, streams: 0 };
      this.#tallies.set(host, tally);
    }
    return tally;
  }

  /**
   * Moves what the tallies counted since the last scrape into the series.
   * Every metric fed from them calls it when collected; the first call of a
   * scrape does the work.
   */
  #handOver(): void {
    for (const [host, tally] of this.#tallies) {
      tally.requests.forEach((count, i) => {
        if (count > 0) this.#requests.inc({ host, status_class: `${i + 1}xx` }, count);
      });
      tally.requests.fill(0);
      if (tally.bytesIn > 0) this.#bytes.inc({ host, direction: 'in' }, tally.bytesIn);
      if (tally.bytesOut > 0) this.#bytes.inc({ host, direction: 'out' }, tally.bytesOut);
      tally.bytesIn = 0;
      tally.bytesOut = 0;
      this.#streams.set({ host }, tally.streams);
    }
  }

  /**
   * Drops the tallies and series of names the route table no longer holds.
   * Runs at the start of a scrape, so a tally with nothing counted was
   * handed over, and exported, by an earlier one. One with a stream still
   * open stays: its gauge is live, and the stream's close updates the tally.
   */
  #forgetGone(): void {
    for (const [host, tally] of this.#tallies) {
      if (host === UNROUTED || tally.streams > 0 || this.#routes.holds(host)) continue;
      if (tally.bytesIn > 0 || tally.bytesOut > 0 || tally.requests.some((n) => n > 0)) continue;
      this.#tallies.delete(host);
      for (let i = 1; i <= 5; i++) this.#requests.remove({ host, status_class: `${i}xx` });
      for (const direction of ['in', 'out']) this.#bytes.remove({ host, direction });
      this.#duration.remove({ host });
      this.#streams.remove({ host });
    }
  }

  refused(reason: RefusalReason): void {
    this.#refusals.inc({ reason });
  }

  /** `count` tunnel connections were closed for a revoked token. */
  revoked(count = 1): void {
    this.#revocations.inc(count);
  }

  /** A client connection was closed on arrival: its listener was full. */
  connectionDropped(listener: PublicListener): void {
    this.#dropped.inc({ listener });
  }

  reloaded(ok: boolean): void {
    this.#reloads.inc({ result: ok ? 'success' : 'failure' });
  }

  /** For the TLS layer: a certificate's expiry (undefined removes the series, e.g. a removed name). */
  setCertificateExpiry(name: string, notAfter: Date | undefined): void {
    if (notAfter) this.#certExpiry.set({ name }, Math.floor(notAfter.getTime() / 1000));
    else this.#certExpiry.remove({ name });
  }
}
