export { type AdminAppOptions, type AdminState, buildAdminApp } from './admin/app.js';
export { ADMIN_ROUTES, type AdminRouteSpec } from './admin/schemas.js';
export { SERVE_OPTIONS as RELAY_SERVE_OPTIONS } from './config.js';
export { RelayMetrics } from './metrics.js';
export type { AccessInfo } from './proxy/forward.js';
export { type Relay, type RelayOptions, startRelay } from './relay.js';
export { ConfigReloader, type LoadedConfig, type ReloadHook } from './reload.js';
export type { Lookup, RouteTable } from './routes/table.js';
export type { AgentConnection } from './tunnel/agent-connection.js';
