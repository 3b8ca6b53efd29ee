#!/usr/bin/env node
import { existsSync } from 'node:fs';
import { delimiter, dirname } from 'node:path';
import {
  attributeErrors,
  ConfigError,
  createLogger,
  exitOnSignals,
  formatHelp,
  helpRequested,
  isLoopbackHost,
  packageVersion,
  parseOptions,
  parseUserYaml,
  readOptionFile,
  runCli,
} from '@burrow/shared';
import type { KubeConfig } from '@kubernetes/client-node';
import { type Agent, startAgent } from './agent.js';
import { AGENT_OPTIONS, agentOptionsFrom } from './config.js';
import { type HealthChecks, startHealthServer } from './health.js';
import type { Kubernetes } from './kubernetes/index.js';
import { agentMetrics } from './metrics.js';

const USAGE = `burrow-agent — exposes services behind NAT through outbound tunnels to a Burrow relay.

Usage:
  burrow-agent --relay wss://relay.example.com:8443 --token-file agent.token \\
               --expose app.example.com=http://127.0.0.1:3000 [options]
  burrow-agent --relay wss://relay.example.com:8443 --token-file agent.token --kubernetes [options]`;

const FOOTER = `Durations take a unit: 500ms, 30s, 15m. The token is read from --token-file, or else from the
environment variable named by --token-env-var; it never appears in logs.`;

/**
 * Loads --kubeconfig, or else the in-cluster service account. Every failure is
 * one ConfigError line: the client would otherwise throw a stack trace (a bad
 * file) or retry "Invalid URL" forever (no cluster around).
 */
async function loadKubeConfig(kubeConfig: KubeConfig, files: string | undefined): Promise<KubeConfig> {
  if (!files) {
    if (!process.env['KUBERNETES_SERVICE_HOST']) {
      throw new ConfigError(
        '--kubernetes: not running in a cluster (KUBERNETES_SERVICE_HOST is unset); pass --kubeconfig FILE',
      );
    }
    kubeConfig.loadFromCluster();
    return kubeConfig;
  }
  // A list, as kubectl reads KUBECONFIG: files that do not exist are skipped
  // (unless none does), and of two entries with the same name the first counts,
  // as does the first current-context.
  const listed = files.split(delimiter).filter(Boolean);
  const present = listed.filter((file) => existsSync(file));
  const [first, ...more] = present.length > 0 ? present : listed.slice(0, 1);
  await readKubeConfigFile(kubeConfig, first ?? files);
  for (const file of more) {
    const next = await readKubeConfigFile(new (kubeConfig.constructor as typeof KubeConfig)(), file);
    const has = (list: ReadonlyArray<{ name: string }>, name: string) => list.some((e) => e.name === name);
    for (const c of next.getClusters()) if (!has(kubeConfig.getClusters(), c.name)) kubeConfig.addCluster(c);
    for (const u of next.getUsers()) if (!has(kubeConfig.getUsers(), u.name)) kubeConfig.addUser(u);
    for (const c of next.getContexts()) if (!has(kubeConfig.getContexts(), c.name)) kubeConfig.addContext(c);
    if (!kubeConfig.getCurrentContext() && next.getCurrentContext())
      kubeConfig.setCurrentContext(next.getCurrentContext());
  }
  if (!kubeConfig.getCurrentCluster()) {
    throw new ConfigError(
      `--kubeconfig: ${files} names no current cluster (check current-context and its cluster entry)`,
    );
  }
  return kubeConfig;
}

/** Loads one kubeconfig file into `kubeConfig`, checked, with the relative paths in it made absolute. */
async function readKubeConfigFile(kubeConfig: KubeConfig, file: string): Promise<KubeConfig> {
  const text = await readOptionFile('kubeconfig', file);
  const doc = parseUserYaml(text, `--kubeconfig: ${file}`);
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) {
    throw new ConfigError(
      `--kubeconfig: ${file} is not a kubeconfig (expected a mapping with clusters, users, contexts)`,
    );
  }
  try {
    // What loadFromFile does, on the text already read: relative paths in it are from its folder.
    kubeConfig.loadFromString(text);
    kubeConfig.makePathsAbsolute(dirname(file));
  } catch (err) {
    throw new ConfigError(
      `--kubeconfig: ${file} is not a usable kubeconfig: ${(err as Error).message.split('\n')[0]}`,
    );
  }
  return kubeConfig;
}

