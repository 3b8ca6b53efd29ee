/**
 * Application messages carried over the multiplexer (docs/protocol.md,
 * "Application layer"): the metadata of each stream's OPEN, the control
 * stream's messages, and the response head at the start of an HTTP stream.
 * Everything is UTF-8 JSON validated with zod on receipt; a message that does
 * not parse is refused with a clear reason, never trusted.
 */
import { z } from 'zod';

/** WebSocket subprotocol naming the tunnel protocol version; offered by the agent. */
export const TUNNEL_SUBPROTOCOL = 'burrow.v1';
/** Path of the tunnel endpoint on the relay. */
export const TUNNEL_PATH = '/v1/tunnel';

export const headerPairsSchema = z.array(z.tuple([z.string().max(8192), z.string().max(65536)])).max(512);
const routeId = z
  .string()
  .min(1)
  .max(128)
  .regex(/^[A-Za-z0-9._:/-]+$/, 'route ids are letters, digits and . _ : / -');

/** OPEN metadata of the control stream (agent → relay, first stream of a connection). */
export const controlOpenSchema = z.object({ kind: z.literal('control') });

/** OPEN metadata of an HTTP request stream (relay → agent). */
export const httpOpenSchema = z.object({
  kind: z.literal('http'),
  /** The route id the agent announced; the agent serves nothing else. */
  route: routeId,
  method: z
    .string()
    .min(1)
    .max(32)
    .regex(/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/),
  /** Request target as received (origin form). */
  path: z.string().min(1).max(16384),
  /** Request headers in order, hop-by-hop removed, forwarding headers added. */
  headers: headerPairsSchema,
  /** True for an Upgrade request (WebSocket and others): after a 101 the stream is raw bytes. */
  upgrade: z.boolean(),
  /**
   * Whether the request has a body (DATA until FIN). With Content-Length among
   * the headers it has exactly that many bytes; without, the agent frames it
   * as chunked. Absent (relays before this field): a Content-Length above 0,
   * or a method other than GET, HEAD, DELETE, OPTIONS and TRACE, means a body.
   */
  body: z.boolean().optional(),
  /**
   * The relay reads a response body framed as records (`trailers` in the
   * response head) and an `endStream` head. Absent (relays before these, and
   * requests whose answer goes out as raw bytes): the agent sends the body as
   * it is, without trailer fields.
   */
  trailers: z.boolean().optional(),
  client: z.object({ ip: z.string().max(64), port: z.number().int().min(0).max(65535) }),
});

/**
 * OPEN metadata of a raw byte stream (relay → agent): a TLS connection passed
 * through by SNI, or a connection to one of the relay's public TCP ports. The
 * stream carries the client's bytes from the first on, untouched; the agent
 * splices it to the route's target.
 */
export const tcpOpenSchema = z.object({
  kind: z.literal('tcp'),
  route: routeId,
  /** The SNI name the client asked for (informational: the route already matched it). */
  serverName: z.string().max(253).optional(),
  /** The relay's public TCP port the client connected to (informational, like serverName). */
  port: z.number().int().min(1).max(65535).optional(),
  client: z.object({ ip: z.string().max(64), port: z.number().int().min(0).max(65535) }),
});

/**
 * OPEN metadata of an HTTP/1.1 upstream stream (relay → agent), sent only to
 * agents that announced the `http1` feature. The stream carries HTTP/1.1
 * messages as bytes, one exchange at a time and possibly for many clients in
 * turn: requests the relay has already parsed, checked and rewritten
 * (forwarding headers set, hop-by-hop fields removed) one way, the backend's
 * responses untouched the other. The agent splices it to one connection to
 * the route's target (TLS for https targets); the relay reads the framing.
 */
export const http1OpenSchema = z.object({
  kind: z.literal('http1'),
  route: routeId,
});

export const openSchema = z.discriminatedUnion('kind', [
  controlOpenSchema,
  httpOpenSchema,
  tcpOpenSchema,
  http1OpenSchema,
]);
export type OpenMetadata = z.infer<typeof openSchema>;
export type HttpOpen = z.infer<typeof httpOpenSchema>;
export type TcpOpen = z.infer<typeof tcpOpenSchema>;
export type Http1Open = z.infer<typeof http1OpenSchema>;

/** Stream kinds an agent may offer beyond `http` and `tcp`, named in its announcement. */
export const AGENT_FEATURES = ['http1'] as const;
export type AgentFeature = (typeof AGENT_FEATURES)[number];

/**
 * How the relay serves a route's hostnames. `http`: the relay parses HTTP
 * (and terminates TLS when it holds a certificate). `tls-passthrough`: the
 * relay routes TLS connections by SNI and never decrypts them.
 */
