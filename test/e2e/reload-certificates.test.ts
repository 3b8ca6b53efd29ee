// Certificates on reload: the tunnel endpoint's certificate is replaced for
// new handshakes while an established tunnel keeps serving; the expiry gauge
// follows; reload hooks (where a TLS layer plugs in) commit only when every
// hook prepared, so one failing hook leaves everything as it was. A
// certificate directory swapped whole (a symlink repointed, a directory made
// again) is followed, for the TLS listener's certificates; SIGHUP reads them
// again, for a change no watch sees.
import { X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import { mkdir, readFile, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { connect } from 'node:tls';
import { startAgent } from '@burrow/agent';
import { ConfigReloader, type LoadedConfig, type Relay } from '@burrow/relay';
import t from 'tap';
import { memoryLogger } from '../../packages/agent/test/helpers/log.js';
import { testAgent } from '../helpers/agent.js';
import { within } from '../helpers/deferred.js';
import { tempDir } from '../helpers/fs.js';
import { get, httpsGet, testServer } from '../helpers/http.js';
import { metricValue } from '../helpers/metrics.js';
import { RELAY_CLI, spawnLogged } from '../helpers/proc.js';
import { type Teardownable, testKeys, testLogger, testRelay, tokenFor } from '../helpers/relay.js';
import { testPki } from '../helpers/tls.js';

/** The fingerprint of the certificate the endpoint presents to a new TLS client. */
async function servedFingerprint(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(
      { host: '127.0.0.1', port, servername: 'localhost', rejectUnauthorized: false },
      () => {
        const fp = socket.getPeerX509Certificate()?.fingerprint256 ?? '';
        socket.destroy();
        resolve(fp);
      },
    );
    socket.on('error', reject);
  });
}

t.test('tunnel certificate and reload hooks', async (t) => {
  const [first, second] = [await testPki(t), await testPki(t)];
  const tlsOf = async (pki: typeof first) => ({
    cert: await readFile(pki.certFile, 'utf8'),
    key: await readFile(pki.keyFile, 'utf8'),
  });
  const firstTls = await tlsOf(first);
  const secondTls = await tlsOf(second);
  const relay = await testRelay(t, { tunnelTls: firstTls });
  const port = relay.tunnelAddress.port;
  const expiry = async () =>
    metricValue(await relay.metrics.registry.metrics(), 'burrow_relay_certificate_expiry_timestamp_seconds', {
      name: 'tunnel',
    });
  const validTo = (pem: string) => Math.floor(new Date(new X509Certificate(pem).validTo).getTime() / 1000);
  t.equal(await expiry(), validTo(firstTls.cert), 'the gauge shows the served certificate');
  t.equal(await servedFingerprint(port), new X509Certificate(firstTls.cert).fingerprint256);

  const app = await testServer(t, (_req, res) => res.end('still here'));
  const agent = startAgent({
    relayUrl: `wss://localhost:${port}`,
    relayCa: first.caPem,
    token: await tokenFor('certs', ['certs.reload.test']),
    routes: [{ id: 'c', hostnames: ['certs.reload.test'], target: app.url }],
    connections: 1,
    logger: testLogger('agent'),
  });
  t.teardown(() => agent.close());
  await agent.ready();

  const keys = await testKeys();
  const config = (tls: typeof firstTls): LoadedConfig => ({
    values: { 'http-listen': '127.0.0.1:0', 'tunnel-tls-cert': 'cert.pem', 'tunnel-tls-key': 'key.pem' },
    options: {
      http: { host: '127.0.0.1', port: 0 },
      tunnel: { host: '127.0.0.1', port: 0 },
      tunnelTls: tls,
      verifyKeys: [keys.verify],
    },
    logLevel: 'silent',
  });
  let next = config(secondTls);
  const reloader = new ConfigReloader({
    relay,
    logger: testLogger('relay'),
    load: async () => next,
    current: config(firstTls),
  });
  const events: string[] = [];
  reloader.addHook('tls-layer', async (cfg) => {
    events.push(`prepare ${cfg.options.tunnelTls === secondTls ? 'second' : 'other'}`);
    return () => events.push('commit');
  });

  t.equal(await reloader.reload('test'), true);
  t.same(events, ['prepare second', 'commit']);
  t.equal(
    await servedFingerprint(port),
    new X509Certificate(secondTls.cert).fingerprint256,
    'new handshakes get the new certificate',
  );
  t.equal(await expiry(), validTo(secondTls.cert), 'the gauge follows');
  t.equal(agent.connectionCount, 1, 'the established tunnel stayed up');
  t.equal((await get(relay.httpAddress.port, 'certs.reload.test')).body.toString(), 'still here');

  // One hook fails: no hook commits and nothing changes.
  events.length = 0;
  reloader.addHook('broken', async () => {
    throw new Error('cannot read /etc/burrow/tls/site.pem');
  });
  next = config(firstTls);
  t.equal(await reloader.reload('test'), false);
  t.same(events, ['prepare other'], 'prepared, never committed');
  t.equal(
    await servedFingerprint(port),
    new X509Certificate(secondTls.cert).fingerprint256,
    'certificate unchanged',
  );
  const text = await relay.metrics.registry.metrics();
  t.equal(metricValue(text, 'burrow_relay_config_reloads_total', { result: 'success' }), 1);
  t.equal(metricValue(text, 'burrow_relay_config_reloads_total', { result: 'failure' }), 1);
});

