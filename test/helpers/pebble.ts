import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { httpsGet } from './http.js';
import { freePort } from './net.js';
import type { Teardownable } from './relay.js';
import type { TestPki } from './tls.js';

export interface Pebble {
  directoryUrl: string;
  /** PEM of the CA behind Pebble's own HTTPS (the directory), for the ACME client. */
  directoryCa: string;
  /** PEM of the root that signs issued certificates (management port /roots/0). */
  issuingRoot(): Promise<string>;
  /** Orders Pebble has accepted so far (counted from its log). */
  orders(): number;
  /** Resolves when Pebble has logged `count` orders in total. */
  waitOrders(count: number): Promise<void>;
}

interface Proc {
  child: ChildProcess;
  lines: string[];
  waitLine(re: RegExp): Promise<void>;
}

function launch(t: Teardownable, cmd: string, args: string[], env: NodeJS.ProcessEnv = {}): Proc {
  const child = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = once(child, 'exit');
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      await exited;
    }
  });
  const lines: string[] = [];
  const waiters: Array<{ re: RegExp; resolve: () => void }> = [];
  const onLine = (line: string) => {
    lines.push(line);
    if (process.env['BURROW_TEST_LOG']) process.stderr.write(`[${cmd}] ${line}\n`);
    for (const w of [...waiters]) {
      if (w.re.test(line)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve();
      }
    }
  };
  createInterface({ input: child.stdout! }).on('line', onLine);
  createInterface({ input: child.stderr! }).on('line', onLine);
  return {
    child,
    lines,
    waitLine(re) {
      if (lines.some((l) => re.test(l))) return Promise.resolve();
      return new Promise((resolve, reject) => {
        waiters.push({ re, resolve });
        exited.then(([code]) => reject(new Error(`${cmd} exited (${code}): ${lines.join('\n')}`)));
      });
    },
  };
}

/**
 * Pebble (Let's Encrypt's test CA) and pebble-challtestsrv as its DNS, which
 * answers every name with 127.0.0.1, so validation reaches the relay's
 * `httpPort` (HTTP-01) and `tlsPort` (TLS-ALPN-01). Both stop at teardown.
 */
export async function startPebble(
  t: Teardownable,
  opts: {
    /** Pebble's own HTTPS certificate (localhost / 127.0.0.1). */
    pki: TestPki;
    httpPort: number;
    tlsPort: number;
    listenPort?: number;
    validitySeconds?: number;
  },
): Promise<Pebble> {
  const pki = opts.pki;
  const [listen, management, dns, dnsManagement] = await Promise.all([
    opts.listenPort ?? freePort(),
    freePort(),
    freePort(),
    freePort(),
  ]);
  const dnsProc = launch(t, 'pebble-challtestsrv', [
    '-defaultIPv4',
    '127.0.0.1',
    '-defaultIPv6',
    '',
    '-http01',
    '',
    '-https01',
    '',
    '-tlsalpn01',
    '',
    '-dns01',
    `127.0.0.1:${dns}`,
    '-management',
    `127.0.0.1:${dnsManagement}`,
  ]);
  await dnsProc.waitLine(/Starting management server/);
  const config = join(pki.dir, 'pebble.json');
  await writeFile(
    config,
    JSON.stringify({
      pebble: {
        listenAddress: `127.0.0.1:${listen}`,
        managementListenAddress: `127.0.0.1:${management}`,
        certificate: pki.certFile,
        privateKey: pki.keyFile,
        httpPort: opts.httpPort,
        tlsPort: opts.tlsPort,
        ocspResponderURL: '',
        externalAccountBindingRequired: false,
        ...(opts.validitySeconds ? { certificateValidityPeriod: opts.validitySeconds } : {}),
      },
    }),
  );
  // No random validation delays; every order gets fresh challenges (no authz reuse), so each
  // order really exercises the relay's responder. Pebble's default 5 % bad nonces stay on:
  // the client must retry them.
  const pebble = launch(t, 'pebble', ['-config', config, '-dnsserver', `127.0.0.1:${dns}`], {
    PEBBLE_VA_NOSLEEP: '1',
    PEBBLE_AUTHZREUSE: '0',
  });
  await pebble.waitLine(/ACME directory available/);
  const orderLine = /Added order/;
  return {
    directoryUrl: `https://127.0.0.1:${listen}/dir`,
    directoryCa: pki.caPem,
    issuingRoot: async () => (await httpsGet(management, 'localhost', pki.caPem, { path: '/roots/0' })).body,
    orders: () => pebble.lines.filter((l) => orderLine.test(l)).length,
    waitOrders: (count) =>
      new Promise<void>((resolve, reject) => {
        const check = () => {
          if (pebble.lines.filter((l) => orderLine.test(l)).length >= count) {
            pebble.child.stdout!.off('data', onData);
            resolve();
          }
        };
        const onData = () => setImmediate(check);
        pebble.child.stdout!.on('data', onData);
        pebble.child.once('exit', () => reject(new Error('pebble exited')));
        check();
      }),
  };
}
