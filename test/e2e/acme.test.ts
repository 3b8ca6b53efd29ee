import { once } from 'node:events';
import { mkdir, readFile, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { type AddressInfo, createServer as createNetServer } from 'node:net';
import { join } from 'node:path';
import type { Relay, RelayOptions } from '@burrow/relay';
import { encodeFrame, FrameType } from '@burrow/shared';
import t from 'tap';
import { memoryLogger } from '../../packages/agent/test/helpers/log.js';
import { SCAN_GAP } from '../../packages/relay/src/certs/acme.js';
import { loadAcmeClient } from '../../packages/relay/src/certs/acme-client.js';
import { testAgent } from '../helpers/agent.js';
import { within } from '../helpers/deferred.js';
import { tempDir } from '../helpers/fs.js';
import { httpsGet, testServer } from '../helpers/http.js';
import { freePort } from '../helpers/net.js';
import { type Pebble, startPebble } from '../helpers/pebble.js';
import { type Teardownable, testRelay, tokenFor, tunnelUrl } from '../helpers/relay.js';
import { controlMessage, RogueAgent } from '../helpers/rogue-agent.js';
import { testPki } from '../helpers/tls.js';

/** A relay with ACME against a Pebble that validates against this relay's own ports. */
async function acmeSetup(
  t: Teardownable,
  challenge: 'http-01' | 'tls-alpn-01',
  opts: {
    validitySeconds?: number;
    state?: string;
    ports?: { http: number; tls: number };
    pebble?: Pebble;
    relay?: Partial<RelayOptions>;
    ordersPerHour?: number;
  } = {},
) {
  const pebblePki = await testPki(t);
  const listenPort = await freePort();
  const state = opts.state ?? (await tempDir(t, 'burrow-acme-'));
  const relay = await testRelay(t, {
    http: { host: '127.0.0.1', port: opts.ports?.http ?? 0 },
    tls: { host: '127.0.0.1', port: opts.ports?.tls ?? 0 },
    acme: {
      directoryUrl: opts.pebble?.directoryUrl ?? `https://127.0.0.1:${listenPort}/dir`,
      directoryCa: opts.pebble?.directoryCa ?? pebblePki.caPem,
      domains: ['*.acme.test'],
      stateDir: state,
      challenges: [challenge],
      retryBase: 100,
      ...(opts.ordersPerHour ? { ordersPerHour: opts.ordersPerHour } : {}),
    },
    ...opts.relay,
  });
  const pebble =
    opts.pebble ??
    (await startPebble(t, {
      pki: pebblePki,
      listenPort,
      httpPort: relay.httpAddress.port,
      tlsPort: relay.tlsAddress!.port,
      ...(opts.validitySeconds ? { validitySeconds: opts.validitySeconds } : {}),
    }));
  return { relay, pebble, state };
}

async function backend(t: Teardownable) {
  return testServer(t, (req, res) => res.end(`hello ${req.headers['x-forwarded-proto']}`));
}

function acmeOf(relay: Relay) {
  if (!relay.acme) throw new Error('ACME not configured');
  return relay.acme;
}

/** Resolves once the relay has looked through its served names more than `after` times in all. */
async function scannedSince(relay: Relay, after: number): Promise<void> {
  if (acmeOf(relay).scans <= after) await once(acmeOf(relay), 'scanned');
}

t.test(
  'HTTP-01: issuance for held and allowed names only, use, forced renewal, restart reusing the stored certificate',
  async (t) => {
    const { relay, pebble, state } = await acmeSetup(t, 'http-01');
    const app = await backend(t);
    const issued = once(acmeOf(relay), 'issued');
    await testAgent(
      t,
      relay,
      [
        { id: 'app', hostnames: ['app.acme.test'], target: app.url },
        { id: 'other', hostnames: ['other.example.test'], target: app.url },
        { id: 'wild', hostnames: ['*.w.acme.test'], target: app.url },
      ],
      { hosts: ['*.acme.test', 'other.example.test'] },
    );
    const [hostname] = await issued;
    t.equal(hostname, 'app.acme.test');
    t.equal(
      acmeOf(relay).orders,
      1,
      'one order: other.example.test is outside --acme-domains, wildcards cannot use HTTP-01',
    );
    t.equal(pebble.orders(), 1, 'Pebble saw exactly one order');

    const root = await pebble.issuingRoot();
    const first = await httpsGet(relay.tlsAddress!.port, 'app.acme.test', root);
    t.equal(first.status, 200, 'a client trusting only the CA root reaches the service');
    t.equal(first.body, 'hello https');
    t.match(first.issuer, /Pebble/);
    const stored = await readFile(join(state, 'certs', 'app.acme.test.crt'), 'utf8');
    t.match(stored, /BEGIN CERTIFICATE/, 'certificate persisted in the state directory');

    await acmeOf(relay).renew('app.acme.test');
    const renewed = await httpsGet(relay.tlsAddress!.port, 'app.acme.test', root);
    t.not(renewed.serial, first.serial, 'renewal: new connections get the new certificate');
    t.equal(pebble.orders(), 2);

    // Restart on the same ports with the same state: the stored certificate is served, nothing is ordered.
    const ports = { http: relay.httpAddress.port, tls: relay.tlsAddress!.port };
    await relay.close();
    const again = await acmeSetup(t, 'http-01', { state, ports, pebble });
    await testAgent(t, again.relay, [{ id: 'app', hostnames: ['app.acme.test'], target: app.url }], {
      hosts: ['*.acme.test'],
    });
    const afterRestart = await httpsGet(again.relay.tlsAddress!.port, 'app.acme.test', root);
    t.equal(afterRestart.status, 200);
    t.equal(afterRestart.serial, renewed.serial, 'the stored certificate is served after a restart');
    t.equal(acmeOf(again.relay).orders, 0, 'no new order after the restart');
    t.equal(pebble.orders(), 2, 'Pebble saw no new order');
  },
);

t.test('TLS-ALPN-01: issuance, use, renewal at two thirds of a short lifetime, restart', async (t) => {
  const { relay, pebble, state } = await acmeSetup(t, 'tls-alpn-01', { validitySeconds: 12 });
  const app = await backend(t);
  const manager = acmeOf(relay);
  const issued = once(manager, 'issued');
  await testAgent(t, relay, [{ id: 'app', hostnames: ['alpn.acme.test'], target: app.url }], {
    hosts: ['*.acme.test'],
  });
  await issued;
  const root = await pebble.issuingRoot();
  const first = await httpsGet(relay.tlsAddress!.port, 'alpn.acme.test', root);
  t.equal(first.status, 200);
  t.equal(first.body, 'hello https');

  // Pebble issues 12-second certificates: the renewal timer fires at about 8 s.
  const [, entry] = await once(manager, 'issued');
  const renewed = await httpsGet(relay.tlsAddress!.port, 'alpn.acme.test', root);
  t.not(renewed.serial, first.serial, 'renewed without being asked');
  t.equal(pebble.orders(), 2);

  const ports = { http: relay.httpAddress.port, tls: relay.tlsAddress!.port };
  await relay.close();
  const again = await acmeSetup(t, 'tls-alpn-01', { state, ports, pebble });
  await testAgent(t, again.relay, [{ id: 'app', hostnames: ['alpn.acme.test'], target: app.url }], {
    hosts: ['*.acme.test'],
  });
  const restarted = await httpsGet(again.relay.tlsAddress!.port, 'alpn.acme.test', root);
  t.ok(Date.now() < entry.notAfter.getTime(), 'still within the renewed certificate');
  t.equal(restarted.serial, renewed.serial, 'stored certificate reused after restart');
  t.equal(acmeOf(again.relay).orders, 0, 'no order after the restart');
});

t.test("a failed order reports the CA's message and retries with backoff", async (t) => {
  // Pebble validates HTTP-01 against a port where nothing listens.
  const pebblePki = await testPki(t);
  const listenPort = await freePort();
  const log = memoryLogger('info', 'relay');
  const relay = await testRelay(t, {
    logger: log.logger,
    tls: { host: '127.0.0.1', port: 0 },
    acme: {
      directoryUrl: `https://127.0.0.1:${listenPort}/dir`,
      directoryCa: pebblePki.caPem,
      domains: ['*.acme.test'],
      stateDir: await tempDir(t, 'burrow-acme-'),
      challenges: ['http-01'],
      retryBase: 50,
    },
  });
  await startPebble(t, {
    pki: pebblePki,
    listenPort,
    httpPort: await freePort(),
    tlsPort: relay.tlsAddress!.port,
  });
  const failed = once(acmeOf(relay), 'failed');
  const app = await backend(t);
  await testAgent(t, relay, [{ id: 'app', hostnames: ['broken.acme.test'], target: app.url }], {
    hosts: ['*.acme.test'],
  });
  const [hostname, err] = await failed;
  t.equal(hostname, 'broken.acme.test');
  t.comment(`CA said: ${(err as Error).message}`);
  t.match((err as Error).message, /connect|refused|Fetching/i, "the CA's own problem detail");
  await once(acmeOf(relay), 'failed');
  t.ok(acmeOf(relay).orders >= 2, 'ordered again after the backoff');
  const lines = log.lines.filter((l) => l['msg'] === 'acme order failed');
  t.match(lines[0], {
    level: 50,
    hostname: 'broken.acme.test',
    error: /connection refused/,
    attempt: 1,
    retryInMs: 50,
  });
  t.match(lines[1], { attempt: 2, retryInMs: 100 }, 'the retry delay doubles');
});

t.test('a CA that cannot be reached is named in the error, after the retries', async (t) => {
  // acme-client's own retry policy, shortened: one retry, at once.
  const acme = createRequire(new URL('../../packages/relay/package.json', import.meta.url))('acme-client');
  const settings = acme.axios.defaults.acmeSettings;
  const saved = { ...settings };
  Object.assign(settings, { retryMaxAttempts: 1, retryDefaultDelay: 0 });
  t.teardown(() => Object.assign(settings, saved));
  const log = memoryLogger('info', 'relay');
  const directoryUrl = `https://127.0.0.1:${await freePort()}/dir`;
  const relay = await testRelay(t, {
    logger: log.logger,
    tls: { host: '127.0.0.1', port: 0 },
    acme: { directoryUrl, domains: ['*.acme.test'], stateDir: await tempDir(t, 'burrow-acme-') },
  });
  const failed = once(acmeOf(relay), 'failed');
  const app = await backend(t);
  await testAgent(t, relay, [{ id: 'app', hostnames: ['down.acme.test'], target: app.url }], {
    hosts: ['*.acme.test'],
  });
  const [hostname, err] = await failed;
  t.equal(hostname, 'down.acme.test');
  t.equal(
    (err as Error).message,
    `GET ${directoryUrl} got no response (2 tries): connect ECONNREFUSED ${new URL(directoryUrl).host}`,
    'the request, the attempts and the network error',
  );
  const [line] = log.lines.filter((l) => l['msg'] === 'acme order failed');
  t.match(line, { hostname: 'down.acme.test', error: (err as Error).message, attempt: 1 });
});

t.test('a name already covered by a certificate from files is never ordered', async (t) => {
  const pki = await testPki(t);
  const wild = await pki.issue('wild', ['*.acme.test']);
  const relay = await testRelay(t, {
    tls: { host: '127.0.0.1', port: 0 },
    certFiles: { pairs: [{ cert: wild.certFile, key: wild.keyFile }] },
    acme: {
      // Nothing listens there: an order would fail, and be counted.
      directoryUrl: `https://127.0.0.1:${await freePort()}/dir`,
      domains: ['*.acme.test'],
      stateDir: await tempDir(t, 'burrow-acme-'),
    },
  });
  const app = await backend(t);
  const scans = acmeOf(relay).scans;
  await testAgent(t, relay, [{ id: 'app', hostnames: ['files.acme.test'], target: app.url }], {
    hosts: ['*.acme.test'],
  });
  await scannedSince(relay, scans);
  t.equal(acmeOf(relay).orders, 0, 'no order for a name the files cover');
  const r = await httpsGet(relay.tlsAddress!.port, 'files.acme.test', pki.caPem);
  t.equal(r.status, 200, 'served with the file certificate');
});

t.test('a name whose certificate from files goes away is ordered', async (t) => {
  const dir = await tempDir(t, 'burrow-certs-');
  const pki = await testPki(t);
  const wild = await pki.issue('wild', ['*.acme.test'], dir);
  const log = memoryLogger('info', 'relay');
  const { relay, pebble } = await acmeSetup(t, 'http-01', {
    relay: { logger: log.logger, certFiles: { dir } },
  });
  const app = await backend(t);
  const scans = acmeOf(relay).scans;
  await testAgent(t, relay, [{ id: 'app', hostnames: ['moved.acme.test'], target: app.url }], {
    hosts: ['*.acme.test'],
  });
  await scannedSince(relay, scans);
  t.equal(acmeOf(relay).orders, 0, 'covered by the file certificate');

  const issued = once(acmeOf(relay), 'issued');
  await Promise.all([rm(wild.certFile), rm(wild.keyFile)]);
  await log.waitFor((l) => l.msg === 'certificates reloaded');
  const [hostname] = await within(30_000, issued, 'an ACME certificate once the file certificate is gone');
  t.equal(hostname, 'moved.acme.test');
  t.equal(acmeOf(relay).orders, 1, 'ordered once the file certificate is gone');
  const r = await httpsGet(relay.tlsAddress!.port, 'moved.acme.test', await pebble.issuingRoot());
  t.equal(r.status, 200, 'served with the ACME certificate');
});

t.test('a name whose certificate from files nears its end is ordered before it expires', async (t) => {
  const dir = await tempDir(t, 'burrow-certs-');
  const pki = await testPki(t);
  const day = 24 * 3600_000;
  // Ten days old, one left: past the point where ACME takes a name over, and nobody replaced it.
  await pki.issue('ending', ['ending.acme.test'], dir, {
    from: new Date(Date.now() - 10 * day),
    until: new Date(Date.now() + day),
  });
  // Valid for a year from now: ACME leaves it alone.
  await pki.issue('fresh', ['fresh.acme.test'], dir, 365);
  const { relay, pebble } = await acmeSetup(t, 'http-01', { relay: { certFiles: { dir } } });
  const app = await backend(t);
  const issued = once(acmeOf(relay), 'issued');
  await testAgent(
    t,
    relay,
    [{ id: 'app', hostnames: ['ending.acme.test', 'fresh.acme.test'], target: app.url }],
    { hosts: ['*.acme.test'] },
  );
  const [hostname] = await within(30_000, issued, 'an ACME certificate');
  t.equal(hostname, 'ending.acme.test', 'the name whose file certificate ends tomorrow is ordered');
  t.equal(acmeOf(relay).orders, 1, 'and only that one');
  const root = await pebble.issuingRoot();
  const r = await httpsGet(relay.tlsAddress!.port, 'ending.acme.test', root);
  t.equal(r.status, 200, 'served with the ACME certificate');
  const fresh = await httpsGet(relay.tlsAddress!.port, 'fresh.acme.test', pki.caPem);
  t.equal(fresh.status, 200, 'the other still with its file certificate');
});

t.test('names past acme-orders-per-hour wait their turn', async (t) => {
  const log = memoryLogger('info', 'relay');
  const { relay } = await acmeSetup(t, 'http-01', { ordersPerHour: 2, relay: { logger: log.logger } });
  const app = await backend(t);
  const issued: string[] = [];
  const two = new Promise<void>((resolve) =>
    acmeOf(relay).on('issued', (hostname) => {
      if (issued.push(hostname) === 2) resolve();
    }),
  );
  const names = ['one.acme.test', 'two.acme.test', 'three.acme.test'];
  await testAgent(t, relay, [{ id: 'app', hostnames: names, target: app.url }], { hosts: ['*.acme.test'] });
  await within(30_000, two, 'two certificates');
  t.equal(acmeOf(relay).orders, 2, 'the third name waits for the hour to turn');
  t.equal(new Set(issued).size, 2);
  const warnings = log.lines.filter(
    (l) => l['msg'] === 'acme order budget spent; further names wait (acme-orders-per-hour)',
  );
  t.equal(warnings.length, 1, 'said once');
  t.match(warnings[0], { ordersPerHour: 2, resumeAt: String });
});

t.test('a tenant with many names leaves part of the budget to the others', async (t) => {
  const log = memoryLogger('info', 'relay');
  // Four orders an hour: one subject may start three of them.
  const { relay, pebble } = await acmeSetup(t, 'http-01', {
    ordersPerHour: 4,
    relay: { logger: log.logger },
  });
  const app = await backend(t);
  const issued: string[] = [];
  const waiters: Array<[number, () => void]> = [];
  acmeOf(relay).on('issued', (hostname) => {
    issued.push(hostname);
    for (const [n, resolve] of waiters) if (issued.length >= n) resolve();
  });
  const issuedCount = (n: number) => new Promise<void>((resolve) => waiters.push([n, resolve]));

  const many = ['m1.acme.test', 'm2.acme.test', 'm3.acme.test', 'm4.acme.test', 'm5.acme.test'];
  await testAgent(t, relay, [{ id: 'many', hostnames: many, target: app.url }], {
    sub: 'tenant-many',
    hosts: ['*.acme.test'],
  });
  await within(30_000, issuedCount(3), 'three certificates for the first tenant');
  t.equal(acmeOf(relay).orders, 3, 'the first tenant stops at its share');
  t.match(
    log.lines.find((l) => String(l['msg']).startsWith('acme orders for one subject at its share')),
    { subject: 'tenant-many', orders: 3, resumeAt: String },
  );

  await testAgent(t, relay, [{ id: 'one', hostnames: ['late.acme.test'], target: app.url }], {
    sub: 'tenant-late',
    hosts: ['late.acme.test'],
  });
  await within(30_000, issuedCount(4), 'a certificate for the second tenant');
  t.equal(issued[3], 'late.acme.test', 'the name of the tenant that came later is ordered at once');
  t.equal(acmeOf(relay).orders, 4);
  const r = await httpsGet(relay.tlsAddress!.port, 'late.acme.test', await pebble.issuingRoot());
  t.equal(r.status, 200);
});

t.test('an issued certificate that cannot be saved is served, not ordered again', async (t) => {
  const state = await tempDir(t, 'burrow-acme-');
  // Where the certificate would be written, something the rename cannot replace (a full or broken disk).
  await mkdir(join(state, 'certs', 'unsaved.acme.test.crt'), { recursive: true });
  const log = memoryLogger('info', 'relay');
  const { relay, pebble } = await acmeSetup(t, 'http-01', { state, relay: { logger: log.logger } });
  const app = await backend(t);
  const outcome = new Promise<string>((resolve) => {
    acmeOf(relay).once('issued', () => resolve('issued'));
    acmeOf(relay).once('failed', (_h, err) => resolve(`failed: ${err.message}`));
  });
  await testAgent(t, relay, [{ id: 'app', hostnames: ['unsaved.acme.test'], target: app.url }], {
    hosts: ['*.acme.test'],
  });
  t.equal(await outcome, 'issued', 'the certificate the CA issued is used');
  t.match(
    log.lines.find((l) => l.msg === 'acme certificate not saved; serving it until the relay restarts'),
    { hostname: 'unsaved.acme.test', error: /EISDIR|rename/ },
  );
  const r = await httpsGet(relay.tlsAddress!.port, 'unsaved.acme.test', await pebble.issuingRoot());
  t.equal(r.status, 200);
  t.equal(pebble.orders(), 1, 'one order at the CA');
});

t.test('a CA that takes the connection and never answers: the order fails, and is retried', async (t) => {
  // The relay gives every request to the CA a timeout, which acme-client has none of...
  const acme = await loadAcmeClient();
  t.equal(acme.axios.defaults.timeout, 30_000, 'requests to the CA time out after 30 s');
  // ...shortened here.
  const saved = acme.axios.defaults.timeout;
  acme.axios.defaults.timeout = 300;
  t.teardown(() => {
    acme.axios.defaults.timeout = saved;
  });
  const silent = createNetServer((socket) => socket.on('error', () => {})); // accepts, says nothing
  silent.listen(0, '127.0.0.1');
  await once(silent, 'listening');
  t.teardown(() => {
    silent.close();
  });
  const directoryUrl = `https://127.0.0.1:${(silent.address() as AddressInfo).port}/dir`;
  const relay = await testRelay(t, {
    tls: { host: '127.0.0.1', port: 0 },
    acme: {
      directoryUrl,
      domains: ['*.acme.test'],
      stateDir: await tempDir(t, 'burrow-acme-'),
      retryBase: 50,
    },
  });
  const failures: string[] = [];
  const twice = new Promise<void>((resolve) =>
    acmeOf(relay).on('failed', (_hostname: string, err: Error) => {
      if (failures.push(err.message) === 2) resolve();
    }),
  );
  const app = await backend(t);
  await testAgent(t, relay, [{ id: 'app', hostnames: ['mute.acme.test'], target: app.url }], {
    hosts: ['*.acme.test'],
  });
  await within(30_000, twice, 'two failed orders');
  t.match(
    failures[0],
    /^GET https:\/\/127\.0\.0\.1:\d+\/dir got no response \(1 try\): timeout of 300ms exceeded$/,
  );
  t.equal(failures.length, 2, 'ordered again after the backoff');
});

t.test('HTTP-01 failing, TLS-ALPN-01 working: the retry validates with TLS-ALPN-01', async (t) => {
  // The default challenges; Pebble validates HTTP-01 against a port where nothing listens (port 80
  // closed to the internet), TLS-ALPN-01 against the relay's TLS listener.
  const pebblePki = await testPki(t);
  const listenPort = await freePort();
  const log = memoryLogger('info', 'relay');
  const relay = await testRelay(t, {
    logger: log.logger,
    tls: { host: '127.0.0.1', port: 0 },
    acme: {
      directoryUrl: `https://127.0.0.1:${listenPort}/dir`,
      directoryCa: pebblePki.caPem,
      domains: ['*.acme.test'],
      stateDir: await tempDir(t, 'burrow-acme-'),
      retryBase: 50,
    },
  });
  const pebble = await startPebble(t, {
    pki: pebblePki,
    listenPort,
    httpPort: await freePort(),
    tlsPort: relay.tlsAddress!.port,
  });
  // The outcome of each order, until the second: no more orders than that either way.
  const outcomes: string[] = [];
  const second = new Promise<void>((resolve) => {
    const outcome = (what: string) => outcomes.push(what) === 2 && resolve();
    acmeOf(relay).on('failed', (_h, err) => outcome(`failed: ${err.message}`));
    acmeOf(relay).on('issued', () => outcome('issued'));
  });
  const app = await backend(t);
  await testAgent(t, relay, [{ id: 'app', hostnames: ['only443.acme.test'], target: app.url }], {
    hosts: ['*.acme.test'],
  });
  await within(30_000, second, 'two orders');
  acmeOf(relay).close();
  t.match(
    outcomes,
    [/^failed: .*connection refused/, 'issued'],
    'the first order failed, the second succeeded',
  );
  t.equal(acmeOf(relay).orders, 2);
  t.equal(pebble.orders(), 2);
  const started = log.lines.filter((l) => l.msg === 'acme order started');
  t.match(started[0], { hostname: 'only443.acme.test', challenges: ['http-01', 'tls-alpn-01'] });
  t.match(started[1], { hostname: 'only443.acme.test', challenges: ['tls-alpn-01', 'http-01'] });
  t.match(
    log.lines.find((l) => l.msg === 'acme order failed'),
    {
      challenge: 'http-01',
      error: /connection refused/,
      attempt: 1,
    },
  );
  t.match(
    log.lines.find((l) => l.msg === 'acme certificate issued'),
    { challenge: 'tls-alpn-01' },
  );
  const r = await httpsGet(relay.tlsAddress!.port, 'only443.acme.test', await pebble.issuingRoot());
  t.equal(r.status, 200, 'served with the certificate validated over TLS-ALPN-01');
});

t.test('announcements in a loop cost a bounded number of looks at the served names', async (t) => {
  const { relay } = await acmeSetup(t, 'http-01');
  const manager = acmeOf(relay);
  const rogue = await RogueAgent.connect(t, tunnelUrl(relay), await tokenFor('churn', ['*.acme.test']));
  await rogue.announce([]);
  /** Sends one announcement on the open control stream and waits for the relay's answer. */
  const announce = async (routes: Array<{ id: string; hostnames: string[] }>) => {
    const from = rogue.frames.length;
    rogue.send(encodeFrame(FrameType.Data, 1, controlMessage({ type: 'announce', routes })));
    await rogue.waitFor((f) => f.type === FrameType.Data && f.streamId === 1, from);
  };
  const issued = once(manager, 'issued');
  const scansBefore = manager.scans;
  const started = performance.now();
  // 200 announcements one after the other, each a change of the route table; the last serves a name.
  for (let i = 0; i < 199; i++) await announce([]);
  await announce([{ id: 'r', hostnames: ['loop.acme.test'] }]);
  const [hostname] = await within(30_000, issued, 'the certificate of the name announced last');
  const elapsed = performance.now() - started;
  const scans = manager.scans - scansBefore;
  t.equal(hostname, 'loop.acme.test', 'the name announced last gets its certificate');
  t.equal(manager.orders, 1);
  // One look at once, then at most one per gap: not one for each of the 200 changes.
  const bound = 1 + Math.floor(elapsed / SCAN_GAP);
  t.comment(`${scans} looks at the served names in ${Math.round(elapsed)} ms`);
  t.ok(scans <= bound, `${scans} looks, at most ${bound}`);
});
