export { type AdminAppOptions, type AdminState, buildAdminApp } from './admin/app.js';
export { ADMIN_ROUTES, type AdminRouteSpec } from './admin/schemas.js';
export type { AcmeChallenge, AcmeManager, AcmeOptions } from './certs/acme.js';
export type { CertEntry, CertStore } from './certs/store.js';
export {
  KEYGEN_OPTIONS as RELAY_KEYGEN_OPTIONS,
  SERVE_OPTIONS as RELAY_SERVE_OPTIONS,
  TOKEN_OPTIONS as RELAY_TOKEN_OPTIONS,
} from './config.js';
export { RelayMetrics } from './metrics.js';
export type { AccessInfo } from './proxy/forward.js';
export { type Relay, type RelayOptions, startRelay } from './relay.js';
export { ConfigReloader, type LoadedConfig, type ReloadHook } from './reload.js';
export type { Lookup, RouteTable } from './routes/table.js';
export type { AgentConnection } from './tunnel/agent-connection.js';
