import { mkdir, readdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { loadAcmeClient } from './acme-client.js';

/**
 * The ACME state directory:
 *
 *     account.key            the account's private key (PEM, mode 0600)
 *     account.json           {"directoryUrl", "url"}: the account registered with that directory
 *     certs/NAME.crt         issued chain for NAME
 *     certs/NAME.key         its private key (mode 0600)
 *
 * Files are written to a temporary name and renamed, so a crash never leaves
 * half a certificate behind.
 */
export class AcmeState {
  readonly #dir: string;

  constructor(dir: string) {
    this.#dir = dir;
  }

  async init(): Promise<void> {
    await mkdir(join(this.#dir, 'certs'), { recursive: true, mode: 0o700 });
  }

  /** The account key (created on first use) and its URL if registered with `directoryUrl`. */
  async account(directoryUrl: string): Promise<{ key: Buffer; url: string | undefined }> {
    const keyFile = join(this.#dir, 'account.key');
    let key: Buffer;
    try {
      key = await readFile(keyFile);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      key = await (await loadAcmeClient()).crypto.createPrivateEcdsaKey('P-256');
      await this.#write(keyFile, key, 0o600);
    }
    let url: string | undefined;
    try {
      const saved = JSON.parse(await readFile(join(this.#dir, 'account.json'), 'utf8')) as {
        directoryUrl?: unknown;
        url?: unknown;
      };
      // An account belongs to one CA: switching directories registers anew with the same key.
      if (saved.directoryUrl === directoryUrl && typeof saved.url === 'string') url = saved.url;
    } catch {
      // Missing or unreadable: register (the CA returns the existing account for a known key).
    }
    return { key, url };
  }

  async saveAccountUrl(directoryUrl: string, url: string): Promise<void> {
    await this.#write(join(this.#dir, 'account.json'), `${JSON.stringify({ directoryUrl, url })}\n`, 0o600);
  }

  async saveCertificate(hostname: string, cert: string, key: string): Promise<void> {
    await this.#write(join(this.#dir, 'certs', `${hostname}.key`), key, 0o600);
    await this.#write(join(this.#dir, 'certs', `${hostname}.crt`), cert, 0o644);
  }

  /** Every stored certificate with its key. */
  async certificates(): Promise<Array<{ hostname: string; cert: string; key: string }>> {
    const dir = join(this.#dir, 'certs');
    const names = await readdir(dir);
    const out: Array<{ hostname: string; cert: string; key: string }> = [];
    for (const n of names) {
      if (!n.endsWith('.crt')) continue;
      const hostname = n.slice(0, -4);
      try {
        out.push({
          hostname,
          cert: await readFile(join(dir, n), 'utf8'),
          key: await readFile(join(dir, `${hostname}.key`), 'utf8'),
        });
      } catch {
        // A certificate without its key is useless; the next order replaces both.
      }
    }
    return out;
  }

  async #write(file: string, data: string | Buffer, mode: number): Promise<void> {
    const tmp = `${file}.${process.pid}.tmp`;
    await writeFile(tmp, data, { mode });
    await rename(tmp, file);
  }
}
