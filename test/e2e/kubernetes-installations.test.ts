// Two agent installations in one cluster, split by --label-selector: a Service moved from one to
// the other keeps the status the other writes, whatever happens to the first one's replicas.
// Fake API server, real client-node, relay, agents and backend.
import { startAgent, startKubernetes } from '@burrow/agent';
import { KubeConfig } from '@kubernetes/client-node';
import t from 'tap';
import { until } from '../helpers/deferred.js';
import { type FakeKube, fakeKube } from '../helpers/fake-kube.js';
import { testServer } from '../helpers/http.js';
import { type Teardownable, testLogger, testRelay, tokenFor, tunnelUrl } from '../helpers/relay.js';

/** One replica of the installation that serves Services labelled `inst=NAME`; `lease` elects its writer. */
async function replica(
  t: Teardownable,
  kube: FakeKube,
  relayUrl: string,
  token: string,
  name: string,
  identity?: string,
) {
  const kc = new KubeConfig();
  kc.loadFromString(kube.kubeconfig());
  const k = await startKubernetes({
    kubeConfig: kc,
    logger: testLogger('kube'),
    labelSelector: `inst=${name}`,
    token,
    backoff: { base: 10, cap: 100 },
    lease: identity
      ? { namespace: 'burrow-system', name, identity, leaseDuration: 2_000, renewInterval: 200 }
      : false,
  });
  const agent = startAgent({
    relayUrl,
    token,
    routes: k.source,
    connections: 1,
    logger: testLogger('agent'),
    backoff: { base: 20, cap: 200 },
  });
  const sync = k.attach(agent);
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    await agent.close();
    await k.stop();
  };
  t.teardown(stop);
  await agent.ready();
  return { agent, k, sync, stop };
}

t.test(
  'a new writer of one installation leaves alone a Service another installation took over',
  async (t) => {
    const relay = await testRelay(t);
    const kube = await fakeKube(t);
    const web = await testServer(t, (_req, res) => res.end('web'), '127.0.0.2');
    const one = await tokenFor('inst-one', ['*.one.example.com']);
    const two = await tokenFor('inst-two', ['*.two.example.com']);
    const annotations = () => kube.getService('default', 'web')?.metadata['annotations'] ?? {};
    const webIn = (inst: string) => ({
      metadata: {
        name: 'web',
        namespace: 'default',
        labels: { inst },
        annotations: { ...annotations(), 'burrow.dev/hostname': `web.${inst}.example.com` },
      },
      spec: {
        type: 'ClusterIP',
        clusterIP: '127.0.0.2',
        ports: [{ name: 'http', port: web.port, protocol: 'TCP' }],
      },
    });
    kube.upsertService(webIn('one'));
    const a = await replica(t, kube, tunnelUrl(relay), one, 'one', 'a');
    await until(
      async () => kube.leases()[0]?.['spec']?.holderIdentity === 'a',
      'a writes for installation one',
    );
    const b = await replica(t, kube, tunnelUrl(relay), one, 'one', 'b');
    await a.sync.schedule();
    t.match(annotations()['burrow.dev/url'], /one\.example\.com/, 'installation one writes its URL');

    // The Service moves to installation two, which writes its own status.
    await replica(t, kube, tunnelUrl(relay), two, 'two');
    kube.upsertService(webIn('two'));
    await until(
      async () => /two\.example\.com/.test(annotations()['burrow.dev/url'] ?? ''),
      'installation two writes its URL',
    );
    await until(
      async () => /two\.example\.com;/.test(annotations()['burrow.dev/holds'] ?? ''),
      'and its record',
    );
    const status = { ...annotations() };

    // A rolling update of installation one: b takes the Lease and runs a pass.
    await a.stop();
    await until(
      async () => kube.leases()[0]?.['spec']?.holderIdentity === 'b',
      'b writes for installation one',
    );
    const version = kube.getService('default', 'web')?.metadata['resourceVersion'];
    const before = kube.requests.length;
    await b.sync.schedule();
    // The pass that takes the Service up may be one already under way when b took the Lease:
    // once the Service is forgotten, b has asked (or not) for good.
    await until(async () => b.k.watch.departed.size === 0, 'installation one forgets the Service');
    t.equal(
      kube.getService('default', 'web')?.metadata['resourceVersion'],
      version,
      'the Service is not written',
    );
    const removals = kube.requests
      .slice(before)
      .filter((r) => r.method === 'PATCH' && r.path.endsWith('/services/web'));
    t.same(annotations(), status, "installation two's status stays as it wrote it");
    t.ok(removals.length <= 1, 'installation one asks at most once');
  },
);
