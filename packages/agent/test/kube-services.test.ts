import { once } from 'node:events';
import { type AddressInfo, createServer, type Socket } from 'node:net';
import { KubeConfig } from '@kubernetes/client-node';
import t, { type Test } from 'tap';
import { type FakeKube, fakeKube } from '../../../test/helpers/fake-kube.js';
import { testLogger } from '../../../test/helpers/relay.js';
import { ServiceWatch, type ServiceWatchOptions } from '../src/kubernetes/services.js';
import { memoryLogger } from './helpers/log.js';

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

/** A started ServiceWatch on `kube`, stopped at teardown. */
async function startWatch(
  t: Test,
  kube: FakeKube,
  options: Omit<ServiceWatchOptions, 'kubeConfig' | 'logger'>,
): Promise<ServiceWatch> {
  const kc = new KubeConfig();
  kc.loadFromString(kube.kubeconfig());
  const watch = new ServiceWatch({ kubeConfig: kc, logger: testLogger('kube'), ...options });
  t.teardown(() => watch.stop());
  await watch.start();
  return watch;
}

/** A ServiceWatch on `kube` (not started yet) and its log, stopped at teardown. */
function loggedWatch(t: Test, kube: FakeKube, options: Omit<ServiceWatchOptions, 'kubeConfig' | 'logger'>) {
  const kc = new KubeConfig();
  kc.loadFromString(kube.kubeconfig());
  const log = memoryLogger('debug');
  const watch = new ServiceWatch({ kubeConfig: kc, logger: log.logger, ...options });
  t.teardown(() => watch.stop());
  return { watch, log };
}

/** Adds a Service with a hostname and asserts its route reaches `watch`. */
async function expectRouteArrives(
  t: Test,
  kube: FakeKube,
  watch: ServiceWatch,
  name: string,
  hostname: string,
  message: string,
): Promise<void> {
  const c = once(watch, 'change');
  kube.upsertService(service(name, { 'burrow.dev/hostname': hostname }));
  await c;
  t.ok(
    watch.routes().some((r) => r.id === `k8s:default/${name}`),
    message,
  );
}

