// The agent binary as the Deployment runs it: --kubernetes against an API
// server (here the fake, through a kubeconfig), probes on --health-listen.
import { execFile } from 'node:child_process';
import { once } from 'node:events';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { type AddressInfo, createServer, type Socket } from 'node:net';
import { delimiter, join } from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
import { agentCluster as cluster, probe } from '../helpers/agent-cluster.js';
import { tempDir } from '../helpers/fs.js';
import { get } from '../helpers/http.js';
import { AGENT_CLI } from '../helpers/proc.js';
import { tokenFor } from '../helpers/relay.js';

const run = promisify(execFile);

t.test('burrow-agent --kubernetes exposes annotated Services and answers probes', async (t) => {
  const { relay, kube, token, spawnAgent } = await cluster(t, 'from the cluster');
  const agent = spawnAgent(['--metrics-listen', '127.0.0.1:0', '--lease-name', 'shop-writer']);
  const listening = await agent.waitFor((l) => l['msg'] === 'health endpoint listening');
  const healthPort = (listening['address'] as { port: number }).port;
  t.equal((await probe(healthPort, '/healthz')).status, 200);

  // Write-back shows the URL once the relay accepted the route.
  const url = await new Promise<string>((resolve) => {
    const check = () => {
      const u = kube.getService('apps', 'shop')?.metadata.annotations?.['burrow.dev/url'];
      if (u) {
        kube.off('change', check);
        resolve(u);
      }
    };
    kube.on('change', check);
    check();
  });
  t.equal(url, `http://shop.example.com:${relay.httpAddress.port}`);
  t.equal((await get(relay.httpAddress.port, 'shop.example.com')).body.toString(), 'from the cluster');
  const ready = await probe(healthPort, '/readyz');
  t.equal(ready.status, 200, ready.body);
  const metricsLine = await agent.waitFor((l) => l['msg'] === 'metrics endpoint listening');
  const metrics = await probe((metricsLine['address'] as { port: number }).port, '/metrics');
  t.equal(metrics.status, 200);
  t.match(metrics.body, /^burrow_agent_tunnel_connections [12]$/m, 'tunnel connections are counted');
  t.match(metrics.body, /^burrow_agent_routes\{status="active"\} 1$/m, 'the active route is counted');
  t.match(
    metrics.body,
    /^burrow_agent_tunnel_state\{relay="ws:\/\/127\.0\.0\.1:\d+\/v1\/tunnel",conn="0",state="connected"\} 1$/m,
    'each connection reports its state per relay',
  );
  t.match(metrics.body, /^burrow_agent_kubernetes_watch_restarts_total \d+$/m, 'watch restarts are counted');
  t.match(
    kube.leases().map((l) => [l.metadata.name, l.spec.holderIdentity]),
    [['shop-writer', 'agent-0']],
    'the write-back Lease is the one named, held by this pod',
  );
  t.notOk(
    JSON.stringify(agent.lines).includes(token.split('.')[2]!),
    'the token signature never appears in logs',
  );

  agent.child.kill('SIGTERM');
  t.equal(await agent.exited, 0, 'SIGTERM drains and exits 0');
});

t.test('the agent is not ready while the API server refuses to list Services', async (t) => {
  const { relay, kube, spawnAgent } = await cluster(t, 'listed at last');
  // RBAC not granted yet, say: every list is refused until the test lifts it.
  kube.failNext = { resource: 'services', status: 403, count: Number.MAX_SAFE_INTEGER };
  const agent = spawnAgent();
  const listening = await agent.waitFor((l) => l['msg'] === 'health endpoint listening');
  const healthPort = (listening['address'] as { port: number }).port;
  await agent.waitFor((l) => l['msg'] === 'Kubernetes watch failed; restarting');
  // A tunnel up is not enough: with the Services unknown, a rollout must not count this pod.
  await agent.waitFor((l) => l['msg'] === 'tunnel connected');
  const notReady = await probe(healthPort, '/readyz');
  t.equal(notReady.status, 503);
  t.match(notReady.body, /Kubernetes Services not listed yet/);

  kube.failNext = undefined;
  await agent.waitFor((l) => l['msg'] === 'Kubernetes services listed');
  await agent.waitFor((l) => l['msg'] === 'route active' && l['hostname'] === 'shop.example.com');
  t.equal((await get(relay.httpAddress.port, 'shop.example.com')).body.toString(), 'listed at last');
  const ready = await probe(healthPort, '/readyz');
  t.equal(ready.status, 200, ready.body);
  agent.child.kill('SIGTERM');
  t.equal(await agent.exited, 0);
});

