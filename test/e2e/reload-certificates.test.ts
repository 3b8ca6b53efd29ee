// Certificates on reload: the tunnel endpoint's certificate is replaced for
// new handshakes while an established tunnel keeps serving; the expiry gauge
// follows; reload hooks (where a TLS layer plugs in) commit only when every
// hook prepared, so one failing hook leaves everything as it was.
import { X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { connect } from 'node:tls';
import { startAgent } from '@burrow/agent';
import { ConfigReloader, type LoadedConfig } from '@burrow/relay';
import t from 'tap';
import { get, testServer } from '../helpers/http.js';
import { metricValue } from '../helpers/metrics.js';
import { testKeys, testLogger, testRelay, tokenFor } from '../helpers/relay.js';
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
