// Write-back to Kubernetes: the Lease that elects the writer, and the
// annotations and Events each annotated Service gets, against the fake API
// server with the real client.
import { getEventListeners, once } from 'node:events';
import type { RouteResult } from '@burrow/shared';
import { CoordinationV1Api, CoreV1Api, KubeConfig, V1MicroTime } from '@kubernetes/client-node';
import t, { type Test } from 'tap';
import { type FakeKube, fakeKube } from '../../../test/helpers/fake-kube.js';
import { startAgent } from '../src/agent.js';
import { ApiStoppedError, apiClient } from '../src/kubernetes/api.js';
import { startKubernetes } from '../src/kubernetes/index.js';
import { LeaseElector } from '../src/kubernetes/lease.js';
import { fakeRelay } from './helpers/fake-relay.js';
import { memoryLogger } from './helpers/log.js';

const TOKEN = 'eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ0ZXN0In0.c2VjcmV0LXNpZ25hdHVyZQ';

/** A ClusterIP Service in `namespace` annotated to be exposed at `hostname`; `metadata` adds fields. */
function annotated(
  namespace: string,
  name: string,
  hostname: string,
  metadata: Record<string, unknown> = {},
) {
  return {
    metadata: { name, namespace, annotations: { 'burrow.dev/hostname': hostname }, ...metadata },
    spec: {
      type: 'ClusterIP',
      clusterIP: '10.96.0.10',
      ports: [{ name: 'http', port: 80, protocol: 'TCP' }],
    },
  };
}

/** An agent whose routes come from the fake cluster, with write-back attached (no Lease). */
async function agentOnKube(
  t: Test,
  kube: FakeKube,
  scope: { labelSelector?: string; requestTimeout?: number; token?: string } = {},
) {
  const kc = new KubeConfig();
  kc.loadFromString(kube.kubeconfig());
  const log = memoryLogger();
  const k8s = await startKubernetes({
    kubeConfig: kc,
    logger: log.logger,
    lease: false,
    backoff: { base: 10, cap: 100 },
    ...scope,
  });
  t.teardown(() => k8s.stop());
  const relay = await fakeRelay(t);
  const agent = startAgent({
    relayUrl: relay.url,
    token: TOKEN,
    routes: k8s.source,
    connections: 1,
    logger: log.logger,
    backoff: { base: 5, cap: 40 },
  });
  t.teardown(() => agent.close());
  await agent.ready();
  return { k8s, agent, log, sync: k8s.attach(agent) };
}

t.test('the Lease is written with MicroTime timestamps', async (t) => {
  const kube = await fakeKube(t);
  const kc = new KubeConfig();
  kc.loadFromString(kube.kubeconfig());
  const elector = new LeaseElector(kc.makeApiClient(CoordinationV1Api), {
    namespace: 'default',
    name: 'burrow-agent-writer',
    identity: 'agent-0',
    logger: memoryLogger().logger,
  });
  t.teardown(() => elector.stop());
  t.equal(await elector.tryOnce(), true, 'created the lease');
  const create = kube.requests.find((r) => r.method === 'POST' && r.path.includes('/leases'));
  const spec = (create?.body as { spec?: Record<string, unknown> } | undefined)?.spec ?? {};
  // metav1.MicroTime only parses RFC3339 with exactly six fractional digits
  // ("2006-01-02T15:04:05.000000Z07:00"); an API server answers 400 otherwise.
  t.match(String(spec['renewTime']), /\.\d{6}Z$/, 'renewTime is a MicroTime');
  t.match(String(spec['acquireTime']), /\.\d{6}Z$/, 'acquireTime is a MicroTime');
});

