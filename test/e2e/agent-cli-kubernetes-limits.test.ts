// What an annotated Service may not ask for, as the agent binary running
// --kubernetes answers it: on the Service, in an Event, and in readiness.
import t from 'tap';
import { agentCluster as cluster, probe } from '../helpers/agent-cluster.js';
import { until } from '../helpers/deferred.js';

t.test(
  'an allowlist over the 256 ranges a route may have: the annotation is named, and the pod is ready',
  async (t) => {
    const { kube, spawnAgent } = await cluster(t, 'unused');
    const cidrs = Array.from({ length: 300 }, (_, i) => `10.${i >> 8}.${i & 255}.0/24`).join(',');
    kube.upsertService({
      metadata: {
        name: 'shop',
        namespace: 'apps',
        annotations: { 'burrow.dev/hostname': 'shop.example.com', 'burrow.dev/allow-cidrs': cidrs },
      },
      spec: { type: 'ClusterIP', clusterIP: '127.0.0.6', ports: [{ name: 'http', port: 80 }] },
    });
    const agent = spawnAgent();
    const listening = await agent.waitFor((l) => l['msg'] === 'health endpoint listening');
    const healthPort = (listening['address'] as { port: number }).port;
    const error = await new Promise<string>((resolve) => {
      const check = () => {
        const e = kube.getService('apps', 'shop')?.metadata.annotations?.['burrow.dev/error'];
        if (e) {
          kube.off('change', check);
          resolve(e);
        }
      };
      kube.on('change', check);
      check();
    });
    t.equal(
      error,
      'burrow.dev/allow-cidrs: lists 300 ranges, more than the 256 one route may have; merge neighbouring ranges into wider ones',
    );
    await until(
      async () => kube.events().some((e) => e['reason'] === 'InvalidAnnotation'),
      'an InvalidAnnotation Event is recorded',
    );
    // Nothing to announce is nothing to wait for: the rollout of a new pod does not stall on it.
    await agent.waitFor((l) => l['msg'] === 'tunnel connected');
    const ready = await probe(healthPort, '/readyz');
    t.equal(ready.status, 200, ready.body);
    agent.child.kill('SIGTERM');
    t.equal(await agent.exited, 0);
  },
);
