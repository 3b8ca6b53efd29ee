import {
  COMMON_OPTIONS,
  ConfigError,
  durationOption,
  logLevelOption,
  MIN_KEEPALIVE_INTERVAL,
  type OptionSources,
  type OptionSpec,
  type OptionValues,
  parseListen,
  readOptionFile,
  streamIdleTimeoutOption,
  wholeNumber,
} from '@burrow/shared';
import type { AgentOptions } from './agent.js';
import { checkRelayUrl, shownUrl } from './relay-url.js';
import { loadRoutesFile } from './routes/file.js';
import { parseExposeList } from './routes/static.js';
import { validateRoutes } from './routes/validate.js';
import { checkToken, holdsKeyFile, tokenFile } from './token.js';

/** Options of `burrow-agent`: one table for flags, env, --help and docs/configuration.md. */
export const AGENT_OPTIONS: readonly OptionSpec[] = [
  {
    name: 'relay',
    env: 'BURROW_RELAY_URL',
    type: 'string',
    placeholder: 'URL',
    description: 'relay tunnel endpoint, ws://HOST:PORT or wss://HOST:PORT (required)',
  },
  {
    name: 'token-file',
    env: 'BURROW_TOKEN_FILE',
    type: 'string',
    placeholder: 'FILE',
    description:
      'file holding the agent token (from burrow-relay token create); read again before each connection attempt, so a rotated file needs no restart',
  },
  {
    name: 'token-env-var',
    type: 'string',
    placeholder: 'NAME',
    default: 'BURROW_TOKEN',
    description: 'environment variable holding the token itself, used when no token file is given',
  },
  {
    name: 'expose',
    env: 'BURROW_EXPOSE',
    type: 'list',
    placeholder: 'HOST=URL',
    description:
      'expose hostnames (comma-separated, exact or *.suffix) at a backend origin, e.g. app.example.com=http://127.0.0.1:3000 (https:// for a TLS backend, h2c:// for HTTP/2 without TLS, such as gRPC); or public TCP ports of the relay at a tcp:// address, e.g. 5432=tcp://127.0.0.1:5432',
  },
  {
    name: 'routes',
    env: 'BURROW_ROUTES_FILE',
    type: 'string',
    placeholder: 'FILE',
    description:
      'YAML file with routes: [{hostnames, target, allowCidrs, tlsInsecure}], or [{ports, target: tcp://…}] for TCP services (example in docs/configuration.md)',
  },
  {
    name: 'connections',
    env: 'BURROW_CONNECTIONS',
    type: 'string',
    placeholder: 'N',
    default: '2',
    description: 'tunnel connections kept to the relay, 1 to 64',
  },
  {
    name: 'connect-timeout',
    env: 'BURROW_CONNECT_TIMEOUT',
    type: 'string',
    placeholder: 'DURATION',
    default: '10s',
    description: 'time to connect to a backend, and for the relay handshake',
  },
  COMMON_OPTIONS.keepaliveInterval,
  COMMON_OPTIONS.streamIdleTimeout,
  COMMON_OPTIONS.drainTimeout,
  COMMON_OPTIONS.logLevel,
  {
    name: 'relay-ca',
    env: 'BURROW_RELAY_CA',
    type: 'string',
    placeholder: 'FILE',
    description: "PEM CA certificate that signed the relay's TLS certificate, for wss:// with a private CA",
  },
  {
    name: 'kubernetes',
    env: 'BURROW_KUBERNETES',
    type: 'boolean',
    description:
      'expose Services annotated with burrow.dev/hostname or burrow.dev/tcp-port (in-cluster config, or --kubeconfig)',
  },
  {
    name: 'kubeconfig',
    env: 'KUBECONFIG',
    type: 'string',
    placeholder: 'FILE',
    description:
      'kubeconfig for --kubernetes outside a cluster, or several separated by ":", merged as kubectl merges KUBECONFIG (default: in-cluster service account)',
  },
  {
    name: 'namespaces',
    env: 'BURROW_NAMESPACES',
    type: 'list',
    placeholder: 'NS',
    description: 'with --kubernetes: namespaces to watch (default: all)',
  },
  {
    name: 'label-selector',
    env: 'BURROW_LABEL_SELECTOR',
    type: 'string',
    placeholder: 'SELECTOR',
    description: 'with --kubernetes: only Services matching this label selector, e.g. expose=true',
  },
  {
    name: 'lease-name',
    env: 'BURROW_LEASE_NAME',
    type: 'string',
    placeholder: 'NAME',
    default: 'burrow-agent-writer',
    description:
      "with --kubernetes: the Lease in the pod's namespace that elects the replica writing status back; a second agent installation in that namespace needs its own (and its Role must name it)",
  },
  {
    name: 'holds-key-file',
    env: 'BURROW_HOLDS_KEY_FILE',
    type: 'string',
    placeholder: 'FILE',
    description:
      'with --kubernetes: file holding a random key of 32 characters or more (openssl rand -hex 32) that signs the burrow.dev/holds records; keep it when rotating the token. Without it a key from the token signs them, and a new token lets the older of two Services asking for a name take it',
  },
  {
    name: 'health-listen',
    env: 'BURROW_HEALTH_LISTEN',
    type: 'string',
    placeholder: 'HOST:PORT',
    description:
      'serve GET /healthz and /readyz (ready: a tunnel is up and routes are synced); off unless set',
  },
  {
    name: 'metrics-listen',
    env: 'BURROW_METRICS_LISTEN',
    type: 'string',
    placeholder: 'HOST:PORT',
    description:
      'serve Prometheus metrics at GET /metrics; off unless set. The same address as --health-listen: one listener serves both',
  },
  { name: 'version', type: 'boolean', description: 'print the version and exit' },
  COMMON_OPTIONS.help,
];

