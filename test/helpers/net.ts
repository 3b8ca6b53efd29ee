import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { type AddressInfo, createServer, type Socket } from 'node:net';
import type { Teardownable } from './relay.js';

/**
 * A port on 127.0.0.1 that nothing listens on, for a listener a test must
 * name before it starts (public TCP ports, which tokens list) or a dial that
 * must be refused.
 *
 * It comes from below the kernel's ephemeral range: a port there is never
 * handed out for `listen(0)` or to an outgoing connection, so it stays free
 * between this check and the test's own bind. (A port from `listen(0)`, closed
 * again, could be taken meanwhile by any connection another test file opens.)
 * Each call starts at a random place, so that test files running at once
 * rarely draw the same port, and checks it with a bind.
 */
export async function freePort(): Promise<number> {
  const [low, high] = [PRIVATE_PORTS_FROM, ephemeralPortsFrom()];
  const span = high - low;
  const start = Math.floor(Math.random() * span);
  for (let i = 0; i < 64; i++) {
    const port = low + ((start + i) % span);
    if (!drawn.has(port) && (await bindable(port))) {
      drawn.add(port);
      return port;
    }
  }
  throw new Error(`no free port found in ${low}-${high - 1}`);
}

/** Where freePort's ports start: above the well-known services a machine may run. */
const PRIVATE_PORTS_FROM = 20_000;

/** Ports this test process was given already (a test may draw several before binding any). */
const drawn = new Set<number>();

/** The first port of the kernel's ephemeral range (Linux default 32768). */
function ephemeralPortsFrom(): number {
  try {
    const low = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'latin1').split(/\s+/)[0]);
    if (Number.isSafeInteger(low) && low > PRIVATE_PORTS_FROM + 1024) return low;
  } catch {}
  return 32_768;
}

function bindable(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createServer();
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

/**
 * A raw TCP backend on 127.0.0.1 (half-open allowed, as passthrough and
 * upgrade targets need); each connection goes to `handler`. Closed with its
 * connections at teardown. Resolves with its port.
 */
export async function tcpBackend(t: Teardownable, handler: (socket: Socket) => void): Promise<number> {
  const sockets = new Set<Socket>();
  const server = createServer({ allowHalfOpen: true }, (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
    handler(s);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => {
    for (const s of sockets) s.destroy();
    return new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return (server.address() as AddressInfo).port;
}
