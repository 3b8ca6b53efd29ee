export {
  DEFAULT_SESSION_CONFIG,
  MIN_KEEPALIVE_INTERVAL,
  maxMessageSize,
  type SessionConfig,
  verifyConfig,
} from './config.js';
export { decodeFrame, decodeGoAway, decodeHello, decodeRst, decodeWindow } from './decode.js';
export { encodeFrame, encodeGoAway, encodeHello, encodePing, encodeRst, encodeWindow } from './encode.js';
export * from './frame.js';
export { MemoryTransport, memoryTransportPair } from './memory-transport.js';
export {
  createSession,
  Session,
  type SessionEvents,
  type SessionOptions,
  type SessionStats,
} from './session.js';
export { Stream } from './stream.js';
export { closeCodeFor, type MessageTransport, type TransportHandlers } from './transport.js';
export { WsTransport, type WsTransportOptions } from './ws-transport.js';