export const ROUTE_PROTOCOLS = ['http', 'tls-passthrough'] as const;
export type RouteProtocol = (typeof ROUTE_PROTOCOLS)[number];

/** Most address ranges one route's allowlist may list. */
export const MAX_ALLOW_CIDRS = 256;

/** One route an agent announces. */
export const announcedRouteSchema = z.object({
  id: routeId,
  hostnames: z.array(z.string().min(1).max(253)).min(1).max(64),
  /** Client IP allowlist enforced at the relay; empty or absent allows everyone. */
  allowCidrs: z.array(z.string().max(64)).max(MAX_ALLOW_CIDRS).optional(),
  /** Absent means `http` (agents older than passthrough support never send it). */
  protocol: z.enum(ROUTE_PROTOCOLS).optional(),
  /**
   * What the agent speaks to the route's backend, when that is not HTTP/1.1:
   * `h2c` (HTTP/2 without TLS, as gRPC servers do). The relay then sends the
   * route's requests on `http` streams only, never `http1` ones, whose bytes
   * the agent would have to pass to the backend as they are. Any value but
   * absent has that effect, so names added later are safe to send.
   */
  backend: z.string().max(32).optional(),
});
export type AnnouncedRoute = z.infer<typeof announcedRouteSchema>;

/** A public TCP port an agent announces: the relay splices each connection to it to a `tcp` stream. */
export const announcedPortSchema = z.object({
  /** The route whose target the agent dials for connections to this port. */
  id: routeId,
  port: z.number().int().min(1).max(65535),
  /** Client IP allowlist enforced at the relay; empty or absent allows everyone. */
  allowCidrs: z.array(z.string().max(64)).max(MAX_ALLOW_CIDRS).optional(),
});
export type AnnouncedPort = z.infer<typeof announcedPortSchema>;

/** Most public TCP ports one announcement carries. */
export const MAX_ANNOUNCED_PORTS = 256;

/** Most routes one announcement carries (it must also fit in MAX_MESSAGE bytes). */
export const MAX_ANNOUNCED_ROUTES = 1024;
/**
 * Most hostnames one announcement carries, over all its routes. The relay
 * answers each with a result that repeats its route id and may say why it was
 * refused: this keeps that answer within a few MiB, whatever was announced.
 */
export const MAX_ANNOUNCED_HOSTNAMES = 16 * 1024;

/** An announcement's number on its control stream. */
const announceSeq = z.number().int().min(1).max(Number.MAX_SAFE_INTEGER);

/** Control messages, agent → relay. `announce` replaces the connection's whole route set. */
export const agentMessageSchema = z.discriminatedUnion('type', [
  z.object({
    type: z.literal('announce'),
    routes: z
      .array(announcedRouteSchema)
      .max(MAX_ANNOUNCED_ROUTES)
      .refine((routes) => routes.reduce((n, r) => n + r.hostnames.length, 0) <= MAX_ANNOUNCED_HOSTNAMES, {
        message: `more than ${MAX_ANNOUNCED_HOSTNAMES} hostnames in one announcement`,
      }),
    /**
     * Public TCP ports; one announced twice is refused, the others kept.
     * Absent (older agents): none. Relays that predate ports ignore the field
     * and answer no `ports` results.
     */
    ports: z.array(announcedPortSchema).max(MAX_ANNOUNCED_PORTS).optional(),
    /**
     * Stream kinds the agent serves besides `http` and `tcp`. Absent (older
     * agents): none. Names this relay does not know are ignored.
     */
    features: z.array(z.string().max(32)).max(16).optional(),
    /**
     * Numbers the announcements on one control stream (1, 2, …), for the
     * relay to echo in its answer. Absent (older agents): nothing is echoed.
     * One the relay cannot use is taken as absent, as docs/protocol.md says,
     * rather than costing the agent its tunnel.
     */
    seq: announceSeq.optional().catch(undefined),
  }),
]);
export type AgentMessage = z.infer<typeof agentMessageSchema>;

/**
 * Text the relay sends only to be shown (logged, written back to Kubernetes):
 * cut at `max` characters rather than refused, since refusing it would end the
 * connection and every route on it over a long message. Control characters
 * (terminal escapes, line breaks that would forge log or Event lines) become `?`.
 */
const shownText = (max: number) =>
  z.string().transform((s) => ellipsize(s.replace(CONTROL_CHARACTERS, '?'), max));

// biome-ignore lint/suspicious/noControlCharactersInRegex: matching them is the point
const CONTROL_CHARACTERS = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g;

/**
 * A URL the relay reports for a route, written back to Kubernetes as it is:
 * http, https or tcp, printable ASCII. Anything else is dropped (the route is
 * still active; only its URL goes unshown) rather than refused, as above.
 */
