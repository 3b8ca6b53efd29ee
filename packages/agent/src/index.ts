import type { Kubernetes, KubernetesOptions } from './kubernetes/index.js';

export { type Agent, type AgentEvents, type AgentOptions, startAgent } from './agent.js';
export { AGENT_OPTIONS } from './config.js';
export type { Dialer } from './dialer/http.js';
export type { Kubernetes, KubernetesOptions } from './kubernetes/index.js';
export { agentMetrics } from './metrics.js';
export { loadRoutesFile, parseRoutesYaml } from './routes/file.js';
export {
  type Route,
  type RouteSource,
  type RouteSourceEvents,
  type StaticRoute,
  StaticRouteSource,
} from './routes/source.js';
export { parseExposeList } from './routes/static.js';
export { tokenFile } from './token.js';
export type { BackoffOptions } from './tunnel/backoff.js';

/**
 * Starts the Kubernetes route source (Service watch, status write-back lease).
 * The Kubernetes client is imported on this first call, so that using the
 * package for static routes does not load it (about half a second).
 */
export async function startKubernetes(options: KubernetesOptions): Promise<Kubernetes> {
  return (await import('./kubernetes/index.js')).startKubernetes(options);
}
