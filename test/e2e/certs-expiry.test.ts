// What the expiry gauge says for a name several certificates cover: the
// notAfter of the one the TLS listener presents, which alerts are about.
import { X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import t from 'tap';
import { testAgent } from '../helpers/agent.js';
import { tempDir } from '../helpers/fs.js';
import { httpsGet, testServer } from '../helpers/http.js';
import { metricValue } from '../helpers/metrics.js';
import { testRelay } from '../helpers/relay.js';
import { testPki } from '../helpers/tls.js';

t.test('a renewed certificate beside the old one: the gauge shows the one served', async (t) => {
  const pki = await testPki(t);
  const dir = await tempDir(t, 'burrow-certs-');
  // Names sort the renewed pair first, so the old one is listed last.
  const renewed = await pki.issue('a-renewed', ['www.expiry.test'], dir, 30);
  await pki.issue('b-old', ['www.expiry.test'], dir, 1);
  const relay = await testRelay(t, { tls: { host: '127.0.0.1', port: 0 }, certFiles: { dir } });
  const app = await testServer(t, (_req, res) => res.end('ok'));
  await testAgent(t, relay, [{ id: 'www', hostnames: ['www.expiry.test'], target: app.url }]);

  const renewedCert = new X509Certificate(await readFile(renewed.certFile));
  const served = await httpsGet(relay.tlsAddress!.port, 'www.expiry.test', pki.caPem);
  t.equal(served.fingerprint, renewedCert.fingerprint256, 'the renewed certificate is served');
  const gauge = metricValue(
    await relay.metrics.registry.metrics(),
    'burrow_relay_certificate_expiry_timestamp_seconds',
    { name: 'www.expiry.test' },
  );
  t.equal(gauge, Math.floor(new Date(renewedCert.validTo).getTime() / 1000), 'and its expiry is exported');
});
