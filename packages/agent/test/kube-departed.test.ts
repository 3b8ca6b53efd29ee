// Services that leave the watch showing the agent's status (deleted, or relabelled out of
// --label-selector): which ones write-back clears, and for how long it tries. The fake API server
// with the real client; the relay's verdicts come from a stub that has none, so nothing is
// written to a Service while it is in scope.
import { EventEmitter, once } from 'node:events';
import { CoreV1Api, KubeConfig } from '@kubernetes/client-node';
import t, { type Test } from 'tap';
import { type FakeKube, fakeKube } from '../../../test/helpers/fake-kube.js';
import { apiClient } from '../src/kubernetes/api.js';
import { holdsKey, holdsRecord } from '../src/kubernetes/holds.js';
import type { LeaseElector } from '../src/kubernetes/lease.js';
import { ServiceWatch } from '../src/kubernetes/services.js';
import { StatusSync } from '../src/kubernetes/status-sync.js';
import { StatusWriter } from '../src/kubernetes/writer.js';
import { memoryLogger } from './helpers/log.js';

/** How long a departed Service is tried (services.ts DEPARTED_MAX_AGE), ms. */
const DEPARTED_MAX_AGE = 10 * 60_000;
const OURS = holdsKey('our holds key, long enough to be one');
const THEIRS = holdsKey('their holds key, long enough to be one');

/** A Service in scope (`expose=true`) asking for `hostname`, showing `shown` as well. */
function inScope(name: string, hostname: string, shown: Record<string, string>) {
  return {
    metadata: {
      name,
      namespace: 'default',
      labels: { expose: 'true' },
      annotations: { 'burrow.dev/hostname': hostname, ...shown },
    },
    spec: {
      type: 'ClusterIP',
      clusterIP: '10.96.0.10',
      ports: [{ name: 'http', port: 80, protocol: 'TCP' }],
    },
  };
}

/**
 * Write-back over the Services labelled `expose=true`, with its clock in the test's hands; with
 * `standby`, on a replica that does not hold the Lease.
 */
async function writeBack(t: Test, kube: FakeKube, clock: { now: number }, standby = false) {
  const kc = new KubeConfig();
  kc.loadFromString(kube.kubeconfig());
  const log = memoryLogger();
  const watch = new ServiceWatch({
    kubeConfig: kc,
    logger: log.logger,
    labelSelector: 'expose=true',
    now: () => clock.now,
  });
  t.teardown(() => watch.stop());
  await watch.start();
  const agent = Object.assign(new EventEmitter(), {
    routeStatus: () => [],
    portStatus: () => [],
    skippedRoutes: () => new Map<string, string>(),
  });
  const sync = new StatusSync({
    watch,
    agent,
    writer: new StatusWriter(apiClient(kc, CoreV1Api, 5_000), log.logger),
    logger: log.logger,
    holdsKeys: () => [OURS],
    ...(standby
      ? { elector: Object.assign(new EventEmitter(), { isLeader: false }) as unknown as LeaseElector }
      : {}),
    // Only the passes the test runs: a retry of its own would add PATCHes at any time.
    retry: { base: 600_000, cap: 600_000 },
  });
  t.teardown(() => sync.stop());
  await sync.schedule();
  return { watch, sync };
}

/** Takes the Service out of the watch's scope; resolves once the watch has seen it go. */
async function relabel(kube: FakeKube, watch: ServiceWatch, name: string): Promise<void> {
  const changed = once(watch, 'change');
  const svc = kube.getService('default', name)!;
  kube.upsertService({ ...svc, metadata: { ...svc.metadata, labels: { expose: 'elsewhere' } } });
  await changed;
}

const patches = (kube: FakeKube, name: string) =>
  kube.requests.filter((r) => r.method === 'PATCH' && r.path.endsWith(`/services/${name}`)).length;
const annotations = (kube: FakeKube, name: string) =>
  kube.getService('default', name)?.metadata['annotations'] ?? {};

