import { closeSync, openSync, readFileSync, readSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { parseDuration } from './duration.js';
import { ConfigError } from './errors.js';

/**
 * One table of options per binary drives the flag parser, environment
 * variables and `--help`, so the three can never disagree. docs/ copies the
 * same table (a test checks every option is documented).
 */
export interface OptionSpec {
  /** Flag name without dashes, e.g. "http-listen". */
  name: string;
  /** Environment variable, e.g. "BURROW_HTTP_LISTEN". */
  env?: string;
  type: 'string' | 'boolean' | 'list';
  /** Default as shown in --help; applied when neither flag nor env is given. */
  default?: string | boolean;
  /** Unit and meaning, one line. */
  description: string;
  /** Placeholder shown in --help, e.g. "HOST:PORT". */
  placeholder?: string;
  short?: string;
}

export type OptionValues = Record<string, string | boolean | string[] | undefined>;

/**
 * Where each option's value came from, named as an error message should name
 * it: `--name` (a flag), the environment variable, or `FILE: "name"` (a key
 * of the config file). Options left at their default have no entry.
 */
export type OptionSources = Record<string, string>;

/**
 * Parses argv against the table. Precedence: flags, then environment
 * variables, then `file` (a YAML config file's top-level keys, named like the
 * flags), then defaults.
 */
export function parseOptions(
  specs: readonly OptionSpec[],
  argv: string[],
  env: NodeJS.ProcessEnv = process.env,
  file: Record<string, unknown> = {},
  fileName = 'config file',
): { values: OptionValues; positionals: string[]; sources: OptionSources } {
  const known = new Set(specs.map((s) => s.name));
  for (const key of Object.keys(file)) {
    if (!known.has(key))
      throw new ConfigError(`${fileName}: unknown key "${key}" (keys are the long flag names, see --help)`);
  }
  const options: Record<string, { type: 'string' | 'boolean'; multiple?: boolean; short?: string }> = {};
  for (const s of specs) {
    options[s.name] = {
      type: s.type === 'boolean' ? 'boolean' : 'string',
      ...(s.type === 'list' ? { multiple: true } : {}),
      ...(s.short ? { short: s.short } : {}),
    };
  }
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({ args: argv, options, allowPositionals: true, strict: true });
  } catch (err) {
    throw new ConfigError(`${oneLine((err as Error).message)} (see --help)`);
  }
  const [stray] = parsed.positionals;
  if (stray !== undefined) {
    // A YAML file given without its flag is the likely mistake: say which flag.
    const fileFlag = specs.find((s) => s.name === 'config') ?? specs.find((s) => s.name === 'routes');
    const hint =
      fileFlag && /\.ya?ml$/i.test(stray) ? ` (did you mean --${fileFlag.name} ${stray}?)` : ' (see --help)';
    throw new ConfigError(`unexpected argument "${stray}"${hint}`);
  }
  const values: OptionValues = {};
  const sources: OptionSources = {};
  for (const s of specs) {
    let v = parsed.values[s.name] as string | boolean | string[] | undefined;
    if (v !== undefined) sources[s.name] = `--${s.name}`;
    if (v === undefined && s.env && env[s.env] !== undefined && env[s.env] !== '') {
      sources[s.name] = s.env;
      const raw = env[s.env]!;
      if (s.type === 'boolean') {
        if (!/^(true|false|1|0)$/i.test(raw))
          throw new ConfigError(`${s.env} must be true or false (got "${raw}")`);
        v = /^(true|1)$/i.test(raw);
      } else if (s.type === 'list') {
        v = splitList(raw);
      } else {
        v = raw;
      }
    }
    if (isUnset(v) && file[s.name] !== undefined) {
      v = fromFile(s, file[s.name], fileName);
      sources[s.name] = `${fileName}: "${s.name}"`;
    }
    if (isUnset(v)) {
      delete sources[s.name];
      v = s.default === undefined ? undefined : s.type === 'list' ? splitList(String(s.default)) : s.default;
    }
    values[s.name] = v;
  }
  return { values, positionals: parsed.positionals, sources };
}

