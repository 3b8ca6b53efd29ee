// Kubernetes end to end: a fake API server that speaks the real list/watch
// protocol, the real @kubernetes/client-node, a real relay and agent, and
// backends listening on the Services' "ClusterIPs" (127.0.0.x addresses).
import { X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import { readFile } from 'node:fs/promises';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import t from 'tap';
import { type FakeKubeRequest, fakeKube, kubeAgent, kubeService, untilKube } from '../helpers/fake-kube.js';
import { get, httpsGet, testServer } from '../helpers/http.js';
import { renderKustomization } from '../helpers/kustomize-lite.js';
import { ROOT } from '../helpers/proc.js';
import { testRelay, tunnelUrl } from '../helpers/relay.js';
import { testPki } from '../helpers/tls.js';

function service(
  name: string,
  clusterIP: string,
  port: number,
  annotations: Record<string, string>,
  namespace = 'default',
) {
  return kubeService(name, clusterIP, port, annotations, { namespace });
}

t.test('annotate, edit, break, delete: routes and write-back follow', async (t) => {
  const relay = await testRelay(t);
  const kube = await fakeKube(t);
  const web = await testServer(t, (_req, res) => res.end('web on 127.0.0.2'), '127.0.0.2');
  const api = await testServer(t, (_req, res) => res.end('api on 127.0.0.3'), '127.0.0.3');
  kube.upsertService(service('web', '127.0.0.2', web.port, { 'burrow.dev/hostname': 'web.example.com' }));
  kube.upsertService(service('api', '127.0.0.3', api.port, { 'burrow.dev/hostname': 'api.example.com' }));
  kube.upsertService(service('untouched', '127.0.0.4', 80, {}));
  const { agent } = await kubeAgent(t, kube, tunnelUrl(relay));
  const port = relay.httpAddress.port;

  t.test('annotated Services are reachable and show their URL', async (t) => {
    const url = await untilKube(
      kube,
      () => kube.getService('default', 'web')?.metadata.annotations?.['burrow.dev/url'],
    );
    t.equal(url, `http://web.example.com:${port}`);
    t.equal((await get(port, 'web.example.com')).body.toString(), 'web on 127.0.0.2');
    t.equal((await get(port, 'api.example.com')).body.toString(), 'api on 127.0.0.3');
    const exposed = await untilKube(kube, () =>
      kube.events().find((e) => e.reason === 'Exposed' && e.involvedObject.name === 'web'),
    );
    t.equal(exposed.type, 'Normal');
    t.match(exposed.message, /exposed at http:\/\/web\.example\.com/);
    t.notOk(
      kube.getService('default', 'untouched')?.metadata.annotations?.['burrow.dev/url'],
      'unannotated Services are left alone',
    );
    // Our merge-patches only ever touched the keys we own.
    const patches = kube.requests.filter((r) => r.method === 'PATCH' && r.path.includes('/services/'));
    t.ok(patches.length > 0);
    for (const p of patches) {
      t.equal(p.contentType, 'application/merge-patch+json');
      t.same(Object.keys(p.body as object), ['metadata']);
      for (const k of Object.keys((p.body as { metadata: { annotations: object } }).metadata.annotations)) {
        t.match(k, /^burrow\.dev\/(url|error)$/);
      }
    }
  });

  t.test('hostname edited: the old name 404s, the new one works', async (t) => {
    kube.upsertService(
      service('web', '127.0.0.2', web.port, {
        ...kube.getService('default', 'web')?.metadata.annotations,
        'burrow.dev/hostname': 'www.example.com',
      }),
    );
    await untilKube(
      kube,
      () =>
        kube.getService('default', 'web')?.metadata.annotations?.['burrow.dev/url'] ===
        `http://www.example.com:${port}`,
    );
    t.equal((await get(port, 'www.example.com')).body.toString(), 'web on 127.0.0.2');
    t.equal((await get(port, 'web.example.com')).status, 404);
  });

  t.test(
    'bad annotation values: Warning Event and burrow.dev/error, other Services unaffected',
    async (t) => {
      const cases: Array<[string, Record<string, string>, RegExp]> = [
        ['bad-host', { 'burrow.dev/hostname': 'Not A Host!' }, /burrow\.dev\/hostname/],
        [
          'bad-port',
          { 'burrow.dev/hostname': 'bp.example.com', 'burrow.dev/port': 'grpc' },
          /no TCP port "grpc"/,
        ],
        [
          'bad-proto',
          { 'burrow.dev/hostname': 'bpr.example.com', 'burrow.dev/protocol': 'htp' },
          /"htp" is not one of http, https, h2c, tls-passthrough/,
        ],
        ['not-mine', { 'burrow.dev/hostname': 'app.other.org' }, /not allowed by this agent's token/],
      ];
      for (const [name, ann] of cases) kube.upsertService(service(name, '127.0.0.9', 80, ann));
      kube.upsertService({
        metadata: {
          name: 'headless',
          namespace: 'default',
          annotations: { 'burrow.dev/hostname': 'h.example.com' },
        },
        spec: { clusterIP: 'None', ports: [{ port: 80 }] },
      });
      for (const [name, , pattern] of cases) {
        const error = await untilKube(
          kube,
          () => kube.getService('default', name)?.metadata.annotations?.['burrow.dev/error'],
        );
        t.match(error, pattern, `${name}: burrow.dev/error explains`);
        const ev = await untilKube(kube, () =>
          kube.events().find((e) => e.involvedObject.name === name && e.type === 'Warning'),
        );
        t.match(ev.message, pattern, `${name}: Warning Event`);
      }
      t.match(
        await untilKube(
          kube,
          () => kube.getService('default', 'headless')?.metadata.annotations?.['burrow.dev/error'],
        ),
        /headless/,
      );
      t.equal((await get(port, 'www.example.com')).status, 200, 'other Services keep working');
      t.equal((await get(port, 'api.example.com')).status, 200);
    },
  );

  t.test('fixing an annotation clears the error', async (t) => {
    kube.upsertService(
      service('bad-port', '127.0.0.3', api.port, {
        'burrow.dev/hostname': 'bp.example.com',
        'burrow.dev/port': 'http',
      }),
    );
    await untilKube(kube, () => {
      const a = kube.getService('default', 'bad-port')?.metadata.annotations;
      return a?.['burrow.dev/url'] && !a['burrow.dev/error'];
    });
    t.equal((await get(port, 'bp.example.com')).body.toString(), 'api on 127.0.0.3');
  });

  t.test('410 and a dropped watch: changes keep arriving', async (t) => {
    kube.expireWatches();
    kube.upsertService(service('late', '127.0.0.3', api.port, { 'burrow.dev/hostname': 'late.example.com' }));
    await untilKube(kube, () => kube.getService('default', 'late')?.metadata.annotations?.['burrow.dev/url']);
    kube.dropWatches();
    kube.upsertService(
      service('later', '127.0.0.3', api.port, { 'burrow.dev/hostname': 'later.example.com' }),
    );
    await untilKube(
      kube,
      () => kube.getService('default', 'later')?.metadata.annotations?.['burrow.dev/url'],
    );
    t.equal((await get(port, 'later.example.com')).status, 200);
  });

  t.test('deleted Service: its name is gone', async (t) => {
    // The relay learns through a new announcement on each connection; check after each answer.
    const withdrawn = new Promise<void>((resolve) => {
      const check = () => {
        if (relay.routes.list().some((r) => r.hostname === 'api.example.com')) return;
        agent.off('routes', check);
        resolve();
      };
      agent.on('routes', check);
    });
    kube.deleteService('default', 'api');
    await withdrawn;
    t.equal((await get(port, 'api.example.com')).status, 404);
  });
});

t.test('agent restart converges; two replicas write back once', async (t) => {
  const relay = await testRelay(t);
  const kube = await fakeKube(t);
  const app = await testServer(t, (_req, res) => res.end('app'), '127.0.0.5');
  kube.upsertService(service('app', '127.0.0.5', app.port, { 'burrow.dev/hostname': 'app.example.com' }));

  const first = await kubeAgent(t, kube, tunnelUrl(relay), { lease: true, identity: 'agent-a' });
  await untilKube(kube, () => kube.getService('default', 'app')?.metadata.annotations?.['burrow.dev/url']);
  const second = await kubeAgent(t, kube, tunnelUrl(relay), { lease: true, identity: 'agent-b' });
  t.equal((await get(relay.httpAddress.port, 'app.example.com')).body.toString(), 'app');

  const lease = await untilKube(kube, () =>
    kube.leases().find((l) => l.metadata.name === 'burrow-agent-writer'),
  );
  t.equal(lease.spec.holderIdentity, 'agent-a', 'the first replica holds the write-back lease');
  const exposedEvents = kube.events().filter((e) => e.reason === 'Exposed');
  t.equal(exposedEvents.length, 1, 'one Event, not one per replica');
  t.equal(exposedEvents[0]?.count, 1);

  // The writer goes away: the other replica takes the lease and keeps the Service right.
  await first.agent.close();
  await first.k.stop();
  const taken = await untilKube(kube, () => kube.leases().find((l) => l.spec.holderIdentity === 'agent-b'));
  t.ok(taken, 'the second replica took over the lease');
  kube.upsertService(
    service('app', '127.0.0.5', app.port, {
      ...kube.getService('default', 'app')?.metadata.annotations,
      'burrow.dev/hostname': 'app2.example.com',
    }),
  );
  await untilKube(kube, () =>
    kube.getService('default', 'app')?.metadata.annotations?.['burrow.dev/url']?.includes('app2.example.com'),
  );
  t.equal((await get(relay.httpAddress.port, 'app2.example.com')).body.toString(), 'app');
  void second;

  // Everything both replicas asked of the API server, the shipped RBAC grants: a verb the
  // code starts to need, or one the manifests stop granting, fails here.
  const granted = await grantedVerbs();
  const asked = new Set(kube.requests.map(verbOf));
  for (const verb of asked) t.ok(granted.has(verb), `RBAC grants ${verb}`);
  t.ok(
    asked.has('/services:watch') && asked.has('coordination.k8s.io/leases:update'),
    'the check saw real traffic',
  );
});

/** Kubernetes API verbs the agent's kustomize base grants, as GROUP/RESOURCE:VERB. */
async function grantedVerbs(): Promise<Set<string>> {
  const out = new Set<string>();
  for (const obj of await renderKustomization(join(ROOT, 'deploy', 'agent'))) {
    if (obj.kind !== 'ClusterRole' && obj.kind !== 'Role') continue;
    const rules = (obj as { rules?: Array<{ apiGroups?: string[]; resources?: string[]; verbs?: string[] }> })
      .rules;
    for (const r of rules ?? []) {
      for (const g of r.apiGroups ?? [])
        for (const res of r.resources ?? []) for (const v of r.verbs ?? []) out.add(`${g}/${res}:${v}`);
    }
  }
  return out;
}

/** The RBAC verb a request to the fake API server needs. */
function verbOf(r: FakeKubeRequest): string {
  const url = new URL(r.path, 'http://api');
  const m = /^\/(?:api\/v1|apis\/([^/]+)\/v1)(?:\/namespaces\/[^/]+)?\/([a-z]+)(\/[^/]+)?$/.exec(
    url.pathname,
  );
  const group = m?.[1] ?? '';
  const resource = m?.[2] ?? url.pathname;
  const named = Boolean(m?.[3]);
  const verb =
    r.method === 'GET'
      ? url.searchParams.get('watch') === 'true'
        ? 'watch'
        : named
          ? 'get'
          : 'list'
      : (({ POST: 'create', PUT: 'update', PATCH: 'patch', DELETE: 'delete' } as Record<string, string>)[
          r.method
        ] ?? r.method);
  return `${group}/${resource}:${verb}`;
}

t.test(
  'burrow.dev/protocol https and tls-passthrough: TLS to the backend, or passed through by SNI',
  async (t) => {
    const pki = await testPki(t);
    const httpsBackend = async (ip: string, names: string[], text: string) => {
      const pair = await pki.issue(names[0]!, names);
      const cert = await readFile(pair.certFile, 'utf8');
      const server = createHttpsServer({ cert, key: await readFile(pair.keyFile, 'utf8') }, (_req, res) =>
        res.end(text),
      );
      server.listen(0, ip);
      await once(server, 'listening');
      t.teardown(() => {
        server.closeAllConnections();
        server.close();
      });
      return { port: (server.address() as AddressInfo).port, cert };
    };
    // https: the backend's certificate names something else entirely (ClusterIPs never match).
    const secure = await httpsBackend('127.0.0.5', ['backend.internal'], 'tls backend');
    const pass = await httpsBackend('127.0.0.6', ['pass.example.com'], 'passed through');
    const relay = await testRelay(t, { tls: { host: '127.0.0.1', port: 0 }, httpsRedirect: false });
    const kube = await fakeKube(t);
    kube.upsertService(
      service('secure', '127.0.0.5', secure.port, {
        'burrow.dev/hostname': 'secure.example.com',
        'burrow.dev/protocol': 'https',
      }),
    );
    kube.upsertService(
      service('pass', '127.0.0.6', pass.port, {
        'burrow.dev/hostname': 'pass.example.com',
        'burrow.dev/protocol': 'tls-passthrough',
      }),
    );
    await kubeAgent(t, kube, tunnelUrl(relay));
    const tlsPort = relay.tlsAddress!.port;
    const url = await untilKube(
      kube,
      () => kube.getService('default', 'pass')?.metadata.annotations?.['burrow.dev/url'],
    );
    t.equal(url, `https://pass.example.com:${tlsPort}`, 'passthrough routes report an https:// URL');
    t.equal(
      (await get(relay.httpAddress.port, 'secure.example.com')).body.toString(),
      'tls backend',
      'https backend',
    );

    const reply = await httpsGet(tlsPort, 'pass.example.com', pki.caPem);
    t.equal(reply.body, 'passed through');
    t.equal(
      reply.fingerprint,
      new X509Certificate(pass.cert).fingerprint256,
      "the backend's own certificate",
    );
  },
);
