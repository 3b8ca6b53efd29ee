import { EventEmitter } from 'node:events';
import { createLogger, type Logger } from '@burrow/shared';

export type LogLine = Record<string, unknown> & { level: number; msg: string };

/** A real pino logger (Burrow's redaction rules) named `name` that keeps its JSON lines in memory. */
export function memoryLogger(
  level = 'debug',
  name = 'agent',
): {
  logger: Logger;
  lines: LogLine[];
  raw: string[];
  /** Resolves with the first line (already seen or future) matching `pred`. */
  waitFor(pred: (line: LogLine) => boolean): Promise<LogLine>;
} {
  const lines: LogLine[] = [];
  const raw: string[] = [];
  const events = new EventEmitter<{ line: [LogLine] }>();
  const destination = {
    // One line per write from pino; a relay's access lines come several to a write.
    write(chunk: string) {
      for (const text of chunk.split('\n')) {
        if (text === '') continue;
        raw.push(`${text}\n`);
        const line = JSON.parse(text) as LogLine;
        lines.push(line);
        events.emit('line', line);
      }
      return true;
    },
  };
  const logger = createLogger({
    name,
    level,
    destination: destination as unknown as NodeJS.WritableStream,
  });
  return {
    logger,
    lines,
    raw,
    waitFor(pred) {
      const seen = lines.find(pred);
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve) => {
        const onLine = (line: LogLine) => {
          if (!pred(line)) return;
          events.off('line', onLine);
          resolve(line);
        };
        events.on('line', onLine);
      });
    },
  };
}