t.test('a Lease the agent may not read: one warning, then a count, then a line when it works', async (t) => {
  const kube = await fakeKube(t);
  const kc = new KubeConfig();
  kc.loadFromString(kube.kubeconfig());
  const log = memoryLogger();
  const elector = new LeaseElector(kc.makeApiClient(CoordinationV1Api), {
    namespace: 'default',
    name: 'burrow-agent-writer',
    identity: 'agent-0',
    logger: log.logger,
  });
  t.teardown(() => elector.stop());
  kube.failNext = { resource: 'leases', status: 403, count: 4 };
  for (let i = 0; i < 4; i++) t.equal(await elector.tryOnce(), false);
  t.same(
    log.lines.filter((l) => l.msg === 'lease renewal failed').map((l) => [l.level, l['failures']]),
    [
      [40, 1],
      [20, 2],
      [20, 3],
      [20, 4],
    ],
  );
  t.equal(await elector.tryOnce(), true);
  t.match(
    log.lines.find((l) => l.msg === 'lease renewal working again'),
    { level: 30, failures: 4 },
  );

  // Reading works but renewing does not (get granted, update not): one warning, and no
  // "working again" between the failures.
  const seen = log.lines.length;
  kube.failNext = { resource: 'leases', status: 403, count: 3, method: 'PUT' };
  for (let i = 0; i < 3; i++) t.equal(await elector.tryOnce(), false);
  const renewal = log.lines
    .slice(seen)
    .filter((l) => l.msg.startsWith('lease renewal'))
    .map((l) => [l.msg, l.level]);
  t.same(renewal, [
    ['lease renewal failed', 40],
    ['lease renewal failed', 20],
    ['lease renewal failed', 20],
  ]);
});

t.test('of two Services asking for one hostname, the loser shows burrow.dev/error', async (t) => {
  // docs/install.md §8: `burrow.dev/error: hostname "x" is announced twice` when
  // "two Services in this cluster ask for the same name".
  const kube = await fakeKube(t);
  const svc = (name: string) => annotated('default', name, 'dup.example.com');
  kube.upsertService(svc('first'));
  kube.upsertService(svc('second'));
  const { sync } = await agentOnKube(t, kube);
  await sync.schedule();
  const first = kube.getService('default', 'first')?.metadata['annotations'] ?? {};
  const second = kube.getService('default', 'second')?.metadata['annotations'] ?? {};
  t.equal(first['burrow.dev/url'], 'http://dup.example.com', 'the first Service is exposed');
  t.match(
    second['burrow.dev/error'] ?? '(none)',
    /dup\.example\.com/,
    'the second Service is told why it is not exposed',
  );
});

t.test('a hostname stays with the Service that has it: a newer claim cannot take it', async (t) => {
  const kube = await fakeKube(t);
  const svc = (namespace: string, name: string, created: string) =>
    annotated(namespace, name, 'shop.example.com', { creationTimestamp: created });
  const annotations = (ns: string, name: string) => kube.getService(ns, name)?.metadata['annotations'] ?? {};
  // At start, the older Service wins, whatever the names sort as.
  kube.upsertService(svc('shop', 'web', '2026-01-01T00:00:00Z'));
  kube.upsertService(svc('aaa', 'early-name', '2026-01-02T00:00:00Z'));
  const { sync, agent, k8s } = await agentOnKube(t, kube);
  await sync.schedule();
  t.equal(annotations('shop', 'web')['burrow.dev/url'], 'http://shop.example.com', 'the older Service');
  t.match(annotations('aaa', 'early-name')['burrow.dev/error'], /shop\.example\.com/);

  // Later, a Service that sorts first by namespace and name, and is older besides, asks too.
  const changed = new Promise((resolve) => k8s.source.on('change', resolve));
  kube.upsertService(svc('a', 'hijack', '2025-01-01T00:00:00Z'));
  await changed;
  await sync.schedule();
  t.equal(annotations('shop', 'web')['burrow.dev/url'], 'http://shop.example.com', 'still the holder');
  t.notOk(annotations('shop', 'web')['burrow.dev/error']);
  // Told why, without the name of a Service in another namespace (which it may not be allowed to read).
  t.equal(
    annotations('a', 'hijack')['burrow.dev/error'],
    'hostname "shop.example.com" is already in the route of a Service in another namespace',
  );
  t.notOk(
    kube
      .events()
      .some((e) => e['involvedObject']?.namespace === 'a' && /shop\/web/.test(String(e['message']))),
    'nor in its Events',
  );
  t.same(
    agent.routeStatus().map((r) => `${r.id} ${r.hostname}`),
    ['k8s:shop/web shop.example.com'],
  );
});

