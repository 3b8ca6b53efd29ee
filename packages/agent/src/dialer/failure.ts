import { type Logger, Reason, type Stream, WarningPacer } from '@burrow/shared';
import type { Route } from '../routes/source.js';

/** Where a failed backend exchange is reported: the agent's log and its failure counter. */
export interface FailureReport {
  log: Logger;
  onFailure?: ((reason: string) => void) | undefined;
}

/**
 * Logs a failed backend exchange once, counts it, and resets the tunnel
 * stream with `reason` (the relay turns it into a 502 or 504). Returns the
 * reason's wire name.
 */
export function failExchange(
  stream: Stream,
  report: FailureReport,
  route: Route,
  method: string,
  reason: Reason,
  message: string,
  code?: string,
): string {
  const name = Reason[reason] ?? String(reason);
  warnLimited(
    report.log,
    `${route.id} ${name}`,
    {
      route: route.id,
      target: route.target,
      method,
      reason: name,
      ...(code ? { code } : {}),
      error: message,
    },
    'backend request failed',
  );
  report.onFailure?.(name);
  stream.reset(reason, message);
  return name;
}

/** What an exchange logs (at debug) when its tunnel stream closes. */
export interface ExchangeEnd {
  method: string;
  /** The backend's status; 0 when none came. */
  status: number;
  started: number;
  /** The wire name of the reason it failed with, if it did. */
  failed: string | undefined;
  /** Flags of the exchange's kind (upgrade, h2c). */
  kind?: Record<string, true | undefined>;
}

/** Logs the end of an exchange: its status, bytes both ways, duration, and how it failed or was reset. */
export function logExchangeEnd(log: Logger, route: Route, stream: Stream, end: ExchangeEnd): void {
  log.debug(
    {
      route: route.id,
      method: end.method,
      status: end.status,
      ...end.kind,
      bytesIn: stream.bytesIn,
      bytesOut: stream.bytesOut,
      durationMs: Math.round(performance.now() - end.started),
      ...(end.failed ? { error: end.failed } : {}),
      ...(stream.resetReason !== undefined && !end.failed
        ? { reset: Reason[stream.resetReason] ?? stream.resetReason }
        : {}),
    },
    'stream done',
  );
}

/** How often one backend failure (a route and a reason) is logged at warn, ms; repeats between are at debug. */
const WARN_EVERY = 10_000;
/** Per logger (an agent's), the pace of its backend failure warnings. */
const pacers = new WeakMap<Logger, WarningPacer>();

/**
 * Logs a backend failure at warn once per WARN_EVERY for each `key`: a backend
 * that is down fails every request sent to it, and a line for each would
 * bury everything else. The repeats go to debug, and the next warn line says
 * how many there were (`suppressed`); the failure counter counts them all.
 */
export function warnLimited(log: Logger, key: string, fields: Record<string, unknown>, msg: string): void {
  let pacer = pacers.get(log);
  if (!pacer) pacers.set(log, (pacer = new WarningPacer(WARN_EVERY)));
  const held = pacer.pass(key);
  if (held === undefined) log.debug(fields, msg);
  else log.warn(held > 0 ? { ...fields, suppressed: held } : fields, msg);
}

/** An error's code and message for a log line or a reset: the message says what, the code which. */
function describeFailure(code: string | undefined, message: string): string {
  if (!code) return message;
  return message && message !== code ? `${message} (${code})` : code;
}

/**
 * Why a backend gave no response at all: it did not accept a connection in
 * time, refused one, or failed otherwise. Returns the reset's reason, message
 * and the code to log. The message goes to the relay with the reset: it names
 * no address (targets never leave the agent; its own log line has the target).
 */
export function unanswered(
  timedOut: boolean,
  code: string,
  message: string,
  connectTimeout: number,
): [Reason, string, string] {
  if (timedOut) {
    return [
      Reason.ConnectTimeout,
      `backend did not accept a connection within ${connectTimeout} ms`,
      'ETIMEDOUT',
    ];
  }
  if (code === 'ECONNREFUSED') return [Reason.ConnectRefused, 'backend refused the connection', code];
  return [Reason.BackendError, `backend request failed: ${socketFailure(code, message)}`, code];
}

/**
 * A failure for a reset message, which goes to the relay: Node's socket
 * errors name the address (`connect EHOSTUNREACH 10.0.0.5:80`) and go by
 * their code alone; a certificate that does not match names the target and
 * the certificate's names, and gets a text of its own.
 */
export function socketFailure(code: string | undefined, message: string): string {
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID')
    return `the backend's certificate does not name the target (${code})`;
  if (code && /^E[A-Z0-9]+$/.test(code)) return code;
  return describeFailure(code, message);
}
