import {
  type Allowlist,
  type AnnouncedRoute,
  checkHostPattern,
  createAllowlist,
  MAX_ANNOUNCED_HOSTNAMES,
  MAX_RETRY_AFTER,
  nextWildcardDot,
  parseCidr,
  patternMatcher,
  type RouteProtocol,
  type RouteResult,
} from '@burrow/shared';
import type { RefusalReason } from '../metrics.js';

/** What the route table needs from an agent connection. */
export interface RouteTarget {
  readonly id: number;
  readonly subject: string;
  /** Streams in flight on this connection; new streams go to the least loaded. */
  readonly inFlight: number;
  /** False once the connection is draining or closed. */
  readonly usable: boolean;
}

export interface Binding<T extends RouteTarget> {
  target: T;
  routeId: string;
  hostname: string;
  allowlist: Allowlist | undefined;
  mode: RouteProtocol;
  /**
   * Whether requests may go as bytes on `http1` streams: an `http` route whose
   * agent speaks HTTP/1.1 to the backend (it announced no other `backend`).
   */
  http1: boolean;
}

interface Claim<T extends RouteTarget> {
  subject: string;
  bindings: Map<T, Binding<T>>;
}

export type Lookup<T extends RouteTarget> =
  | { kind: 'found'; binding: Binding<T> }
  /** The name was served recently, in `mode`, but no agent connection holds it now. */
  | { kind: 'offline'; hostname: string; mode: RouteProtocol }
  | { kind: 'none' };

export interface RouteTableOptions {
  /** How long a hostname whose agents all went away answers 503 instead of 404, ms. Default 10 min. */
  offlineGrace?: number;
  /** Builds the public URL reported to agents for an active hostname. */
  urlFor?: (hostname: string, mode: RouteProtocol) => string;
}

/** Refusals of one announcement that list the token's patterns. */
const LISTED_REFUSALS = 8;
/** Characters of a refused allowlist's reason (it is sent once for each name of the route). */
const MAX_ALLOWLIST_REASON = 160;
/** Characters of a bad allowlist entry quoted in that reason. */
const MAX_SHOWN_ENTRY = 40;
/** When a reservation for an agent that went away ends, for a refusal: `2026-11-29 15:32:10 UTC`. */
export function heldUntil(until: number): string {
  return `${new Date(until).toISOString().slice(0, 19).replace('T', ' ')} UTC`;
}

/**
 * A refused announcement's name or port, and whether and when asking again
 * may succeed (`retryAfter`, ms; results carry it to the agent).
 */
export interface Refused {
  refusal: RouteRefusal;
  message: string;
  retryAfter?: number;
}

/**
 * When an agent refused a name or port another subject serves asks again, ms:
 * nothing tells it when that one lets go, and asking costs an announcement.
 */
export const TAKEN_RETRY = 2 * 60_000;
/**
 * When an agent refused a name its own other connections serve in another
 * mode asks again, ms: soon, since in a rollout that changes the mode the
 * name answers 503 from when the last old replica goes until the new ones ask.
 */
export const MODE_RETRY = 1000;

/** A refusal for a name or port held for `until` (ms since the epoch) for another agent that is reconnecting. */
export function heldRefusal(what: string, until: number): Refused {
  return {
    refusal: 'route_taken',
    message: `${what} belongs to another agent that is reconnecting (held for it until ${heldUntil(until)})`,
    // A second late, so that the hold has ended when the agent asks.
    retryAfter: Math.min(MAX_RETRY_AFTER, Math.ceil(Math.max(0, until - Date.now())) + 1000),
  };
}

/** What a result says of a refused name or port: its status, why, and when to ask again if ever. */
export function refusedResult(refused: Refused): { status: 'refused'; error: string; retryAfter?: number } {
  return {
    status: 'refused',
    error: refused.message,
    ...(refused.retryAfter !== undefined ? { retryAfter: refused.retryAfter } : {}),
  };
}

/** A refusal for a name or port another subject serves now. */
export function takenRefusal(what: string): Refused {
  return {
    refusal: 'route_taken',
    message: `${what} is already served by another agent`,
    retryAfter: TAKEN_RETRY,
  };
}

/**
 * Names one subject (tenant) may serve at once, over all its connections:
 * twice what one announcement may hold, so that each connection of an agent
 * with a full set can move to a new one while its others still hold the old.
 * Connections of a subject share names, so this is reached only with
 * different names on different connections; without it, 64 connections of
 * one token could bind a million names, and every scan of the table (metrics,
 * the admin API, certificate management) would stall the relay for all
 * tenants.
 */
export const MAX_NAMES_PER_SUBJECT = 2 * MAX_ANNOUNCED_HOSTNAMES;

