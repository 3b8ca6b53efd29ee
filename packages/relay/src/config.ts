import { readdir } from 'node:fs/promises';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { createSecureContext } from 'node:tls';
import {
  COMMON_OPTIONS,
  ConfigError,
  durationOption,
  isValidHostname,
  loadVerifyKey,
  logLevelOption,
  MIN_KEEPALIVE_INTERVAL,
  type OptionSpec,
  type OptionValues,
  parseListen,
  parseUserYaml,
  portNumber,
  readOptionFile,
  streamIdleTimeoutOption,
  type VerifyKey,
  wholeNumber,
} from '@burrow/shared';
import { certOptions, portOption } from './certs/config.js';
import type { RelayOptions } from './relay.js';

/** Options of `burrow-relay serve`: one table for flags, env, config file, --help and docs/configuration.md. */
export const SERVE_OPTIONS: readonly OptionSpec[] = [
  {
    name: 'config',
    short: 'c',
    env: 'BURROW_CONFIG',
    type: 'string',
    placeholder: 'FILE',
    description: 'YAML config file; keys are these long option names',
  },
  {
    name: 'http-listen',
    env: 'BURROW_HTTP_LISTEN',
    type: 'string',
    placeholder: 'HOST:PORT',
    default: '0.0.0.0:80',
    description: 'public HTTP listener',
  },
  {
    name: 'tunnel-listen',
    env: 'BURROW_TUNNEL_LISTEN',
    type: 'string',
    placeholder: 'HOST:PORT',
    default: '0.0.0.0:8443',
    description: 'tunnel endpoint agents connect to (WebSocket at /v1/tunnel)',
  },
  {
    name: 'tunnel-tls-cert',
    env: 'BURROW_TUNNEL_TLS_CERT',
    type: 'string',
    placeholder: 'FILE',
    description: 'PEM certificate chain: serve the tunnel endpoint as wss:// (needs --tunnel-tls-key)',
  },
  {
    name: 'tunnel-tls-key',
    env: 'BURROW_TUNNEL_TLS_KEY',
    type: 'string',
    placeholder: 'FILE',
    description: 'PEM private key for --tunnel-tls-cert',
  },
  {
    name: 'tls-listen',
    env: 'BURROW_TLS_LISTEN',
    type: 'string',
    placeholder: 'HOST:PORT',
    default: '0.0.0.0:443',
    description:
      'public TLS listener: routes by SNI, passes tls-passthrough routes through, terminates the rest; "off" disables it',
  },
  {
    name: 'tcp-ports',
    env: 'BURROW_TCP_PORTS',
    type: 'list',
    placeholder: 'PORTS',
    description:
      'public TCP ports agents may claim (a token lists which), e.g. 5432,10000-10099; each is listened on from the start, at most 1024',
  },
  {
    name: 'tcp-host',
    env: 'BURROW_TCP_HOST',
    type: 'string',
    placeholder: 'HOST',
    default: '0.0.0.0',
    description: 'address the --tcp-ports listen on',
  },
  {
    name: 'tcp-public-host',
    env: 'BURROW_TCP_PUBLIC_HOST',
    type: 'string',
    placeholder: 'NAME',
    description:
      "the relay's public name, shown in tcp://NAME:PORT URLs reported to agents (without it they learn the port only)",
  },
  {
    name: 'public-https-port',
    env: 'BURROW_PUBLIC_HTTPS_PORT',
    type: 'string',
    placeholder: 'PORT',
    description: 'port shown in https:// URLs and redirects (default: the TLS listener port)',
  },
  {
    name: 'cert-file',
    env: 'BURROW_CERT_FILES',
    type: 'list',
    placeholder: 'FILE',
    description:
      'PEM certificate chain served on the TLS listener for the names in its subjectAltName (pairs with --key-file, in order); reloaded when it changes',
  },
  {
    name: 'key-file',
    env: 'BURROW_KEY_FILES',
    type: 'list',
    placeholder: 'FILE',
    description: 'PEM private key of the --cert-file at the same position',
  },
  {
    name: 'cert-dir',
    env: 'BURROW_CERT_DIR',
    type: 'string',
    placeholder: 'DIR',
    description:
      'directory of NAME.crt (or NAME.pem) + NAME.key pairs; files added or replaced later, or the directory replaced (a symlink repointed), are picked up',
  },
  {
    name: 'acme-directory',
    env: 'BURROW_ACME_DIRECTORY',
    type: 'string',
    placeholder: 'URL',
    description:
      "ACME directory to get certificates from, e.g. Let's Encrypt's https://acme-v02.api.letsencrypt.org/directory (needs --acme-domains)",
  },
  {
    name: 'acme-domains',
    env: 'BURROW_ACME_DOMAINS',
    type: 'list',
    placeholder: 'PATTERN',
    description:
      'names (app.example.com) or patterns (*.example.com) ACME may be asked for; only names a connected agent serves are ever ordered',
  },
  {
    name: 'acme-email',
    env: 'BURROW_ACME_EMAIL',
    type: 'string',
    placeholder: 'EMAIL',
    description: 'contact address for the ACME account (expiry notices)',
  },
  {
    name: 'acme-state-dir',
    env: 'BURROW_ACME_STATE_DIR',
    type: 'string',
    placeholder: 'DIR',
    default: 'burrow-acme',
    description: 'where the ACME account key and issued certificates persist (keep it across restarts)',
  },
  {
    name: 'acme-challenges',
    env: 'BURROW_ACME_CHALLENGES',
    type: 'list',
    placeholder: 'TYPE',
    default: 'http-01,tls-alpn-01',
    description:
      'challenge types in order of preference: http-01 (on the HTTP listener), tls-alpn-01 (on the TLS listener); a retry after a failed order tries the next one first',
  },
  {
    name: 'acme-orders-per-hour',
    env: 'BURROW_ACME_ORDERS_PER_HOUR',
    type: 'string',
    placeholder: 'N',
    default: '60',
    description:
      "ACME orders the relay may start in any hour, renewals included; names past it wait their turn (keeps tenants' wildcard names within the CA's rate limits). One tenant may start 3/4 of them; the others' names go first",
  },
  {
    name: 'acme-directory-ca',
    env: 'BURROW_ACME_DIRECTORY_CA',
    type: 'string',
    placeholder: 'FILE',
    description:
      "PEM CA to trust for the ACME directory's own HTTPS (a private CA; not needed for public CAs)",
  },
  {
    name: 'no-https-redirect',
    env: 'BURROW_NO_HTTPS_REDIRECT',
    type: 'boolean',
    default: false,
    description:
      'serve plain HTTP for names the relay also serves over TLS, instead of redirecting to https://',
  },
  {
    name: 'no-http1-fast-path',
    env: 'BURROW_NO_HTTP1_FAST_PATH',
    type: 'boolean',
    default: false,
    description:
      "send every HTTP request through Node's parser and a tunnel stream of its own, instead of carrying plain HTTP/1.1 as bytes over pooled upstreams (slower, and no HTTP/2 without TLS; for telling the two paths apart)",
  },
  {
    name: 'hsts-max-age',
    env: 'BURROW_HSTS_MAX_AGE',
    type: 'string',
    placeholder: 'DURATION',
    description:
      'send Strict-Transport-Security with this max-age on responses over TLS (e.g. 365d); 0 sends max-age=0, withdrawing an earlier HSTS policy; no header unless set',
  },
  {
    name: 'tls-hello-timeout',
    env: 'BURROW_TLS_HELLO_TIMEOUT',
    type: 'string',
    placeholder: 'DURATION',
    default: '10s',
    description: 'time a TLS client has to send its ClientHello before the connection is closed',
  },
  {
    name: 'verify-key',
    env: 'BURROW_VERIFY_KEYS',
    type: 'list',
    placeholder: 'PATH',
    default: 'burrow-keys',
    description:
      'Ed25519 public key file, or a directory whose *.pub files are all trusted, for agent tokens (a private key is refused)',
  },
  {
    name: 'audience',
    env: 'BURROW_AUDIENCE',
    type: 'string',
    placeholder: 'AUD',
    default: 'burrow-relay',
    description: 'token audience this relay accepts',
  },
  {
    name: 'public-http-port',
    env: 'BURROW_PUBLIC_HTTP_PORT',
    type: 'string',
    placeholder: 'PORT',
    description: 'port shown in URLs reported to agents (default: the HTTP listener port)',
  },
  {
    name: 'admin-listen',
    env: 'BURROW_ADMIN_LISTEN',
    type: 'string',
    placeholder: 'HOST:PORT',
    default: '127.0.0.1:9090',
    description:
      'admin API, /metrics, /healthz, /readyz and the dashboard (keep it private: loopback or an internal network)',
  },
  {
    name: 'admin-token-file',
    env: 'BURROW_ADMIN_TOKEN_FILE',
    type: 'string',
    placeholder: 'FILE',
    description:
      'file holding the admin API bearer token (16+ characters); without it or --admin-token, /metrics and /api answer 401',
  },
  {
    name: 'admin-token',
    env: 'BURROW_ADMIN_TOKEN',
    type: 'string',
    placeholder: 'TOKEN',
    description: 'the admin token itself; prefer the environment variable or a file (flags show in ps)',
  },
  {
    name: 'revoked-tokens',
    env: 'BURROW_REVOKED_TOKENS',
    type: 'string',
    placeholder: 'FILE',
    description:
      'token ids (jti) refused and disconnected, one per line, # comments; reloaded on SIGHUP and on change',
  },
  COMMON_OPTIONS.drainTimeout,
  {
    name: 'response-timeout',
    env: 'BURROW_RESPONSE_TIMEOUT',
    type: 'string',
    placeholder: 'DURATION',
    default: '60s',
    description:
      'time a backend has to send its response head once the whole request reached it (504 after), and an upload may go without a byte (408 after); gRPC calls (content-type application/grpc) carry their own deadline and are exempt',
  },
  {
    name: 'headers-timeout',
    env: 'BURROW_HEADERS_TIMEOUT',
    type: 'string',
    placeholder: 'DURATION',
    default: '20s',
    description: 'time a client has to send its request head (slow clients get 408)',
  },
  {
    name: 'max-tunnels-per-subject',
    env: 'BURROW_MAX_TUNNELS_PER_SUBJECT',
    type: 'string',
    placeholder: 'N',
    default: '64',
    description:
      "agent tunnel connections one token subject may hold open (every replica's --connections together); more are refused with 429",
  },
  {
    name: 'max-connections',
    env: 'BURROW_MAX_CONNECTIONS',
    type: 'string',
    placeholder: 'N',
    default: 'auto',
    description:
      'client connections each public listener (HTTP, TLS, the TCP ports together) holds open; more are closed as they arrive, counted and logged. auto: the open-file limit less 1024, shared by the listeners, so agents can always reconnect',
  },
  COMMON_OPTIONS.keepaliveInterval,
  COMMON_OPTIONS.streamIdleTimeout,
  COMMON_OPTIONS.logLevel,
  COMMON_OPTIONS.help,
];

