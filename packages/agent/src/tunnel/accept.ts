import { decodeJson, type Logger, openSchema, Reason, type Stream } from '@burrow/shared';
import type { Dialer } from '../dialer/http.js';
import type { Route } from '../routes/source.js';
import { isH2c, takesRawStreams } from '../routes/validate.js';

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
): void {
  stream.on('error', () => {}); // a refused stream's own reset, or the session closing
  const meta = decodeJson(stream.metadata, openSchema);
  if (!meta.ok) {
    log.warn(
      { stream: stream.id, reason: meta.error },
      'relay opened a stream with invalid metadata; refused',
    );
    stream.reset(Reason.BadMetadata, `invalid stream metadata: ${meta.error}`);
    return;
  }
  if (meta.value.kind === 'control') {
    log.warn(
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
    log.warn(
      { stream: stream.id, route: open.route, kind: open.kind },
      'stream kind does not match the route; refused',
    );
    stream.reset(Reason.BadMetadata, `route "${open.route}" does not take ${open.kind} streams`);
    return;
  }
  if (open.kind === 'tcp') dialer.serveTcp(stream, open, route);
  else if (open.kind === 'http1') dialer.serveHttp1(stream, open, route);
  else dialer.serve(stream, open, route);
}
