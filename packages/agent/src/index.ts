export { type Agent, type AgentEvents, type AgentOptions, startAgent } from './agent.js';
export { AGENT_OPTIONS } from './config.js';
export type { Dialer } from './dialer/http.js';
export {
  type Kubernetes,
  type KubernetesOptions,
  startKubernetes,
} from './kubernetes/index.js';
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