/**
 * Names kept reserved for one subject whose agents went away; past it, its
 * own oldest reservations go. Bounded per subject, so that no tenant's churn
 * can ever cost another tenant a reservation.
 */
export const MAX_OFFLINE_PER_SUBJECT = 4096;

/** Why a hostname of an announcement was refused (the metric's reason label). */
export type RouteRefusal = Extract<RefusalReason, `route_${string}`>;

/**
 * Which agent connections serve which hostname. Names belong to one subject
 * (tenant) at a time; every connection of that subject (replicas, or several
 * connections of one agent) may serve them, and lookups pick the least loaded.
 */
export class RouteTable<T extends RouteTarget> {
  readonly #claims = new Map<string, Claim<T>>();
  readonly #byTarget = new Map<T, Set<string>>();
  /** Names whose agents went away: until when they answer 503, how they were served, and whose they are. */
  readonly #offline = new Map<string, { until: number; mode: RouteProtocol; subject: string }>();
  /** The same reservations by subject, oldest first. */
  readonly #offlineOf = new Map<string, Set<string>>();
  /** When reservations nobody asked about since they lapsed are next swept away. */
  #nextSweep = 0;
  /** How many names each subject holds now. */
  readonly #namesOf = new Map<string, number>();
  readonly #offlineGrace: number;
  readonly #urlFor: (hostname: string, mode: RouteProtocol) => string;
  readonly #listeners = new Set<() => void>();

  constructor(options: RouteTableOptions = {}) {
    this.#offlineGrace = options.offlineGrace ?? 10 * 60_000;
    this.#urlFor = options.urlFor ?? ((h) => `http://${h}`);
  }