/**
 * Runs `build`, which turns option values into a configuration, and makes its
 * ConfigError name where each value it mentions was set. Option readers name
 * options by their flags (`--drain-timeout: …`, `--cert-file and --key-file go
 * in pairs`); a flag whose value came from an environment variable or the
 * config file becomes that (`BURROW_DRAIN_TIMEOUT: …`, `relay.yaml:
 * "key-file"`, or `"key-file" in relay.yaml` after the start of the message),
 * which is where the user has to look. Flags of options left at their default
 * stay as they are: they are advice on what to pass.
 */
export async function attributeErrors<T>(sources: OptionSources, build: () => T | Promise<T>): Promise<T> {
  try {
    return await build();
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    const message = attribute(sources, err.message);
    if (message === err.message) throw err;
    throw new ConfigError(message, { cause: err });
  }
}

/** How parseOptions names an option set in the config file: FILE: "name". */
const FILE_SOURCE = /^(.+): "([a-z0-9-]+)"$/;

/** `message` with each flag it names replaced by where that option was set (see attributeErrors). */
export function attribute(sources: OptionSources, message: string): string {
  return message.replace(
    /(^|[^\w-])--([a-z0-9][a-z0-9-]*)/g,
    (all, before: string, name: string, at: number) => {
      if (!Object.hasOwn(sources, name)) return all;
      const source = sources[name]!;
      // Mid-sentence, `relay.yaml: "tls-listen"` would read as a sentence of its own.
      const inFile = at > 0 ? FILE_SOURCE.exec(source) : null;
      return `${before}${inFile ? `"${inFile[2]}" in ${inFile[1]}` : source}`;
    },
  );
}

/**
 * parseArgs's message on one line, without its advice on `--flag=-value` and
 * `--` (for a dash-prefixed value the fix is rarely a literal dash). Node puts
 * that advice after ". " or on a line of its own, depending on the error.
 */
function oneLine(message: string): string {
  return message
    .replace(/\.?\s*To specify .*$/s, '')
    .replace(/\s*\n\s*/g, ' ')
    .trim();
}

/**
 * A list set to nothing (`BURROW_X=,`, `key: []`) counts as not set: the next
 * source, then the default, applies. Kept empty, `verify-key: []` would start a
 * relay that refuses every agent, and `acme-challenges: []` one that can
 * validate no order.
 */
function isUnset(v: string | boolean | string[] | undefined): boolean {
  return v === undefined || (Array.isArray(v) && v.length === 0);
}

/** A comma-separated list (environment values and list defaults). */
function splitList(raw: string): string[] {
  return raw
    .split(',')
    .map((x) => x.trim())
    .filter(Boolean);
}

function fromFile(s: OptionSpec, raw: unknown, fileName: string): string | boolean | string[] {
  const where = `${fileName}: "${s.name}"`;
  if (s.type === 'boolean') {
    if (typeof raw !== 'boolean') throw new ConfigError(`${where} must be true or false`);
    return raw;
  }
  if (s.type === 'list') {
    const items = Array.isArray(raw) ? raw : [raw];
    if (!items.every((x) => typeof x === 'string' || typeof x === 'number')) {
      throw new ConfigError(`${where} must be a list of strings`);
    }
    return items.map(String);
  }
  // A number (YAML reads `drain-timeout: 30` as one) is kept as text: the option's reader checks it,
  // and attributeErrors names this file and key in what it says.
  if (typeof raw !== 'string' && typeof raw !== 'number') throw new ConfigError(`${where} must be a string`);
  return String(raw);
}

/** Renders the --help table: flag, env, default, description. */
export function formatHelp(usage: string, specs: readonly OptionSpec[], footer = ''): string {
  const rows = specs.map((s) => {
    const flag = `${s.short ? `-${s.short}, ` : '    '}--${s.name}${s.type === 'boolean' ? '' : ` ${s.placeholder ?? 'VALUE'}`}`;
    const extra = [s.env ? `env ${s.env}` : '', s.default !== undefined ? `default ${String(s.default)}` : '']
      .filter(Boolean)
      .join('; ');
    return {
      flag,
      text: `${s.description}${s.type === 'list' ? ' (repeatable)' : ''}${extra ? ` [${extra}]` : ''}`,
    };
  });
  const width = Math.min(34, Math.max(...rows.map((r) => r.flag.length)) + 2);
  const lines = rows.map((r) =>
    r.flag.length + 2 > width
      ? `  ${r.flag}\n  ${' '.repeat(width)}${r.text}`
      : `  ${r.flag.padEnd(width)}${r.text}`,
  );
  return `${usage}\n\nOptions:\n${lines.join('\n')}\n${footer ? `\n${footer}\n` : ''}`;
}

