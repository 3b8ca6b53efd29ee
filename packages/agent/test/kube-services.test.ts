import { once } from 'node:events';
import { KubeConfig } from '@kubernetes/client-node';
import t from 'tap';
import { fakeKube } from '../../../test/helpers/fake-kube.js';
import { testLogger } from '../../../test/helpers/relay.js';
import { ServiceWatch } from '../src/kubernetes/services.js';

function service(name: string, annotations: Record<string, string>, extra: Record<string, unknown> = {}) {
  return {
    metadata: { name, namespace: 'default', annotations },
    spec: {
      type: 'ClusterIP',
      clusterIP: '10.96.0.10',
      ports: [{ name: 'http', port: 80, protocol: 'TCP' }],
    },
    ...extra,
  };
}

t.test('informer follows adds, edits and deletes; survives 410, dropped watches and errors', async (t) => {
  const kube = await fakeKube(t);
  kube.upsertService(service('web', { 'burrow.dev/hostname': 'web.example.com' }));
  kube.upsertService(service('plain', {}));
  const kc = new KubeConfig();
  kc.loadFromString(kube.kubeconfig());
  const watch = new ServiceWatch({
    kubeConfig: kc,
    logger: testLogger('kube'),
    backoff: { base: 10, cap: 50 },
  });
  t.teardown(() => watch.stop());
  await watch.start();
  t.same(
    watch.routes().map((r) => [r.id, r.hostnames, r.target]),
    [['k8s:default/web', ['web.example.com'], 'http://10.96.0.10:80']],
  );

  const changed = () => once(watch, 'change');
  let c = changed();
  kube.upsertService(service('api', { 'burrow.dev/hostname': 'api.example.com', 'burrow.dev/port': '80' }));
  await c;
  t.same(
    watch.routes().map((r) => r.id),
    ['k8s:default/api', 'k8s:default/web'],
  );

  c = changed();
  kube.upsertService(service('web', { 'burrow.dev/hostname': 'www.example.com' }));
  await c;
  t.same(watch.routes().find((r) => r.id === 'k8s:default/web')?.hostnames, ['www.example.com']);

  c = changed();
  kube.deleteService('default', 'api');
  await c;
  t.same(
    watch.routes().map((r) => r.id),
    ['k8s:default/web'],
  );

  // Watch dropped by the server: the informer resumes from its resourceVersion.
  let rewatched = once(kube, 'watch');
  kube.dropWatches();
  await rewatched;
  c = changed();
  kube.upsertService(service('after-drop', { 'burrow.dev/hostname': 'drop.example.com' }));
  await c;
  t.ok(
    watch.routes().some((r) => r.id === 'k8s:default/after-drop'),
    'changes after a dropped watch arrive',
  );

  // Expired resourceVersion: 410 mid-watch, the informer relists.
  rewatched = once(kube, 'watch');
  kube.expireWatches();
  await rewatched;
  c = changed();
  kube.upsertService(service('after-410', { 'burrow.dev/hostname': 'gone.example.com' }));
  await c;
  t.ok(
    watch.routes().some((r) => r.id === 'k8s:default/after-410'),
    'changes after 410 arrive',
  );

  // A failing watch stops a client-node informer: ours restarts it with backoff.
  const restarted = once(watch, 'restart');
  kube.failNext = { resource: 'services', status: 500, count: 1 };
  kube.dropWatches();
  await restarted;
  c = changed();
  kube.upsertService(service('after-error', { 'burrow.dev/hostname': 'err.example.com' }));
  await c;
  t.ok(
    watch.routes().some((r) => r.id === 'k8s:default/after-error'),
    'changes after an informer error arrive',
  );
});

t.test('a watch that goes silent is restarted by our own timer and resumes', async (t) => {
  const kube = await fakeKube(t);
  kube.upsertService(service('web', { 'burrow.dev/hostname': 'web.example.com' }));
  const kc = new KubeConfig();
  kc.loadFromString(kube.kubeconfig());
  const watch = new ServiceWatch({ kubeConfig: kc, logger: testLogger('kube'), watchIdleTimeout: 100 });
  t.teardown(() => watch.stop());
  await watch.start();
  // Nothing happens in the cluster: the idle timer restarts the watch (a new watch request).
  const [reason] = await once(watch, 'restart');
  t.equal(reason, 'idle');
  await once(kube, 'watch');
  const c = once(watch, 'change');
  kube.upsertService(service('api', { 'burrow.dev/hostname': 'api.example.com' }));
  await c;
  t.ok(
    watch.routes().some((r) => r.id === 'k8s:default/api'),
    'changes after an idle restart arrive',
  );
  t.ok(watch.restarts >= 1);
});
