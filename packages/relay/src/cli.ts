#!/usr/bin/env node
import { randomUUID } from 'node:crypto';
import { chmod, mkdir, open, stat, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import {
  attribute,
  attributeErrors,
  ConfigError,
  checkHostPattern,
  createAgentToken,
  createLogger,
  exitOnSignals,
  formatHelp,
  generateSigningKeyPair,
  helpRequested,
  isValidSubject,
  loadSigningKey,
  MAX_OPTION_FILE,
  MAX_TOKEN_HOSTS,
  type OptionValues,
  packageVersion,
  parseDuration,
  parseOptions,
  readFileUpTo,
  runCli,
  SUBJECT_RULE,
} from '@burrow/shared';
import {
  KEYGEN_OPTIONS,
  parsePortList,
  readConfigFile,
  relayOptionsFrom,
  SERVE_OPTIONS,
  TOKEN_OPTIONS,
} from './config.js';
import { startRelay } from './relay.js';
import { ConfigReloader, type LoadedConfig, withRunningValues } from './reload.js';

const USAGE = `burrow-relay — the public side of Burrow: routes HTTP and TLS by hostname, and TCP by port,
through agents' tunnels.

Usage:
  burrow-relay serve [options]                 run the relay
  burrow-relay keygen [--out DIR]              create the Ed25519 key pair that signs agent tokens
  burrow-relay token create --sub NAME --hosts PATTERNS [--ports PORTS] [--ttl DURATION] [--key FILE]
                                               print a signed agent token
  burrow-relay <command> --help                options of a command
  burrow-relay --version                       print the version and exit`;

async function serve(argv: string[]): Promise<void> {
  if (helpRequested(SERVE_OPTIONS, argv))
    return void process.stdout.write(formatHelp('Usage: burrow-relay serve [options]', SERVE_OPTIONS));
  const first = parseOptions(SERVE_OPTIONS, argv);
  // Flags and environment are fixed for the process's life; the file is read
  // again on every reload, and --config itself comes from flags or env only.
  const configFile = first.values['config'] ? String(first.values['config']) : undefined;
  /**
   * The configuration: at start (no `running`), or on a reload, given the
   * values in effect. A reload whose only mistakes are in options that need a
   * restart still applies the rest (a revocation must not wait for them): it
   * is loaded again with those options at their running values, and says why.
   */
  const load = async (running?: LoadedConfig): Promise<LoadedConfig> => {
    const file = configFile ? await attributeErrors(first.sources, () => readConfigFile(configFile)) : {};
    const { values, sources } = parseOptions(SERVE_OPTIONS, argv, process.env, file, configFile ?? '');
    const revoking = (running?.options.revokedTokens?.length ?? 0) > 0;
    const from = async (v: OptionValues) => {
      const loaded = await attributeErrors(sources, () =>
        relayOptionsFrom(v, { initial: running === undefined, revoking }),
      );
      // A tunnel certificate problem on a reload is reported, not thrown: it names its source all the same.
      if (loaded.tunnelTlsError) loaded.tunnelTlsError = attribute(sources, loaded.tunnelTlsError);
      if (loaded.revokedTokensError)
        loaded.revokedTokensError = attribute(sources, loaded.revokedTokensError);
      return loaded;
    };
    try {
      return { values, ...(await from(values)) };
    } catch (err) {
      if (!running || !(err instanceof ConfigError)) throw err;
      const effective = withRunningValues(values, running.values);
      return { values: effective, configured: values, restartError: err.message, ...(await from(effective)) };
    }
  };
  const current = await load();
  const logger = createLogger({ name: 'burrow-relay', level: current.logLevel });
  // Installed before listening: SIGHUP's default action would end the process.
  let reloader: ConfigReloader | undefined;
  process.on('SIGHUP', () => {
    if (!reloader) return void logger.warn({ signal: 'SIGHUP' }, 'still starting; reload ignored');
    logger.info({ signal: 'SIGHUP' }, 'reloading configuration');
    void reloader.reload('SIGHUP');
    // The certificate files are watched, but a watch cannot see everything (a symlink higher
    // up their path repointed, a network filesystem): SIGHUP is the way to say they changed.
    void relay.reloadCertificateFiles();
  });
  const relay = await startRelay({ ...current.options, logger });
  reloader = new ConfigReloader({ relay, logger, load, current });
  reloader.watchFiles();
  exitOnSignals(logger, () => {
    reloader?.stopWatching();
    return relay.close();
  });
}

async function keygen(argv: string[]): Promise<void> {
  if (helpRequested(KEYGEN_OPTIONS, argv))
    return void process.stdout.write(formatHelp('Usage: burrow-relay keygen [--out DIR]', KEYGEN_OPTIONS));
  const { values } = parseOptions(KEYGEN_OPTIONS, argv);
  const dir = String(values['out']);
  if (dir === '') throw new ConfigError('--out: needs a directory');
  const created = await mkdir(dir, { recursive: true }).catch(cannotWrite);
  // As signing.pub below: the relay's user must be able to reach it, whatever the umask, through
  // every directory keygen made.
  if (created !== undefined) {
    for (let d = resolve(dir); ; d = dirname(d)) {
      await chmod(d, 0o755).catch(cannotWrite);
      if (d === resolve(created) || d === dirname(d)) break;
    }
  }
  const force = values['force'] === true;
  const [keyPath, pubPath] = [join(dir, 'signing.key'), join(dir, 'signing.pub')];
  // Either file may be all that is left of a pair in use (signing.key is often moved off the
  // relay's machine): neither is replaced without --force, and nothing is written if one is there.
  if (!force) {
    for (const path of [keyPath, pubPath]) {
      if (
        await stat(path).then(
          () => true,
          () => false,
        )
      ) {
        throw new ConfigError(
          `${path} already exists; pass --force to replace the pair (existing tokens stop verifying)`,
        );
      }
    }
  }
  const pair = await generateSigningKeyPair();
  await writePrivateKey(keyPath, pair.privatePem, force).catch(cannotWrite);
  await writeFile(pubPath, pair.publicPem, { mode: 0o644, flag: force ? 'w' : 'wx' }).catch(cannotWrite);
  // The relay's own user reads it: a strict umask (027 on hardened hosts) must not take that away.
  await chmod(pubPath, 0o644).catch(cannotWrite);
  process.stdout.write(
    `wrote ${join(dir, 'signing.key')} (keep secret) and ${join(dir, 'signing.pub')} (key id ${pair.kid})\n`,
  );
}

/** Why keygen cannot write under --out, for errors an operator fixes (`sudo`, another --out). */
const WRITE_ERRORS: Record<string, string> = {
  EACCES: "EACCES: permission denied; run as the directory's owner or root",
  EPERM: "EPERM: permission denied; run as the directory's owner or root",
  EROFS: 'EROFS: a read-only file system',
  ENOTDIR: 'ENOTDIR: a file stands where a directory should',
  EISDIR: 'EISDIR: a directory stands where the key file should',
  ENOSPC: 'ENOSPC: no space left on the device',
  EEXIST: 'EEXIST: a file stands where a directory should, or appeared meanwhile',
  ENOENT: 'ENOENT: no such directory',
};

/** Throws a failed write under --out as one line naming the path; anything else as it is. */
function cannotWrite(err: unknown): never {
  const e = err as NodeJS.ErrnoException;
  const why = WRITE_ERRORS[e.code ?? ''];
  if (why && e.path) throw new ConfigError(`--out: cannot write ${e.path} (${why})`);
  throw err;
}

/**
 * Writes a private key readable by its owner only. open()'s mode applies to a
 * file it creates; one that --force replaces keeps its own (0644 after a copy
 * or a restore), so the mode is set before a byte of the new key is written.
 */
async function writePrivateKey(path: string, pem: string, replace: boolean): Promise<void> {
  const handle = await open(path, replace ? 'w' : 'wx', 0o600);
  try {
    await handle.chmod(0o600);
    await handle.writeFile(pem);
  } finally {
    await handle.close();
  }
}

/**
 * Reads --key. Only a missing file gets the keygen advice: for a key that
 * exists, `keygen --force` would replace it and every token it signed would
 * stop verifying.
 */
async function readSigningKeyFile(keyPath: string): Promise<string> {
  let pem: string;
  try {
    pem = await readFileUpTo(keyPath);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'error';
    const why: Record<string, string> = {
      EFBIG: `EFBIG: over ${MAX_OPTION_FILE} bytes; is it the right file?`,
      ENOENT: 'ENOENT: no such file; create a key pair with: burrow-relay keygen',
      EACCES: "EACCES: permission denied; run as the key's owner or root",
      EPERM: "EPERM: permission denied; run as the key's owner or root",
      EISDIR: 'EISDIR: a directory; pass the signing.key file in it',
    };
    throw new ConfigError(`--key: cannot read ${keyPath} (${why[code] ?? code})`);
  }
  if (/-----BEGIN PUBLIC KEY-----/.test(pem) && !/PRIVATE KEY-----/.test(pem)) {
    throw new ConfigError(
      `--key: ${keyPath} is a public key; token create needs the private signing.key (from burrow-relay keygen)`,
    );
  }
  return pem;
}

async function token(argv: string[]): Promise<void> {
  const [sub, ...rest] = argv;
  if (sub !== 'create') {
    if (sub === '--help' || sub === '-h' || sub === undefined) {
      rejectExtra(rest);
      return void process.stdout.write(
        formatHelp('Usage: burrow-relay token create [options]', TOKEN_OPTIONS),
      );
    }
    throw new ConfigError(`unknown token command "${sub}"; try: burrow-relay token create --help`);
  }
  if (helpRequested(TOKEN_OPTIONS, rest))
    return void process.stdout.write(formatHelp('Usage: burrow-relay token create [options]', TOKEN_OPTIONS));
  const { values, sources } = parseOptions(TOKEN_OPTIONS, rest);
  return attributeErrors(sources, () => createToken(values));
}

/** Signs a token from `token create`'s options and prints it. */
async function createToken(values: OptionValues): Promise<void> {
  if (!values['sub'])
    throw new ConfigError('--sub is required (the agent identity, e.g. --sub home-cluster)');
  const hosts = ((values['hosts'] as string[] | undefined) ?? [])
    .flatMap((h) => h.split(','))
    .map((h) => h.trim())
    .filter(Boolean);
  // At most 256 ports: what a token's claim holds.
  const ports = parsePortList((values['ports'] as string[] | undefined) ?? [], '--ports', 256);
  if (hosts.length === 0 && ports.length === 0)
    throw new ConfigError('--hosts is required (e.g. --hosts "*.apps.example.com"), or --ports for TCP only');
  // Checked here as well as when signing, so the message names the flag to fix.
  const sub = String(values['sub']);
  if (!isValidSubject(sub)) throw new ConfigError(`--sub must be ${SUBJECT_RULE} (got "${sub}")`);
  if (hosts.length > MAX_TOKEN_HOSTS)
    throw new ConfigError(`--hosts: at most ${MAX_TOKEN_HOSTS} patterns in one token (got ${hosts.length})`);
  for (const h of hosts) {
    const problem = checkHostPattern(h);
    if (problem) throw new ConfigError(`--hosts: ${problem}`);
  }
  let ttl: number;
  try {
    ttl = parseDuration(String(values['ttl']));
  } catch (err) {
    throw new ConfigError(`--ttl: ${(err as Error).message}`);
  }
  if (ttl < 1000) throw new ConfigError(`--ttl must be at least 1s (got "${String(values['ttl'])}")`);
  const keyPath = String(values['key']);
  const pem = await readSigningKeyFile(keyPath);
  const key = await loadSigningKey(pem).catch((err: Error) => {
    throw new ConfigError(`--key: ${keyPath}: ${err.message}`);
  });
  const jti = randomUUID();
  const jwt = await createAgentToken(key, {
    jti,
    sub,
    hosts,
    ...(ports.length ? { ports } : {}),
    ttl,
    audience: String(values['audience']),
  }).catch((err: Error) => {
    throw new ConfigError(err.message);
  });
  process.stdout.write(`${jwt}\n`);
  // The id goes to stderr, so `> agent.token` keeps only the token: note it to revoke the token later.
  process.stderr.write(`token id (jti, for --revoked-tokens): ${jti}\n`);
}

/** Arguments after one that takes none, e.g. `token --help extra`. */
function rejectExtra(argv: readonly string[]): void {
  if (argv.length > 0) throw new ConfigError(`unexpected argument "${argv[0]}" (see --help)`);
}

await runCli('burrow-relay', async () => {
  const [command, ...argv] = process.argv.slice(2);
  switch (command) {
    case 'serve':
      return serve(argv);
    case 'keygen':
      return keygen(argv);
    case 'token':
      return token(argv);
    case undefined:
    case '--help':
    case '-h':
    case 'help':
      process.stdout.write(`${USAGE}\n`);
      return;
    case '--version':
      rejectExtra(argv);
      process.stdout.write(`burrow-relay ${packageVersion(import.meta.url)}\n`);
      return;
    default:
      throw new ConfigError(`unknown command "${command}"; run burrow-relay --help`);
  }
});