t.test('a Service deleted and created again gets its Exposed Event again', async (t) => {
  const kube = await fakeKube(t);
  const svc = (uid: string) => annotated('default', 'web', 'web.example.com', { uid });
  kube.upsertService(svc('uid-old'));
  const { sync, agent } = await agentOnKube(t, kube);
  await sync.schedule();
  const eventsFor = (uid: string) => kube.events().filter((e) => e['involvedObject']?.uid === uid);
  t.equal(eventsFor('uid-old').length, 1, 'the first Service got its Exposed Event');
  /** Resolves once the relay's answer does (or does not) include the Service's route. */
  const answered = (present: boolean) =>
    new Promise<void>((resolve) => {
      const check = (results: RouteResult[]) => {
        if (results.some((r) => r.id === 'k8s:default/web') !== present) return;
        agent.off('routes', check);
        resolve();
      };
      agent.on('routes', check);
    });

  let relay = answered(false);
  kube.deleteService('default', 'web');
  await relay;
  await sync.schedule();
  relay = answered(true);
  kube.upsertService(svc('uid-new'));
  await relay;
  await sync.schedule();
  t.equal(
    kube.getService('default', 'web')?.metadata['annotations']?.['burrow.dev/url'],
    'http://web.example.com',
    'the new Service got its URL annotation',
  );
  t.equal(eventsFor('uid-new').length, 1, 'and an Exposed Event of its own');
});

const failures = {
  fails: { status: 500, reason: /500|Internal/ },
  // A service-account token that expired: client-node reads the rotated one.
  'is refused as unauthorized': { status: 401, reason: /401/ },
  // A Role granted after the agent started.
  'is forbidden': { status: 403, reason: /403/ },
  'is never answered': { status: undefined, reason: /no answer from the API server within 200 ms/ },
};
for (const [how, { status, reason }] of Object.entries(failures)) {
  t.test(`a write-back that ${how} is tried again, not left until something else changes`, async (t) => {
    const kube = await fakeKube(t);
    kube.upsertService(annotated('default', 'web', 'web.example.com'));
    // The API server fails the first two annotation writes, or leaves the first unanswered.
    if (status) kube.failNext = { resource: 'services', status, count: 2, method: 'PATCH' };
    else kube.hangNext = { resource: 'services', count: 1, method: 'PATCH' };
    const { log } = await agentOnKube(t, kube, { requestTimeout: 200 });
    t.match(await log.waitFor((l) => l.msg === 'could not update service annotations'), {
      reason,
      retrying: true,
    });
    // Nothing else changes in this cluster: only a retry of its own can write it.
    await log.waitFor((l) => l.msg === 'service status updated');
    t.equal(
      kube.getService('default', 'web')?.metadata['annotations']?.['burrow.dev/url'],
      'http://web.example.com',
    );
    t.equal((kube.failNext ?? kube.hangNext)?.count, 0, 'every failure was met on the way');
  });
}

for (const holds of [false, true])
  t.test(
    `a write the watch has not shown yet is not written again${holds ? ', its holds record included' : ''}`,
    async (t) => {
      const kube = await fakeKube(t);
      // The watch trails writes by a while, as a watch cache does: passes that run meanwhile see
      // the Service as it was before the agent's own write.
      kube.watchDelay = 2_000;
      kube.upsertService(annotated('default', 'web', 'web.example.com'));
      const patches = () =>
        kube.requests.filter((r) => r.method === 'PATCH' && r.path.includes('/services/'));
      const patched = new Promise<void>((resolve) =>
        kube.on('request', (r) => r.method === 'PATCH' && r.path.includes('/services/') && resolve()),
      );
      const { sync, log } = await agentOnKube(t, kube, holds ? { token: TOKEN } : {});
      await patched;
      for (let i = 0; i < 6; i++) await sync.schedule();
      t.equal(patches().length, 1, 'one PATCH: none again while the watch has not caught up');
      t.notOk(
        log.lines.some((l) => /keeps changing under the agent/.test(String(l.msg))),
        'and no pause for a contest that is not one',
      );
      t.equal(
        kube.getService('default', 'web')?.metadata['annotations']?.['burrow.dev/url'],
        'http://web.example.com',
      );
    },
  );

