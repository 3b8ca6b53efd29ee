import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import type { ActivityTotals, RecentError } from '../activity.js';
import { ADMIN_ROUTES } from './schemas.js';

export interface AgentInfo {
  subject: string;
  connections: number;
  hostnames: string[];
  connectedSince: string;
}
export interface RouteInfo {
  hostname: string;
  subject: string;
  routeIds: string[];
  connections: number[];
}
export interface PortInfo {
  port: number;
  subject: string;
  routeIds: string[];
  connections: number[];
}
export interface ConnectionInfo {
  id: number;
  subject: string;
  remoteAddress: string;
  connectedAt: string;
  draining: boolean;
  rttMs: number;
  streams: number;
  bytesIn: number;
  bytesOut: number;
}
export interface StatsInfo extends ActivityTotals {
  uptimeSeconds: number;
  agents: number;
  connections: number;
  routes: number;
}

/** What the admin API reads; the relay wiring provides it, tests may provide their own. */
export interface AdminState {
  /** Why the relay is not ready, or undefined when it is. */
  notReady(): string | undefined;
  agents(): AgentInfo[];
  routes(): RouteInfo[];
  ports(): PortInfo[];
  connections(): ConnectionInfo[];
  stats(): StatsInfo;
  errors(): RecentError[];
  metrics(): Promise<{ contentType: string; body: string }>;
}

export interface AdminAppOptions {
  state: AdminState;
  /** The admin bearer token, read per request so a reload takes effect at once; undefined: API closed. */
  token: () => string | undefined;
}

const DASHBOARD_DIR = new URL('../../dashboard/', import.meta.url);
const STATIC: Record<string, { file: string; type: string }> = {
  '/': { file: 'index.html', type: 'text/html; charset=utf-8' },
  '/dashboard.js': { file: 'dashboard.js', type: 'text/javascript; charset=utf-8' },
  '/dashboard.css': { file: 'dashboard.css', type: 'text/css; charset=utf-8' },
};

/** sha256 first: timingSafeEqual needs equal lengths, and the length of the token must not leak either. */
function digest(text: string): Buffer {
  return createHash('sha256').update(text).digest();
}

/** Checks `Authorization: Bearer <token>` in constant time. */
export function bearerMatches(header: string | undefined, token: string | undefined): boolean {
  if (!token) return false;
  const m = /^Bearer +(\S+)$/i.exec(header ?? '');
  return timingSafeEqual(digest(m?.[1] ?? ''), digest(token)) && Boolean(m);
}

/**
 * The admin API, metrics and dashboard as a Fastify instance that never
 * listens (the relay wiring does; tests use inject()). Probes are open, so a
 * kubelet or load balancer needs no secret; everything that shows state
 * needs the admin bearer token. The dashboard's static files carry no data:
 * the page asks for the token and sends it on each API call.
 */
export function buildAdminApp(opts: AdminAppOptions): FastifyInstance {
  const app = Fastify({
    logger: false,
    return503OnClosing: true,
    // A URL that does not decode (`/%ZZ`) is answered before any route or hook: same shape, same headers.
    frameworkErrors: (err, _req, reply) => {
      withSecurityHeaders(reply).code(400).send({ error: 'bad_request', message: err.message });
    },
  });
  const files = new Map(
    Object.entries(STATIC).map(([url, s]) => [
      url,
      { ...s, body: readFileSync(new URL(s.file, DASHBOARD_DIR)) },
    ]),
  );

  app.addHook('onSend', async (_req, reply) => {
    withSecurityHeaders(reply);
  });

  const authorize = async (req: FastifyRequest, reply: FastifyReply) => {
    const token = opts.token();
    if (!token) {
      return reply.code(401).header('www-authenticate', 'Bearer').send({
        error: 'unauthorized',
        message: 'no admin token is configured on this relay (--admin-token-file or BURROW_ADMIN_TOKEN)',
      });
    }
    if (!bearerMatches(req.headers.authorization, token)) {
      return reply.code(401).header('www-authenticate', 'Bearer').send({
        error: 'unauthorized',
        message: 'send the admin token as Authorization: Bearer <token>',
      });
    }
  };

  const handlers: Record<string, (reply: FastifyReply) => unknown> = {
    '/healthz': (reply) => reply.type('text/plain').send('ok\n'),
    '/readyz': (reply) => {
      const reason = opts.state.notReady();
      return reason ? reply.code(503).send({ status: 'not ready', reason }) : { status: 'ready' };
    },
    '/metrics': async (reply) => {
      const { contentType, body } = await opts.state.metrics();
      return reply.type(contentType).send(body);
    },
    '/api/agents': () => opts.state.agents(),
    '/api/routes': () => opts.state.routes(),
    '/api/ports': () => opts.state.ports(),
    '/api/connections': () => opts.state.connections(),
    '/api/stats': () => opts.state.stats(),
    '/api/errors': () => opts.state.errors(),
  };
  for (const spec of ADMIN_ROUTES) {
    const handler = handlers[spec.url];
    if (!handler) throw new Error(`admin route ${spec.url} has no handler`);
    app.route({
      method: spec.method,
      url: spec.url,
      // Text responses are not serialised by schema (fast-json-stringify would quote them).
      schema: spec.produces ? {} : spec.schema,
      ...(spec.auth ? { onRequest: authorize } : {}),
      handler: async (_req, reply) => handler(reply),
    });
  }
  for (const [url, file] of files) {
    app.get(url, async (_req, reply) => reply.type(file.type).send(file.body));
  }
  const notFound = (req: FastifyRequest, reply: FastifyReply) =>
    reply
      .code(404)
      .send({ error: 'not_found', message: `no admin route ${req.method} ${req.url.split('?')[0]}` });
  // Every route is GET (HEAD alike): anything else is answered before its body is read or parsed.
  app.addHook('onRequest', async (req, reply) => {
    if (req.method !== 'GET' && req.method !== 'HEAD') return notFound(req, reply);
  });
  app.setNotFoundHandler(notFound);
  app.setErrorHandler((err: { statusCode?: number; message: string }, _req, reply) => {
    const status = err.statusCode && err.statusCode < 500 ? err.statusCode : 500;
    reply.code(status).send({ error: status === 500 ? 'internal' : 'bad_request', message: err.message });
  });
  return app;
}

/** Headers on every admin response: nothing cached, sniffed, framed or sent on as a referrer. */
function withSecurityHeaders(reply: FastifyReply): FastifyReply {
  return reply
    .header('cache-control', 'no-store')
    .header('x-content-type-options', 'nosniff')
    .header('referrer-policy', 'no-referrer')
    .header('x-frame-options', 'DENY')
    .header(
      'content-security-policy',
      "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    );
}