  /**
   * Replaces `target`'s routes with `routes`, checking each hostname against
   * the token's patterns and other tenants' claims. Returns one result per
   * hostname; refused hostnames carry the reason, and `onRefused` hears its
   * kind (a bounded metric label).
   */
  announce(
    target: T,
    allowedPatterns: readonly string[],
    routes: readonly AnnouncedRoute[],
    onRefused?: (refusal: RouteRefusal) => void,
  ): RouteResult[] {
    const results: RouteResult[] = [];
    const wanted = new Map<string, Binding<T>>();
    // The token's patterns go into the first few refusals only: thousands of
    // refused names must not each repeat them in the reply.
    let listed = 0;
    const allowed = patternMatcher(allowedPatterns);
    // New names this subject may still take: what it holds now, less what this announcement
    // withdraws and no other connection of the subject holds, up to the bound.
    let room = MAX_NAMES_PER_SUBJECT - (this.#namesOf.get(target.subject) ?? 0);
    const held = this.#byTarget.get(target);
    if (held?.size) {
      const kept = new Set(routes.flatMap((r) => r.hostnames.map((h) => h.toLowerCase())));
      for (const hostname of held)
        if (!kept.has(hostname) && this.#claims.get(hostname)?.bindings.size === 1) room++;
    }
    for (const route of routes) {
      let allowlist: Allowlist | undefined;
      try {
        allowlist = route.allowCidrs?.length ? createAllowlist(route.allowCidrs) : undefined;
      } catch (err) {
        const error = allowlistRefusal(route.allowCidrs ?? [], err);
        for (const h of route.hostnames) {
          results.push({ id: route.id, hostname: h, status: 'refused', error });
          onRefused?.('route_invalid');
        }
        continue;
      }
      for (const raw of route.hostnames) {
        const hostname = raw.toLowerCase();
        const mode = route.protocol ?? 'http';
        const refused = this.#check(
          target,
          allowedPatterns,
          allowed,
          hostname,
          mode,
          wanted,
          listed < LISTED_REFUSALS,
        );
        if (refused) {
          if (refused.refusal === 'route_not_allowed') listed++;
          results.push({ id: route.id, hostname: raw, ...refusedResult(refused) });
          onRefused?.(refused.refusal);
          continue;
        }
        if (!this.#claims.has(hostname)) {
          if (room <= 0) {
            results.push({
              id: route.id,
              hostname: raw,
              status: 'refused',
              error: `hostname "${hostname}" is over the ${MAX_NAMES_PER_SUBJECT} names one token subject may serve at once`,
            });
            onRefused?.('route_limit');
            continue;
          }
          room--;
        }
        const http1 = mode === 'http' && route.backend === undefined;
        wanted.set(hostname, { target, routeId: route.id, hostname, allowlist, mode, http1 });
        results.push({ id: route.id, hostname: raw, status: 'active', url: this.#urlFor(hostname, mode) });
      }
    }
    // Withdraw what this connection no longer announces, then bind the new set.
    for (const hostname of this.#byTarget.get(target) ?? []) {
      if (!wanted.has(hostname)) this.#unbind(target, hostname, false);
    }
    for (const [hostname, binding] of wanted) {
      let claim = this.#claims.get(hostname);
      if (!claim) {
        claim = { subject: target.subject, bindings: new Map() };
        this.#claims.set(hostname, claim);
        this.#namesOf.set(claim.subject, (this.#namesOf.get(claim.subject) ?? 0) + 1);
      }
      claim.bindings.set(target, binding);
      this.#unreserve(hostname);
    }
    this.#byTarget.set(target, new Set(wanted.keys()));
    this.#changed();
    return results;
  }

  /** Calls `fn` after every change of the set of served names (certificate management follows it). */
  onChange(fn: () => void): () => void {
    this.#listeners.add(fn);
    return () => this.#listeners.delete(fn);
  }

  #changed(): void {
    for (const fn of this.#listeners) fn();
  }

  /** Every hostname (exact or wildcard) a connected agent currently serves, with its mode and subject. */
  served(): Array<{ hostname: string; mode: RouteProtocol; subject: string }> {
    const out: Array<{ hostname: string; mode: RouteProtocol; subject: string }> = [];
    for (const [hostname, claim] of this.#claims) {
      for (const b of claim.bindings.values()) {
        if (!b.target.usable) continue;
        out.push({ hostname, mode: b.mode, subject: claim.subject });
        break;
      }
    }
    return out;
  }

  #check(
    target: T,
    patterns: readonly string[],
    allowed: (hostname: string) => boolean,
    hostname: string,
    mode: RouteProtocol,
    wanted: Map<string, Binding<T>>,
    listPatternsToo: boolean,
  ): Refused | undefined {
    const invalid = checkHostPattern(hostname);
    if (invalid) return { refusal: 'route_invalid', message: invalid };
    if (!allowed(hostname)) {
      const allowed = listPatternsToo ? listPatterns(patterns) : 'listed with the first names refused';
      return {
        refusal: 'route_not_allowed',
        message: `hostname "${hostname}" is not allowed by this agent's token (allowed: ${allowed})`,
      };
    }
    const claim = this.#claims.get(hostname);
    if (claim && claim.subject !== target.subject) return takenRefusal(`hostname "${hostname}"`);
    // One name, one mode: the TLS listener terminates or passes through by the binding it picks,
    // and a passthrough name's keys are the backend's alone. The connections that have it keep
    // it; this one asks again soon, as in a rollout that changes the mode, once they are gone.
    for (const [other, binding] of claim?.bindings ?? []) {
      if (other === target || binding.mode === mode) continue;
      return {
        refusal: 'route_invalid',
        message: `hostname "${hostname}" is served as ${binding.mode} by another connection of this agent; one name has one mode at a time`,
        retryAfter: MODE_RETRY,
      };
    }
    // A name whose agent is reconnecting stays its own for the grace period.
    const gone = this.#offline.get(hostname);
    if (gone && gone.subject !== target.subject && gone.until > Date.now())
      return heldRefusal(`hostname "${hostname}"`, gone.until);
    if (wanted.has(hostname))
      return { refusal: 'route_invalid', message: `hostname "${hostname}" is announced twice` };
    return undefined;
  }

  /** Forgets every route of a connection that went away. */
  remove(target: T): void {
    for (const hostname of this.#byTarget.get(target) ?? []) this.#unbind(target, hostname, true);
    this.#byTarget.delete(target);
    // Once for the whole connection, not for each of its (up to 16,384) names.
    const reserved = this.#offlineOf.get(target.subject);
    if (reserved && reserved.size > MAX_OFFLINE_PER_SUBJECT) {
      for (const hostname of reserved) {
        if (reserved.size <= MAX_OFFLINE_PER_SUBJECT) break;
        this.#unreserve(hostname);
      }
    }
    this.#sweep();
    this.#changed();
  }

  /**
   * `lost`: the connection went away (the name answers 503 for a while);
   * otherwise the agent withdrew the name on purpose and it is simply gone (404).
   */
  #unbind(target: T, hostname: string, lost: boolean): void {
    const claim = this.#claims.get(hostname);
    const binding = claim?.bindings.get(target);
    if (!claim || !binding) return;
    claim.bindings.delete(target);
    if (claim.bindings.size === 0) {
      this.#claims.delete(hostname);
      const left = (this.#namesOf.get(claim.subject) ?? 1) - 1;
      if (left > 0) this.#namesOf.set(claim.subject, left);
      else this.#namesOf.delete(claim.subject);
      if (!lost) return;
      this.#offline.set(hostname, {
        until: Date.now() + this.#offlineGrace,
        mode: binding.mode,
        subject: claim.subject,
      });
      let reserved = this.#offlineOf.get(claim.subject);
      if (!reserved) this.#offlineOf.set(claim.subject, (reserved = new Set()));
      reserved.add(hostname);
    }
  }

  #unreserve(hostname: string): void {
    const gone = this.#offline.get(hostname);
    if (!gone) return;
    this.#offline.delete(hostname);
    const reserved = this.#offlineOf.get(gone.subject);
    reserved?.delete(hostname);
    if (reserved?.size === 0) this.#offlineOf.delete(gone.subject);
  }