/** `burrow-relay keygen`. */
export const KEYGEN_OPTIONS: readonly OptionSpec[] = [
  {
    name: 'out',
    type: 'string',
    placeholder: 'DIR',
    default: 'burrow-keys',
    description: 'directory for signing.key (private, mode 0600) and signing.pub',
  },
  { name: 'force', type: 'boolean', description: 'overwrite an existing key pair' },
  { name: 'help', short: 'h', type: 'boolean', description: 'show this help' },
];

/** `burrow-relay token create`. */
export const TOKEN_OPTIONS: readonly OptionSpec[] = [
  {
    name: 'sub',
    type: 'string',
    placeholder: 'NAME',
    description: 'agent identity (tenant); replicas sharing it share routes (required)',
  },
  {
    name: 'hosts',
    type: 'list',
    placeholder: 'PATTERNS',
    description:
      'hostnames the agent may claim, comma-separated; exact or *.suffix (required unless --ports is given)',
  },
  {
    name: 'ports',
    type: 'list',
    placeholder: 'PORTS',
    description:
      "public TCP ports the agent may claim, e.g. 5432,10000-10009 (the relay's --tcp-ports must list them)",
  },
  {
    name: 'ttl',
    type: 'string',
    placeholder: 'DURATION',
    default: '90d',
    description: 'lifetime, e.g. 12h, 30d',
  },
  {
    name: 'key',
    env: 'BURROW_SIGNING_KEY',
    type: 'string',
    placeholder: 'FILE',
    default: 'burrow-keys/signing.key',
    description: 'private signing key from keygen',
  },
  {
    name: 'audience',
    type: 'string',
    placeholder: 'AUD',
    default: 'burrow-relay',
    description: 'audience; must match the relay --audience',
  },
  { name: 'help', short: 'h', type: 'boolean', description: 'show this help' },
];

