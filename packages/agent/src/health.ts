import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface HealthChecks {
  /** Why the agent is not ready (no tunnel up, routes not synced), or undefined when it is. */
  notReady(): string | undefined;
  /** Prometheus text exposition for /metrics, when metrics are enabled. */
  metrics?: () => Promise<{ contentType: string; body: string }>;
}

/**
 * The agent's probe endpoint: GET /healthz (the process is alive and its event
 * loop answers) and GET /readyz (at least one tunnel is up and routes are
 * synced), plus /metrics when enabled.
 */
export async function startHealthServer(
  listen: { host: string; port: number },
  checks: HealthChecks,
): Promise<{ server: Server; address: AddressInfo; close(): Promise<void> }> {
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    if (path === '/healthz') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
      return;
    }
    if (path === '/readyz') {
      const reason = checks.notReady();
      res
        .writeHead(reason ? 503 : 200, { 'content-type': 'text/plain' })
        .end(reason ? `not ready: ${reason}\n` : 'ready\n');
      return;
    }
    if (path === '/metrics' && checks.metrics) {
      checks
        .metrics()
        .then(({ contentType, body }) => res.writeHead(200, { 'content-type': contentType }).end(body))
        .catch(() => res.writeHead(500).end());
      return;
    }
    res
      .writeHead(404, { 'content-type': 'text/plain' })
      .end('not found: try /healthz, /readyz or /metrics\n');
  });
  server.listen(listen.port, listen.host);
  await once(server, 'listening');
  return {
    server,
    address: server.address() as AddressInfo,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