/** Parses "HOST:PORT" or ":PORT" or "[v6]:PORT". Throws ConfigError naming `field`. */
export function parseListen(text: string, field: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:]*)):(\d{1,5})$/.exec(text.trim());
  const port = m ? Number(m[3]) : Number.NaN;
  if (!m || port > 65535)
    throw new ConfigError(`${field} must be HOST:PORT, e.g. 0.0.0.0:8080 (got "${text}")`);
  return { host: m[1] ?? (m[2] || '0.0.0.0'), port };
}

/**
 * Whether the command line asks for --help, read from the flags alone: a
 * mistake in the environment (or a config file) must not hide the help that
 * would explain it.
 */
export function helpRequested(specs: readonly OptionSpec[], argv: string[]): boolean {
  return parseOptions(specs, argv, {}).values['help'] === true;
}

/** The version in the package.json one directory above a CLI module (`import.meta.url`), for `--version`. */
export function packageVersion(moduleUrl: string): string {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', moduleUrl), 'utf8')) as { version: string };
  return pkg.version;
}

/** Runs a CLI entry point: ConfigError prints one line and exits 1; anything else keeps its stack. */
export async function runCli(name: string, main: () => Promise<void>): Promise<void> {
  try {
    await main();
  } catch (err) {
    if (err instanceof Error && (err as { code?: string }).code === 'BURROW_ERR_CONFIG') {
      process.stderr.write(`${name}: ${err.message}\n`);
      process.exit(1);
    }
    const line = listenFailure(err);
    if (line !== undefined) {
      process.stderr.write(`${name}: ${line}\n`);
      process.exit(1);
    }
    throw err;
  }
}

/**
 * The line a CLI prints for a listener that could not start: the address is
 * taken or forbidden, or its host name does not resolve. Undefined for any
 * other error, which keeps its stack.
 */
export function listenFailure(err: unknown): string | undefined {
  const e = err as
    | (NodeJS.ErrnoException & { address?: string; port?: number; hostname?: string })
    | undefined;
  if (e?.syscall === 'listen') {
    return `cannot listen on ${e.address}:${e.port}: ${LISTEN_ERRORS[e.code ?? ''] ?? e.code}`;
  }
  // A listen address naming a host: Node looks it up before it listens.
  if (e?.syscall === 'getaddrinfo' && e.hostname !== undefined) {
    const why =
      e.code === 'ENOTFOUND' ? 'no such host name' : `the host name cannot be resolved now (${e.code})`;
    return `cannot listen on ${e.hostname}: ${why}; use an IP address of this machine, or 0.0.0.0 for all`;
  }
  return undefined;
}

/**
 * A whole number as options take it: decimal digits alone. NaN for anything
 * else, where Number() would read "0x1bb" as 443, "1e1" as 10 and " 2" as 2.
 */
export function wholeNumber(text: string): number {
  return /^[0-9]{1,15}$/.test(text) ? Number(text) : Number.NaN;
}

/** A TCP port as options, flags and annotations take it: 1 to 65535 in decimal digits; NaN otherwise. */
export function portNumber(text: string): number {
  const port = wholeNumber(text);
  return port >= 1 && port <= 65535 ? port : Number.NaN;
}

/** What a failed listen means, for the one line the CLIs print. */
const LISTEN_ERRORS: Record<string, string> = {
  EADDRINUSE: 'the address is already in use (another process holds it; pick another address or stop it)',
  EACCES: 'permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)',
  EADDRNOTAVAIL: 'no such address on this machine',
};

/** Log levels accepted by --log-level. */
export const LOG_LEVELS: ReadonlySet<string> = new Set([
  'fatal',
  'error',
  'warn',
  'info',
  'debug',
  'trace',
  'silent',
]);