t.test('informer follows adds, edits and deletes; survives 410, dropped watches and errors', async (t) => {
  const kube = await fakeKube(t);
  kube.upsertService(service('web', { 'burrow.dev/hostname': 'web.example.com' }));
  kube.upsertService(service('plain', {}));
  const watch = await startWatch(t, kube, { backoff: { base: 10, cap: 50 } });
  t.same(
    watch.routes().map((r) => [r.id, r.hostnames, r.target]),
    [['k8s:default/web', ['web.example.com'], 'http://10.96.0.10:80']],
  );

  const changed = () => once(watch, 'change');
  let c = changed();
  kube.upsertService(service('api', { 'burrow.dev/hostname': 'api.example.com', 'burrow.dev/port': '80' }));
  await c;
  t.same(
    // Oldest Service first; these two may be created within the same second or not.
    watch
      .routes()
      .map((r) => r.id)
      .sort(),
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
  await expectRouteArrives(
    t,
    kube,
    watch,
    'after-drop',
    'drop.example.com',
    'changes after a dropped watch arrive',
  );

  // Expired resourceVersion: 410 mid-watch, the informer relists.
  rewatched = once(kube, 'watch');
  kube.expireWatches();
  await rewatched;
  await expectRouteArrives(t, kube, watch, 'after-410', 'gone.example.com', 'changes after 410 arrive');

  // A failing watch stops a client-node informer: ours restarts it with backoff.
  const restarted = once(watch, 'restart');
  kube.failNext = { resource: 'services', status: 500, count: 1 };
  kube.dropWatches();
  await restarted;
  await expectRouteArrives(
    t,
    kube,
    watch,
    'after-error',
    'err.example.com',
    'changes after an informer error arrive',
  );
});

t.test('a watch that goes silent is restarted by our own timer and resumes', async (t) => {
  const kube = await fakeKube(t);
  kube.upsertService(service('web', { 'burrow.dev/hostname': 'web.example.com' }));
  const watch = await startWatch(t, kube, { watchIdleTimeout: 100 });
  // Nothing happens in the cluster: the idle timer restarts the watch (a new watch request).
  const [reason] = await once(watch, 'restart');
  t.equal(reason, 'idle');
  await once(kube, 'watch');
  await expectRouteArrives(t, kube, watch, 'api', 'api.example.com', 'changes after an idle restart arrive');
  t.ok(watch.restarts >= 1);
});

t.test(
  'bookmarks carry the resourceVersion on: a watch resumed after a quiet spell lists nothing again',
  async (t) => {
    const kube = await fakeKube(t);
    kube.upsertService(service('web', { 'burrow.dev/hostname': 'web.example.com' }));
    const watch = await startWatch(t, kube, { namespaces: ['default'], backoff: { base: 10, cap: 50 } });
    const isList = (path: string) => {
      const url = new URL(path, 'http://kube');
      return url.pathname === '/api/v1/namespaces/default/services' && !url.searchParams.has('watch');
    };
    const lists = () => kube.requests.filter((r) => r.method === 'GET' && isList(r.path)).length;
    t.equal(lists(), 1, 'one list at start');
    t.ok(
      kube.requests.some((r) => r.path.includes('watch=true') && r.path.includes('allowWatchBookmarks=true')),
      'the watch asks for bookmarks',
    );
    // The cluster moves on elsewhere; nothing this watch sees changes. The API server then compacts
    // away the version the watch started from, as etcd does every few minutes.
    for (let i = 0; i < 3; i++) {
      kube.upsertService({
        ...service(`other-${i}`, {}),
        metadata: { name: `other-${i}`, namespace: 'other' },
      });
    }
    const at = kube.bookmark();
    kube.compact();
    const rewatched = once(kube, 'watch');
    kube.dropWatches();
    const [{ from }] = (await rewatched) as [{ from: number }];
    t.equal(from, at, 'the next watch resumes from the bookmark');
    t.equal(lists(), 1, 'and nothing was listed again (no 410 Gone)');
    await expectRouteArrives(t, kube, watch, 'after-bookmark', 'mark.example.com', 'changes after it arrive');
  },
);

t.test('after an idle restart the watch does not keep restarting itself', async (t) => {
  const kube = await fakeKube(t);
  const kc = new KubeConfig();
  kc.loadFromString(kube.kubeconfig());
  const log = memoryLogger();
  const watch = new ServiceWatch({
    kubeConfig: kc,
    logger: log.logger,
    watchIdleTimeout: 150,
    backoff: { base: 10, cap: 20 },
  });
  t.teardown(() => watch.stop());
  await watch.start();
  const [first] = await once(watch, 'restart');
  t.equal(first, 'idle', 'the idle timer restarts the silent watch');
  // Nothing fails on the server. The next restart must be the next idle one, not a
  // "failure" caused by the abort of our own stopped watch (which then loops forever).
  const later: string[] = [];
  for (let i = 0; i < 3; i++) later.push((await once(watch, 'restart'))[0] as string);
  t.same(later, ['idle', 'idle', 'idle'], 'only idle restarts: none for the abort of our own stopped watch');
  t.same(
    log.lines.filter((l) => l.msg === 'Kubernetes watch failed; restarting').map((l) => l['reason']),
    [],
    'no "watch failed" warnings while the server is healthy',
  );
});

t.test('a refused first list leaves the watch unsynced until a retry lists', async (t) => {
  const kube = await fakeKube(t);
  kube.upsertService(service('web', { 'burrow.dev/hostname': 'web.example.com' }));
  kube.failNext = { resource: 'services', status: 403, count: 2 };
  const kc = new KubeConfig();
  kc.loadFromString(kube.kubeconfig());
  const watch = new ServiceWatch({
    kubeConfig: kc,
    logger: testLogger('kube'),
    backoff: { base: 10, cap: 20 },
  });
  t.teardown(() => watch.stop());
  const changed = once(watch, 'change');
  await watch.start();
  t.equal(watch.synced, false, 'not synced after a refused list');
  t.same(watch.routes(), []);
  await changed;
  t.equal(watch.synced, true, 'synced once a retry listed');
  t.same(
    watch.routes().map((r) => r.id),
    ['k8s:default/web'],
  );
});

t.test(
  'an API server that keeps refusing: one warning, a growing backoff, and a line on recovery',
  async (t) => {
    const kube = await fakeKube(t);
    kube.upsertService(service('web', { 'burrow.dev/hostname': 'web.example.com' }));
    kube.failNext = { resource: 'services', status: 403, count: 7 };
    const kc = new KubeConfig();
    kc.loadFromString(kube.kubeconfig());
    const log = memoryLogger('debug');
    const base = 5;
    const watch = new ServiceWatch({ kubeConfig: kc, logger: log.logger, backoff: { base, cap: 10_000 } });
    t.teardown(() => watch.stop());
    const changed = once(watch, 'change');
    await watch.start();
    await changed;
    t.equal(watch.synced, true, 'listed once the refusals stopped');
    const failures = log.lines.filter((l) => String(l.msg).startsWith('Kubernetes watch failed'));
    t.equal(failures.length, 7, 'each refusal retried');
    t.same(
      failures.map((l) => l.level),
      [40, 20, 20, 20, 20, 20, 20],
      'a warning for the first, debug for the retries',
    );
    const delays = failures.map((l) => l['retryInMs'] as number);
    // Jitter keeps each delay within half and all of base x 2^n: the seventh waits at least 32 x base.
    t.ok(delays[6]! >= 32 * base - 1, `the backoff grows (${delays.join(', ')} ms)`);
    t.match(
      log.lines.find((l) => l.msg === 'Kubernetes watch working again'),
      { level: 30, failures: 7 },
    );
  },
);

t.test('a watch that recovers without relisting counts as working again once it stays up', async (t) => {
  const kube = await fakeKube(t);
  kube.upsertService(service('web', { 'burrow.dev/hostname': 'web.example.com' }));
  const kc = new KubeConfig();
  kc.loadFromString(kube.kubeconfig());
  const log = memoryLogger('debug');
  const watch = new ServiceWatch({ kubeConfig: kc, logger: log.logger, backoff: { base: 10, cap: 50 } });
  t.teardown(() => watch.stop());
  const changed = once(watch, 'change');
  await watch.start();
  await changed;
  const outage = async () => {
    // The API server ends the watch and fails the re-open once; the watch resumes from where it was.
    kube.failNext = { resource: 'services', status: 500, count: 1 };
    const seen = log.lines.length;
    kube.dropWatches();
    return log.waitFor(
      (l) => log.lines.indexOf(l) >= seen && String(l.msg).startsWith('Kubernetes watch failed'),
    );
  };
  t.match(await outage(), { level: 40, failures: 1 });
  t.match(await log.waitFor((l) => l.msg === 'Kubernetes watch working again'), { failures: 1 });
  t.match(
    await outage(),
    { level: 40, failures: 1 },
    'a later outage is a new one: warned, from the base delay',
  );
});

t.test('a Service whose annotations cannot be used is logged once, by every replica', async (t) => {
  const kube = await fakeKube(t);
  kube.upsertService(service('web', { 'burrow.dev/hostname': 'web.example.com' }));
  kube.upsertService(
    service('bad', { 'burrow.dev/hostname': 'bad.example.com', 'burrow.dev/protocol': 'htp' }),
  );
  const kc = new KubeConfig();
  kc.loadFromString(kube.kubeconfig());
  const log = memoryLogger();
  const watch = new ServiceWatch({ kubeConfig: kc, logger: log.logger });
  t.teardown(() => watch.stop());
  let changed = once(watch, 'change');
  await watch.start();
  await changed;
  const warnings = () =>
    log.lines.filter((l) => l.level === 40 && l['service'] === 'default/bad').map((l) => l['error']);
  t.same(warnings(), ['burrow.dev/protocol: "htp" is not one of http, https, h2c, tls-passthrough']);
  t.same(
    watch.routes().map((r) => r.id),
    ['k8s:default/web'],
    'the other Service is served',
  );

  // Write-back edits the Service (same verdict): nothing new to say.
  changed = once(watch, 'change');
  const bad = kube.getService('default', 'bad')!;
  kube.upsertService({
    ...bad,
    metadata: { ...bad.metadata, annotations: { ...bad.metadata['annotations'], 'burrow.dev/error': 'x' } },
  });
  await changed;
  t.equal(warnings().length, 1, 'not repeated for the same error');

  // Another mistake is another line.
  changed = once(watch, 'change');
  kube.upsertService(service('bad', { 'burrow.dev/hostname': 'bad.example.com', 'burrow.dev/port': 'grpc' }));
  await changed;
  t.equal(warnings().length, 2);
  t.match(warnings()[1], /no TCP port "grpc"/);
});

/**
 * An API server that accepts connections and never answers; `onConnection`
 * may cut them. `nth(n)` resolves when the n-th connection arrives.
 */
async function silentApiServer(t: Test, onConnection: (socket: Socket, n: number) => void) {
  const sockets = new Set<Socket>();
  const waiting = new Map<number, () => void>();
  let count = 0;
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    onConnection(socket, ++count);
    waiting.get(count)?.();
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => {
    for (const s of sockets) s.destroy();
    server.close();
  });
  const kc = new KubeConfig();
  kc.loadFromOptions({
    clusters: [
      {
        name: 'silent',
        server: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
        skipTLSVerify: true,
      },
    ],
    users: [{ name: 'u', token: 'x' }],
    contexts: [{ name: 'c', cluster: 'silent', user: 'u' }],
    currentContext: 'c',
  });
  return {
    kc,
    attempts: () => count,
    nth: (n: number) => new Promise<void>((resolve) => waiting.set(n, resolve)),
  };
}