  /**
   * Drops reservations that lapsed without anyone asking for their names
   * (a lookup drops those it meets), at most once per grace period: the
   * reservations of tenants that never came back do not pile up.
   */
  #sweep(): void {
    const now = Date.now();
    if (now < this.#nextSweep) return;
    this.#nextSweep = now + this.#offlineGrace;
    for (const [hostname, { until }] of this.#offline) if (until <= now) this.#unreserve(hostname);
  }

  /**
   * Routes a request's Host (already normalised): exact names beat wildcards,
   * longer suffixes beat shorter. A name whose agent went away answers as
   * offline for its grace period, before any wider wildcard is tried: another
   * tenant's `*.example.com` never takes over `app.example.com` meanwhile.
   */
  lookup(host: string): Lookup<T> {
    let key = host;
    let dot = -1;
    do {
      const claim = this.#claims.get(key);
      if (claim) {
        let best: Binding<T> | undefined;
        for (const b of claim.bindings.values()) {
          if (!b.target.usable) continue;
          if (!best || b.target.inFlight < best.target.inFlight) best = b;
        }
        if (best) return { kind: 'found', binding: best };
        const mode = claim.bindings.values().next().value?.mode ?? 'http';
        return { kind: 'offline', hostname: key, mode };
      }
      const gone = this.#offline.size > 0 ? this.#offline.get(key) : undefined;
      if (gone) {
        if (gone.until > Date.now()) return { kind: 'offline', hostname: key, mode: gone.mode };
        this.#unreserve(key);
      }
      dot = nextWildcardDot(host, dot);
      key = dot >= 0 ? `*${host.slice(dot)}` : '';
    } while (key);
    return { kind: 'none' };
  }

  /** Whether `hostname` (exact or wildcard) is bound now, or held for its agent's return. */
  holds(hostname: string): boolean {
    if (this.#claims.has(hostname)) return true;
    const gone = this.#offline.get(hostname);
    return gone !== undefined && gone.until > Date.now();
  }

  /** Hostnames bound now. */
  get size(): number {
    return this.#claims.size;
  }

  /** Snapshot for the admin API and tests: hostname → subject and connection ids. */
  list(): Array<{ hostname: string; subject: string; connections: number[]; routeIds: string[] }> {
    return [...this.#claims].map(([hostname, claim]) => ({
      hostname,
      subject: claim.subject,
      connections: [...claim.bindings.keys()].map((t) => t.id),
      routeIds: [...new Set([...claim.bindings.values()].map((b) => b.routeId))],
    }));
  }
}

/**
 * Why a route's allowlist was refused, repeated for each of its (up to 64)
 * names. The reason quotes the bad entry as printable characters and only so
 * many of them, so that the answer to an announcement of odd entries stays
 * within what an agent reads (MAX_RESULT_MESSAGE) instead of growing 64-fold.
 */
export function allowlistRefusal(cidrs: readonly string[], err: unknown): string {
  let reason = (err as Error).message;
  for (const entry of cidrs) {
    const problem = parseCidr(entry);
    if (typeof problem !== 'string') continue;
    reason = problem;
    const address = entry.trim().split('/')[0] ?? '';
    for (const quoted of [entry, address])
      reason = reason.replaceAll(`"${quoted}"`, `"${shownEntry(quoted)}"`);
    break;
  }
  reason = `allowCidrs: ${reason}`.replace(/[^\x20-\x5b\x5d-\x7e…]/g, '?');
  return reason.length > MAX_ALLOWLIST_REASON ? `${reason.slice(0, MAX_ALLOWLIST_REASON - 1)}…` : reason;
}

/** An allowlist entry as a refusal quotes it: printable, without quotes or backslashes, and short. */
function shownEntry(entry: string): string {
  const shown = entry.replace(/[^\x20-\x7e]|["\\]/g, '?');
  return shown.length > MAX_SHOWN_ENTRY ? `${shown.slice(0, MAX_SHOWN_ENTRY - 1)}…` : shown;
}

/** A token's patterns for a refusal message: the first few, and how many more (a token may hold 256). */
function listPatterns(patterns: readonly string[]): string {
  if (patterns.length === 0) return 'none';
  const shown = patterns.slice(0, 5).join(', ');
  return patterns.length > 5 ? `${shown} and ${patterns.length - 5} more` : shown;
}
