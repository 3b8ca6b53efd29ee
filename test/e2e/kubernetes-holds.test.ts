// A hostname two Services ask for stays with the Service that held it, on
// every replica: the one running, one that starts later, and after a rolling
// restart, whatever a tenant writes on their own Service. Fake API server,
// real client-node, relay, agents and backends.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { startAgent, startKubernetes } from '@burrow/agent';
import { KubeConfig } from '@kubernetes/client-node';
import t from 'tap';
import { until } from '../helpers/deferred.js';
import { type FakeKube, fakeKube } from '../helpers/fake-kube.js';
import { get, testServer } from '../helpers/http.js';
import { type Teardownable, testLogger, testRelay, tokenFor, tunnelUrl } from '../helpers/relay.js';

const HOLDS = 'burrow.dev/holds';

function service(
  ns: string,
  name: string,
  ip: string,
  port: number,
  hostnames: string,
  created: string,
  annotations: Record<string, string> = {},
) {
  return {
    metadata: {
      name,
      namespace: ns,
      creationTimestamp: created,
      annotations: { ...annotations, 'burrow.dev/hostname': hostnames },
    },
    spec: { type: 'ClusterIP', clusterIP: ip, ports: [{ name: 'http', port, protocol: 'TCP' }] },
  };
}

/** One agent replica in Kubernetes mode, writing status back (no Lease: every replica writes). */
async function replica(
  t: Teardownable,
  kube: FakeKube,
  relayUrl: string,
  token: string,
  namespaces?: string[],
  holdsKey?: string,
  holdGrace?: number,
) {
  const kc = new KubeConfig();
  kc.loadFromString(kube.kubeconfig());
  const k = await startKubernetes({
    kubeConfig: kc,
    logger: testLogger('kube'),
    lease: false,
    token,
    ...(holdsKey ? { holdsKey } : {}),
    ...(holdGrace !== undefined ? { holdGrace } : {}),
    ...(namespaces ? { namespaces, backoff: { base: 20, cap: 200 } } : {}),
  });
  const agent = startAgent({
    relayUrl,
    token,
    routes: k.source,
    connections: 1,
    logger: testLogger('agent'),
  });
  let closed = false;
  const stop = async () => {
    if (closed) return;
    closed = true;
    await agent.close();
    await k.stop();
  };
  t.teardown(stop);
  const sync = k.attach(agent);
  await agent.ready();
  return { agent, k, sync, stop };
}

/** A relay, a fake API server and a token for *.example.com; `holdsOf` reads a Service's record. */
async function cluster(t: Teardownable) {
  const relay = await testRelay(t);
  const kube = await fakeKube(t);
  const token = await tokenFor('cluster-1', ['*.example.com']);
  const holdsOf = (ns: string, name: string) =>
    kube.getService(ns, name)?.metadata['annotations']?.[HOLDS] ?? '';
  return { relay, kube, token, relayUrl: tunnelUrl(relay), port: relay.httpAddress.port, holdsOf };
}

