import { decodeJson, type Logger, openSchema, Reason, type Stream, WarningPacer } from '@burrow/shared';
import type { Dialer } from '../dialer/http.js';
import type { Route } from '../routes/source.js';
import { isH2c, takesRawStreams } from '../routes/validate.js';

/** How often each kind of refused stream is warned about, ms; the others go to debug. */
const REFUSAL_WARNING_INTERVAL = 60_000;

/**
 * Logs refused streams: a relay that keeps opening bad ones (a bug, or a
 * hostile relay) gets a warning per kind at most once a minute, with how many
 * were refused meanwhile, not a line per stream.
 */
export class RefusalLog {
  readonly #log: Logger;
  readonly #pacer = new WarningPacer(REFUSAL_WARNING_INTERVAL);

  constructor(log: Logger) {
    this.#log = log;
  }

  refused(fields: object, msg: string): void {
    const held = this.#pacer.pass(msg);
    if (held === undefined) this.#log.debug(fields, msg);
    else this.#log.warn({ ...fields, ...(held > 0 ? { refusedSinceLastWarning: held } : {}) }, msg);
  }
}

/**
 * Admits a stream the relay opened. The metadata must be a valid HTTP open
 * naming a route this agent announced; the stream then goes to the dialer,
 * which only ever dials that route's target. Nothing the relay sends can make
 * the agent connect anywhere else.
 */
export function acceptStream(
  stream: Stream,
  lookup: (routeId: string) => Route | undefined,
  dialer: Dialer,
  log: Logger,
  refusals: RefusalLog,
): void {
  stream.on('error', () => {}); // a refused stream's own reset, or the session closing
  const meta = decodeJson(stream.metadata, openSchema);
  if (!meta.ok) {
    refusals.refused(
      { stream: stream.id, reason: meta.error },
      'relay opened a stream with invalid metadata; refused',
    );
    stream.reset(Reason.BadMetadata, `invalid stream metadata: ${meta.error}`);
    return;
  }
  if (meta.value.kind === 'control') {
    refusals.refused(
      { stream: stream.id, kind: meta.value.kind },
      'relay opened a stream of the wrong kind; refused',
    );
    stream.reset(Reason.BadMetadata, `the relay may not open ${meta.value.kind} streams`);
    return;
  }
  const open = meta.value;
  const route = lookup(open.route);
  if (!route) {
    // Routine for a moment after a route is withdrawn; anything else points at the relay.
    log.debug(
      { stream: stream.id, route: open.route },
      'stream for a route this agent does not serve; refused',
    );
    stream.reset(Reason.RouteUnknown, `this agent does not serve route "${open.route}"`);
    return;
  }
  // A stream's kind must match how the route was announced: HTTP routes get
  // request and `http1` upstream streams (h2c ones request streams only),
  // passthrough and TCP routes raw byte streams, never the other way.
  if ((open.kind === 'tcp') !== takesRawStreams(route) || (open.kind === 'http1' && isH2c(route))) {
    refusals.refused(
      { stream: stream.id, route: open.route, kind: open.kind },
      'stream kind does not match the route; refused',
    );
    stream.reset(Reason.BadMetadata, `route "${open.route}" does not take ${open.kind} streams`);
    return;
  }
  if (open.kind === 'tcp') {
    // Raw bytes with no end in sight: a drain closes it once quiet, rather than waiting for it.
    stream.markRaw();
    dialer.serveTcp(stream, open, route);
  } else if (open.kind === 'http1') dialer.serveHttp1(stream, open, route);
  else dialer.serve(stream, open, route);
}
