// The ACME account: registered once per state directory, whatever the number
// of names ordered at the same time, and usable again after a restart.
import type { AcmeManager } from '@burrow/relay';
import t from 'tap';
import { memoryLogger } from '../../packages/agent/test/helpers/log.js';
import { testAgent } from '../helpers/agent.js';
import { tempDir } from '../helpers/fs.js';
import { httpsGet, testServer } from '../helpers/http.js';
import { freePort } from '../helpers/net.js';
import { type Pebble, startPebble } from '../helpers/pebble.js';
import { type Teardownable, testRelay } from '../helpers/relay.js';
import { type TestPki, testPki } from '../helpers/tls.js';

/** Resolves once every name in `names` has been issued or has failed, with the outcome of each. */
function outcomes(acme: AcmeManager, names: string[]): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  return new Promise((resolve) => {
    const settle = (hostname: string, result: string) => {
      if (!names.includes(hostname) || out.has(hostname)) return;
      out.set(hostname, result);
      if (out.size === names.length) resolve(out);
    };
    acme.on('issued', (h) => settle(h, 'issued'));
    acme.on('failed', (h, err) => settle(h, `failed: ${err.message}`));
  });
}

async function acmeRelay(
  t: Teardownable,
  state: string,
  setup: { pki: TestPki; listenPort: number; ports?: { http: number; tls: number } },
) {
  const log = memoryLogger('info', 'relay');
  const relay = await testRelay(t, {
    logger: log.logger,
    http: { host: '127.0.0.1', port: setup.ports?.http ?? 0 },
    tls: { host: '127.0.0.1', port: setup.ports?.tls ?? 0 },
    acme: {
      directoryUrl: `https://127.0.0.1:${setup.listenPort}/dir`,
      directoryCa: setup.pki.caPem,
      domains: ['*.acme.test'],
      stateDir: state,
      challenges: ['http-01'],
      retryBase: 100,
    },
  });
  if (!relay.acme) throw new Error('ACME not configured');
  return { relay, acme: relay.acme, log };
}

t.test('names ordered at once share one account, which still works after a restart', async (t) => {
  const pki = await testPki(t);
  const listenPort = await freePort();
  const state = await tempDir(t, 'burrow-acme-');
  const first = await acmeRelay(t, state, { pki, listenPort });
  const pebble: Pebble = await startPebble(t, {
    pki,
    listenPort,
    httpPort: first.relay.httpAddress.port,
    tlsPort: first.relay.tlsAddress!.port,
  });
  const app = await testServer(t, (_req, res) => res.end('ok'));
  const names = ['one.acme.test', 'two.acme.test', 'three.acme.test'];
  const done = outcomes(first.acme, names);
  await testAgent(
    t,
    first.relay,
    names.map((h, i) => ({ id: `r${i}`, hostnames: [h], target: app.url })),
    { hosts: ['*.acme.test'] },
  );
  const results = await done;
  t.same(Object.fromEntries(results), Object.fromEntries(names.map((h) => [h, 'issued'])));
  t.equal(
    first.log.lines.filter((l) => l.msg === 'acme account registered').length,
    1,
    'one account registered for the three orders',
  );

  // The same state directory after a restart: the saved account signs the next order.
  const ports = { http: first.relay.httpAddress.port, tls: first.relay.tlsAddress!.port };
  await first.relay.close();
  const second = await acmeRelay(t, state, { pki, listenPort, ports });
  const next = outcomes(second.acme, ['four.acme.test']);
  await testAgent(t, second.relay, [{ id: 'four', hostnames: ['four.acme.test'], target: app.url }], {
    hosts: ['*.acme.test'],
  });
  t.equal((await next).get('four.acme.test'), 'issued', 'ordered with the saved account');
  const r = await httpsGet(second.relay.tlsAddress!.port, 'four.acme.test', await pebble.issuingRoot());
  t.equal(r.status, 200);
});