t.test('an API server that answers nothing is not reported as working again between attempts', async (t) => {
  // Every connection hangs, then is cut: each attempt takes longer than the backoff cap to fail.
  const { kc, nth } = await silentApiServer(t, (socket) => setTimeout(() => socket.destroy(), 120));
  const fifth = nth(5);
  const log = memoryLogger('debug');
  const watch = new ServiceWatch({ kubeConfig: kc, logger: log.logger, backoff: { base: 10, cap: 40 } });
  t.teardown(() => watch.stop());
  await watch.start();
  await fifth;
  t.same(
    log.lines.filter((l) => String(l.msg).startsWith('Kubernetes watch')).map((l) => [l.msg, l['failures']]),
    [
      ['Kubernetes watch failed; restarting', 1],
      ['Kubernetes watch failed again', 2],
      ['Kubernetes watch failed again', 3],
      ['Kubernetes watch failed again', 4],
    ],
    'one outage: one warning, no "working again" while nothing answers, the backoff growing',
  );
});

t.test(
  'a retry that hangs after a failure is restarted, not waited on for ever',
  { timeout: 20_000 },
  async (t) => {
    // The first connection is refused outright; the ones after it are accepted and never answered
    // (an API server that froze, a load balancer with no live backend).
    const { kc, nth, attempts } = await silentApiServer(t, (socket, n) => n === 1 && socket.destroy());
    const third = nth(3);
    const watch = new ServiceWatch({
      kubeConfig: kc,
      logger: testLogger('kube'),
      watchIdleTimeout: 200,
      backoff: { base: 10, cap: 40 },
    });
    t.teardown(() => watch.stop());
    await watch.start();
    await third;
    t.equal(attempts(), 3, 'the hung retry was given up and tried again');
  },
);