t.test('a namespace that refuses writes costs one request per pass, not one per Service', async (t) => {
  const kube = await fakeKube(t);
  for (let i = 0; i < 10; i++) kube.upsertService(annotated('locked', `s${i}`, `s${i}.example.com`));
  kube.upsertService(annotated('open', 'web', 'web.example.com'));
  // The agent may not write Services in `locked`, until its Role is granted there.
  kube.failNext = { resource: 'services', status: 403, count: 1_000, method: 'PATCH', namespace: 'locked' };
  const patches = (ns: string) =>
    kube.requests.filter((r) => r.method === 'PATCH' && r.path.includes(`/namespaces/${ns}/services/`))
      .length;
  const { sync, log } = await agentOnKube(t, kube);
  await log.waitFor((l) => l.msg === 'could not update service annotations');
  await sync.schedule();
  await log.waitFor((l) => l.msg === 'service status updated' && l['service'] === 'open/web');
  const before = patches('locked');
  await sync.schedule();
  // One pass, or two when a pass was under way already (schedule() then runs one more).
  t.ok(
    patches('locked') - before <= 2,
    `a pass asks the refusing namespace once (${patches('locked') - before})`,
  );
  t.equal(
    kube.getService('open', 'web')?.metadata['annotations']?.['burrow.dev/url'],
    'http://web.example.com',
    'another namespace is written as usual',
  );
  // The Role is granted: the next pass writes every Service there.
  kube.failNext.count = 0;
  await sync.schedule();
  await sync.schedule();
  for (let i = 0; i < 10; i++)
    t.equal(
      kube.getService('locked', `s${i}`)?.metadata['annotations']?.['burrow.dev/url'],
      `http://s${i}.example.com`,
    );
});

t.test('one Service refused on its own holds back no other of its namespace', async (t) => {
  const kube = await fakeKube(t);
  for (let i = 0; i < 3; i++) kube.upsertService(annotated('default', `s${i}`, `s${i}.example.com`));
  // An admission policy (or RBAC resourceNames) refuses writes to s0 only; s0 comes first in each pass.
  kube.failNext = { resource: 'services', status: 403, count: 1_000, method: 'PATCH', name: 's0' };
  const { log } = await agentOnKube(t, kube);
  for (const name of ['s1', 's2'])
    await log.waitFor((l) => l.msg === 'service status updated' && l['service'] === `default/${name}`);
  t.equal(
    kube.getService('default', 's1')?.metadata['annotations']?.['burrow.dev/url'],
    'http://s1.example.com',
  );
  t.equal(
    kube.getService('default', 's2')?.metadata['annotations']?.['burrow.dev/url'],
    'http://s2.example.com',
  );
  t.equal(kube.getService('default', 's0')?.metadata['annotations']?.['burrow.dev/url'], undefined);
});

t.test('a replica stopped during a pass writes nothing once stop() has resolved', async (t) => {
  const kube = await fakeKube(t);
  for (let i = 0; i < 5; i++) kube.upsertService(annotated('default', `s${i}`, `s${i}.example.com`));
  // The pass's first write hangs until its timeout: the replica is stopped meanwhile.
  kube.hangNext = { resource: 'services', count: 1, method: 'PATCH' };
  const hung = once(kube, 'hung');
  const { k8s, sync } = await agentOnKube(t, kube, { requestTimeout: 500 });
  await hung;
  await k8s.stop();
  const patches = () => kube.requests.filter((r) => r.method === 'PATCH' && r.path.includes('/services/'));
  const atStop = patches().length;
  await sync.schedule(); // the pass under way, if stop() left one running
  t.equal(atStop, 1, 'only the write that hung');
  t.equal(patches().length, atStop, 'and none after stop() resolved');
});

t.test('stopping gives up a write the API server holds, without waiting for its timeout', async (t) => {
  const kube = await fakeKube(t);
  kube.upsertService(annotated('default', 's0', 's0.example.com'));
  kube.hangNext = { resource: 'services', count: 1, method: 'PATCH' };
  const hung = once(kube, 'hung');
  // Far longer than the test: only stop() can end the write.
  const { k8s, log } = await agentOnKube(t, kube, { requestTimeout: 600_000 });
  await hung;
  const given = once(kube, 'hungClosed');
  await k8s.stop();
  await given;
  t.pass('stop() resolved, and the held request was closed by the agent');
  t.same(
    log.lines.filter((l) => l.level >= 40),
    [],
    'a write given up at stop is no failure to warn of',
  );
});

