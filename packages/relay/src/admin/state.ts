import type { Activity } from '../activity.js';
import type { RelayMetrics } from '../metrics.js';
import type { RouteTable } from '../routes/table.js';
import type { AgentConnection } from '../tunnel/agent-connection.js';
import type { AdminState, AgentInfo } from './app.js';

/** The admin API's view of a running relay, read live on every call. */
export function relayAdminState(parts: {
  connections: ReadonlySet<AgentConnection>;
  routes: RouteTable<AgentConnection>;
  activity: Activity;
  metrics: RelayMetrics;
  startedAt: number;
  notReady: () => string | undefined;
}): AdminState {
  const { connections, routes, activity, metrics } = parts;
  return {
    notReady: parts.notReady,
    agents() {
      const bySubject = new Map<string, AgentInfo & { since: number }>();
      const hostnames = new Map<number, string[]>();
      for (const r of routes.list()) {
        for (const id of r.connections) hostnames.set(id, [...(hostnames.get(id) ?? []), r.hostname]);
      }
      for (const c of connections) {
        if (c.session.closed) continue;
        const a = bySubject.get(c.subject) ?? {
          subject: c.subject,
          connections: 0,
          hostnames: [],
          connectedSince: '',
          since: c.connectedAt,
        };
        a.connections++;
        a.since = Math.min(a.since, c.connectedAt);
        for (const h of hostnames.get(c.id) ?? []) if (!a.hostnames.includes(h)) a.hostnames.push(h);
        bySubject.set(c.subject, a);
      }
      return [...bySubject.values()].map(({ since, ...a }) => ({
        ...a,
        hostnames: a.hostnames.sort(),
        connectedSince: new Date(since).toISOString(),
      }));
    },
    routes: () => routes.list().sort((a, b) => a.hostname.localeCompare(b.hostname)),
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
        routes: routes.list().length,
      };
    },
    errors: () => activity.recentErrors(),
    metrics: async () => ({
      contentType: metrics.registry.contentType,
      body: await metrics.registry.metrics(),
    }),
  };
}
