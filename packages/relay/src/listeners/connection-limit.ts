import { readFileSync } from 'node:fs';
import type { Server } from 'node:net';
import { WarningPacer } from '@burrow/shared';

/**
 * File descriptors the automatic connection limit leaves free for what is not
 * a client connection: agents' tunnels (a reconnecting agent must always get
 * in), certificate and config files, ACME, the admin API.
 */
export const FD_HEADROOM = 1024;

/** The smallest automatic limit, whatever the open-file limit says. */
const MIN_AUTO = 64;

/**
 * The soft limit on open files in the text of /proc/self/limits, or
 * undefined where there is no such text (not Linux) or it is unlimited.
 */
export function parseOpenFileLimit(limits: string | undefined): number | undefined {
  const line = limits?.split('\n').find((l) => l.startsWith('Max open files'));
  const soft = line?.slice('Max open files'.length).trim().split(/\s+/)[0];
  const n = Number(soft);
  return Number.isSafeInteger(n) && n > 0 ? n : undefined;
}

/** This process's soft limit on open files, where the system says. */
export function openFileLimit(): number | undefined {
  try {
    return parseOpenFileLimit(readFileSync('/proc/self/limits', 'latin1'));
  } catch {
    return undefined;
  }
}

/**
 * The automatic per-listener limit: the open-file limit less FD_HEADROOM,
 * shared by the public listeners; undefined (no limit) where the open-file
 * limit is unknown.
 */
export function autoMaxConnections(listeners: number, fileLimit: number | undefined): number | undefined {
  if (fileLimit === undefined) return undefined;
  return Math.max(MIN_AUTO, Math.floor((fileLimit - FD_HEADROOM) / listeners));
}

/**
 * Caps the client connections a listener holds open. Node closes a
 * connection over the cap as it accepts it, before a byte is read or a socket
 * object is made, so a flood costs the relay next to nothing and never takes
 * the descriptors a reconnecting agent needs. `onDrop` hears of each one.
 */
export function limitConnections(server: Server, max: number, onDrop: () => void): void {
  server.maxConnections = max;
  server.on('drop', onDrop);
}

/** Which public listener dropped a connection (`tunnel`: too many waiting to upgrade, tunnel-admission.ts). */
export type PublicListener = 'http' | 'tls' | 'tcp' | 'tunnel';

/**
 * What the relay does with each dropped connection: counts it (`count`) and
 * warns, for each listener the first time at once and then at most once per
 * `interval` ms with how many it dropped meanwhile, so a flood never floods
 * the log too, nor hides another listener's.
 */
export function dropReporter(
  logger: { warn(obj: object, msg: string): void },
  max: number,
  count: (listener: PublicListener) => void,
  interval = 10_000,
): (listener: PublicListener) => void {
  const pacer = new WarningPacer(interval);
  return (listener) => {
    count(listener);
    const held = pacer.pass(listener);
    if (held === undefined) return;
    logger.warn(
      { listener, maxConnections: max, dropped: held + 1 },
      'connection limit reached: new client connections are closed at once (--max-connections)',
    );
  };
}