t.test('an API client with a stop signal holds on to it only while a call is under way', async (t) => {
  const kube = await fakeKube(t);
  kube.upsertService(annotated('default', 'web', 'web.example.com'));
  const kc = new KubeConfig();
  kc.loadFromString(kube.kubeconfig());
  const stop = new AbortController();
  const api = apiClient(kc, CoreV1Api, 600_000, stop.signal);
  for (let i = 0; i < 20; i++) await api.readNamespacedService({ name: 'web', namespace: 'default' });
  t.equal(getEventListeners(stop.signal, 'abort').length, 0, 'nothing left behind by calls that ended');
  kube.hangNext = { resource: 'services', count: 1 };
  const hung = once(kube, 'hung');
  const call = api.readNamespacedService({ name: 'web', namespace: 'default' });
  await hung;
  t.equal(getEventListeners(stop.signal, 'abort').length, 1, 'the call under way listens');
  stop.abort();
  await t.rejects(call, ApiStoppedError);
  t.equal(getEventListeners(stop.signal, 'abort').length, 0);
  await t.rejects(
    api.readNamespacedService({ name: 'web', namespace: 'default' }),
    ApiStoppedError,
    'once stopped, no call goes out',
  );
});

t.test('a writer taking over Services that show their status already records no Event again', async (t) => {
  const kube = await fakeKube(t);
  for (const name of ['a', 'b', 'c']) kube.upsertService(annotated('default', name, `${name}.example.com`));
  const first = await agentOnKube(t, kube);
  await first.sync.schedule();
  t.equal(kube.events().length, 3);
  const eventRequests = () => kube.requests.filter((r) => r.path.includes('/events')).length;
  const before = eventRequests();
  // Another replica becomes the writer (or this one restarts): nothing has changed.
  const second = await agentOnKube(t, kube);
  await second.sync.schedule();
  t.equal(eventRequests(), before, 'no Event created or patched');
  t.same(
    kube.events().map((e) => e['count']),
    [1, 1, 1],
  );
});

t.test('an Event refused as unauthorized is recorded by a retry of its own', async (t) => {
  const kube = await fakeKube(t);
  kube.upsertService(annotated('default', 'web', 'web.example.com'));
  kube.failNext = { resource: 'events', status: 401, count: 1, method: 'POST' };
  const { log } = await agentOnKube(t, kube);
  await log.waitFor((l) => l.msg === 'could not record event');
  // Nothing else changes in this cluster: no pass but the retry records it.
  if (kube.events().length === 0)
    await new Promise<void>((resolve) => {
      const recorded = (ev: { resource: string }) => {
        if (ev.resource !== 'events') return;
        kube.off('change', recorded);
        resolve();
      };
      kube.on('change', recorded);
    });
  t.same(
    kube.events().map((e) => e['reason']),
    ['Exposed'],
  );
});

t.test('an Event that could not be recorded is recorded on a later pass', async (t) => {
  const kube = await fakeKube(t);
  kube.upsertService(annotated('default', 'web', 'web.example.com'));
  kube.failNext = { resource: 'events', status: 503, count: 1, method: 'POST' };
  const { log, sync } = await agentOnKube(t, kube);
  await log.waitFor((l) => l.msg === 'could not record event');
  await sync.schedule();
  t.same(
    kube.events().map((e) => e['reason']),
    ['Exposed'],
    'the next pass records it: a failed Event is not taken as written',
  );
});

