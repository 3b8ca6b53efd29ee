import { readdir } from 'node:fs/promises';
import { ConfigError, checkHostPattern, type OptionValues, portNumber, readOptionFile } from '@burrow/shared';
import type { RelayOptions } from '../relay.js';
import type { AcmeChallenge } from './acme.js';
import { certEntryFromPem } from './store.js';

/** A port number option (1-65535). */
export function portOption(values: OptionValues, name: string): number {
  const port = portNumber(String(values[name]));
  if (Number.isNaN(port)) {
    throw new ConfigError(`--${name} must be a port number (got "${String(values[name])}")`);
  }
  return port;
}

const CHALLENGES: readonly AcmeChallenge[] = ['http-01', 'tls-alpn-01'];

/**
 * Certificate files and ACME settings, checked now so mistakes stop the start
 * with one clear line. Without `checkFiles` (a reload), the files and the
 * directory are not read: they need a restart to change, and belong to the
 * certificate watcher meanwhile.
 */
export async function certOptions(
  values: OptionValues,
  tlsOn: boolean,
  { checkFiles = true }: { checkFiles?: boolean } = {},
): Promise<Pick<RelayOptions, 'certFiles' | 'acme'>> {
  const certs = (values['cert-file'] as string[] | undefined) ?? [];
  const keys = (values['key-file'] as string[] | undefined) ?? [];
  const dir = values['cert-dir'] as string | undefined;
  const directory = values['acme-directory'] as string | undefined;
  if (!tlsOn && (certs.length > 0 || dir || directory)) {
    const needing = [certs.length > 0 && '--cert-file', dir && '--cert-dir', directory && '--acme-directory'];
    const named = needing.filter((x): x is string => Boolean(x));
    const subject =
      named.length === 1 ? `${named[0]} needs` : `${named.slice(0, -1).join(', ')} and ${named.at(-1)} need`;
    throw new ConfigError(`${subject} the TLS listener, but --tls-listen is "off"`);
  }
  if (certs.length !== keys.length) {
    throw new ConfigError(
      `--cert-file and --key-file go in pairs: got ${certs.length} certificate(s) and ${keys.length} key(s)`,
    );
  }
  const pairs = certs.map((cert, i) => ({ cert, key: keys[i]! }));
  for (const p of checkFiles ? pairs : []) {
    const [certPem, keyPem] = await Promise.all([
      readOptionFile('cert-file', p.cert),
      readOptionFile('key-file', p.key),
    ]);
    try {
      certEntryFromPem(certPem, keyPem, p.cert);
    } catch (err) {
      throw new ConfigError(`--cert-file ${p.cert}: ${(err as Error).message}`);
    }
  }
  if (dir && checkFiles) {
    try {
      await readdir(dir);
    } catch (err) {
      throw new ConfigError(
        `--cert-dir: cannot read ${dir} (${(err as NodeJS.ErrnoException).code ?? 'error'})`,
      );
    }
  }
  const out: Pick<RelayOptions, 'certFiles' | 'acme'> = {};
  if (pairs.length > 0 || dir) out.certFiles = { pairs, ...(dir ? { dir } : {}) };
  // Checked without --acme-directory too: a mistake is refused wherever it was set, not when it first counts.
  const domains = (values['acme-domains'] as string[] | undefined) ?? [];
  for (const d of domains) {
    const problem = checkHostPattern(d);
    if (problem) throw new ConfigError(`--acme-domains: ${problem}`);
  }
  const challenges = ((values['acme-challenges'] as string[] | undefined) ?? []).map((c) => c.toLowerCase());
  for (const c of challenges) {
    if (!(CHALLENGES as readonly string[]).includes(c)) {
      throw new ConfigError(`--acme-challenges: "${c}" is not one of ${CHALLENGES.join(', ')}`);
    }
  }
  if (directory) {
    try {
      const url = new URL(directory);
      if (url.protocol !== 'https:') throw new Error('not https');
    } catch {
      throw new ConfigError(`--acme-directory must be an https:// URL (got "${directory}")`);
    }
    if (domains.length === 0) {
      throw new ConfigError(
        '--acme-domains is required with --acme-directory: list the names or *.patterns certificates may be ordered for',
      );
    }
    const caFile = values['acme-directory-ca'] as string | undefined;
    // Read at start only, as the files above: a change needs a restart, and the file must not
    // fail a reload (a revocation in it) because it has moved meanwhile.
    const directoryCa = caFile && checkFiles ? await readOptionFile('acme-directory-ca', caFile) : undefined;
    const email = values['acme-email'] as string | undefined;
    out.acme = {
      directoryUrl: directory,
      domains,
      stateDir: String(values['acme-state-dir']),
      challenges: challenges as AcmeChallenge[],
      ...(email ? { email } : {}),
      ...(directoryCa ? { directoryCa } : {}),
    };
  }
  return out;
}