/** Reads a YAML config file into option values (validated later against the table). */
export async function readConfigFile(path: string): Promise<Record<string, unknown>> {
  const text = await readOptionFile('config', path, MAX_CONFIG_FILE);
  // A number is kept as written (`admin-token: 000123…` would lose its zeros and digits as a number).
  const data = parseUserYaml(text, path, { numbersAsWritten: true });
  if (data === null) {
    // Also what a file being rewritten looks like for a moment: never taken for "all defaults".
    throw new ConfigError(`${path}: the file is empty; write at least one option, or leave --config out`);
  }
  if (typeof data !== 'object' || Array.isArray(data))
    throw new ConfigError(`${path}: expected a mapping of option names to values`);
  return data as Record<string, unknown>;
}

/** Loads every verification key named by --verify-key (files or directories of *.pub). */
export async function loadVerifyKeys(paths: readonly string[]): Promise<VerifyKey[]> {
  const keys: VerifyKey[] = [];
  for (const p of paths) {
    let files = [p];
    try {
      const entries = await readdir(p);
      files = entries
        .filter((e) => e.endsWith('.pub'))
        .sort()
        .map((e) => join(p, e));
      if (files.length === 0)
        throw new ConfigError(
          `--verify-key: directory ${p} has no *.pub files (create one with: burrow-relay keygen --out ${p})`,
        );
    } catch (err) {
      if (err instanceof ConfigError) throw err;
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        throw new ConfigError(
          `--verify-key: ${p} does not exist (create keys with: burrow-relay keygen --out ${p})`,
        );
      }
      // ENOTDIR: a single key file.
    }
    for (const f of files) {
      const pem = await readOptionFile('verify-key', f);
      // Whoever holds the signing key can mint tokens: it stays where tokens are made.
      if (pem.includes('PRIVATE KEY-----'))
        throw new ConfigError(
          `--verify-key: ${f} is a private key; give the relay only its public half (the .pub file keygen wrote beside it)`,
        );
      try {
        keys.push(await loadVerifyKey(pem));
      } catch (err) {
        throw new ConfigError(`--verify-key: ${f} is not an Ed25519 key: ${(err as Error).message}`);
      }
    }
  }
  return keys;
}

