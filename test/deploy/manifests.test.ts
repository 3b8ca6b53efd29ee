// The deployment artefacts under deploy/: the agent's kustomize base renders
// to objects that the Kubernetes schemas accept and that keep the security and
// availability properties docs/install.md promises; the example Service uses
// the annotations the agent reads; the relay's sample config starts the real
// relay binary.
import { execFile } from 'node:child_process';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { promisify } from 'node:util';
import { RELAY_SERVE_OPTIONS } from '@burrow/relay';
import { generateSigningKeyPair, parseOptions } from '@burrow/shared';
import t from 'tap';
import { tempDir } from '../helpers/fs.js';
import { schemaErrors, unknownFields } from '../helpers/kube-schema.js';
import {
  type KubeObject,
  objectKey,
  parseYamlDocuments,
  renderKustomization,
} from '../helpers/kustomize-lite.js';
import { RELAY_CLI, ROOT, spawnLogged } from '../helpers/proc.js';

const DEPLOY = join(ROOT, 'deploy');
const AGENT_DIR = join(DEPLOY, 'agent');
const NAMESPACE = 'burrow-system';
const POD_LABELS = { 'app.kubernetes.io/name': 'burrow-agent' };

/* ---------------------------------------------------------------- helpers */

type Json = Record<string, unknown>;

async function yamlFilesUnder(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true, recursive: true });
  return entries
    .filter((e) => e.isFile() && /\.ya?ml$/.test(e.name))
    .map((e) => join(e.parentPath, e.name))
    .sort();
}

function find(objects: KubeObject[], kind: string, name = 'burrow-agent'): KubeObject {
  const obj = objects.find((o) => o.kind === kind && o.metadata.name === name);
  if (!obj) throw new Error(`no ${kind} ${name} in the rendered base`);
  return obj;
}

function selects(selector: { matchLabels?: Record<string, string> } | undefined, labels: object): boolean {
  const want = Object.entries(selector?.matchLabels ?? {});
  return want.length > 0 && want.every(([k, v]) => (labels as Record<string, string>)[k] === v);
}

interface Rule {
  apiGroups?: string[];
  resources?: string[];
  verbs?: string[];
  resourceNames?: string[];
  nonResourceURLs?: string[];
}

/** Every (group, resource, verb) a set of RBAC rules grants, as "group/resource:verb". */
function grants(rules: Rule[]): string[] {
  const out: string[] = [];
  for (const r of rules) {
    for (const g of r.apiGroups ?? []) {
      for (const res of r.resources ?? []) for (const v of r.verbs ?? []) out.push(`${g}/${res}:${v}`);
    }
  }
  return out.sort();
}

/* ------------------------------------------------------------------ tests */

const objects = await renderKustomization(AGENT_DIR);
const deployment = find(objects, 'Deployment');
const podSpec = (deployment['spec'] as Json)['template'] as { metadata: { labels: object }; spec: Json };
const containers = podSpec.spec['containers'] as Json[];
const agent = containers[0]!;

t.test('every YAML file under deploy/ parses, and means the same in YAML 1.1 and 1.2', async (t) => {
  const files = await yamlFilesUnder(DEPLOY);
  t.ok(files.length >= 14, `found ${files.length} YAML files`);
  for (const file of files) {
    const text = await readFile(file, 'utf8');
    // kubectl reads YAML 1.1; most editors and tools 1.2. A value they read
    // differently (0440, yes, 1:30) is a bug waiting for the other tool.
    const v11 = parseYamlDocuments(text, file, '1.1');
    const v12 = parseYamlDocuments(text, file, '1.2');
    t.ok(v11.length > 0, `${relative(ROOT, file)} has a document`);
    t.same(v11, v12, `${relative(ROOT, file)} reads the same in YAML 1.1 and 1.2`);
  }
});

t.test('the base renders the expected objects into burrow-system, labelled', async (t) => {
  t.same(objects.map(objectKey).sort(), [
    'ClusterRole//burrow-agent',
    'ClusterRoleBinding//burrow-agent',
    `ConfigMap/${NAMESPACE}/burrow-agent`,
    `Deployment/${NAMESPACE}/burrow-agent`,
    'Namespace//burrow-system',
    `NetworkPolicy/${NAMESPACE}/burrow-agent`,
    `PodDisruptionBudget/${NAMESPACE}/burrow-agent`,
    `Role/${NAMESPACE}/burrow-agent`,
    `RoleBinding/${NAMESPACE}/burrow-agent`,
    `ServiceAccount/${NAMESPACE}/burrow-agent`,
  ]);
  for (const obj of objects) {
    t.match(obj.metadata.labels, { ...POD_LABELS, 'app.kubernetes.io/part-of': 'burrow' }, objectKey(obj));
  }
  t.match(
    podSpec.metadata.labels,
    { ...POD_LABELS, 'app.kubernetes.io/part-of': 'burrow' },
    'pods are labelled',
  );
  t.equal(agent['image'], 'ghcr.io/burrow-dev/burrow-agent:0.1.0');
  const ns = find(objects, 'Namespace', NAMESPACE);
  t.equal(ns.metadata.labels?.['pod-security.kubernetes.io/enforce'], 'restricted');
});