t.test('a contested hostname stays with its holder on every replica', async (t) => {
  const { kube, token, relayUrl, port } = await cluster(t);
  // Each backend holds its request until two have arrived, so that two requests at once are in
  // flight together and the relay spreads them over both replicas' connections.
  const waiting: ServerResponse[] = [];
  const hits: string[] = [];
  const backend = (who: string) => (_req: IncomingMessage, res: ServerResponse) => {
    hits.push(who);
    waiting.push(res);
    if (waiting.length === 2) for (const r of waiting.splice(0)) r.end(who);
  };
  const prod = await testServer(t, backend('prod/shop'), '127.0.0.2');
  const dev = await testServer(t, backend('dev/old'), '127.0.0.3');
  /** Two requests at once; the backends that answered them. */
  const twoAtOnce = async () => {
    hits.length = 0;
    const replies = await Promise.all([get(port, 'shop.example.com'), get(port, 'shop.example.com')]);
    t.same(
      replies.map((r) => r.status),
      [200, 200],
    );
    return new Set(hits);
  };

  // dev/old is the older Service; prod/shop, created later, has shop.example.com.
  kube.upsertService(service('dev', 'old', '127.0.0.3', dev.port, 'old.example.com', '2025-01-01T00:00:00Z'));
  kube.upsertService(
    service('prod', 'shop', '127.0.0.2', prod.port, 'shop.example.com', '2026-01-01T00:00:00Z'),
  );
  const a = await replica(t, kube, relayUrl, token);
  await a.sync.schedule();
  const record = kube.getService('prod', 'shop')?.metadata['annotations']?.[HOLDS];
  t.match(record, /^shop\.example\.com;\d+;[\w-]{43}$/, 'the holder of shop.example.com has its record');

  // A tenant in dev adds the name to their older Service, and copies prod's record onto it.
  const skipped = new Promise<void>((resolve) => a.agent.once('routes', () => resolve()));
  kube.upsertService(
    service('dev', 'old', '127.0.0.3', dev.port, 'old.example.com,shop.example.com', '2025-01-01T00:00:00Z', {
      [HOLDS]: record!,
    }),
  );
  await skipped;
  t.match(
    a.agent.skippedRoutes().get('k8s:dev/old'),
    /already in route "k8s:prod\/shop"/,
    'the running replica refuses dev/old',
  );

  // A second replica starts: it has seen nothing, and the older Service asks for the name.
  const b = await replica(t, kube, relayUrl, token);
  t.same([...b.agent.skippedRoutes().keys()], ['k8s:dev/old'], 'the new replica refuses dev/old too');
  t.same(await twoAtOnce(), new Set(['prod/shop']), 'both replicas send shop.example.com to prod/shop');

  // A rolling restart: the first replica goes, a third comes; only replicas that never saw prod
  // hold the name are left.
  await a.stop();
  const c = await replica(t, kube, relayUrl, token);
  t.same([...c.agent.skippedRoutes().keys()], ['k8s:dev/old'], 'the replica after the restart agrees');
  t.same(await twoAtOnce(), new Set(['prod/shop']), 'shop.example.com still reaches prod/shop only');
  t.notMatch(
    kube.getService('prod', 'shop')?.metadata['annotations']?.['burrow.dev/error'] ?? '',
    /./,
    'prod/shop shows no error',
  );
});

t.test('a record a tenant kept and puts back does not take the name from its new holder', async (t) => {
  const { kube, token, relayUrl, port, holdsOf } = await cluster(t);
  const dev = await testServer(t, (_req, res) => res.end('dev/old'), '127.0.0.3');
  const prod = await testServer(t, (_req, res) => res.end('prod/shop'), '127.0.0.2');
  const devOld = (hostnames: string, holds?: string) =>
    service(
      'dev',
      'old',
      '127.0.0.3',
      dev.port,
      hostnames,
      '2025-01-01T00:00:00Z',
      holds ? { [HOLDS]: holds } : {},
    );
  const prodShop = (hostnames: string, holds: string) =>
    service('prod', 'shop', '127.0.0.2', prod.port, hostnames, '2026-01-01T00:00:00Z', { [HOLDS]: holds });

  // The older Service, dev/old, holds shop.example.com first; its tenant keeps the record.
  kube.upsertService(devOld('old.example.com,shop.example.com'));
  kube.upsertService(prodShop('prod.example.com', ''));
  const a = await replica(t, kube, relayUrl, token);
  await a.sync.schedule();
  const kept = holdsOf('dev', 'old');
  t.match(kept, /^old\.example\.com,shop\.example\.com;\d+;/, 'dev/old holds shop.example.com');

  // dev/old lets the name go; prod/shop takes it, after the kept record's time.
  kube.upsertService(devOld('old.example.com', kept));
  await until(
    async () => /^old\.example\.com;/.test(holdsOf('dev', 'old')),
    'dev/old holds old.example.com only',
  );
  const keptSince = Number(kept.split(';')[1]);
  await until(async () => Date.now() > keptSince, 'the clock is past the kept record');
  kube.upsertService(prodShop('prod.example.com,shop.example.com', holdsOf('prod', 'shop')));
  await until(
    async () => /shop\.example\.com;/.test(holdsOf('prod', 'shop')),
    'prod/shop holds shop.example.com',
  );
  t.equal((await get(port, 'shop.example.com')).body.toString(), 'prod/shop');

  // With no replica running, dev's tenant asks for the name again and puts the kept record back.
  await a.stop();
  kube.upsertService(devOld('old.example.com,shop.example.com', kept));
  const b = await replica(t, kube, relayUrl, token);
  t.same([...b.agent.skippedRoutes().keys()], ['k8s:dev/old'], 'the replica that starts refuses dev/old');
  t.equal(
    (await get(port, 'shop.example.com')).body.toString(),
    'prod/shop',
    'the name still reaches prod/shop',
  );
  await b.sync.schedule();
  t.equal(holdsOf('dev', 'old'), '', "the writer clears dev/old's stale record");
});