t.test('a watch the API server keeps failing with an ERROR event backs off and says so', async (t) => {
  const kube = await fakeKube(t);
  kube.upsertService(service('web', { 'burrow.dev/hostname': 'web.example.com' }));
  const log = memoryLogger('debug');
  const kc = new KubeConfig();
  kc.loadFromString(kube.kubeconfig());
  const watch = new ServiceWatch({ kubeConfig: kc, logger: log.logger, backoff: { base: 50, cap: 1_000 } });
  t.teardown(() => watch.stop());
  await watch.start();
  // Each watch opened from now on meets an internal error at once.
  kube.watchError = { code: 500, reason: 'InternalError', message: 'etcdserver: request timed out' };
  let watches = 0;
  const outcome = await new Promise<string>((resolve) => {
    watch.once('restart', () => resolve('restarted with backoff'));
    kube.on('watch', () => {
      if (++watches === 20) resolve('20 watches opened back to back');
    });
    kube.dropWatches();
  });
  t.equal(outcome, 'restarted with backoff');
  t.match(
    log.lines.find((l) => l.msg === 'Kubernetes watch failed; restarting'),
    {
      level: 40,
      reason: /etcdserver: request timed out/,
    },
  );

  // Once the API server recovers, changes arrive again.
  kube.watchError = undefined;
  const changed = once(watch, 'change');
  kube.upsertService(service('api', { 'burrow.dev/hostname': 'api.example.com' }));
  await changed;
  t.ok(watch.routes().some((r) => r.id === 'k8s:default/api'));
});

