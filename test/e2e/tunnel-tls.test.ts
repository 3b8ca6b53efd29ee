// The tunnel endpoint over TLS (wss://): the token never crosses the network
// in clear, and the agent verifies the relay against the CA it was given.
import { readFile } from 'node:fs/promises';
import { startAgent } from '@burrow/agent';
import t from 'tap';
import { memoryLogger } from '../../packages/agent/test/helpers/log.js';
import { get, testServer } from '../helpers/http.js';
import { testLogger, testRelay, tokenFor } from '../helpers/relay.js';
import { testPki } from '../helpers/tls.js';

t.test('agent to relay over wss:// with a private CA', async (t) => {
  const pki = await testPki(t);
  const relay = await testRelay(t, {
    tunnelTls: { cert: await readFile(pki.certFile, 'utf8'), key: await readFile(pki.keyFile, 'utf8') },
  });
  const app = await testServer(t, (_req, res) => res.end('over tls'));
  const url = `wss://localhost:${relay.tunnelAddress.port}`;

  // Without the CA the relay's certificate is not trusted: the agent never connects.
  const log = memoryLogger('warn');
  const failed = log.waitFor((l) => l.msg.startsWith('tunnel connect failed'));
  const untrusting = startAgent({
    relayUrl: url,
    token: await tokenFor('tls', ['tls.example.com']),
    routes: [{ id: 'x', hostnames: ['tls.example.com'], target: app.url }],
    connections: 1,
    logger: log.logger,
    backoff: { base: 1_000, cap: 2_000 },
  });
  t.teardown(() => untrusting.close());
  t.match(
    (await failed)['reason'],
    /certificate/i,
    'refused: the certificate is not trusted, and the log says so',
  );
  t.equal(untrusting.connectionCount, 0);
  await untrusting.close();

  const agent = startAgent({
    relayUrl: url,
    relayCa: pki.caPem,
    token: await tokenFor('tls', ['tls.example.com']),
    routes: [{ id: 'x', hostnames: ['tls.example.com'], target: app.url }],
    connections: 1,
    logger: testLogger('agent'),
  });
  t.teardown(() => agent.close());
  await agent.ready();
  t.equal((await get(relay.httpAddress.port, 'tls.example.com')).body.toString(), 'over tls');
});