t.test(
  'a record in a namespace listed late takes the name from what a replica gave away meanwhile',
  async (t) => {
    const { kube, token, relayUrl, port, holdsOf } = await cluster(t);
    const shop = await testServer(t, (_req, res) => res.end('b/shop'), '127.0.0.2');
    const dev = await testServer(t, (_req, res) => res.end('a/dev'), '127.0.0.3');

    // b/shop holds shop.example.com, with its record.
    kube.upsertService(
      service('b', 'shop', '127.0.0.2', shop.port, 'shop.example.com', '2026-01-01T00:00:00Z'),
    );
    kube.upsertService(service('a', 'dev', '127.0.0.3', dev.port, 'dev.example.com', '2025-01-01T00:00:00Z'));
    const first = await replica(t, kube, relayUrl, token, ['a', 'b']);
    await first.sync.schedule();
    t.match(holdsOf('b', 'shop'), /^shop\.example\.com;/, 'b/shop has its record');
    await first.stop();

    // The older a/dev asks for the name too; a replica starts while b cannot be listed.
    kube.upsertService(
      service('a', 'dev', '127.0.0.3', dev.port, 'dev.example.com,shop.example.com', '2025-01-01T00:00:00Z'),
    );
    kube.forbidden.add('b');
    const r = await replica(t, kube, relayUrl, token, ['a', 'b']);
    t.equal(
      (await get(port, 'shop.example.com')).body.toString(),
      'a/dev',
      'knowing only a, it serves a/dev',
    );

    // b lists: b/shop's record says it holds the name, as every other replica reads it.
    kube.forbidden.delete('b');
    await until(async () => r.k.synced, 'synced once b lists');
    await until(
      async () => (await get(port, 'shop.example.com')).body.toString() === 'b/shop',
      'shop.example.com goes back to b/shop',
    );
    t.match(
      r.agent.skippedRoutes().get('k8s:a/dev') ?? '',
      /already in route "k8s:b\/shop"/,
      'a/dev is refused',
    );
    await r.sync.schedule();
    t.match(holdsOf('b', 'shop'), /^shop\.example\.com;/, 'b/shop keeps its record');
    t.equal(holdsOf('a', 'dev'), '', 'a/dev gets none');
  },
);