t.test('a watch refused for a resourceVersion the API server has not reached relists', async (t) => {
  const kube = await fakeKube(t);
  const web = service('web', { 'burrow.dev/hostname': 'web.example.com' });
  kube.upsertService(web);
  kube.upsertService(service('api', { 'burrow.dev/hostname': 'api.example.com' }));
  const watch = await startWatch(t, kube, { backoff: { base: 10, cap: 100 } });
  t.same(
    watch
      .routes()
      .map((r) => r.id)
      .sort(),
    ['k8s:default/api', 'k8s:default/web'],
  );

  // etcd restored from a backup that predates api: resuming from where the watch was can only
  // be answered "too large"; a fresh list shows what the cluster holds now.
  kube.restore(50, [web]);
  const changed = once(watch, 'change');
  kube.dropWatches();
  await changed;
  t.same(
    watch.routes().map((r) => r.id),
    ['k8s:default/web'],
    'the Service the restored cluster no longer has is gone',
  );
});

t.test('an ERROR event saying the resourceVersion is too large relists as well', async (t) => {
  const kube = await fakeKube(t);
  const web = service('web', { 'burrow.dev/hostname': 'web.example.com' });
  kube.upsertService(web);
  kube.upsertService(service('api', { 'burrow.dev/hostname': 'api.example.com' }));
  const watch = await startWatch(t, kube, { backoff: { base: 10, cap: 100 } });
  // A server behind a load balancer that has not caught up: the watch opens, then the error comes
  // as an event. Only a fresh list shows that api is gone (the restore sends no event).
  kube.restore(kube.resourceVersion, [web]);
  kube.watchError = {
    code: 504,
    reason: 'Timeout',
    message: 'Too large resource version: 103, current: 102',
  };
  const changed = once(watch, 'change');
  kube.dropWatches();
  await changed;
  kube.watchError = undefined;
  t.same(
    watch.routes().map((r) => r.id),
    ['k8s:default/web'],
  );
});

t.test('a first list the API server never answers is given up and tried again', async (t) => {
  const kube = await fakeKube(t);
  kube.upsertService(service('web', { 'burrow.dev/hostname': 'web.example.com' }));
  kube.hangNext = { resource: 'services', count: 1 };
  const restarted = once(kube, 'hung').then(() => 0);
  const { watch, log } = loggedWatch(t, kube, { requestTimeout: 200, backoff: { base: 10, cap: 40 } });
  await watch.start();
  await restarted;
  while (!watch.synced) await once(watch, 'change');
  t.same(
    watch.routes().map((r) => r.id),
    ['k8s:default/web'],
    'listed on the second try',
  );
  t.match(
    log.lines.find((l) => l.msg === 'Kubernetes watch failed; restarting'),
    { reason: /no answer from the API server within 200 ms/ },
    'the failure says what happened',
  );
});

t.test('a watch whose response head never comes is given up and opened again', async (t) => {
  const kube = await fakeKube(t);
  kube.hangNext = { resource: 'services', count: 1, watch: true };
  const hung = once(kube, 'hung');
  const hungClosed = once(kube, 'hungClosed');
  const watch = await startWatch(t, kube, { requestTimeout: 200, backoff: { base: 10, cap: 40 } });
  // start() returns once the first watch is given up (it waits for the watch's response head).
  await hung;
  t.equal(watch.restarts, 1, 'given up and restarted');
  // The watch after it is answered: changes arrive again (no idle timer runs this soon).
  await expectRouteArrives(
    t,
    kube,
    watch,
    'later',
    'later.example.com',
    'a change after the hung watch arrives',
  );
  await hungClosed; // the hung request was given up, not left behind
});

t.test('a watched object that is not a readable Service is logged and skipped, never fatal', async (t) => {
  const kube = await fakeKube(t);
  const { watch, log } = loggedWatch(t, kube, { backoff: { base: 10, cap: 40 } });
  await watch.start();
  const malformed = [
    { type: 'MODIFIED', object: { kind: 'Service', apiVersion: 'v1' } },
    {
      type: 'ADDED',
      object: { metadata: { name: 'x', namespace: 'default', annotations: { 'burrow.dev/hostname': 5 } } },
    },
    { type: 'ADDED', object: { metadata: { name: 'y', namespace: 'default' }, spec: { ports: 'http' } } },
    { type: 'DELETED', object: null },
    { type: 'ERROR', object: null },
  ];
  for (const event of malformed) kube.sendRawWatchEvent(event);
  // The watch goes on: a well-formed change after them arrives.
  await expectRouteArrives(t, kube, watch, 'after', 'after.example.com', 'a change after them arrives');
  t.same(
    log.lines
      .filter((l) => l.msg === 'Kubernetes API sent a Service object the agent cannot read; ignored')
      .map((l) => l['error']),
    [
      'no metadata',
      'metadata.annotations is not a map of strings',
      'spec.ports is not a list of ports',
      'not an object',
    ],
  );
  t.notOk(
    watch.routes().some((r) => r.id === 'k8s:default/x' || r.id === 'k8s:default/y'),
    'no route from them',
  );
});