/** Checks --log-level; throws ConfigError listing the choices. */
export function logLevelOption(values: OptionValues): string {
  const level = String(values['log-level']);
  if (!LOG_LEVELS.has(level)) {
    throw new ConfigError(`--log-level must be one of ${[...LOG_LEVELS].join(', ')} (got "${level}")`);
  }
  return level;
}

/** Reads the file an option names; a failure is a ConfigError naming the option, the file and why. */
export async function readOptionFile(
  flag: string,
  file: string,
  maxBytes = MAX_OPTION_FILE,
): Promise<string> {
  try {
    return await readFileUpTo(file, maxBytes);
  } catch (err) {
    throw optionFileError(flag, file, maxBytes, err);
  }
}

/** readOptionFile for callers that cannot wait (the agent's token, read before each connect). */
export function readOptionFileSync(flag: string, file: string, maxBytes = MAX_OPTION_FILE): string {
  try {
    return readFileUpToSync(file, maxBytes);
  } catch (err) {
    throw optionFileError(flag, file, maxBytes, err);
  }
}

function optionFileError(flag: string, file: string, maxBytes: number, err: unknown): ConfigError {
  const code = (err as NodeJS.ErrnoException).code ?? 'error';
  if (code === 'EFBIG')
    return new ConfigError(`--${flag}: ${file} is over ${maxBytes} bytes; is it the right file?`);
  return new ConfigError(`--${flag}: cannot read ${file} (${code})`);
}

/**
 * A file's text, read in pieces and refused with code EFBIG past `maxBytes`:
 * a wrong path (a log, /dev/zero) must not fill the memory. Other failures
 * are the file system's own errors.
 */
export async function readFileUpTo(file: string, maxBytes = MAX_OPTION_FILE): Promise<string> {
  const handle = await open(file, 'r');
  try {
    const text = new BoundedText(file, maxBytes);
    for (;;) {
      const chunk = Buffer.allocUnsafe(READ_PIECE);
      const { bytesRead } = await handle.read(chunk, 0, chunk.length, null);
      if (bytesRead === 0) return text.toString();
      text.add(chunk.subarray(0, bytesRead));
    }
  } finally {
    await handle.close();
  }
}

/** readFileUpTo, synchronous. */
function readFileUpToSync(file: string, maxBytes = MAX_OPTION_FILE): string {
  const fd = openSync(file, 'r');
  try {
    const text = new BoundedText(file, maxBytes);
    for (;;) {
      const chunk = Buffer.allocUnsafe(READ_PIECE);
      const bytesRead = readSync(fd, chunk, 0, chunk.length, null);
      if (bytesRead === 0) return text.toString();
      text.add(chunk.subarray(0, bytesRead));
    }
  } finally {
    closeSync(fd);
  }
}

const READ_PIECE = 64 * 1024;

/** The pieces of a file read so far; refuses (EFBIG) the one that takes it past the limit. */
class BoundedText {
  readonly #chunks: Buffer[] = [];
  #total = 0;

  constructor(
    readonly file: string,
    readonly maxBytes: number,
  ) {}