t.test('a departed Service is tried for 10 minutes, then forgotten; one cleared goes at once', async (t) => {
  const kube = await fakeKube(t);
  const web = { 'burrow.dev/url': 'http://web.example.com' };
  const api = {
    'burrow.dev/url': 'http://api.example.com',
    'burrow.dev/holds': holdsRecord([OURS], 'k8s:default/api', ['api.example.com'], Date.now()),
  };
  kube.upsertService(inScope('web', 'web.example.com', web));
  kube.upsertService(inScope('api', 'api.example.com', api));
  const clock = { now: Date.now() };
  const { watch, sync } = await writeBack(t, kube, clock);
  t.equal(patches(kube, 'web') + patches(kube, 'api'), 0, 'nothing written while no verdict is in');

  // web leaves, and every try to clear it fails.
  kube.failNext = { resource: 'services', status: 503, count: 1_000, method: 'PATCH', name: 'web' };
  await relabel(kube, watch, 'web');
  await sync.schedule();
  t.ok(patches(kube, 'web') >= 1, 'clearing web is tried');
  t.ok(watch.departed.has('default/web'), 'and web is kept, to be tried again');

  // api leaves, and is cleared at the first try.
  await relabel(kube, watch, 'api');
  await sync.schedule();
  t.notOk(watch.departed.has('default/api'), 'api, cleared, is forgotten at once');
  t.equal(annotations(kube, 'api')['burrow.dev/url'], undefined, 'its URL removed');
  t.equal(annotations(kube, 'api')['burrow.dev/holds'], undefined, 'and its record');

  clock.now += DEPARTED_MAX_AGE - 1;
  let before = patches(kube, 'web');
  await sync.schedule();
  t.equal(patches(kube, 'web'), before + 1, 'just within 10 minutes, web is tried again');
  t.ok(watch.departed.has('default/web'), 'and kept');

  clock.now += 1;
  t.ok(watch.departed.has('default/web'), 'reading the departed Services forgets none');
  before = patches(kube, 'web');
  await sync.schedule();
  t.notOk(watch.departed.has('default/web'), 'after 10 minutes, web is forgotten');
  await sync.schedule();
  t.equal(patches(kube, 'web'), before, 'and not tried again');
  t.match(annotations(kube, 'web'), web, 'what it showed stays');
});

t.test('a departed Service whose record our keys do not verify is left as it is', async (t) => {
  const kube = await fakeKube(t);
  // Written by another installation (another holds key) while this one had no verdict for it.
  const theirs = {
    'burrow.dev/url': 'https://web.elsewhere.example.com',
    'burrow.dev/holds': holdsRecord([THEIRS], 'k8s:default/web', ['web.example.com'], Date.now()),
  };
  kube.upsertService(inScope('web', 'web.example.com', theirs));
  const { watch, sync } = await writeBack(t, kube, { now: Date.now() });
  await relabel(kube, watch, 'web');
  await sync.schedule();
  t.equal(patches(kube, 'web'), 0, 'the Service is not written');
  t.match(annotations(kube, 'web'), theirs, 'their status stays');
  t.equal(watch.departed.size, 0, 'and the Service is forgotten');
});

t.test('a standby replica forgets a departed Service after 10 minutes too', async (t) => {
  const kube = await fakeKube(t);
  kube.upsertService(inScope('web', 'web.example.com', { 'burrow.dev/url': 'http://web.example.com' }));
  const clock = { now: Date.now() };
  const { watch, sync } = await writeBack(t, kube, clock, true);
  await relabel(kube, watch, 'web');
  await sync.schedule();
  t.ok(watch.departed.has('default/web'), 'kept for the Lease, should this replica get it');
  clock.now += DEPARTED_MAX_AGE;
  await sync.schedule();
  t.equal(watch.departed.size, 0, 'forgotten after 10 minutes, though this replica writes nothing');
  t.equal(patches(kube, 'web'), 0, 'it wrote nothing');
});
