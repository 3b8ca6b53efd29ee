// One of the watched namespaces cannot be listed (its RoleBinding is missing,
// or the name is mistyped): the agent serves what the others listed, follows
// their changes, and is not ready until every namespace has listed. Fake API
// server, real client-node, relay, agent and backend.
import { startAgent, startKubernetes } from '@burrow/agent';
import { KubeConfig } from '@kubernetes/client-node';
import t from 'tap';
import { until } from '../helpers/deferred.js';
import { fakeKube } from '../helpers/fake-kube.js';
import { get, testServer } from '../helpers/http.js';
import { testLogger, testRelay, tokenFor, tunnelUrl } from '../helpers/relay.js';

t.test('a namespace that cannot be listed does not freeze the routes of the others', async (t) => {
  const relay = await testRelay(t);
  const kube = await fakeKube(t);
  kube.forbidden.add('b');
  const web = await testServer(t, (_req, res) => res.end('web'), '127.0.0.2');
  const api = await testServer(t, (_req, res) => res.end('api'), '127.0.0.3');
  const service = (name: string, ip: string, port: number) => ({
    metadata: { name, namespace: 'a', annotations: { 'burrow.dev/hostname': `${name}.example.com` } },
    spec: { type: 'ClusterIP', clusterIP: ip, ports: [{ name: 'http', port, protocol: 'TCP' }] },
  });
  kube.upsertService(service('web', '127.0.0.2', web.port));
  const kc = new KubeConfig();
  kc.loadFromString(kube.kubeconfig());
  const k = await startKubernetes({
    kubeConfig: kc,
    namespaces: ['a', 'b'],
    logger: testLogger('kube'),
    lease: false,
    backoff: { base: 20, cap: 200 },
  });
  const agent = startAgent({
    relayUrl: tunnelUrl(relay),
    token: await tokenFor('team', ['*.example.com']),
    routes: k.source,
    connections: 1,
    logger: testLogger('agent'),
  });
  t.teardown(async () => {
    await agent.close();
    await k.stop();
  });
  k.attach(agent);
  await agent.ready();
  const port = relay.httpAddress.port;
  t.notOk(k.synced, 'namespace b is refused: not synced');
  t.equal((await get(port, 'web.example.com')).body.toString(), 'web', 'what a listed is served');

  kube.upsertService(service('api', '127.0.0.3', api.port));
  await until(
    async () => (await get(port, 'api.example.com')).status === 200,
    'a Service added in a is served',
  );
  kube.deleteService('a', 'web');
  await until(
    async () => (await get(port, 'web.example.com')).status === 404,
    'a Service deleted in a is withdrawn',
  );
  t.pass('changes in a were followed while b could not be listed');

  // The RoleBinding arrives: b lists, and the agent is synced.
  kube.forbidden.delete('b');
  await until(async () => k.synced, 'synced once b lists');
  t.equal((await get(port, 'api.example.com')).body.toString(), 'api', 'still served');
});