t.test('with a holds key, a contested name stays with its holder when the token is rotated', async (t) => {
  const { kube, token, relayUrl, port, holdsOf } = await cluster(t);
  const prod = await testServer(t, (_req, res) => res.end('prod/shop'), '127.0.0.2');
  const dev = await testServer(t, (_req, res) => res.end('dev/old'), '127.0.0.3');
  const holdsKey = 'f3a1c9e07b5d4a2e8c6b0d1f9e7a5c3b1d0f2e4a6c8b0d2e';
  const devOld = (hostnames: string) =>
    service('dev', 'old', '127.0.0.3', dev.port, hostnames, '2025-01-01T00:00:00Z');
  const shopServedBy = async (r: { agent: { skippedRoutes(): ReadonlyMap<string, string> } }) => {
    t.same([...r.agent.skippedRoutes().keys()], ['k8s:dev/old'], 'dev/old is refused');
    return (await get(port, 'shop.example.com')).body.toString();
  };
  // prod/shop, the newer Service, holds shop.example.com; then dev/old asks for it too.
  kube.upsertService(devOld('old.example.com'));
  kube.upsertService(
    service('prod', 'shop', '127.0.0.2', prod.port, 'shop.example.com', '2026-01-01T00:00:00Z'),
  );
  // An installation from before holds keys: its record is made with the token's key.
  const a = await replica(t, kube, relayUrl, token);
  await a.sync.schedule();
  const byToken = holdsOf('prod', 'shop');
  t.match(byToken, /^shop\.example\.com;\d+;/, 'prod/shop has its record');
  const skipped = new Promise<void>((resolve) => a.agent.once('routes', () => resolve()));
  kube.upsertService(devOld('old.example.com,shop.example.com'));
  await skipped;
  t.equal(await shopServedBy(a), 'prod/shop');
  await a.stop();

  // The agent is given a holds key: the record made with the token's key still holds the name,
  // and is made again with the holds key, from the same time.
  const b = await replica(t, kube, relayUrl, token, undefined, holdsKey);
  t.equal(await shopServedBy(b), 'prod/shop', 'after a holds key is added');
  await b.sync.schedule();
  const byHoldsKey = holdsOf('prod', 'shop');
  t.not(byHoldsKey, byToken, 'the record is made again');
  t.equal(byHoldsKey.split(';')[1], byToken.split(';')[1], 'with the time it had');
  await b.stop();

  // The token is rotated (the same subject, a new token): the name stays where it was.
  const rotated = await tokenFor('cluster-1', ['*.example.com']);
  t.not(rotated, token);
  const c = await replica(t, kube, relayUrl, rotated, undefined, holdsKey);
  t.equal(await shopServedBy(c), 'prod/shop', 'after the token is rotated');
  await c.sync.schedule();
  t.equal(holdsOf('prod', 'shop'), byHoldsKey, 'and its record is left as it is');
  t.equal(holdsOf('dev', 'old'), '', 'dev/old gets none');
});

/** prod/shop (newer) holds shop.example.com with its record; dev/old (older) asks for it too and is refused. */
async function contested(t: Teardownable, holdGrace?: number, namespaces?: string[]) {
  const c = await cluster(t);
  const prod = await testServer(t, (_req, res) => res.end('prod/shop'), '127.0.0.2');
  const dev = await testServer(t, (_req, res) => res.end('dev/old'), '127.0.0.3');
  const prodShop = (extra: Record<string, string> = {}, ports = [{ name: 'web', port: prod.port }]) => {
    const svc = service('prod', 'shop', '127.0.0.2', prod.port, 'shop.example.com', '2026-01-01T00:00:00Z', {
      [HOLDS]: c.holdsOf('prod', 'shop'),
      ...extra,
    });
    return { ...svc, spec: { ...svc.spec, ports: ports.map((p) => ({ ...p, protocol: 'TCP' })) } };
  };
  c.kube.upsertService(prodShop());
  const a = await replica(t, c.kube, c.relayUrl, c.token, namespaces, undefined, holdGrace);
  await a.sync.schedule();
  const record = c.holdsOf('prod', 'shop');
  const skipped = new Promise<void>((resolve) => a.agent.once('routes', () => resolve()));
  c.kube.upsertService(
    service('dev', 'old', '127.0.0.3', dev.port, 'shop.example.com', '2025-01-01T00:00:00Z'),
  );
  await skipped;
  await a.sync.schedule();
  return { ...c, a, prod, prodShop, record };
}