  add(piece: Buffer): void {
    this.#total += piece.length;
    if (this.#total > this.maxBytes)
      throw Object.assign(new Error(`${this.file} is over ${this.maxBytes} bytes`), { code: 'EFBIG' });
    this.#chunks.push(piece);
  }

  toString(): string {
    return Buffer.concat(this.#chunks, this.#total).toString('utf8');
  }
}

/** The largest file an option names that is read whole (keys, certificates, tokens, kubeconfig). */
export const MAX_OPTION_FILE = 1024 * 1024;

/**
 * The longest duration an option that feeds a timer may have: Node's timers
 * hold at most 2^31-1 ms (about 24.8 days) and fire after 1 ms past that; a
 * second is kept back for deadlines built on top (drain + 1 s).
 */
export const MAX_TIMER_DURATION = 2 ** 31 - 1 - 1000;

/**
 * A duration option in ms, at least `min` (default 1 ms; 0 lets "0" through)
 * and at most `max` (default: what a timer can hold). Errors name the flag.
 */
export function durationOption(
  values: OptionValues,
  name: string,
  { min = 1, max = MAX_TIMER_DURATION }: { min?: number; max?: number } = {},
): number {
  let ms: number;
  try {
    ms = parseDuration(String(values[name]));
  } catch (err) {
    throw new ConfigError(`--${name}: ${(err as Error).message}`);
  }
  const got = `(got "${String(values[name])}")`;
  if (ms < min) throw new ConfigError(`--${name} must be at least ${min}ms ${got}`);
  if (ms > max) {
    const limit =
      max === MAX_TIMER_DURATION ? 'under 24.8 days (the longest a timer can wait)' : `at most ${max}ms`;
    throw new ConfigError(`--${name} must be ${limit} ${got}`);
  }
  return ms;
}

/** The shortest `--stream-idle-timeout` other than 0 (never), ms. */
export const MIN_STREAM_IDLE_TIMEOUT = 1000;

/** `--stream-idle-timeout` in ms; 0 means streams are never closed for being quiet. */
export function streamIdleTimeoutOption(values: OptionValues): number {
  const ms = durationOption(values, 'stream-idle-timeout', { min: 0 });
  if (ms > 0 && ms < MIN_STREAM_IDLE_TIMEOUT) {
    throw new ConfigError(
      `--stream-idle-timeout must be 0 (never) or at least 1s (got "${String(values['stream-idle-timeout'])}")`,
    );
  }
  return ms;
}

/** Options both binaries share, defined once so their flags, env and help agree. */
export const COMMON_OPTIONS = {
  keepaliveInterval: {
    name: 'keepalive-interval',
    env: 'BURROW_KEEPALIVE_INTERVAL',
    type: 'string',
    placeholder: 'DURATION',
    default: '20s',
    description: 'tunnel PING interval; a tunnel is dead after 3 missed (keep below NAT idle timeouts)',
  },
  streamIdleTimeout: {
    name: 'stream-idle-timeout',
    env: 'BURROW_STREAM_IDLE_TIMEOUT',
    type: 'string',
    placeholder: 'DURATION',
    default: '15m',
    description:
      'a tunnel stream (a request, a WebSocket, a TCP connection) with no data either way for this long is closed; 0 never. The shorter of the relay and agent settings applies',
  },
  drainTimeout: {
    name: 'drain-timeout',
    env: 'BURROW_DRAIN_TIMEOUT',
    type: 'string',
    placeholder: 'DURATION',
    default: '30s',
    description:
      'on SIGTERM, how long in-flight requests, and WebSocket and TCP connections still carrying data, may take to finish (one quiet for 1 s is closed)',
  },
  logLevel: {
    name: 'log-level',
    env: 'BURROW_LOG_LEVEL',
    type: 'string',
    placeholder: 'LEVEL',
    default: 'info',
    description: 'fatal, error, warn, info, debug, trace or silent',
  },
  help: { name: 'help', short: 'h', type: 'boolean', description: 'show this help' },
} as const satisfies Record<string, OptionSpec>;

/**
 * SIGTERM/SIGINT run `close` (a drain) once, then exit 0 (1 if it failed); a
 * second signal means the operator will not wait and exits 1 at once.
 */
export function exitOnSignals(
  logger: {
    info(o: object, m: string): void;
    warn(o: object, m: string): void;
    error(o: object, m: string): void;
    flush?(cb?: (err?: Error) => void): void;
  },
  close: () => Promise<unknown>,
): void {
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) {
      logger.warn({ signal }, 'second signal: exiting without waiting for in-flight requests');
      exitAfterFlush(logger, 1);
      return;
    }
    stopping = true;
    logger.info({ signal }, 'shutting down');
    close().then(
      () => exitAfterFlush(logger, 0),
      (err: unknown) => {
        logger.error({ err }, 'shutdown failed');
        exitAfterFlush(logger, 1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

/**
 * Exits once the logger has written out what it holds, or after a second.
 * Exiting with log lines still queued leaves them to pino's exit hook, which
 * writes them synchronously and retries for ever if stdout is a broken pipe
 * (a log collector that went away): the process would never exit. Flushing
 * first lets that failure surface as the stream error pino handles.
 */
function exitAfterFlush(logger: { flush?(cb?: (err?: Error) => void): void }, code: number): void {
  const exit = () => process.exit(code);
  setTimeout(exit, 1_000);
  if (!logger.flush) return exit();
  try {
    logger.flush(() => exit());
  } catch {
    exit();
  }
}