for (const how of [
  'answered 410 each time, right after each relist',
  'ended at once with no event',
] as const) {
  t.test(`watches ${how}: a failure with backoff, not a loop of lists and watches`, async (t) => {
    const kube = await fakeKube(t);
    kube.upsertService(service('web', { 'burrow.dev/hostname': 'web.example.com' }));
    // A watch that stays up for `cap` counts as working, and its failures start over: the cap is
    // far above the time between two failures here, however loaded the machine.
    const { watch, log } = loggedWatch(t, kube, { backoff: { base: 10, cap: 5_000 } });
    await watch.start();
    const restarted = once(watch, 'restart');
    if (how === 'ended at once with no event') kube.watchEndsAtOnce = true;
    else kube.watchError = { code: 410, reason: 'Expired', message: 'too old resource version' };
    kube.dropWatches();
    const [reason] = await restarted;
    t.match(reason, /the API server ended 2 watches in a row at once, with no event/);
    t.match(
      log.lines.find((l) => l.msg === 'Kubernetes watch failed; restarting'),
      { reason },
    );
    // It goes on failing: the backoff grows (a list that works in between does not reset it).
    await once(watch, 'restart');
    t.same(
      log.lines
        .filter((l) => String(l.msg).startsWith('Kubernetes watch failed'))
        .map((l) => l['failures'])
        .slice(0, 2),
      [1, 2],
    );
    // Once the API server behaves, the watch carries changes again.
    kube.watchEndsAtOnce = false;
    kube.watchError = undefined;
    await expectRouteArrives(t, kube, watch, 'later', 'later.example.com', 'changes arrive once it behaves');
  });
}

t.test('a namespace the agent may no longer read has its routes withdrawn until it may again', async (t) => {
  const kube = await fakeKube(t);
  const inNamespace = (namespace: string, name: string, hostname: string) => {
    const svc = service(name, { 'burrow.dev/hostname': hostname });
    return { ...svc, metadata: { ...svc.metadata, namespace } };
  };
  kube.upsertService(inNamespace('a', 'web', 'a.example.com'));
  kube.upsertService(inNamespace('b', 'web', 'b.example.com'));
  const { watch, log } = loggedWatch(t, kube, { namespaces: ['a', 'b'], backoff: { base: 10, cap: 20 } });
  await watch.start();
  const ids = () => watch.routes().map((r) => r.id);
  const until = async (ok: () => boolean) => {
    while (!ok()) await once(watch, 'change');
  };
  t.same(ids(), ['k8s:a/web', 'k8s:b/web']);

  // Access to b is revoked: its watch comes back 403, and b/web is deleted meanwhile.
  kube.forbidden.add('b');
  kube.dropWatches();
  kube.deleteService('b', 'web');
  await until(() => !ids().includes('k8s:b/web'));
  t.same(ids(), ['k8s:a/web'], "b's route is withdrawn, a's kept");
  t.match(
    log.lines.find((l) => String(l.msg).startsWith('Kubernetes refuses the agent access')),
    { level: 40, namespace: 'b', services: 1 },
  );

  // A failure that is not a refusal (the API server down for a moment) withdraws nothing.
  kube.failNext = { resource: 'services', status: 503, count: 2 };
  kube.dropWatches();
  await log.waitFor((l) => l.msg === 'Kubernetes watch failed; restarting' && l['namespace'] === 'a');
  t.same(ids(), ['k8s:a/web']);

  // Access is back: b's Services are what the API server has now (b/web is gone; b/new is there).
  kube.upsertService(inNamespace('b', 'new', 'b2.example.com'));
  kube.forbidden.delete('b');
  await until(() => ids().includes('k8s:b/new'));
  t.same(ids(), ['k8s:a/web', 'k8s:b/new']);
});