t.test(
  'a holder edited into an invalid route keeps its name reserved, and has it back once fixed',
  async (t) => {
    const { kube, relayUrl, token, port, holdsOf, a, prod, prodShop, record } = await contested(t);
    t.match(record, /^shop\.example\.com;\d+;/, 'prod/shop holds shop.example.com');
    t.equal((await get(port, 'shop.example.com')).body.toString(), 'prod/shop');

    // A second port, and the first is named "web", not "http": prod/shop's route is invalid.
    const webAndMetrics = [
      { name: 'web', port: prod.port },
      { name: 'metrics', port: 9090 },
    ];
    kube.upsertService(prodShop({}, webAndMetrics));
    await until(
      async () =>
        /none is named "http"/.test(
          kube.getService('prod', 'shop')?.metadata['annotations']?.['burrow.dev/error'] ?? '',
        ),
      'prod/shop shows why its route is invalid',
    );
    await a.sync.schedule();
    t.match(
      a.agent.skippedRoutes().get('k8s:dev/old') ?? '',
      /already in route "k8s:prod\/shop"/,
      'dev/old is still refused',
    );
    t.equal(holdsOf('prod', 'shop'), record, 'prod/shop keeps its record meanwhile');
    t.equal(holdsOf('dev', 'old'), '', 'dev/old gets none');
    t.not(
      (await get(port, 'shop.example.com')).body.toString(),
      'dev/old',
      'the name does not reach dev/old',
    );

    // A replica that starts meanwhile reads the record and decides alike.
    const b = await replica(t, kube, relayUrl, token);
    t.same([...b.agent.skippedRoutes().keys()], ['k8s:dev/old'], 'a new replica refuses dev/old too');

    // prod fixes the edit: its name is its own again, held since the time it had.
    kube.upsertService(prodShop({ 'burrow.dev/port': 'web' }, webAndMetrics));
    await until(
      async () => (await get(port, 'shop.example.com')).body.toString() === 'prod/shop',
      'shop.example.com reaches prod/shop again',
    );
    await a.sync.schedule();
    t.equal(holdsOf('prod', 'shop'), record, 'with the record it had');
    t.notOk(kube.getService('prod', 'shop')?.metadata['annotations']?.['burrow.dev/error'], 'and no error');
    t.match(a.agent.skippedRoutes().get('k8s:dev/old') ?? '', /already in route/, 'dev/old stays refused');
  },
);

t.test('a holder left invalid past the hold grace gives its name up', async (t) => {
  const { kube, port, holdsOf, a, prod, prodShop } = await contested(t, 50);
  kube.upsertService(
    prodShop({}, [
      { name: 'web', port: prod.port },
      { name: 'metrics', port: 9090 },
    ]),
  );
  await until(
    async () => (await get(port, 'shop.example.com')).body.toString() === 'dev/old',
    'shop.example.com goes to dev/old once the grace is over',
  );
  await a.sync.schedule();
  t.match(holdsOf('dev', 'old'), /^shop\.example\.com;/, 'dev/old holds it now');
  t.equal(holdsOf('prod', 'shop'), '', "prod/shop's record is removed");
});

t.test('a holder whose namespace is refused for a while keeps its name reserved', async (t) => {
  const { kube, port, holdsOf, a, record } = await contested(t, undefined, ['prod', 'dev']);
  // The agent's access to prod is revoked: prod/shop's route is withdrawn.
  kube.forbidden.add('prod');
  kube.dropWatches();
  await until(
    async () => !a.k.source.routes().some((r) => r.id === 'k8s:prod/shop'),
    "prod/shop's route is withdrawn",
  );
  await a.sync.schedule();
  t.match(
    a.agent.skippedRoutes().get('k8s:dev/old') ?? '',
    /already in route "k8s:prod\/shop"/,
    'dev/old is still refused',
  );
  t.equal(holdsOf('dev', 'old'), '', 'dev/old gets no record');

  // Access is granted again: the name is prod/shop's again.
  kube.forbidden.delete('prod');
  await until(
    async () => (await get(port, 'shop.example.com')).body.toString() === 'prod/shop',
    'shop.example.com reaches prod/shop again',
  );
  t.equal(holdsOf('prod', 'shop'), record, 'prod/shop keeps its record');
  t.match(a.agent.skippedRoutes().get('k8s:dev/old') ?? '', /already in route/, 'dev/old stays refused');
});
