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