t.test('every object validates against the Kubernetes schemas, with no unknown fields', async (t) => {
  const examples: KubeObject[] = [];
  for (const file of ['agent/secret.example.yaml', 'examples/service.yaml']) {
    const path = join(DEPLOY, file);
    for (const doc of parseYamlDocuments(await readFile(path, 'utf8'), path))
      examples.push(doc as KubeObject);
  }
  for (const obj of [...objects, ...examples]) {
    t.same(await schemaErrors(obj), [], `${objectKey(obj)} matches its schema`);
    t.same(unknownFields(obj), [], `${objectKey(obj)} has only fields the API defines`);
  }
});

t.test('the schema checks do catch mistakes', async (t) => {
  // The two checks above pass only if they can fail: a wrong type, a missing
  // required field and a misspelt key, on a copy of the real Deployment.
  const bad = structuredClone(deployment);
  (bad['spec'] as Json)['replicas'] = 'two';
  t.match(await schemaErrors(bad), ['/spec/replicas must be integer']);
  const noSelector = structuredClone(deployment);
  delete (noSelector['spec'] as Json)['selector'];
  t.match(await schemaErrors(noSelector), [/selector/]);
  const typo = structuredClone(deployment);
  const c = (((typo['spec'] as Json)['template'] as Json)['spec'] as { containers: Json[] }).containers[0]!;
  c['readinesProbe'] = c['readinessProbe'];
  t.same(unknownFields(typo), ['.spec.template.spec.containers[0].readinesProbe']);
});

t.test('the Deployment: two spread replicas, probes, drain time, hardened pods', async (t) => {
  const spec = deployment['spec'] as Json;
  t.equal(spec['replicas'], 2);
  t.ok(selects(spec['selector'] as never, podSpec.metadata.labels), 'selector matches the pod template');
  t.match(spec['strategy'], { type: 'RollingUpdate', rollingUpdate: { maxUnavailable: 0 } });

  const pod = podSpec.spec;
  t.equal(pod['serviceAccountName'], 'burrow-agent');
  t.equal(pod['automountServiceAccountToken'], true);
  t.ok((pod['terminationGracePeriodSeconds'] as number) > 30, 'grace period outlasts the 30 s drain');
  t.match(pod['topologySpreadConstraints'], [
    { topologyKey: 'kubernetes.io/hostname', labelSelector: { matchLabels: POD_LABELS } },
  ]);
  t.match(pod['affinity'], {
    podAntiAffinity: {
      preferredDuringSchedulingIgnoredDuringExecution: [
        {
          podAffinityTerm: {
            topologyKey: 'kubernetes.io/hostname',
            labelSelector: { matchLabels: POD_LABELS },
          },
        },
      ],
    },
  });
  t.match(pod['securityContext'], {
    runAsNonRoot: true,
    runAsUser: 65532,
    seccompProfile: { type: 'RuntimeDefault' },
  });
  t.equal(pod['hostNetwork'], undefined);

  t.equal(containers.length, 1);
  t.equal(podSpec.spec['initContainers'], undefined);
  const sc = agent['securityContext'] as Json;
  t.match(sc, {
    runAsNonRoot: true,
    runAsUser: 65532,
    readOnlyRootFilesystem: true,
    allowPrivilegeEscalation: false,
    capabilities: { drop: ['ALL'] },
    seccompProfile: { type: 'RuntimeDefault' },
  });
  t.notOk(sc['privileged'], 'not privileged');
  t.equal((sc['capabilities'] as Json)['add'], undefined, 'adds no capability');

  t.match(agent['livenessProbe'], { httpGet: { path: '/healthz', port: 'health' } });
  t.match(agent['readinessProbe'], { httpGet: { path: '/readyz', port: 'health' } });
  t.match(agent['ports'], [
    { name: 'health', containerPort: 8081 },
    { name: 'metrics', containerPort: 9091 },
  ]);
  t.match(agent['resources'], { requests: { cpu: String, memory: String }, limits: { memory: String } });
});

