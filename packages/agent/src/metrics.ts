import { Counter, Gauge, Registry } from 'prom-client';
import type { Agent } from './agent.js';
import type { Kubernetes } from './kubernetes/index.js';
import type { State } from './tunnel/connection.js';

/** The states burrow_agent_tunnel_state reports ('idle' lasts only until start). */
const STATES: readonly State[] = ['connecting', 'handshake', 'connected', 'waiting', 'closed'];

/**
 * The agent's Prometheus metrics, in a registry of its own. Gauges are read
 * at scrape time from the live objects, so they can never drift from what the
 * agent is doing. Labels stay bounded: the relay URL and connection index come
 * from the agent's own configuration; no client hostnames, paths or addresses.
 */
export function agentMetrics(agent: Agent, kube?: Kubernetes): { registry: Registry } {
  const registry = new Registry();
  const registers = [registry];
  new Gauge({
    name: 'burrow_agent_tunnel_connections',
    help: 'Tunnel connections to the relay that are up.',
    registers,
    collect() {
      this.set(agent.connectionCount);
    },
  });
  new Gauge({
    name: 'burrow_agent_tunnel_state',
    help: 'State of each tunnel connection: 1 for its current state, 0 for the others.',
    labelNames: ['relay', 'conn', 'state'],
    registers,
    collect() {
      for (const c of agent.connectionStates()) {
        for (const state of STATES) {
          this.set({ relay: c.relay, conn: String(c.index), state }, c.state === state ? 1 : 0);
        }
      }
    },
  });
  new Gauge({
    name: 'burrow_agent_tunnel_rtt_seconds',
    help: 'Smoothed round-trip time of each live tunnel session, averaged.',
    registers,
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
    help: 'Streams open across all tunnel sessions, draining ones included.',
    registers,
    collect() {
      this.set(agent.sessions().reduce((n, s) => n + s.streamCount, 0));
    },
  });
  new Gauge({
    name: 'burrow_agent_routes',
    help: 'Hostnames by the relay verdict, combined over the tunnel connections that are up.',
    labelNames: ['status'],
    registers,
    collect() {
      const results = agent.routeStatus();
      this.set({ status: 'active' }, results.filter((r) => r.status === 'active').length);
      this.set({ status: 'refused' }, results.filter((r) => r.status === 'refused').length);
    },
  });
  const disconnects = new Counter({
    name: 'burrow_agent_disconnects_total',
    help: 'Tunnel connections that went down (each reconnects on its own).',
    registers,
  });
  agent.on('disconnected', () => disconnects.inc());
  const reconnects = new Counter({
    name: 'burrow_agent_reconnects_total',
    help: 'Tunnel connections re-established after their first connection.',
    registers,
  });
  const seen = new Set<number>();
  agent.on('connected', (index) => {
    if (seen.has(index)) reconnects.inc();
    seen.add(index);
  });
  const connectFailures = new Counter({
    name: 'burrow_agent_tunnel_connect_failures_total',
    help: 'Failed attempts to connect to the relay (network, refusal, handshake).',
    registers,
  });
  agent.on('connectFailed', () => connectFailures.inc());
  const dialErrors = new Counter({
    name: 'burrow_agent_dial_errors_total',
    help: 'Backend requests and passthrough connections that failed, by reason (ConnectRefused, ConnectTimeout, BackendError, BackendRefusedStream, InvalidResponse, BadMetadata).',
    labelNames: ['reason'],
    registers,
  });
  for (const reason of ['ConnectRefused', 'ConnectTimeout', 'BackendError']) dialErrors.inc({ reason }, 0);
  agent.on('dialError', (reason) => dialErrors.inc({ reason }));
  if (kube) {
    new Counter({
      name: 'burrow_agent_kubernetes_watch_restarts_total',
      help: 'Kubernetes informer restarts (errors and idle watches) since start.',
      registers,
      collect() {
        // The informer keeps the count; mirror it (it only grows).
        this.reset();
        this.inc(kube.watch.restarts);
      },
    });
  }
  return { registry };
}
