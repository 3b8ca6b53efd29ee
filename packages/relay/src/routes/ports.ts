import { type Allowlist, type AnnouncedPort, createAllowlist, type PortResult } from '@burrow/shared';
import type { RouteRefusal, RouteTarget } from './table.js';
import { allowlistRefusal, heldRefusal, type Refused, refusedResult, takenRefusal } from './table.js';

export interface PortBinding<T extends RouteTarget> {
  target: T;
  routeId: string;
  port: number;
  allowlist: Allowlist | undefined;
}

export type PortLookup<T extends RouteTarget> =
  | { kind: 'found'; binding: PortBinding<T> }
  /** The port was served recently, but no agent connection holds it now. */
  | { kind: 'offline' }
  | { kind: 'none' };

export interface PortTableOptions {
  /** The ports the relay listens on (`--tcp-ports`): the only ones agents may claim. */
  ports: readonly number[];
  /** How long a port whose agents all went away stays reserved for their subject, ms. Default 10 min. */
  offlineGrace?: number;
  /** The public URL reported to agents for an active port, if the relay knows its public name. */
  urlFor?: (port: number) => string | undefined;
}

interface PortClaim<T extends RouteTarget> {
  subject: string;
  bindings: Map<T, PortBinding<T>>;
}

/**
 * Which agent connections serve which of the relay's public TCP ports. As
 * with hostnames (table.ts), a port belongs to one subject at a time, every
 * connection of that subject may serve it, lookups pick the least loaded,
 * and a port whose agents went away stays theirs for a grace period.
 */
export class PortTable<T extends RouteTarget> {
  readonly #offered: ReadonlySet<number>;
  readonly #offeredText: string;
  readonly #claims = new Map<number, PortClaim<T>>();
  readonly #byTarget = new Map<T, Set<number>>();
  readonly #offline = new Map<number, { until: number; subject: string }>();
  readonly #offlineGrace: number;
  readonly #urlFor: (port: number) => string | undefined;

  constructor(options: PortTableOptions) {
    this.#offered = new Set(options.ports);
    this.#offeredText = describePorts(options.ports);
    this.#offlineGrace = options.offlineGrace ?? 10 * 60_000;
    this.#urlFor = options.urlFor ?? (() => undefined);
  }

  /**
   * Replaces `target`'s ports with `ports`, checking each against the
   * relay's --tcp-ports, the token's claim and other tenants' claims. One
   * result per port; `onRefused` hears each refusal's kind.
   */
  announce(
    target: T,
    allowedPorts: readonly number[],
    ports: readonly AnnouncedPort[],
    onRefused?: (refusal: RouteRefusal) => void,
  ): PortResult[] {
    const results: PortResult[] = [];
    const wanted = new Map<number, PortBinding<T>>();
    const allowed = new Set(allowedPorts);
    for (const p of ports) {
      const refused = this.#check(target, allowed, p, wanted);
      if (refused) {
        results.push({ id: p.id, port: p.port, ...refusedResult(refused) });
        onRefused?.(refused.refusal);
        continue;
      }
      let allowlist: Allowlist | undefined;
      try {
        allowlist = p.allowCidrs?.length ? createAllowlist(p.allowCidrs) : undefined;
      } catch (err) {
        results.push({
          id: p.id,
          port: p.port,
          status: 'refused',
          error: allowlistRefusal(p.allowCidrs ?? [], err),
        });
        onRefused?.('route_invalid');
        continue;
      }
      wanted.set(p.port, { target, routeId: p.id, port: p.port, allowlist });
      const url = this.#urlFor(p.port);
      results.push({ id: p.id, port: p.port, status: 'active', ...(url ? { url } : {}) });
    }
    for (const port of this.#byTarget.get(target) ?? []) {
      if (!wanted.has(port)) this.#unbind(target, port, false);
    }
    for (const [port, binding] of wanted) {
      let claim = this.#claims.get(port);
      if (!claim) {
        claim = { subject: target.subject, bindings: new Map() };
        this.#claims.set(port, claim);
      }
      claim.bindings.set(target, binding);
      this.#offline.delete(port);
    }
    if (wanted.size > 0) this.#byTarget.set(target, new Set(wanted.keys()));
    else this.#byTarget.delete(target);
    return results;
  }

