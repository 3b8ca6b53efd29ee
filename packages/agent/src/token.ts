import { closeSync, openSync, readSync } from 'node:fs';
import { ConfigError, MAX_OPTION_FILE } from '@burrow/shared';

/** Characters a bearer token may hold (RFC 6750 b64token). */
const BEARER = /^[A-Za-z0-9._~+/=-]+$/;

/** Throws ConfigError when `token` cannot be a bearer token; `where` names its origin. Never echoes it. */
export function checkToken(token: string, where: string): void {
  if (!token) throw new ConfigError(`the token in ${where} is empty`);
  if (!BEARER.test(token)) {
    throw new ConfigError(
      `the token in ${where} is not a bearer token (unexpected characters; is it the right file?)`,
    );
  }
}

/**
 * A token read from `file` again at each call: the agent calls it before every
 * connection attempt, so a rotated file (a Secret volume swaps it atomically)
 * takes effect on the next reconnect without a restart.
 */
export function tokenFile(file: string): () => string {
  return () => {
    let token: string;
    try {
      token = readBounded(file).trim();
    } catch (err) {
      if (err instanceof ConfigError) throw err;
      throw new ConfigError(
        `--token-file: cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? 'error'})`,
      );
    }
    checkToken(token, `--token-file ${file}`);
    return token;
  };
}

/**
 * The file's text, up to MAX_OPTION_FILE bytes, as the other files options
 * name are read: a wrong path (a log, /dev/zero) must not fill the memory, and
 * this runs before every connection attempt. Synchronous, like its caller.
 */
function readBounded(file: string): string {
  const fd = openSync(file, 'r');
  try {
    const chunks: Buffer[] = [];
    let total = 0;
    for (;;) {
      const chunk = Buffer.allocUnsafe(64 * 1024);
      const bytesRead = readSync(fd, chunk, 0, chunk.length, null);
      if (bytesRead === 0) break;
      total += bytesRead;
      if (total > MAX_OPTION_FILE)
        throw new ConfigError(
          `--token-file: ${file} is over ${MAX_OPTION_FILE} bytes; is it the right file?`,
        );
      chunks.push(chunk.subarray(0, bytesRead));
    }
    return Buffer.concat(chunks, total).toString('utf8');
  } finally {
    closeSync(fd);
  }
}
