// The agent binary as the Deployment runs it, against a relay and a fake API
// server: what the --kubernetes CLI tests share.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Test } from 'tap';
import { fakeKube } from './fake-kube.js';
import { tempDir } from './fs.js';
import { get, testServer } from './http.js';
import { AGENT_CLI, spawnLogged } from './proc.js';
import { testRelay, tokenFor, tunnelUrl } from './relay.js';

/** A probe's answer from the agent's health listener. */
export async function probe(port: number, path: string): Promise<{ status: number; body: string }> {
  const r = await get(port, '127.0.0.1', path);
  return { status: r.status, body: r.body.toString() };
}

/**
 * A relay, a fake API server with one annotated Service (shop.example.com, in
 * namespace apps) whose app answers `answer`, and the agent's kubeconfig and
 * token files. `spawnAgent` starts the agent binary against them, with a
 * health listener and `extra` arguments.
 */
export async function agentCluster(t: Test, answer: string) {
  const relay = await testRelay(t);
  const kube = await fakeKube(t);
  const app = await testServer(t, (_req, res) => res.end(answer), '127.0.0.6');
  kube.upsertService({
    metadata: { name: 'shop', namespace: 'apps', annotations: { 'burrow.dev/hostname': 'shop.example.com' } },
    spec: { type: 'ClusterIP', clusterIP: '127.0.0.6', ports: [{ name: 'http', port: app.port }] },
  });
  const dir = await tempDir(t, 'burrow-agent-');
  await writeFile(join(dir, 'kubeconfig'), kube.kubeconfig());
  const token = await tokenFor('cluster', ['*.example.com']);
  await writeFile(join(dir, 'token'), `${token}\n`, { mode: 0o600 });
  const spawnAgent = (extra: string[] = []) =>
    spawnLogged(
      t,
      AGENT_CLI,
      [
        '--relay',
        tunnelUrl(relay),
        '--token-file',
        join(dir, 'token'),
        '--kubernetes',
        '--kubeconfig',
        join(dir, 'kubeconfig'),
        '--health-listen',
        '127.0.0.1:0',
        ...extra,
      ],
      { POD_NAMESPACE: 'burrow-system', POD_NAME: 'agent-0' },
    );
  return { relay, kube, token, spawnAgent, dir };
}
