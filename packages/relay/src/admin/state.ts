import type { Activity } from '../activity.js';
import type { RelayMetrics } from '../metrics.js';
import type { PortTable } from '../routes/ports.js';
import type { RouteTable } from '../routes/table.js';
import type { AgentConnection } from '../tunnel/agent-connection.js';
import type { AdminState, AgentInfo } from './app.js';

/** The admin API's view of a running relay, read live on every call. */
export function relayAdminState(parts: {
  connections: ReadonlySet<AgentConnection>;
  routes: RouteTable<AgentConnection>;
  ports: PortTable<AgentConnection>;
  activity: Activity;
  metrics: RelayMetrics;
  startedAt: number;
  notReady: () => string | undefined;
}): AdminState {
  const { connections, routes, activity, metrics } = parts;
  return {
    notReady: parts.notReady,
    agents() {
      // Linear in routes and connections: a tenant may hold tens of thousands of names, and this
      // runs on the event loop that serves public traffic, every second a dashboard is open.
      const byConnection = new Map<number, string[]>();
      for (const r of routes.list()) {
        for (const id of r.connections) {
          const names = byConnection.get(id);
          if (names) names.push(r.hostname);
          else byConnection.set(id, [r.hostname]);
        }
      }
      const bySubject = new Map<string, { connections: number; since: number; hostnames: Set<string> }>();
      for (const c of connections) {
        if (c.session.closed) continue;
        let a = bySubject.get(c.subject);
        if (!a) {
          a = { connections: 0, since: c.connectedAt, hostnames: new Set() };
          bySubject.set(c.subject, a);
        }
        a.connections++;
        a.since = Math.min(a.since, c.connectedAt);
        for (const h of byConnection.get(c.id) ?? []) a.hostnames.add(h);
      }
      return [...bySubject].map(
        ([subject, a]): AgentInfo => ({
          subject,
          connections: a.connections,
          hostnames: [...a.hostnames].sort(),
          connectedSince: new Date(a.since).toISOString(),
        }),
      );
    },
    routes: () => routes.list().sort((a, b) => a.hostname.localeCompare(b.hostname)),
    ports: () => parts.ports.list(),
    connections() {
      return [...connections].map((c) => {
        const s = c.session.stats;
        return {
          id: c.id,
          subject: c.subject,
          remoteAddress: c.remoteAddress,
          connectedAt: new Date(c.connectedAt).toISOString(),
          draining: c.session.draining,
          rttMs: Math.round(s.rtt * 1000) / 1000,
          streams: s.streams,
          bytesIn: s.bytesIn,
          bytesOut: s.bytesOut,
        };
      });
    },
    stats() {
      const live = [...connections].filter((c) => !c.session.closed);
      return {
        ...activity.totals(),
        uptimeSeconds: Math.round((Date.now() - parts.startedAt) / 1000),
        agents: new Set(live.map((c) => c.subject)).size,
        connections: live.length,
        routes: routes.size,
      };
    },
    errors: () => activity.recentErrors(),
    metrics: async () => ({
      contentType: metrics.registry.contentType,
      body: await metrics.registry.metrics(),
    }),
  };
}