  #check(
    target: T,
    allowed: ReadonlySet<number>,
    p: AnnouncedPort,
    wanted: ReadonlyMap<number, PortBinding<T>>,
  ): Refused | undefined {
    if (!this.#offered.has(p.port)) {
      return {
        refusal: 'route_not_allowed',
        message: `port ${p.port} is not one of the relay's TCP ports (--tcp-ports: ${this.#offeredText})`,
      };
    }
    if (!allowed.has(p.port)) {
      return {
        refusal: 'route_not_allowed',
        message: `port ${p.port} is not allowed by this agent's token (ports: ${describePorts([...allowed].sort((a, b) => a - b))})`,
      };
    }
    const claim = this.#claims.get(p.port);
    if (claim && claim.subject !== target.subject) return takenRefusal(`port ${p.port}`);
    const gone = this.#offline.get(p.port);
    if (gone && gone.subject !== target.subject && gone.until > Date.now())
      return heldRefusal(`port ${p.port}`, gone.until);
    if (wanted.has(p.port)) return { refusal: 'route_invalid', message: `port ${p.port} is announced twice` };
    return undefined;
  }

  /** Forgets every port of a connection that went away; they stay reserved for its subject a while. */
  remove(target: T): void {
    for (const port of this.#byTarget.get(target) ?? []) this.#unbind(target, port, true);
    this.#byTarget.delete(target);
  }

  #unbind(target: T, port: number, lost: boolean): void {
    const claim = this.#claims.get(port);
    if (!claim?.bindings.delete(target) || claim.bindings.size > 0) return;
    this.#claims.delete(port);
    if (lost) this.#offline.set(port, { until: Date.now() + this.#offlineGrace, subject: claim.subject });
  }

  /** The least loaded usable connection serving `port`. */
  lookup(port: number): PortLookup<T> {
    const claim = this.#claims.get(port);
    if (claim) {
      let best: PortBinding<T> | undefined;
      for (const b of claim.bindings.values()) {
        if (!b.target.usable) continue;
        if (!best || b.target.inFlight < best.target.inFlight) best = b;
      }
      return best ? { kind: 'found', binding: best } : { kind: 'offline' };
    }
    const gone = this.#offline.get(port);
    if (gone && gone.until > Date.now()) return { kind: 'offline' };
    if (gone) this.#offline.delete(port);
    return { kind: 'none' };
  }

  /** Snapshot for the admin API and tests: port → subject, connection ids and route ids. */
  list(): Array<{ port: number; subject: string; connections: number[]; routeIds: string[] }> {
    return [...this.#claims]
      .sort(([a], [b]) => a - b)
      .map(([port, claim]) => ({
        port,
        subject: claim.subject,
        connections: [...claim.bindings.keys()].map((t) => t.id),
        routeIds: [...new Set([...claim.bindings.values()].map((b) => b.routeId))],
      }));
  }
}

/** Sorted ports as ranges for a message: `5432, 10000-10099`, the first few runs and a count. */
export function describePorts(ports: readonly number[]): string {
  if (ports.length === 0) return 'none';
  const runs: string[] = [];
  for (let i = 0; i < ports.length; ) {
    let j = i;
    while (j + 1 < ports.length && ports[j + 1] === ports[j]! + 1) j++;
    runs.push(i === j ? `${ports[i]}` : `${ports[i]}-${ports[j]}`);
    i = j + 1;
  }
  return runs.length > 8
    ? `${runs.slice(0, 8).join(', ')} and ${runs.length - 8} more ranges`
    : runs.join(', ');
}