const reportedUrl = z
  .string()
  .max(2048)
  .transform((s) => (/^(https?|tcp):\/\/[\x21-\x7e]+$/.test(s) ? s : undefined));

/** `text` cut to at most `max` characters, an ellipsis marking the cut. */
export function ellipsize(text: string, max: number): string {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

/** The longest wait a refusal's `retryAfter` may ask for, ms. */
export const MAX_RETRY_AFTER = 60 * 60_000;

/**
 * In how many ms announcing again may succeed, on a refusal: the name or port
 * is another agent's, or held for one that is reconnecting, or served in
 * another mode. The agent announces again then; with none, asking again
 * changes nothing. Relative, so that the two clocks need not agree. A hint:
 * a value the agent cannot use (not a number, a fraction, past an hour) is
 * clamped or dropped, never a reason to refuse the whole answer.
 */
const retryAfter = z
  .number()
  .transform((ms) =>
    Number.isFinite(ms) ? Math.min(MAX_RETRY_AFTER, Math.max(0, Math.ceil(ms))) : undefined,
  )
  .catch(undefined);

// Results and the welcome come from the relay and end up in the agent's logs and in Kubernetes
// annotations and Events: every string has a bound.
export const routeResultSchema = z.object({
  id: routeId,
  hostname: z.string().min(1).max(253),
  status: z.enum(['active', 'refused']),
  /** Why a hostname was refused, for the agent's logs and Kubernetes write-back. */
  error: shownText(1024).optional(),
  /** Where the route is reachable, when active. */
  url: reportedUrl.optional(),
  retryAfter: retryAfter.optional(),
});
export type RouteResult = z.infer<typeof routeResultSchema>;

/** The relay's answer for one announced port. */
export const portResultSchema = z.object({
  id: routeId,
  port: z.number().int().min(1).max(65535),
  status: z.enum(['active', 'refused']),
  error: shownText(1024).optional(),
  /** Where the port is reachable, when active and the relay knows its public name. */
  url: reportedUrl.optional(),
  retryAfter: retryAfter.optional(),
});
export type PortResult = z.infer<typeof portResultSchema>;

/** Control messages, relay → agent. */
export const relayMessageSchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('welcome'), subject: shownText(256), relayId: shownText(128) }),
  z.object({
    type: z.literal('announce-result'),
    // At most one result per hostname an announcement can carry.
    routes: z.array(routeResultSchema).max(MAX_ANNOUNCED_HOSTNAMES),
    /** One per announced port; absent when none was announced. */
    ports: z.array(portResultSchema).max(MAX_ANNOUNCED_PORTS).optional(),
    /**
     * The `seq` of the announcement answered, the latest of those it answers
     * at once. Absent from relays that predate it, or for an announcement
     * without one. One the agent cannot use counts as absent rather than
     * costing the tunnel.
     */
    seq: announceSeq.optional().catch(undefined),
  }),
]);
export type RelayMessage = z.infer<typeof relayMessageSchema>;

/** First bytes an agent writes on an HTTP stream: the backend's response head. */
export const responseHeadSchema = z.object({
  status: z.number().int().min(100).max(999),
  statusText: z.string().max(512).optional(),
  headers: headerPairsSchema,
  /**
   * The body that follows is framed as records (framed-body.ts), so that
   * trailer fields can follow it. Absent: the body is the stream's bytes.
   */
  trailers: z.boolean().optional(),
  /**
   * Nothing follows the head, and FIN comes next: an HTTP/2 response that
   * ended with its header block. The relay answers an HTTP/2 client the same
   * way, which gRPC needs for a status sent without a body ("trailers-only").
   */
  endStream: z.boolean().optional(),
});
export type ResponseHead = z.infer<typeof responseHeadSchema>;

/** Short human summary of a zod failure: the first issue, with its path. */
export function describeIssue(error: z.ZodError): string {
  const issue = error.issues[0];
  if (!issue) return 'invalid message';
  const path = issue.path.length ? issue.path.join('.') : 'message';
  return `${path}: ${issue.message}`;
}

/** Encodes a JSON value as stream metadata. */
export function encodeJson(value: unknown): Buffer {
  return Buffer.from(JSON.stringify(value), 'utf8');
}

/** Parses and validates JSON bytes; returns the value or an error message. */
export function decodeJson<T>(
  bytes: Buffer,
  schema: z.ZodType<T>,
): { ok: true; value: T } | { ok: false; error: string } {
  let raw: unknown;
  try {
    raw = JSON.parse(bytes.toString('utf8'));
  } catch {
    return { ok: false, error: 'not valid JSON' };
  }
  const result = schema.safeParse(raw);
  return result.success
    ? { ok: true, value: result.data }
    : { ok: false, error: describeIssue(result.error) };
}
