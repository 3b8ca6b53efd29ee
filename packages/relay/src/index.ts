export type { AcmeChallenge, AcmeManager, AcmeOptions } from './certs/acme.js';
export type { CertEntry, CertStore } from './certs/store.js';
export { SERVE_OPTIONS as RELAY_SERVE_OPTIONS } from './config.js';
export type { AccessInfo } from './proxy/forward.js';
export { type Relay, type RelayOptions, startRelay } from './relay.js';
export type { Lookup, RouteTable } from './routes/table.js';
export type { AgentConnection } from './tunnel/agent-connection.js';
