import { statSync } from 'node:fs';
import { ConfigError, readOptionFileSync } from '@burrow/shared';

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
    // Bounded like every file an option names: a wrong path (a log, /dev/zero)
    // must not fill the memory, and this runs before every connection attempt.
    const token = readOptionFileSync('token-file', file).trim();
    checkToken(token, `--token-file ${file}`);
    return token;
  };
}

/** Fewest characters a holds key may have: `openssl rand -hex 32` makes 64. */
const MIN_HOLDS_KEY = 32;

/**
 * The holds key in `file` (holds.ts), read again when the file has changed, so
 * that a Secret volume's update takes effect without a restart. Write-back
 * asks for it on every pass, and the route set on every change; a stat tells
 * whether the file is the one read last. A Secret volume's update swaps a
 * symlink to new files, whose inode differs; an edit in place changes the
 * modification and change times. Never echoed.
 */
export function holdsKeyFile(file: string): () => string {
  let read: { file: string; key: string } | undefined;
  return () => {
    const seen = identity(file);
    if (read && seen !== undefined && read.file === seen) return read.key;
    const key = readOptionFileSync('holds-key-file', file).trim();
    if (key.length < MIN_HOLDS_KEY) {
      throw new ConfigError(
        `--holds-key-file ${file} holds ${key.length} characters; a holds key needs ${MIN_HOLDS_KEY} or more (make one with: openssl rand -hex 32)`,
      );
    }
    // Changed between the stat and the read, the file has another identity next time, and is read again.
    if (seen !== undefined) read = { file: seen, key };
    return key;
  };
}

/** What tells one version of `file` (the one its symlinks lead to) from another; undefined when it cannot be told. */
function identity(file: string): string | undefined {
  try {
    const s = statSync(file, { bigint: true });
    return `${s.dev}:${s.ino}:${s.size}:${s.mtimeNs}:${s.ctimeNs}`;
  } catch {
    // Read, so that the failure is the reader's, which names the option and why.
    return undefined;
  }
}