t.test(
  'the agent is configured from the ConfigMap and reads its token and holds key from Secrets',
  async (t) => {
    const env = new Map((agent['env'] as Json[]).map((e) => [e['name'] as string, e]));
    t.match(env.get('BURROW_KUBERNETES'), { value: 'true' });
    t.match(env.get('BURROW_RELAY_URL'), {
      valueFrom: { configMapKeyRef: { name: 'burrow-agent', key: 'relay-url' } },
    });
    t.match(env.get('BURROW_HEALTH_LISTEN'), { value: '0.0.0.0:8081' });
    t.match(env.get('BURROW_METRICS_LISTEN'), { value: '0.0.0.0:9091' });
    t.match(env.get('BURROW_TOKEN_FILE'), { value: '/var/run/burrow/token' });
    t.match(
      env.get('POD_NAME'),
      { valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } },
      'Lease identity is the pod name',
    );
    t.match(env.get('POD_NAMESPACE'), { valueFrom: { fieldRef: { fieldPath: 'metadata.namespace' } } });
    // Optional settings come from keys the ConfigMap may omit.
    for (const name of ['BURROW_NAMESPACES', 'BURROW_LABEL_SELECTOR', 'BURROW_LOG_LEVEL']) {
      t.match(
        env.get(name),
        { valueFrom: { configMapKeyRef: { name: 'burrow-agent', optional: true } } },
        name,
      );
    }

    const configMap = find(objects, 'ConfigMap');
    t.match((configMap['data'] as Json)['relay-url'], /^wss:\/\//);

    const mount = (agent['volumeMounts'] as Json[]).find((m) => m['mountPath'] === '/var/run/burrow');
    t.match(mount, { readOnly: true }, 'token volume is read-only');
    t.equal(mount?.['subPath'], undefined, 'no subPath, so a rotated token reaches the pod');
    const volume = (podSpec.spec['volumes'] as Json[]).find((v) => v['name'] === mount?.['name']);
    t.match(volume, {
      secret: { secretName: 'burrow-agent-token', items: [{ key: 'token', path: 'token' }] },
    });

    // The holds key: a Secret of its own, which a token rotation leaves alone.
    t.match(env.get('BURROW_HOLDS_KEY_FILE'), { value: '/var/run/burrow-holds/holds-key' });
    const holdsMount = (agent['volumeMounts'] as Json[]).find(
      (m) => m['mountPath'] === '/var/run/burrow-holds',
    );
    t.match(holdsMount, { readOnly: true });
    t.match(
      (podSpec.spec['volumes'] as Json[]).find((v) => v['name'] === holdsMount?.['name']),
      {
        secret: { secretName: 'burrow-agent-holds-key', items: [{ key: 'holds-key', path: 'holds-key' }] },
      },
    );

    const kustomization = await readFile(join(AGENT_DIR, 'kustomization.yaml'), 'utf8');
    t.notMatch(kustomization, /^\s*-\s*secret\.example\.yaml/m, 'the example Secret is not a resource');
    t.notOk(
      objects.some((o) => o.kind === 'Secret'),
      'the base ships no Secret',
    );
  },
);

t.test(
  'RBAC: services and events cluster-wide, the writer Lease in burrow-system, nothing more',
  async (t) => {
    const clusterRole = find(objects, 'ClusterRole');
    t.same(grants(clusterRole['rules'] as Rule[]), [
      '/events:create',
      '/events:patch',
      '/services:list',
      '/services:patch',
      '/services:watch',
    ]);
    for (const r of clusterRole['rules'] as Rule[]) {
      t.notOk(r.nonResourceURLs, 'no non-resource URLs');
      t.notOk(r.resourceNames, 'no name restrictions needed cluster-wide');
    }
    t.equal(clusterRole['aggregationRule'], undefined);

    const role = find(objects, 'Role');
    t.equal(role.metadata.namespace, NAMESPACE);
    t.same(grants(role['rules'] as Rule[]), [
      'coordination.k8s.io/leases:create',
      'coordination.k8s.io/leases:get',
      'coordination.k8s.io/leases:update',
    ]);
    for (const r of role['rules'] as Rule[]) {
      if (r.verbs?.includes('get') || r.verbs?.includes('update'))
        t.same(r.resourceNames, ['burrow-agent-writer']);
    }

    const subject = [{ kind: 'ServiceAccount', name: 'burrow-agent', namespace: NAMESPACE }];
    t.match(find(objects, 'ClusterRoleBinding'), { roleRef: { kind: 'ClusterRole', name: 'burrow-agent' } });
    t.same(find(objects, 'ClusterRoleBinding')['subjects'], subject);
    t.match(find(objects, 'RoleBinding'), { roleRef: { kind: 'Role', name: 'burrow-agent' } });
    t.same(find(objects, 'RoleBinding')['subjects'], subject);
  },
);

