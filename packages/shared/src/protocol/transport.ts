/**
 * The message transport a session runs over: ordered, reliable delivery of
 * whole binary messages (one frame each), with a write-side backpressure signal.
 * `ws` WebSockets (ws-transport.ts) and an in-memory pair (memory-transport.ts)
 * implement it.
 */
export interface TransportHandlers {
  message(data: Buffer): void;
  /** The transport became writable again after `writable` was false. */
  drain(): void;
  /** The transport closed; `error` is set when it failed rather than closed cleanly. */
  close(error?: Error): void;
}

export interface MessageTransport {
  /** Installs the session's handlers. Called once, before any other method. */
  attach(handlers: TransportHandlers): void;
  /** Queues one message. Never throws for a closed transport; the message is dropped. */
  send(data: Buffer): void;
  /**
   * Optional: queues one message given as a header and a body, without joining
   * them (WebSocket fragments). Large DATA frames use it to skip a copy.
   */
  sendParts?(head: Buffer, body: Buffer): void;
  /** False while queued bytes are above the high-water mark; `drain` follows. */
  readonly writable: boolean;
  /** Bytes queued and not yet handed to the network. */
  readonly bufferedAmount: number;
  /** Closes with a WebSocket close code and a short reason (at most 123 bytes). */
  close(code: number, reason: string): void;
}

/** WebSocket close code for a session that ended with a wire reason (4000 + reason). */
export function closeCodeFor(reason: number): number {
  if (reason === 0) return 1000;
  // Close codes stop at 4999; a larger reason (chosen by a peer) maps to 4000 + INTERNAL_ERROR.
  return reason < 1000 ? 4000 + reason : 4002;
}