t.test('another writer rewriting the status: the agent pauses instead of a PATCH storm', async (t) => {
  const kube = await fakeKube(t);
  kube.upsertService(annotated('default', 'web', 'web.example.com'));
  // A second agent installation whose relay disagrees: whatever this agent writes, it writes back
  // its own verdict, at once.
  let rivalWrites = 0;
  const rival = () => {
    const svc = kube.getService('default', 'web');
    const ann = svc?.metadata['annotations'] ?? {};
    if (!svc || ann['burrow.dev/url'] === undefined || rivalWrites >= 50) return;
    rivalWrites++;
    const { 'burrow.dev/url': _, ...rest } = ann;
    kube.upsertService({
      ...svc,
      metadata: {
        ...svc.metadata,
        annotations: { ...rest, 'burrow.dev/error': 'refused by the other relay' },
      },
    });
  };
  kube.on('change', rival);
  t.teardown(() => kube.off('change', rival));
  const { log } = await agentOnKube(t, kube);
  await log.waitFor((l) => String(l.msg).startsWith('service status keeps changing under the agent'));
  const ours = () =>
    kube.requests.filter((r) => r.method === 'PATCH' && r.path.endsWith('/services/web')).length;
  t.equal(ours(), 6, 'its write, five rewrites of the same status, then the pause');
  t.ok(rivalWrites < 50, `the exchange stopped by itself (${rivalWrites} rival writes)`);
  t.equal(
    log.lines.filter((l) => String(l.msg).startsWith('service status keeps changing')).length,
    1,
    'one warning',
  );
});

t.test('two installations writing one Service: one pauses, holds records and all', async (t) => {
  const kube = await fakeKube(t);
  kube.upsertService(annotated('default', 'web', 'web.example.com'));
  // Two tokens, so two holds keys: neither can verify the other's record, and each puts back its own.
  const first = await agentOnKube(t, kube, { token: TOKEN });
  const second = await agentOnKube(t, kube, { token: `${TOKEN}x` });
  const paused = (log: typeof first.log) =>
    log.waitFor((l) => String(l.msg).startsWith('service status keeps changing under the agent'));
  // Whichever pauses first leaves the other's last write standing.
  await Promise.race([paused(first.log), paused(second.log)]);
  const patches = kube.requests.filter((r) => r.method === 'PATCH' && r.path.endsWith('/services/web'));
  t.ok(patches.length <= 12, `each wrote once and rewrote five times at most (${patches.length} PATCHes)`);
  const holds = patches.map((p) => JSON.stringify(p.body).match(/"burrow\.dev\/holds":"([^"]*)"/)?.[1]);
  t.equal(new Set(holds).size, 2, 'one holds record each, put back as it was, not a new one per write');
});

t.test(
  'a Service edited many times in a minute gets each new status: only rewrites are limited',
  async (t) => {
    const kube = await fakeKube(t);
    kube.upsertService(annotated('default', 'web', 'v0.example.com'));
    const { log, k8s } = await agentOnKube(t, kube);
    await log.waitFor((l) => l['burrow.dev/url'] === 'http://v0.example.com');
    for (let i = 1; i <= 8; i++) {
      const changed = new Promise((resolve) => k8s.source.on('change', resolve));
      kube.upsertService(annotated('default', 'web', `v${i}.example.com`, { uid: 'uid-default/web' }));
      await changed;
      await log.waitFor((l) => l['burrow.dev/url'] === `http://v${i}.example.com`);
    }
    t.notOk(
      log.lines.some((l) => String(l.msg).startsWith('service status keeps changing')),
      'no pause for edits',
    );
  },
);

t.test('a write the API server refuses for good is warned once, not retried as if transient', async (t) => {
  const kube = await fakeKube(t);
  kube.upsertService(annotated('default', 'web', 'web.example.com'));
  // A value the API server will not take, whoever asks.
  kube.failNext = { resource: 'services', status: 422, count: 1_000, method: 'PATCH' };
  const { log, sync } = await agentOnKube(t, kube);
  t.match(await log.waitFor((l) => l.msg === 'could not update service annotations'), {
    level: 40,
    status: 422,
  });
  t.notOk(log.lines.find((l) => l.msg === 'could not update service annotations')?.['retrying']);
  await sync.schedule();
  await sync.schedule();
  const lines = log.lines.filter((l) => l.msg === 'could not update service annotations');
  t.same(
    lines.map((l) => l.level),
    [40, ...lines.slice(1).map(() => 20)],
    'later attempts (each new reconcile) log at debug',
  );
});