t.test('the PodDisruptionBudget keeps one agent up and selects the pods', async (t) => {
  const pdb = find(objects, 'PodDisruptionBudget');
  const spec = pdb['spec'] as Json;
  t.equal(spec['minAvailable'], 1);
  t.ok(selects(spec['selector'] as never, podSpec.metadata.labels), 'selector matches the pod template');
});

t.test(
  'the NetworkPolicy: ingress only to health and metrics, egress only where the agent goes',
  async (t) => {
    const spec = find(objects, 'NetworkPolicy')['spec'] as Json;
    t.ok(selects(spec['podSelector'] as never, podSpec.metadata.labels), 'applies to the agent pods');
    t.same(spec['policyTypes'], ['Ingress', 'Egress']);
    const ports = (rule: Json) =>
      ((rule['ports'] ?? []) as Array<{ protocol?: string; port?: number }>).map(
        (p) => `${p.protocol}/${p.port}`,
      );

    const ingress = spec['ingress'] as Json[];
    t.same(ingress.map(ports), [['TCP/8081', 'TCP/9091']]);

    const egress = spec['egress'] as Json[];
    t.same(egress.map(ports), [
      ['UDP/53', 'TCP/53'], // DNS
      ['TCP/443', 'TCP/8443'], // the relay
      [], // in-cluster Services, any port
      ['TCP/443', 'TCP/6443'], // the Kubernetes API
    ]);
    t.match(egress[0], {
      to: [{ namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'kube-system' } } }],
    });
    t.same(egress[2], { to: [{ namespaceSelector: {} }] }, 'the any-port rule reaches pods only');
  },
);

t.test('the example Service uses the annotations the agent reads', async (t) => {
  const path = join(DEPLOY, 'examples/service.yaml');
  const docs = parseYamlDocuments(await readFile(path, 'utf8'), path) as KubeObject[];
  const svc = docs.find((d) => d.kind === 'Service')!;
  const app = docs.find((d) => d.kind === 'Deployment')!;
  const ann = (svc.metadata['annotations'] ?? {}) as Record<string, string>;
  for (const key of Object.keys(ann)) t.match(key, /^burrow\.dev\/(hostname|port|protocol|allow-cidrs)$/);
  t.match(ann['burrow.dev/hostname'], /^[a-z0-9.-]+(,[a-z0-9.-]+)*$/);
  t.ok(['http', 'https', 'tls-passthrough'].includes(ann['burrow.dev/protocol'] ?? 'http'), 'protocol');
  const svcSpec = svc['spec'] as {
    type?: string;
    selector: object;
    ports: Array<{ name?: string; port: number }>;
  };
  t.ok(
    svcSpec.ports.some((p) => p.name === ann['burrow.dev/port'] || String(p.port) === ann['burrow.dev/port']),
    'burrow.dev/port names a port of the Service',
  );
  t.equal(svcSpec.type ?? 'ClusterIP', 'ClusterIP');
  const tpl = (app['spec'] as { template: { metadata: { labels: object } } }).template;
  t.ok(
    selects({ matchLabels: svcSpec.selector as Record<string, string> }, tpl.metadata.labels),
    'selects the app',
  );
});

t.test('kustomize-lite refuses what it does not implement', async (t) => {
  const dir = await tempDir(t, 'burrow-kustomize-');
  await writeFile(join(dir, 'cm.yaml'), 'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n');
  const cases: Array<[string, RegExp]> = [
    ['resources: [cm.yaml]\npatches: []\n', /"patches" is not supported/],
    ['resources: [cm.yaml]\nlabels:\n  - pairs: {a: b}\n    includeSelectors: true\n', /includeSelectors/],
    ['resources: [../elsewhere]\n', /only local files/],
  ];
  for (const [kustomization, error] of cases) {
    await writeFile(join(dir, 'kustomization.yaml'), kustomization);
    await t.rejects(renderKustomization(dir), error, kustomization.split('\n')[1] || kustomization);
  }
});

