// Two HAProxy instances chained in front of the benchmark's backend, standing
// where relay and agent stand in Burrow's path: load generator → first
// instance → second instance → backend, each hop its own loopback TCP
// connection. HAProxy (Debian package `haproxy`) is a C proxy built for this
// job, so the chain shows what two proxy hops cost on this placement when the
// proxies themselves are as cheap as they get.
//
//   mode 'http'  both instances parse HTTP/1.1; the first one routes by Host
//                (unknown hosts get 404, as Burrow's relay does) and adds
//                X-Forwarded-For; upstream connections are reused (http-reuse)
//   mode 'tcp'   both only copy bytes, one upstream connection per client
//                connection: no parsing, no routing
//
// Neither uses kernel splicing (HAProxy's default): bytes pass through user
// space, as they do through any proxy that looks at them.

import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnLogged, waitFor } from './link.mjs';
import { getStatus } from './load.mjs';
import { DIE_WITH_PARENT } from './procfs.mjs';
import { freePort } from './ssh.mjs';
import { HOST, HOSTNAME } from './stack-control.mjs';

const HAPROXY = 'haproxy';

/** Why HAProxy cannot run here, or undefined when it can. */
export function haproxyUnavailable() {
  const r = spawnSync(HAPROXY, ['-v'], { stdio: 'ignore' });
  return r.error || r.status !== 0 ? 'haproxy not found (Debian: apt-get install haproxy)' : undefined;
}

/** The configuration of one instance listening on `port` and forwarding to `next`. */
function config(mode, port, next, routeByHost) {
  return [
    'global',
    // One thread, like each Node process on the other paths.
    '  nbthread 1',
    // Connections per instance: each takes two descriptors (client and server side).
    '  maxconn 4096',
    'defaults',
    `  mode ${mode}`,
    '  timeout connect 5s',
    '  timeout client 120s',
    '  timeout server 120s',
    ...(mode === 'http' ? ['  option forwardfor', '  http-reuse always'] : []),
    'frontend in',
    `  bind ${HOST}:${port}`,
    ...(routeByHost
      ? [`  http-request deny deny_status 404 unless { req.hdr(host),field(1,:) -i ${HOSTNAME} }`]
      : []),
    '  default_backend out',
    'backend out',
    `  server next ${HOST}:${next}`,
    '',
  ].join('\n');
}

/**
 * Starts the chain in `mode` in front of the backend on `backendPort`.
 * Returns the first instance's port, the two processes' pids and `close()`.
 */
export async function startHaproxyChain(backendPort, mode) {
  const dir = mkdtempSync(join(tmpdir(), `burrow-bench-haproxy-${mode}-`));
  const second = await freePort();
  let first = await freePort();
  while (first === second) first = await freePort();
  const children = [];
  const close = () => {
    for (const c of children) c.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    for (const [name, port, next, routeByHost] of [
      ['agent', second, backendPort, false],
      ['relay', first, second, mode === 'http'],
    ]) {
      const file = join(dir, `${name}.cfg`);
      writeFileSync(file, config(mode, port, next, routeByHost));
      // -db: stay in the foreground, so the process is the one we hold.
      const [cmd, ...args] = [...DIE_WITH_PARENT, HAPROXY, '-db', '-f', file];
      children.push(spawnLogged(cmd, args));
    }
    await waitFor(`haproxy chain (${mode})`, async () => {
      for (const c of children) {
        if (c.exitCode !== null || c.signalCode !== null) {
          throw new Error(`haproxy exited (${c.signalCode ?? c.exitCode}):\n${c.log()}`);
        }
      }
      return (await getStatus(first, { timeout: 500 })) === 200;
    });
  } catch (err) {
    close();
    throw err;
  }
  return { port: first, pids: () => children.map((c) => c.pid), close };
}