t.test('a Service taken out of --label-selector no longer shows the URL it is not served at', async (t) => {
  const kube = await fakeKube(t);
  const labels = { expose: 'true' };
  kube.upsertService(annotated('default', 'web', 'web.example.com', { labels }));
  kube.upsertService(annotated('default', 'api', 'api.example.com', { labels }));
  const { k8s, sync, log } = await agentOnKube(t, kube, { labelSelector: 'expose=true' });
  await sync.schedule();
  const annotations = (name: string) => kube.getService('default', name)?.metadata['annotations'] ?? {};
  t.equal(annotations('web')['burrow.dev/url'], 'http://web.example.com');

  // The label goes: the Service leaves the agent's scope (a watch with a selector sees DELETED).
  let changed = once(k8s.watch, 'change');
  const web = kube.getService('default', 'web')!;
  kube.upsertService({ ...web, metadata: { ...web.metadata, labels: {} } });
  await changed;
  t.same(
    k8s.source.routes().map((r) => r.id),
    ['k8s:default/api'],
    'its route is withdrawn',
  );
  await sync.schedule();
  const left = annotations('web');
  t.equal(left['burrow.dev/url'], undefined, 'burrow.dev/url is removed');
  t.equal(left['burrow.dev/holds'], undefined, 'and burrow.dev/holds');
  t.equal(left['burrow.dev/hostname'], 'web.example.com', "the user's own annotation stays");
  t.equal(annotations('api')['burrow.dev/url'], 'http://api.example.com', 'the other Service keeps its URL');

  // Deleted outright: nothing to clear, and nothing to warn about.
  changed = once(k8s.watch, 'change');
  kube.deleteService('default', 'api');
  await changed;
  await sync.schedule();
  t.same(
    log.lines.filter((l) => l.level >= 40).map((l) => l.msg),
    [],
    'no warnings',
  );
});

t.test('a Service that left the scope and was created again is not touched', async (t) => {
  const kube = await fakeKube(t);
  kube.upsertService(annotated('default', 'web', 'web.example.com', { labels: { expose: 'true' } }));
  const { k8s, sync, log } = await agentOnKube(t, kube, { labelSelector: 'expose=true' });
  await sync.schedule();
  // Deleted, then created again outside the agent's scope, carrying what another installation wrote.
  const changed = once(k8s.watch, 'change');
  kube.deleteService('default', 'web');
  kube.upsertService(
    annotated('default', 'web', 'web.example.com', {
      uid: 'uid-new',
      annotations: { 'burrow.dev/hostname': 'web.example.com', 'burrow.dev/url': 'https://elsewhere' },
    }),
  );
  await changed;
  await sync.schedule();
  t.equal(
    kube.getService('default', 'web')?.metadata['annotations']?.['burrow.dev/url'],
    'https://elsewhere',
    'the new object keeps its annotations',
  );
  t.same(
    log.lines.filter((l) => l.level >= 40).map((l) => l.msg),
    [],
    'no warnings',
  );
});

t.test('a Service that left the scope keeps what another writer put there since', async (t) => {
  const kube = await fakeKube(t);
  kube.upsertService(annotated('default', 'web', 'web.example.com', { labels: { expose: 'true' } }));
  const { k8s, sync } = await agentOnKube(t, kube, { labelSelector: 'expose=true' });
  await sync.schedule();
  // The label goes, and tries to clear the Service fail for now.
  kube.failNext = { resource: 'services', status: 503, count: 1_000, method: 'PATCH' };
  const changed = once(k8s.watch, 'change');
  const web = kube.getService('default', 'web')!;
  kube.upsertService({ ...web, metadata: { ...web.metadata, labels: { expose: 'elsewhere' } } });
  await changed;
  await sync.schedule();
  // Meanwhile another installation, whose selector matches it now, writes its own status.
  const taken = kube.getService('default', 'web')!;
  const theirs = { 'burrow.dev/url': 'https://web.elsewhere.example.com', 'burrow.dev/holds': 'theirs' };
  kube.upsertService({
    ...taken,
    metadata: { ...taken.metadata, annotations: { ...taken.metadata['annotations'], ...theirs } },
  });
  kube.failNext = undefined;
  await sync.schedule();
  t.match(kube.getService('default', 'web')?.metadata['annotations'], theirs, 'their status stays');
  t.equal(k8s.watch.departed.size, 0, 'and the Service is forgotten');
});