/** Resolves once the relay holds `certFile`'s certificate for `host`: a reload that read it has run. */
async function holds(relay: Relay, host: string, certFile: string): Promise<void> {
  const pem = await readFile(certFile, 'utf8');
  const loaded = (async () => {
    // Each reload is one change; a directory written file by file may take a few.
    for (let i = 0; i < 20 && relay.certs.find(host)?.certPem !== pem; i++) await once(relay.certs, 'change');
  })();
  await within(10_000, loaded, `the relay loads ${certFile}`);
  if (relay.certs.find(host)?.certPem !== pem) throw new Error(`${certFile} not loaded after 20 reloads`);
}

/** A relay serving r.example.test over TLS with the certificates in `dir`, and its log. */
async function relayWithCertDir(t: Teardownable, dir: string) {
  const log = memoryLogger('info', 'relay');
  const relay = await testRelay(t, {
    tls: { host: '127.0.0.1', port: 0 },
    certFiles: { dir },
    logger: log.logger,
  });
  const backend = await testServer(t, (_req, res) => res.end('ok'));
  await testAgent(t, relay, [{ id: 'r', hostnames: ['r.example.test'], target: backend.url }]);
  return { relay, log };
}

const serialOf = async (file: string) => new X509Certificate(await readFile(file)).serialNumber.toUpperCase();

t.test(
  'a certificate directory reached through a symlink follows the symlink when it is repointed',
  async (t) => {
    const pki = await testPki(t);
    const [v1, v2, link] = ['certs-v1', 'certs-v2', 'certs'].map((n) => join(pki.dir, n)) as [
      string,
      string,
      string,
    ];
    await mkdir(v1);
    await pki.issue('site', ['r.example.test'], v1);
    await symlink(v1, link);
    const { relay } = await relayWithCertDir(t, link);
    const port = relay.tlsAddress!.port;
    const served = async () => (await httpsGet(port, 'r.example.test', pki.caPem)).serial.toUpperCase();
    const first = await served();

    // The next set is prepared beside it, then the link swapped atomically (`ln -sfn` + `mv -T`).
    await mkdir(v2);
    const next = await pki.issue('site', ['r.example.test'], v2);
    t.not(await serialOf(next.certFile), first, 'a new certificate was written');
    await symlink(v2, `${link}.tmp`);
    await rename(`${link}.tmp`, link);
    await holds(relay, 'r.example.test', next.certFile);
    t.equal(
      await served(),
      await serialOf(next.certFile),
      "new connections get the new directory's certificate",
    );

    // And the directory it now leads to is the one watched.
    const renewed = await pki.issue('site', ['r.example.test'], v2);
    await holds(relay, 'r.example.test', renewed.certFile);
    t.equal(await served(), await serialOf(renewed.certFile), 'a renewal in the new directory is served');
  },
);