t.test(
  'an API server that never answers: the agent is live, not ready, and says what it waits for',
  async (t) => {
    const { dir, spawnAgent } = await cluster(t, 'unused');
    // Accepts connections and never writes a byte.
    const silent = createServer(() => {});
    silent.listen(0, '127.0.0.1');
    await once(silent, 'listening');
    t.teardown(() => silent.close());
    const held: Socket[] = [];
    silent.on('connection', (socket) => held.push(socket));
    t.teardown(() => {
      for (const s of held) s.destroy();
    });
    const { port } = silent.address() as AddressInfo;
    const config = (await readFile(join(dir, 'kubeconfig'), 'utf8')).replace(
      /server: "[^"]+"/,
      `server: "http://127.0.0.1:${port}"`,
    );
    await writeFile(join(dir, 'silent-kubeconfig'), config);
    const asked = once(silent, 'connection');
    const agent = spawnAgent(['--kubeconfig', join(dir, 'silent-kubeconfig')]);
    const listening = await agent.waitFor((l) => l['msg'] === 'health endpoint listening');
    t.match(await agent.waitFor((l) => l['msg'] === 'listing Kubernetes Services'), {
      server: `http://127.0.0.1:${port}`,
    });
    await asked;
    const healthPort = (listening['address'] as { port: number }).port;
    t.equal((await probe(healthPort, '/healthz')).status, 200, 'live: no restart loop');
    const ready = await probe(healthPort, '/readyz');
    t.equal(ready.status, 503);
    t.match(ready.body, /Kubernetes Services not listed yet/);
    agent.child.kill('SIGKILL');
    await agent.exited;
  },
);

t.test(
  'a credential plugin that fails when a watch re-opens: a warning and a retry, not a crash',
  async (t) => {
    const { dir, spawnAgent, kube } = await cluster(t, 'unused');
    // An exec credential plugin, as cloud kubeconfigs use; it fails while the flag file exists.
    const flag = join(dir, 'plugin-down');
    const plugin = join(dir, 'credentials.sh');
    await writeFile(
      plugin,
      [
        '#!/bin/sh',
        `if [ -e '${flag}' ]; then echo 'identity provider unreachable' >&2; exit 1; fi`,
        `echo '{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"t"}}'`,
        '',
      ].join('\n'),
      { mode: 0o755 },
    );
    const config = (await readFile(join(dir, 'kubeconfig'), 'utf8')).replace(
      /users: .*$/m,
      `users: [{ name: fake, user: { exec: { apiVersion: client.authentication.k8s.io/v1, command: "${plugin}", interactiveMode: Never } } }]`,
    );
    await writeFile(join(dir, 'exec-kubeconfig'), config);
    const agent = spawnAgent(['--kubeconfig', join(dir, 'exec-kubeconfig')]);
    await agent.waitFor((l) => l['msg'] === 'Kubernetes services listed');
    await writeFile(flag, '');
    // The API server ends its watches (it does every few minutes); re-opening asks the plugin.
    kube.dropWatches();
    t.match(await agent.waitFor((l) => l['msg'] === 'Kubernetes watch failed; restarting'), {
      level: 40,
      reason: /credentials\.sh|identity provider unreachable|exit/i,
    });
    await rm(flag);
    await agent.waitFor((l) => l['msg'] === 'Kubernetes watch working again');
    t.equal(agent.child.exitCode, null, 'the agent kept running');
    agent.child.kill('SIGTERM');
    t.equal(await agent.exited, 0);
  },
);