t.test('a replica that stops hands the write-back Lease over at once', async (t) => {
  const kube = await fakeKube(t);
  const kc = new KubeConfig();
  kc.loadFromString(kube.kubeconfig());
  const elector = (identity: string) => {
    const e = new LeaseElector(kc.makeApiClient(CoordinationV1Api), {
      namespace: 'default',
      name: 'burrow-agent-writer',
      identity,
      // Far longer than the test: only a handover can move the Lease.
      leaseDuration: 600_000,
      logger: memoryLogger().logger,
    });
    t.teardown(() => e.stop());
    return e;
  };
  const [a, b, c] = [elector('agent-0'), elector('agent-1'), elector('agent-2')];
  t.equal(await a.tryOnce(), true, 'the first replica holds the Lease');
  t.equal(await b.tryOnce(), false, 'another one waits');
  await b.stop();
  t.equal(kube.leases()[0]?.['spec']?.holderIdentity, 'agent-0', 'one that does not hold it leaves it alone');
  await a.stop();
  t.equal(a.isLeader, false);
  t.equal(await c.tryOnce(), true, 'once the holder stops, the next replica takes it without waiting');
  t.equal(kube.leases()[0]?.['spec']?.holderIdentity, 'agent-2');
});

t.test(
  'a holder whose clock is behind keeps the Lease while it renews; one that stops loses it',
  async (t) => {
    const kube = await fakeKube(t);
    const kc = new KubeConfig();
    kc.loadFromString(kube.kubeconfig());
    const api = kc.makeApiClient(CoordinationV1Api);
    const hourAgo = new V1MicroTime(Date.now() - 3_600_000);
    await api.createNamespacedLease({
      namespace: 'default',
      body: {
        metadata: { name: 'burrow-agent-writer', namespace: 'default' },
        spec: {
          holderIdentity: 'agent-0',
          leaseDurationSeconds: 1,
          renewTime: hourAgo,
          acquireTime: hourAgo,
        },
      },
    });
    // The Lease's own duration (1 s) decides when its holder is gone.
    const elector = () => {
      const e = new LeaseElector(api, {
        namespace: 'default',
        name: 'burrow-agent-writer',
        identity: 'agent-1',
        renewInterval: 20,
        logger: memoryLogger().logger,
      });
      t.teardown(() => e.stop());
      return e;
    };
    t.equal(
      await elector().tryOnce(),
      false,
      "a renewTime an hour old, by the holder's clock, is not taken for gone",
    );
    const holder = kube.leases()[0]!;
    t.equal(holder['spec'].holderIdentity, 'agent-0');

    // The holder stops renewing: after a lease duration of this replica's own time, it is gone.
    const e = elector();
    const taken = once(e, 'change');
    e.start();
    t.same(await taken, [true], 'taken over once nothing changed for a whole lease duration');
    t.equal(kube.leases()[0]?.['spec']?.holderIdentity, 'agent-1');
  },
);

t.test('a leader whose renewals hang stops leading before another replica may take over', async (t) => {
  const kube = await fakeKube(t);
  const kc = new KubeConfig();
  kc.loadFromString(kube.kubeconfig());
  const api = kc.makeApiClient(CoordinationV1Api);
  // Replica A's requests hang once `frozen` is set: a connection to the API server gone silent.
  let frozen = false;
  const stuck = new Proxy(api, {
    get(target, key) {
      const value = Reflect.get(target, key);
      if (typeof value !== 'function') return value;
      return (...args: unknown[]) => (frozen ? new Promise(() => {}) : value.apply(target, args));
    },
  });
  const order: string[] = [];
  const elector = (identity: string, client: CoordinationV1Api) => {
    const log = memoryLogger();
    const e = new LeaseElector(client, {
      namespace: 'default',
      name: 'burrow-agent-writer',
      identity,
      leaseDuration: 1_500,
      renewInterval: 100,
      logger: log.logger,
    });
    e.on('change', (leader) => order.push(`${identity} ${leader ? 'leads' : 'stops'}`));
    t.teardown(() => e.stop());
    return { e, log };
  };
  const a = elector('agent-a', stuck);
  const b = elector('agent-b', api);
  a.e.start();
  await once(a.e, 'change');
  b.e.start();
  frozen = true;
  await once(b.e, 'change');
  t.same(order, ['agent-a leads', 'agent-a stops', 'agent-b leads'], 'never two leaders at once');
  t.equal(a.e.isLeader, false);
  t.match(a.log.lines.find((l) => l.level === 40)?.msg, /write-back lease not renewed in time/);
});
