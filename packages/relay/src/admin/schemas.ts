/**
 * The admin API's routes and their JSON schemas. app.ts registers them with
 * Fastify (which validates and serialises with them) and
 * scripts/gen-admin-docs.mjs renders docs/admin-api.md from the same table,
 * so the documentation is the schema.
 */

const str = { type: 'string' } as const;
const int = { type: 'integer', minimum: 0 } as const;
const num = { type: 'number', minimum: 0 } as const;
const time = { type: 'string', format: 'date-time' } as const;

function object(properties: Record<string, object>, description?: string) {
  return {
    type: 'object',
    ...(description ? { description } : {}),
    required: Object.keys(properties),
    additionalProperties: false,
    properties,
  } as const;
}

const problem = object({ error: str, message: str }, 'why the request was refused');

export const agentSchema = object({
  subject: { ...str, description: 'token subject (tenant); replicas share it' },
  connections: { ...int, description: 'tunnel connections up' },
  hostnames: { type: 'array', items: str, description: 'route hostnames bound to its connections' },
  connectedSince: { ...time, description: 'when its oldest live connection was made' },
});

export const routeSchema = object({
  hostname: { ...str, description: 'exact hostname or *. wildcard pattern' },
  subject: { ...str, description: 'the agent (token subject) that holds it' },
  routeIds: { type: 'array', items: str, description: 'the agent-side route ids' },
  connections: { type: 'array', items: int, description: 'ids of the connections serving it' },
});

export const portSchema = object({
  port: { ...int, description: 'public TCP port on the relay (--tcp-ports)' },
  subject: { ...str, description: 'the agent (token subject) that holds it' },
  routeIds: { type: 'array', items: str, description: 'the agent-side route ids' },
  connections: { type: 'array', items: int, description: 'ids of the connections serving it' },
});

export const connectionSchema = object({
  id: int,
  subject: str,
  remoteAddress: { ...str, description: "the agent's address as the relay sees it" },
  connectedAt: time,
  draining: { type: 'boolean', description: 'GOAWAY sent or received: no new requests' },
  rttMs: { ...num, description: 'smoothed PING round trip, ms (0 until measured)' },
  streams: { ...int, description: 'streams open, the control stream included' },
  bytesIn: { ...int, description: 'bytes received from the agent, framing included' },
  bytesOut: { ...int, description: 'bytes sent to the agent, framing included' },
});

export const statsSchema = object({
  uptimeSeconds: num,
  requests: { ...int, description: 'HTTP requests finished since start' },
  requestErrors: { ...int, description: 'of those, answered with a relay error or a 5xx' },
  bytesIn: { ...int, description: 'request body bytes, client to backend' },
  bytesOut: { ...int, description: 'response body bytes, backend to client' },
  agents: int,
  connections: int,
  routes: int,
});

export const recentErrorSchema = object({
  time,
  route: { ...str, description: "route hostname ('' when the Host matched none)" },
  method: str,
  status: int,
  reason: { ...str, description: "the relay's error code, or 'status' for a backend 5xx" },
});

export interface AdminRouteSpec {
  method: 'GET';
  url: string;
  /** Needs `Authorization: Bearer <admin token>`. */
  auth: boolean;
  description: string;
  /** Fastify route schema (response by status code). */
  schema: { response: Record<number, object> };
  /** Content type of a 200, when not JSON. */
  produces?: string;
}

export const ADMIN_ROUTES: readonly AdminRouteSpec[] = [
  {
    method: 'GET',
    url: '/healthz',
    auth: false,
    description: 'Liveness: the process runs and its event loop answers.',
    produces: 'text/plain',
    schema: { response: { 200: str } },
  },
  {
    method: 'GET',
    url: '/readyz',
    auth: false,
    description: 'Readiness: listeners are up and the relay is not draining (503 with the reason otherwise).',
    schema: {
      response: {
        200: object({ status: { type: 'string', enum: ['ready'] } }),
        503: object({ status: { type: 'string', enum: ['not ready'] }, reason: str }),
      },
    },
  },
  {
    method: 'GET',
    url: '/metrics',
    auth: true,
    description: 'Prometheus text exposition (see docs/operations.md for the series).',
    produces: 'text/plain; version=0.0.4',
    schema: { response: { 200: str, 401: problem } },
  },
  {
    method: 'GET',
    url: '/api/agents',
    auth: true,
    description: 'Connected agents, one entry per token subject.',
    schema: { response: { 200: { type: 'array', items: agentSchema }, 401: problem } },
  },
  {
    method: 'GET',
    url: '/api/routes',
    auth: true,
    description: 'Hostnames bound to agent connections.',
    schema: { response: { 200: { type: 'array', items: routeSchema }, 401: problem } },
  },
  {
    method: 'GET',
    url: '/api/ports',
    auth: true,
    description: 'Public TCP ports bound to agent connections.',
    schema: { response: { 200: { type: 'array', items: portSchema }, 401: problem } },
  },
  {
    method: 'GET',
    url: '/api/connections',
    auth: true,
    description: 'Tunnel connections with RTT, streams and bytes.',
    schema: { response: { 200: { type: 'array', items: connectionSchema }, 401: problem } },
  },
  {
    method: 'GET',
    url: '/api/stats',
    auth: true,
    description: 'Running totals; the dashboard derives requests/s and bytes/s from two readings.',
    schema: { response: { 200: statsSchema, 401: problem } },
  },
  {
    method: 'GET',
    url: '/api/errors',
    auth: true,
    description: 'The last 100 requests answered with a relay error or a 5xx, newest first.',
    schema: { response: { 200: { type: 'array', items: recentErrorSchema }, 401: problem } },
  },
];