t.test('burrow-agent --kubernetes: a list of kubeconfigs is merged as kubectl does', async (t) => {
  const { relay, dir, spawnAgent } = await cluster(t, 'merged');
  // The first names no context; the second does not exist (skipped); the third is the fake API server's.
  await writeFile(join(dir, 'first'), 'apiVersion: v1\nkind: Config\n');
  const list = [join(dir, 'first'), join(dir, 'missing'), join(dir, 'kubeconfig')].join(delimiter);
  const agent = spawnAgent(['--kubeconfig', list]);
  await agent.waitFor((l) => l['msg'] === 'route active' && l['hostname'] === 'shop.example.com');
  t.equal((await get(relay.httpAddress.port, 'shop.example.com')).body.toString(), 'merged');
});

t.test('burrow-agent --kubernetes: a kubeconfig or cluster it cannot use is one line, exit 1', async (t) => {
  const dir = await tempDir(t, 'burrow-agent-kubeconfig-');
  await writeFile(join(dir, 'token'), `${await tokenFor('cluster', ['*.example.com'])}\n`, { mode: 0o600 });
  await writeFile(join(dir, 'broken'), 'clusters: [\n');
  await writeFile(join(dir, 'list'), '- name: a\n');
  await writeFile(join(dir, 'no-cluster'), 'apiVersion: v1\nkind: Config\n');
  const base = ['--relay', 'ws://127.0.0.1:1', '--token-file', join(dir, 'token'), '--kubernetes'];
  const agent = (argv: string[], env: NodeJS.ProcessEnv = {}) =>
    run(process.execPath, [AGENT_CLI, ...base, ...argv], {
      env: { PATH: process.env['PATH'], ...env },
      timeout: 30_000, // an agent that retries instead of failing is killed, and the case fails
    }).then(
      () => ({ code: 0, stderr: '' }),
      (e: { code: number; stderr: string }) => ({ code: e.code, stderr: e.stderr }),
    );
  const cases: Array<[string[], NodeJS.ProcessEnv, string]> = [
    [['--kubeconfig', '/nope'], {}, '--kubeconfig: cannot read /nope (ENOENT)'],
    [[], { KUBECONFIG: '/nope' }, 'KUBECONFIG: cannot read /nope (ENOENT)'],
    [[], { KUBECONFIG: `/nope${delimiter}/nope2` }, 'KUBECONFIG: cannot read /nope (ENOENT)'],
    [['--kubeconfig', dir], {}, `--kubeconfig: cannot read ${dir} (EISDIR)`],
    [
      ['--kubeconfig', join(dir, 'list')],
      {},
      `--kubeconfig: ${join(dir, 'list')} is not a kubeconfig (expected a mapping with clusters, users, contexts)`,
    ],
    [
      ['--kubeconfig', join(dir, 'no-cluster')],
      {},
      `--kubeconfig: ${join(dir, 'no-cluster')} names no current cluster (check current-context and its cluster entry)`,
    ],
    [
      [],
      {},
      '--kubernetes: not running in a cluster (KUBERNETES_SERVICE_HOST is unset); pass --kubeconfig FILE',
    ],
  ];
  for (const [argv, env, message] of cases) {
    t.same(await agent(argv, env), { code: 1, stderr: `burrow-agent: ${message}\n` }, message);
  }
  const broken = await agent(['--kubeconfig', join(dir, 'broken')]);
  t.equal(broken.code, 1);
  t.match(
    broken.stderr,
    new RegExp(
      `^burrow-agent: --kubeconfig: ${join(dir, 'broken')}: not valid YAML at line \\d+, column \\d+ \\([A-Z_]+\\)\n$`,
    ),
    'where and what kind only: a kubeconfig holds credentials',
  );
});