// Where a kubectl with kustomize is installed (CI's Debian packages none),
// the real renderer must agree with kustomize-lite on every object.
const kubectl = await promisify(execFile)('kubectl', ['kustomize', AGENT_DIR], { timeout: 60_000 }).then(
  (r) => ({ stdout: r.stdout }),
  (err: Error) => ({ skip: `no usable kubectl here: ${err.message.split('\n')[0]}` }),
);

t.test(
  'kustomize-lite renders what kubectl kustomize renders',
  { skip: 'skip' in kubectl && kubectl.skip },
  async (t) => {
    if (!('stdout' in kubectl)) return;
    const real = parseYamlDocuments(kubectl.stdout, 'kubectl kustomize') as KubeObject[];
    const byKey = new Map(real.map((o) => [objectKey(o), o]));
    t.same([...byKey.keys()].sort(), objects.map(objectKey).sort());
    for (const obj of objects) t.same(obj, byKey.get(objectKey(obj)), objectKey(obj));
  },
);

t.test('deploy/relay/relay.yaml: known options, and the real relay starts with it', async (t) => {
  const path = join(DEPLOY, 'relay/relay.yaml');
  const [file] = parseYamlDocuments(await readFile(path, 'utf8'), path) as Json[];
  // Unknown keys or wrong value types throw here, naming the key.
  const { values } = parseOptions(RELAY_SERVE_OPTIONS, [], {}, file, 'relay.yaml');
  t.same(values['verify-key'], ['/etc/burrow/keys']);
  t.equal(values['drain-timeout'], '30s');

  const dir = await tempDir(t, 'burrow-deploy-');
  await writeFile(join(dir, 'signing.pub'), (await generateSigningKeyPair()).publicPem);
  // The sample's listeners and key path belong to a VM; everything else is used as written.
  const relay = spawnLogged(t, RELAY_CLI, [
    'serve',
    '--config',
    path,
    '--http-listen',
    '127.0.0.1:0',
    '--tunnel-listen',
    '127.0.0.1:0',
    '--tls-listen',
    '127.0.0.1:0',
    '--admin-listen',
    '127.0.0.1:0',
    '--verify-key',
    dir,
  ]);
  await relay.waitFor((l) => l['msg'] === 'relay listening');
  relay.child.kill('SIGTERM');
  t.equal(await relay.exited, 0, 'drains and exits 0 on SIGTERM');
});

t.test('the systemd unit is hardened, bounded in tasks and memory, and outlasts the drain', async (t) => {
  const unit = await readFile(join(DEPLOY, 'relay/burrow-relay.service'), 'utf8');
  const settings = new Map<string, string[]>();
  for (const line of unit.split('\n')) {
    const m = /^([A-Za-z]+)=(.*)$/.exec(line.trim());
    if (m) settings.set(m[1]!, [...(settings.get(m[1]!) ?? []), m[2]!]);
  }
  const one = (key: string) => settings.get(key)?.at(-1);
  t.match(one('ExecStart'), /dist\/cli\.js serve --config \/etc\/burrow\/relay\.yaml$/);
  t.equal(one('DynamicUser'), 'yes');
  t.equal(one('AmbientCapabilities'), 'CAP_NET_BIND_SERVICE');
  t.equal(one('CapabilityBoundingSet'), 'CAP_NET_BIND_SERVICE');
  for (const key of ['NoNewPrivileges', 'ProtectHome', 'PrivateTmp']) t.equal(one(key), 'yes', key);
  t.equal(one('ProtectSystem'), 'strict');
  t.equal(one('StateDirectory'), 'burrow');
  t.equal(
    one('WorkingDirectory'),
    '/var/lib/burrow',
    'a relative acme-state-dir (the default) lands in the writable state directory',
  );
  t.equal(one('ConfigurationDirectory'), 'burrow');
  t.equal(one('Restart'), 'on-failure');
  t.equal(one('KillSignal'), 'SIGTERM');
  t.equal(one('ExecReload'), '/bin/kill -HUP $MAINPID', 'systemctl reload sends SIGHUP (hot reload)');
  t.ok(Number(one('TimeoutStopSec')) > 30, 'stop timeout outlasts the 30 s drain');
  t.notOk(settings.has('MemoryDenyWriteExecute'), 'V8 needs W+X memory');
  const tasks = Number(one('TasksMax'));
  t.ok(Number.isInteger(tasks) && tasks >= 64, "a bound on tasks, with room for Node's threads");
  const memory = /^(\d+)%$/.exec(one('MemoryMax') ?? '');
  t.ok(
    memory && Number(memory[1]) > 50 && Number(memory[1]) < 100,
    'killed and restarted before the host runs out',
  );
});
