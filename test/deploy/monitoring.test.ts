// deploy/monitoring: the Grafana dashboard and the alert rules may only use
// metric names that a real relay and a real agent expose; the files parse; the
// scrape examples point at ports the deployments really name.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { agentMetrics } from '@burrow/agent';
import t from 'tap';
import { testAgent } from '../helpers/agent.js';
import { get, testServer } from '../helpers/http.js';
import { type KubeObject, parseYamlDocuments } from '../helpers/kustomize-lite.js';
import { metricNames } from '../helpers/metrics.js';
import { ROOT } from '../helpers/proc.js';
import { testRelay } from '../helpers/relay.js';

const DIR = join(ROOT, 'deploy/monitoring');
const TOKEN = 'monitoring-admin-token-0123456789';

type Json = Record<string, unknown>;

/** Every `burrow_*` series name in PromQL expressions found anywhere under `value` (keys "expr"/"query"). */
function referencedMetrics(value: unknown, out = new Set<string>()): Set<string> {
  if (Array.isArray(value)) for (const v of value) referencedMetrics(v, out);
  else if (value && typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) {
      if ((k === 'expr' || k === 'query') && typeof v === 'string') {
        for (const m of v.matchAll(/\bburrow_[a-z0-9_]+/g)) out.add(m[0]);
      } else referencedMetrics(v, out);
    }
  }
  return out;
}

/** Exposed series names: families, plus the _bucket/_sum/_count series of histograms. */
function exposedSeries(text: string): Set<string> {
  const names = metricNames(text);
  for (const m of text.matchAll(/^# TYPE (\S+) histogram$/gm)) {
    for (const suffix of ['_bucket', '_sum', '_count']) names.add(`${m[1]}${suffix}`);
  }
  return names;
}

t.test('dashboard and alerts reference only metrics a relay and an agent expose', async (t) => {
  const dashboard = JSON.parse(await readFile(join(DIR, 'grafana-dashboard.json'), 'utf8')) as Json;
  const rulesPath = join(DIR, 'prometheusrule.yaml');
  const [rule] = parseYamlDocuments(await readFile(rulesPath, 'utf8'), rulesPath) as KubeObject[];
  t.equal(rule!.kind, 'PrometheusRule');
  const groups = (
    rule as unknown as { spec: { groups: Array<{ rules: Array<{ alert: string; expr: string }> }> } }
  ).spec.groups;
  const alerts = groups.flatMap((g) => g.rules.map((r) => r.alert));
  for (const wanted of ['BurrowNoAgentConnected', 'BurrowRelayHigh5xxRatio', 'BurrowCertificateExpiringSoon'])
    t.ok(alerts.includes(wanted), `alert ${wanted}`);
  t.ok((dashboard['panels'] as unknown[]).length >= 10, 'the dashboard has panels');

  // A real relay (admin listener, real HTTP) and a real agent, after some traffic.
  const relay = await testRelay(t, { admin: { host: '127.0.0.1', port: 0 }, adminToken: TOKEN });
  const app = await testServer(t, (_req, res) => res.end('ok'));
  const agent = await testAgent(t, relay, [{ id: 'm', hostnames: ['m.monitoring.test'], target: app.url }]);
  t.equal((await get(relay.httpAddress.port, 'm.monitoring.test')).status, 200);
  const res = await fetch(`http://127.0.0.1:${relay.adminAddress!.port}/metrics`, {
    headers: { authorization: `Bearer ${TOKEN}` },
  });
  t.equal(res.status, 200);
  const exposed = new Set([
    ...exposedSeries(await res.text()),
    ...exposedSeries(await agentMetrics(agent).registry.metrics()),
  ]);

  const used = new Set([...referencedMetrics(dashboard), ...referencedMetrics(rule)]);
  t.ok(used.size >= 10, `${used.size} metric names referenced`);
  for (const name of [...used].sort()) t.ok(exposed.has(name), `${name} is exposed`);
});

t.test('scrape examples match the ports the deployments name', async (t) => {
  const path = join(DIR, 'servicemonitor.yaml');
  const docs = parseYamlDocuments(await readFile(path, 'utf8'), path) as unknown as Json[];
  const byKind = new Map(docs.map((d) => [d['kind'], d['spec'] as Json]));
  const pod = byKind.get('PodMonitor')!;
  t.same((pod['selector'] as Json)['matchLabels'], { 'app.kubernetes.io/name': 'burrow-agent' });
  const podPort = (pod['podMetricsEndpoints'] as Json[])[0]!['port'];
  const deployPath = join(ROOT, 'deploy/agent/deployment.yaml');
  const [deployment] = parseYamlDocuments(
    await readFile(deployPath, 'utf8'),
    deployPath,
  ) as unknown as Json[];
  const containers = ((deployment!['spec'] as Json)['template'] as { spec: { containers: Json[] } }).spec
    .containers;
  const portNames = containers.flatMap((c) => ((c['ports'] as Json[]) ?? []).map((p) => p['name']));
  t.ok(portNames.includes(podPort), `the agent container names a port "${String(podPort)}"`);
  const relayEndpoint = (byKind.get('ServiceMonitor')!['endpoints'] as Json[])[0]!;
  t.match(relayEndpoint, {
    path: '/metrics',
    authorization: { type: 'Bearer', credentials: { name: String, key: String } },
  });
});