/**
 * The token from --token-file (read again before each connection attempt, so a
 * rotated file is picked up), else from the variable named by --token-env-var.
 * Read once now, so a missing or malformed token fails at start. Never echoed.
 */
function tokenFrom(values: OptionValues, env: NodeJS.ProcessEnv): string | (() => string) {
  const file = values['token-file'] as string | undefined;
  const varName = String(values['token-env-var']);
  if (file) {
    const read = tokenFile(file);
    read();
    return read;
  }
  if (!env[varName]) {
    throw new ConfigError(`no agent token: pass --token-file FILE (or BURROW_TOKEN_FILE), or set ${varName}`);
  }
  const token = env[varName]!.trim();
  checkToken(token, `environment variable ${varName}`);
  return token;
}

/**
 * Turns parsed option values into agent options. Reads the token and routes
 * files; throws ConfigError naming the option for every operator mistake.
 */
export async function agentOptionsFrom(
  values: OptionValues,
  env: NodeJS.ProcessEnv = process.env,
  sources: OptionSources = {},
): Promise<{
  options: Omit<AgentOptions, 'logger'>;
  logLevel: string;
  /** Set in --kubernetes mode: routes come from Services, not from `options.routes`. */
  kubernetes?: {
    kubeconfig?: string;
    namespaces: string[];
    labelSelector?: string;
    leaseName: string;
    /** The holds key (--holds-key-file), read again when its file has changed. */
    holdsKey?: () => string;
  };
  health?: { host: string; port: number };
  metrics?: { host: string; port: number };
}> {
  const logLevel = logLevelOption(values);
  const relayUrl = values['relay'] as string | undefined;
  if (!relayUrl) throw new ConfigError('--relay is required (e.g. --relay wss://relay.example.com:8443)');
  checkRelayUrl(relayUrl, '--relay');
  const connections = wholeNumber(String(values['connections']));
  if (!(connections >= 1 && connections <= 64)) {
    throw new ConfigError(`--connections must be an integer from 1 to 64 (got "${values['connections']}")`);
  }
  const exposed = parseExposeList(
    (values['expose'] as string[] | undefined) ?? [],
    sources['expose'] !== '--expose',
  );
  const routesFile = values['routes'] as string | undefined;
  const fromFile = routesFile ? await loadRoutesFile(routesFile) : [];
  const all = [...exposed, ...fromFile];
  const kube = values['kubernetes'] === true;
  if (kube && all.length > 0) {
    throw new ConfigError(
      '--kubernetes takes routes from Services; drop --expose and --routes (or run a second agent)',
    );
  }
  if (!kube) {
    // Without --kubernetes these would be silently ignored: an agent meant to watch one namespace
    // must not start as if it had been told nothing.
    for (const name of ['namespaces', 'label-selector', 'holds-key-file']) {
      const v = values[name];
      if (v !== undefined && !(Array.isArray(v) && v.length === 0))
        throw new ConfigError(
          `--${name} applies with --kubernetes only: add --kubernetes, or drop --${name}`,
        );
    }
  }
  if (!kube && all.length === 0) {
    throw new ConfigError('no routes: pass --expose HOST=URL (repeatable), --routes FILE, or --kubernetes');
  }
  const namespaces = ((values['namespaces'] as string[] | undefined) ?? [])
    .flatMap((n) => n.split(','))
    .map((n) => n.trim())
    .filter(Boolean);
  for (const ns of namespaces) {
    if (!/^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/.test(ns))
      throw new ConfigError(`--namespaces: "${ns}" is not a namespace name`);
  }
  const healthText = values['health-listen'] as string | undefined;
  const health = healthText ? parseListen(healthText, '--health-listen') : undefined;
  const metricsText = values['metrics-listen'] as string | undefined;
  const metrics = metricsText ? parseListen(metricsText, '--metrics-listen') : undefined;
  // Flags and file together must still name each hostname and id once.
  const routes = validateRoutes(all, (i) => {
    const r = all[i]!;
    return i < exposed.length
      ? `--expose "${(r.ports ?? r.hostnames).join(',')}=${r.target}"`
      : `${routesFile}: routes[${i - exposed.length}]`;
  });
  const token = tokenFrom(values, env);
  const caFile = values['relay-ca'] as string | undefined;
  let relayCa: string | undefined;
  if (caFile) {
    relayCa = await readOptionFile('relay-ca', caFile);
    if (!relayCa.includes('BEGIN CERTIFICATE'))
      throw new ConfigError(`--relay-ca: ${caFile} holds no PEM certificate`);
    // A CA for a connection without TLS would be ignored, and the token sent in clear text.
    if (new URL(relayUrl).protocol === 'ws:') {
      throw new ConfigError(
        `--relay-ca needs a wss:// relay URL (got "${shownUrl(relayUrl)}"): ws:// has no TLS to verify`,
      );
    }
  }
  const kubeconfig = values['kubeconfig'] as string | undefined;
  const labelSelector = values['label-selector'] as string | undefined;
  const leaseName = String(values['lease-name']);
  if (leaseName.length > 253 || !/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/.test(leaseName)) {
    throw new ConfigError(
      `--lease-name: "${leaseName.slice(0, 80)}" is not a Kubernetes object name (lower-case letters, digits, "-" and ".")`,
    );
  }
  const holdsKeyPath = values['holds-key-file'] as string | undefined;
  const holdsKey = holdsKeyPath ? holdsKeyFile(holdsKeyPath) : undefined;
  holdsKey?.(); // read once now, so a missing or short key fails at start
  return {
    logLevel,
    ...(kube
      ? {
          kubernetes: {
            namespaces,
            leaseName,
            ...(holdsKey ? { holdsKey } : {}),
            ...(kubeconfig ? { kubeconfig } : {}),
            ...(labelSelector ? { labelSelector } : {}),
          },
        }
      : {}),
    ...(health ? { health } : {}),
    ...(metrics ? { metrics } : {}),
    options: {
      relayUrl,
      token,
      ...(relayCa ? { relayCa } : {}),
      routes,
      connections,
      connectTimeout: durationOption(values, 'connect-timeout'),
      session: {
        keepaliveInterval: durationOption(values, 'keepalive-interval', { min: MIN_KEEPALIVE_INTERVAL }),
        streamIdleTimeout: streamIdleTimeoutOption(values),
        drainTimeout: durationOption(values, 'drain-timeout'),
      },
    },
  };
}