t.test('a certificate directory deleted and made again is read again', async (t) => {
  const pki = await testPki(t);
  const dir = join(pki.dir, 'certs');
  await mkdir(dir);
  await pki.issue('site', ['r.example.test'], dir);
  const { relay, log } = await relayWithCertDir(t, dir);
  const port = relay.tlsAddress!.port;
  const served = async () => (await httpsGet(port, 'r.example.test', pki.caPem)).serial.toUpperCase();
  const first = await served();

  await rm(dir, { recursive: true });
  // Made again only once the relay has looked and found it gone, as after a slow restore.
  t.match(
    await within(
      10_000,
      log.waitFor((l) => l.msg === 'certificate reload failed; keeping the previous certificates'),
      'the reload that finds the directory gone',
    ),
    { level: 50, reason: /ENOENT/ },
  );
  t.equal(await served(), first, 'while it is gone, the certificate loaded before is served');
  await mkdir(dir);
  const next = await pki.issue('site', ['r.example.test'], dir);
  await holds(relay, 'r.example.test', next.certFile);
  t.equal(await served(), await serialOf(next.certFile), 'new connections get the certificate written there');
});

t.test('SIGHUP reads the certificate files again, for a swap no watch sees', async (t) => {
  const pki = await testPki(t);
  // --cert-dir current/certs, with `current` a symlink to a release: the watch is on the
  // directory and its parent as they were, so repointing `current` is for SIGHUP to tell.
  const [release1, release2, current] = ['release-1', 'release-2', 'current'].map((n) =>
    join(pki.dir, n),
  ) as [string, string, string];
  await mkdir(join(release1, 'certs'), { recursive: true });
  await pki.issue('site', ['r.example.test'], join(release1, 'certs'));
  await symlink(release1, current);
  const keys = await tempDir(t, 'burrow-keys-');
  await writeFile(join(keys, 'signing.pub'), (await testKeys()).publicPem);
  const relay = spawnLogged(t, RELAY_CLI, [
    'serve',
    '--http-listen',
    '127.0.0.1:0',
    '--tunnel-listen',
    '127.0.0.1:0',
    '--verify-key',
    keys,
    '--cert-dir',
    join(current, 'certs'),
  ]);
  const listening = await relay.waitFor((l) => l['msg'] === 'relay listening');
  const port = (listening['tls'] as { port: number }).port;
  const backend = await testServer(t, (_req, res) => res.end('ok'));
  const tunnel = (listening['tunnel'] as { port: number }).port;
  await testAgent(t, `ws://127.0.0.1:${tunnel}`, [
    { id: 'r', hostnames: ['r.example.test'], target: backend.url },
  ]);
  const served = async () => (await httpsGet(port, 'r.example.test', pki.caPem)).serial.toUpperCase();
  t.equal(await served(), await serialOf(join(release1, 'certs', 'site.crt')));

  await mkdir(join(release2, 'certs'), { recursive: true });
  const next = await pki.issue('site', ['r.example.test'], join(release2, 'certs'));
  await symlink(release2, `${current}.tmp`);
  await rename(`${current}.tmp`, current);
  const seen = relay.lines.length;
  const reloaded = relay.waitFor(
    (l) => relay.lines.indexOf(l) >= seen && l['msg'] === 'certificates reloaded',
  );
  relay.child.kill('SIGHUP');
  await within(10_000, reloaded, 'certificates reloaded after SIGHUP');
  t.equal(
    await served(),
    await serialOf(next.certFile),
    'new connections get the certificate the symlink now leads to',
  );
});
