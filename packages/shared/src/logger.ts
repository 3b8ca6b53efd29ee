import { type Logger, type LoggerOptions, pino } from 'pino';

export type { Logger };

/**
 * Paths pino blanks out in every log line. Tokens and keys must never reach a
 * log, whatever object a caller happens to log.
 */
export const REDACT_PATHS = [
  'token',
  '*.token',
  'authorization',
  '*.authorization',
  'headers.authorization',
  'req.headers.authorization',
  'req.headers.cookie',
  'headers.cookie',
  'privateKey',
  '*.privateKey',
  'adminToken',
  '*.adminToken',
];

export interface LoggerSettings {
  level?: string;
  name: string;
  /** Destination stream; stdout when omitted. */
  destination?: NodeJS.WritableStream;
}

/** A JSON logger with Burrow's redaction rules. */
export function createLogger(settings: LoggerSettings): Logger {
  const options: LoggerOptions = {
    name: settings.name,
    level: settings.level ?? 'info',
    redact: { paths: REDACT_PATHS, censor: '[Redacted]' },
    base: { pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime,
  };
  // pino's own stdout destination, but with minLength 1: its flush(cb) then waits for the write
  // in flight (with 0 it calls back at once), which is what a clean exit needs (exitOnSignals).
  // Each line is still written as soon as it is logged.
  return pino(options, settings.destination ?? pino.destination({ dest: 1, minLength: 1 }));
}

/** InfoLines holding lines not yet written; the process's exit writes them. */
const unwritten = new Set<InfoLines>();
let exitHooked = false;

/**
 * Info lines for a hot path: one per request, say. Each line has the shape
 * `logger` gives its own ({"level":30,"time":…, its bindings, the fields,
 * "msg":…}) and goes to the same destination, but the caller writes the
 * fields as JSON itself, with no redaction pass, and the lines of one event
 * loop turn leave in one write. pino spends some 5 µs serialising a line;
 * at tens of thousands of requests a second, that and its write were a third
 * of the relay's CPU per request. Lines still buffered when the process exits
 * are written then.
 */
export class InfoLines {
  readonly #logger: Logger & Record<symbol, unknown>;
  readonly #msg: string;
  #buffer = '';
  readonly #flush = () => this.flush();

  /** `msg` ends every line, as pino's message. */
  constructor(logger: Logger, msg: string) {
    this.#logger = logger as Logger & Record<symbol, unknown>;
    this.#msg = `,"msg":${JSON.stringify(msg)}}\n`;
    if (!exitHooked) {
      exitHooked = true;
      process.once('exit', () => {
        for (const lines of unwritten) lines.flush(true);
      });
    }
  }

  /** Whether the logger's level (which a reload may change) lets info lines through. */
  get enabled(): boolean {
    return this.#logger.isLevelEnabled('info');
  }

  /** Queues a line; `fields` are JSON object members, comma-separated, without braces. */
  write(fields: string): void {
    const logger = this.#logger;
    const time = (logger[pino.symbols.timeSym] as () => string)();
    const bindings = logger[pino.symbols.chindingsSym] as string;
    if (this.#buffer === '') {
      unwritten.add(this);
      setImmediate(this.#flush);
    }
    this.#buffer += `{"level":${logger.levels.values['info']}${time}${bindings},${fields}${this.#msg}`;
  }

  /** Writes what is buffered; `sync` also empties the destination's own buffer (at exit). */
  flush(sync = false): void {
    unwritten.delete(this);
    if (this.#buffer === '') return;
    const stream = this.#logger[pino.symbols.streamSym] as { write(s: string): unknown; flushSync?(): void };
    stream.write(this.#buffer);
    this.#buffer = '';
    if (!sync) return;
    try {
      stream.flushSync?.();
    } catch {
      // A destination that cannot write now (closed, mid-write) loses these last lines, as pino's own.
    }
  }
}
