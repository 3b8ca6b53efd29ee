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
 * A file changed less than this long ago is read again at the next use, ms: a change within the
 * granularity of its file system's times (a second on some, a clock tick on others) leaves its
 * identity as it was, and the key read before it would be kept for good.
 */
const SETTLED = 2_000;

/**
 * The holds key in `file` (holds.ts), read again when the file has changed, so
 * that a Secret volume's update takes effect without a restart. Write-back
 * asks for it on every pass, and the route set on every change; a stat tells
 * whether the file is the one read last. A Secret volume's update swaps a
 * symlink to new files, whose inode differs; an edit in place changes the
 * modification and change times, unless it comes within their granularity of
 * the one before: a file changed in the last SETTLED ms is not kept. `now` is
 * the clock that tells (ms since the epoch). Never echoed.
 */
export function holdsKeyFile(file: string, now: () => number = Date.now): () => string {
  let read: { file: string; key: string } | undefined;
  return () => {
    const seen = identity(file);
    if (read && seen !== undefined && read.file === seen.id) return read.key;
    const key = readOptionFileSync('holds-key-file', file).trim();
    if (key.length < MIN_HOLDS_KEY) {
      throw new ConfigError(
        `--holds-key-file ${file} holds ${key.length} characters; a holds key needs ${MIN_HOLDS_KEY} or more (make one with: openssl rand -hex 32)`,
      );
    }
    // Changed between the stat and the read, the file has another identity next time, and is read
    // again. Changed lately, another change may yet come with the same identity: not kept.
    read = seen !== undefined && now() - seen.changed >= SETTLED ? { file: seen.id, key } : undefined;
    return key;
  };
}

/**
 * What tells one version of `file` (the one its symlinks lead to) from another, and when it last
 * changed (ms since the epoch); undefined when it cannot be told.
 */
function identity(file: string): { id: string; changed: number } | undefined {
  try {
    const s = statSync(file, { bigint: true });
    const changed = Math.max(Number(s.mtimeNs / 1_000_000n), Number(s.ctimeNs / 1_000_000n));
    return { id: `${s.dev}:${s.ino}:${s.size}:${s.mtimeNs}:${s.ctimeNs}`, changed };
  } catch {
    // Read, so that the failure is the reader's, which names the option and why.
    return undefined;
  }
}