await runCli('burrow-agent', async () => {
  const argv = process.argv.slice(2);
  if (helpRequested(AGENT_OPTIONS, argv))
    return void process.stdout.write(formatHelp(USAGE, AGENT_OPTIONS, FOOTER));
  const { values, sources } = parseOptions(AGENT_OPTIONS, argv);
  if (values['version'])
    return void process.stdout.write(`burrow-agent ${packageVersion(import.meta.url)}\n`);
  const { options, logLevel, kubernetes, health, metrics } = await attributeErrors(sources, () =>
    agentOptionsFrom(values, process.env, sources),
  );
  const logger = createLogger({ name: 'burrow-agent', level: logLevel });
  const relay = new URL(options.relayUrl);
  if (relay.protocol === 'ws:' && !isLoopbackHost(relay.hostname))
    logger.warn(
      { relay: relay.host },
      '--relay is ws:// to another machine: the token crosses the network in clear text; use wss:// (the relay needs TLS on its tunnel listener)',
    );
  // SIGHUP's default action would end the agent at once, without a drain: a terminal closing, or an
  // operator used to the relay's reload. There is nothing to reload here. Installed before anything
  // starts (the first list of Services may take a while).
  process.on('SIGHUP', () =>
    logger.info(
      { signal: 'SIGHUP' },
      'SIGHUP ignored: the agent reloads nothing (a token file is read again at each connect; routes at start)',
    ),
  );
  let kube: Kubernetes | undefined;
  let agent: Agent | undefined;
  // Both listeners answer /readyz, and both must tell the truth.
  const notReady = () => {
    if (!agent) return kubernetes ? 'Kubernetes Services not listed yet' : 'starting';
    if (agent.connectionCount === 0) return 'no tunnel to the relay is up';
    if (kube && !kube.synced) return 'Kubernetes Services not listed yet';
    const answered = agent.routeStatus().length + agent.portStatus().length > 0;
    // Routes the agent skipped (invalid, or a name another Service holds) are not announced, and
    // get no answer: with none announced there is nothing to wait for.
    const announced = kube ? kube.source.routes().length - agent.skippedRoutes().size : 1;
    if (!answered && announced > 0) {
      return 'routes not acknowledged by the relay yet';
    }
    return undefined;
  };
  // Listening before Kubernetes is asked anything: an API server that never answers
  // leaves a live, not-ready pod with a log line saying so, not a silent restart loop.
  // One address for both: one listener serves the probes and /metrics (two would collide).
  const healthChecks: HealthChecks = { notReady };
  const shared =
    health && metrics && health.port !== 0 && health.host === metrics.host && health.port === metrics.port;
  if (health) {
    const server = await startHealthServer(health, healthChecks);
    logger.info(
      { address: server.address, ...(shared ? { metrics: true } : {}) },
      'health endpoint listening',
    );
  }
  if (kubernetes) {
    // Imported only here: the Kubernetes client takes about half a second to load,
    // which an agent with static routes should not spend.
    const [{ KubeConfig }, { podName, podNamespace, startKubernetes }] = await Promise.all([
      import('@kubernetes/client-node'),
      import('./kubernetes/index.js'),
    ]);
    const kubeConfig = await attributeErrors(sources, () =>
      loadKubeConfig(new KubeConfig(), kubernetes.kubeconfig),
    );
    if (!kubernetes.holdsKey)
      logger.warn(
        'no --holds-key-file: burrow.dev/holds records are keyed from the token, so a new token lets the older of two Services asking for a hostname take it (docs/install.md)',
      );
    logger.info({ server: kubeConfig.getCurrentCluster()?.server }, 'listing Kubernetes Services');
    const slow = setTimeout(
      () =>
        logger.warn('the Kubernetes API server has not answered the Service list for 10 s; still waiting'),
      10_000,
    );
    kube = await startKubernetes({
      kubeConfig,
      logger,
      namespaces: kubernetes.namespaces,
      ...(kubernetes.labelSelector ? { labelSelector: kubernetes.labelSelector } : {}),
      lease: { namespace: podNamespace(), identity: podName(), name: kubernetes.leaseName },
      token: options.token,
      ...(kubernetes.holdsKey ? { holdsKey: kubernetes.holdsKey } : {}),
    }).finally(() => clearTimeout(slow));
  }
  agent = startAgent({ ...options, ...(kube ? { routes: kube.source } : {}), logger });
  kube?.attach(agent);
  if (metrics) {
    const { registry } = agentMetrics(agent, kube);
    const scrape = async () => ({ contentType: registry.contentType, body: await registry.metrics() });
    if (shared) healthChecks.metrics = scrape;
    else {
      const server = await startHealthServer(metrics, { notReady, metrics: scrape });
      logger.info({ address: server.address }, 'metrics endpoint listening');
    }
  }
  exitOnSignals(logger, () => Promise.all([agent.close(), kube?.stop()]));
});