/** Largest revocation list accepted, so a wrong file cannot eat the relay's memory. */
const MAX_REVOKED = 100_000;
/** The revocation list's largest file: its ids at their longest, with room for comments. */
const MAX_REVOKED_FILE = 32 * 1024 * 1024;
/** The config file's largest size: its options take a few KiB. */
const MAX_CONFIG_FILE = 1024 * 1024;

/** Reads a revocation list: one token id (jti) per line; blank lines and # comments ignored. */
/** A revocation list read empty while tokens are revoked: the running list stays (see loadRevokedTokens). */
export class EmptyRevocationList extends ConfigError {}

export async function loadRevokedTokens(path: string, { refuseEmpty = false } = {}): Promise<string[]> {
  const text = await readOptionFile('revoked-tokens', path, MAX_REVOKED_FILE);
  // A file read while it is being rewritten is empty: while tokens are revoked (`refuseEmpty`),
  // that would lift every revocation until the next change. A list emptied on purpose keeps a
  // comment line.
  if (refuseEmpty && text === '')
    throw new EmptyRevocationList(
      `--revoked-tokens: ${path} is empty (caught while being rewritten?); to revoke nothing, keep a comment line in it`,
    );
  const ids: string[] = [];
  // CRLF too (a file saved on Windows): `.` stops at a CR, which would keep a comment in the line.
  for (const [i, raw] of text.split(/\r?\n/).entries()) {
    const line = raw.replace(/#.*$/, '').trim();
    if (!line) continue;
    if (!/^[\x21-\x7e]{1,256}$/.test(line)) {
      throw new ConfigError(
        `--revoked-tokens: ${path} line ${i + 1} is not a token id (one jti per line, no spaces, at most 256 characters)`,
      );
    }
    ids.push(line);
  }
  if (ids.length > MAX_REVOKED)
    throw new ConfigError(`--revoked-tokens: ${path} lists ${ids.length} ids; at most ${MAX_REVOKED}`);
  return ids;
}

/** --audience: what tokens must name in `aud`; spaces around it would match no token. */
function audienceOption(values: OptionValues): string {
  const audience = String(values['audience']);
  if (!/^[\x21-\x7e]{1,256}$/.test(audience))
    throw new ConfigError(
      `--audience must be 1 to 256 printable characters without spaces (got ${JSON.stringify(audience.slice(0, 64))})`,
    );
  return audience;
}

/** The admin token from --admin-token or --admin-token-file (not both), checked for strength. */
async function adminTokenFrom(values: OptionValues): Promise<string | undefined> {
  const file = values['admin-token-file'] as string | undefined;
  const direct = values['admin-token'] as string | undefined;
  if (file && direct)
    throw new ConfigError('--admin-token and --admin-token-file exclude each other: pass one');
  const token = file ? (await readOptionFile('admin-token-file', file)).trim() : direct;
  if (token === undefined) return undefined;
  if (!/^[\x21-\x7e]{16,512}$/.test(token)) {
    throw new ConfigError(
      `${file ? `--admin-token-file: ${file}` : '--admin-token'} must hold 16 to 512 printable characters, no spaces (e.g. openssl rand -hex 32)`,
    );
  }
  return token;
}

/**
 * --hsts-max-age in seconds, as browsers are sent it (never a timer here: a
 * year or two is usual). 0 is allowed: max-age=0 is how a site withdraws HSTS.
 */
function hstsMaxAgeOption(values: OptionValues): number {
  const ms = durationOption(values, 'hsts-max-age', { min: 0, max: Number.MAX_SAFE_INTEGER });
  if (ms > 0 && ms < 1000) {
    throw new ConfigError(
      `--hsts-max-age must be 0 (withdraw HSTS) or at least 1s (got "${String(values['hsts-max-age'])}")`,
    );
  }
  return Math.floor(ms / 1000);
}

/** Reads the tunnel endpoint's certificate and key and checks that they make a TLS context. */
async function tunnelTlsPair(certFile: string, keyFile: string): Promise<{ cert: string; key: string }> {
  const pair = {
    cert: await readOptionFile('tunnel-tls-cert', certFile),
    key: await readOptionFile('tunnel-tls-key', keyFile),
  };
  try {
    createSecureContext(pair);
  } catch (err) {
    throw new ConfigError(
      `--tunnel-tls-cert/--tunnel-tls-key: not a usable certificate and key: ${(err as Error).message}`,
    );
  }
  return pair;
}

/** The most --max-connections takes: far above any open-file limit, but a number, not a typo. */
const MAX_CONNECTIONS_CEILING = 10_000_000;

/** --max-connections: `auto` leaves the relay to derive it; otherwise a whole number. */
function maxConnectionsOption(values: OptionValues): { maxConnections?: number } {
  const text = String(values['max-connections']);
  if (text === 'auto') return {};
  const n = wholeNumber(text);
  if (!(n >= 1 && n <= MAX_CONNECTIONS_CEILING)) {
    throw new ConfigError(
      `--max-connections must be auto or a whole number from 1 to ${MAX_CONNECTIONS_CEILING} (got "${text}")`,
    );
  }
  return { maxConnections: n };
}

/** The most ports --tcp-ports opens: each is a listening socket held from the start. */
export const MAX_TCP_PORTS = 1024;

/**
 * A list of ports and FROM-TO ranges (`--tcp-ports`, `token create --ports`),
 * sorted and without repeats. Throws ConfigError naming `option`.
 */
export function parsePortList(items: readonly string[], option: string, max = MAX_TCP_PORTS): number[] {
  const ports = new Set<number>();
  // A flag may list several, comma-separated, as the environment variable does.
  for (const raw of items.flatMap((i) => String(i).split(','))) {
    const item = raw.trim();
    if (item === '') continue;
    const dash = item.indexOf('-');
    const from = portNumber(dash === -1 ? item : item.slice(0, dash));
    const to = dash === -1 ? from : portNumber(item.slice(dash + 1));
    if (!(to >= from)) {
      throw new ConfigError(
        `${option}: "${item}" is not a port (1 to 65535) or a range FROM-TO of them, e.g. 5432 or 10000-10099`,
      );
    }
    if (to - from + 1 + ports.size > max) {
      throw new ConfigError(`${option}: more than ${max} ports; list fewer`);
    }
    for (let p = from; p <= to; p++) ports.add(p);
  }
  return [...ports].sort((a, b) => a - b);
}

/** --tcp-ports, --tcp-host and --tcp-public-host. */
function tcpOptions(values: OptionValues): Pick<RelayOptions, 'tcp'> {
  const ports = parsePortList((values['tcp-ports'] as string[] | undefined) ?? [], '--tcp-ports');
  // Checked without --tcp-ports too: a mistake is refused wherever it was set, not when it first counts.
  const host = String(values['tcp-host']).trim();
  if (host === '') throw new ConfigError('--tcp-host must name an address, e.g. 0.0.0.0');
  const publicHost = tcpPublicHost(values['tcp-public-host'] as string | undefined);
  if (ports.length === 0) return {};
  return { tcp: { host, ports, ...(publicHost ? { publicHost } : {}) } };
}

/** --tcp-public-host: a host name or an IP address (IPv6 with or without brackets), no port. */
function tcpPublicHost(raw: string | undefined): string | undefined {
  const text = raw?.trim();
  if (!text) return undefined;
  const bare = text.replace(/^\[(.*)\]$/, '$1');
  if (isIP(bare) !== 0 || isValidHostname(bare.toLowerCase())) return bare.toLowerCase();
  throw new ConfigError(
    `--tcp-public-host must be the relay's public host name or IP address, without a port (got "${text}")`,
  );
}

/** A whole number option within [min, max]. */
function wholeNumberOption(values: OptionValues, name: string, min: number, max: number): number {
  const text = String(values[name]);
  const n = wholeNumber(text);
  if (!(n >= min && n <= max))
    throw new ConfigError(`--${name} must be a whole number from ${min} to ${max} (got "${text}")`);
  return n;
}

/** Turns parsed option values into RelayOptions, checking every field. */
export async function relayOptionsFrom(
  values: OptionValues,
  {
    initial = true,
    revoking = false,
  }: {
    /** At start (files checked, errors thrown), or a reload. */
    initial?: boolean;
    /** Tokens are revoked now: an empty revocation list is taken for one caught mid-rewrite. */
    revoking?: boolean;
  } = {},
): Promise<{
  options: RelayOptions;
  logLevel: string;
  tunnelTlsError?: string;
  /** Set on a reload whose revocation list was read empty while tokens are revoked: why. */
  revokedTokensError?: string;
}> {
  const logLevel = logLevelOption(values);
  const publicHttpPort =
    values['public-http-port'] !== undefined ? portOption(values, 'public-http-port') : undefined;
  const certFile = values['tunnel-tls-cert'] as string | undefined;
  const keyFile = values['tunnel-tls-key'] as string | undefined;
  if (Boolean(certFile) !== Boolean(keyFile)) {
    throw new ConfigError(
      '--tunnel-tls-cert and --tunnel-tls-key go together: pass both, or neither for plain ws://',
    );
  }
  // At start a broken pair is refused. On a reload it is reported instead: the
  // reloader keeps the running certificate and applies the rest, so a
  // certificate caught mid-rotation never holds back a revocation.
  let tunnelTls: { cert: string; key: string } | undefined;
  let tunnelTlsError: string | undefined;
  if (certFile && keyFile) {
    try {
      tunnelTls = await tunnelTlsPair(certFile, keyFile);
    } catch (err) {
      if (initial) throw err;
      tunnelTlsError = (err as Error).message;
    }
  }
  const adminToken = await adminTokenFrom(values);
  const revokedFile = values['revoked-tokens'] as string | undefined;
  let revokedTokens: string[] = [];
  let revokedTokensError: string | undefined;
  try {
    revokedTokens = revokedFile ? await loadRevokedTokens(revokedFile, { refuseEmpty: revoking }) : [];
  } catch (err) {
    if (!(err instanceof EmptyRevocationList)) throw err;
    revokedTokensError = err.message;
  }
  const tlsText = String(values['tls-listen']);
  const tls = tlsText.trim().toLowerCase() === 'off' ? undefined : parseListen(tlsText, '--tls-listen');
  // Checked with the listener off too: a bad value is refused wherever it was set.
  const helloTimeout = durationOption(values, 'tls-hello-timeout');
  const acmeOrdersPerHour = wholeNumberOption(values, 'acme-orders-per-hour', 1, 10_000);
  const options: RelayOptions = {
    ...(tunnelTls ? { tunnelTls } : {}),
    admin: parseListen(String(values['admin-listen']), '--admin-listen'),
    ...(adminToken ? { adminToken } : {}),
    revokedTokens,
    ...(tls ? { tls, helloTimeout } : {}),
    // The files' contents are checked at start only: on a reload, a change to these options needs a
    // restart, and the files themselves belong to the certificate watcher, which keeps the last good
    // pair. A broken file must not hold back the rest of a reload (a revocation, say).
    ...(await certOptions(values, tls !== undefined, { checkFiles: initial })),
    httpsRedirect: values['no-https-redirect'] !== true,
    http1FastPath: values['no-http1-fast-path'] !== true,
    ...(values['hsts-max-age'] !== undefined ? { hstsMaxAge: hstsMaxAgeOption(values) } : {}),
    ...(values['public-https-port'] !== undefined
      ? { publicHttpsPort: portOption(values, 'public-https-port') }
      : {}),
    http: parseListen(String(values['http-listen']), '--http-listen'),
    tunnel: parseListen(String(values['tunnel-listen']), '--tunnel-listen'),
    audience: audienceOption(values),
    drainTimeout: durationOption(values, 'drain-timeout'),
    responseHeadTimeout: durationOption(values, 'response-timeout'),
    headersTimeout: durationOption(values, 'headers-timeout'),
    ...maxConnectionsOption(values),
    maxTunnelsPerSubject: wholeNumberOption(values, 'max-tunnels-per-subject', 1, 100_000),
    session: {
      keepaliveInterval: durationOption(values, 'keepalive-interval', { min: MIN_KEEPALIVE_INTERVAL }),
      streamIdleTimeout: streamIdleTimeoutOption(values),
    },
    ...(publicHttpPort ? { publicHttpPort } : {}),
    ...tcpOptions(values),
    // Last: a value mistaken above is named before a key directory that is not there yet.
    verifyKeys: await loadVerifyKeys(values['verify-key'] as string[]),
  };
  if (options.acme) options.acme.ordersPerHour = acmeOrdersPerHour;
  checkDistinctListeners(options);
  return {
    options,
    logLevel,
    ...(tunnelTlsError ? { tunnelTlsError } : {}),
    ...(revokedTokensError ? { revokedTokensError } : {}),
  };
}

/** One spelling per address: IPv6 in its short form (`::0` is `::`), IPv4-mapped IPv6 as IPv4. */
function canonicalHost(host: string): string {
  if (isIP(host) !== 6) return host;
  const short = new URL(`http://[${host}]`).hostname.slice(1, -1);
  const mapped = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(short);
  if (!mapped) return short;
  const [hi, lo] = [Number.parseInt(mapped[1]!, 16), Number.parseInt(mapped[2]!, 16)];
  return `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`;
}

/**
 * Two listeners on one address would fail at start with "address in use",
 * blaming another process: say which two options collide instead. Port 0
 * (any free port) never collides.
 */
function checkDistinctListeners(options: RelayOptions): void {
  const listeners: Array<[string, { host: string; port: number }]> = [
    ['--http-listen', options.http],
    ['--tunnel-listen', options.tunnel],
    ...(options.tls ? [['--tls-listen', options.tls] as [string, { host: string; port: number }]] : []),
    ...(options.admin ? [['--admin-listen', options.admin] as [string, { host: string; port: number }]] : []),
    ...(options.tcp?.ports ?? []).map(
      (port) =>
        ['--tcp-ports', { host: options.tcp!.host, port }] as [string, { host: string; port: number }],
    ),
  ];
  // `::` takes the port on every address (dual stack); `0.0.0.0` on every IPv4 one.
  const overlap = (a: string, b: string) => {
    const [x, y] = [canonicalHost(a), canonicalHost(b)];
    const v4wildcard = (x === '0.0.0.0' || y === '0.0.0.0') && isIP(x) !== 6 && isIP(y) !== 6;
    return x === y || x === '::' || y === '::' || v4wildcard;
  };
  for (const [i, [a, at]] of listeners.entries()) {
    for (const [b, bt] of listeners.slice(i + 1)) {
      if (at.port === 0 || at.port !== bt.port) continue;
      if (overlap(at.host, bt.host))
        throw new ConfigError(
          `${a} and ${b} both listen on port ${at.port} (${at.host} and ${bt.host}); give each its own port`,
        );
    }
  }
}
