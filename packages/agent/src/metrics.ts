import { Counter, Gauge, Registry } from 'prom-client';
import type { Agent } from './agent.js';
import type { Kubernetes } from './kubernetes/index.js';

/**
 * The agent's Prometheus metrics. Gauges are read at scrape time from the
 * live objects, so they can never drift from what the agent is doing.
 * Labels stay bounded: no hostnames from clients, no paths, no addresses.
 */
export function agentMetrics(agent: Agent, kube?: Kubernetes): { registry: Registry; reconnects: Counter } {
  const registry = new Registry();
  new Gauge({
    name: 'burrow_agent_tunnel_connections',
    help: 'Tunnel connections to the relay that are up.',
    registers: [registry],
    collect() {
      this.set(agent.connectionCount);
    },
  });
  new Gauge({
    name: 'burrow_agent_tunnel_rtt_seconds',
    help: 'Smoothed round-trip time of each live tunnel session, averaged.',
    registers: [registry],
    collect() {
      const rtts = agent
        .sessions()
        .map((s) => s.rtt)
        .filter((r) => r > 0);
      this.set(rtts.length ? rtts.reduce((a, b) => a + b, 0) / rtts.length / 1000 : 0);
    },
  });
  new Gauge({
    name: 'burrow_agent_streams',
    help: 'Streams open across all tunnel sessions.',
    registers: [registry],
    collect() {
      this.set(agent.sessions().reduce((n, s) => n + s.streamCount, 0));
    },
  });
  new Gauge({
    name: 'burrow_agent_routes',
    help: 'Hostnames by the relay verdict on the latest announcement.',
    labelNames: ['status'],
    registers: [registry],
    collect() {
      const results = agent.routeStatus();
      this.set({ status: 'active' }, results.filter((r) => r.status === 'active').length);
      this.set({ status: 'refused' }, results.filter((r) => r.status === 'refused').length);
    },
  });
  const reconnects = new Counter({
    name: 'burrow_agent_disconnects_total',
    help: 'Tunnel connections that went down (each reconnects on its own).',
    registers: [registry],
  });
  agent.on('disconnected', () => reconnects.inc());
  if (kube) {
    new Gauge({
      name: 'burrow_agent_kubernetes_watch_restarts',
      help: 'Kubernetes informer restarts (errors and idle watches) since start.',
      registers: [registry],
      collect() {
        this.set(kube.watch.restarts);
      },
    });
  }
  return { registry, reconnects };
}
