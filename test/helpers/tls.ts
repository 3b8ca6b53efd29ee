import { execFile } from 'node:child_process';
import { once } from 'node:events';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { type ClientHttp2Session, connect as h2connect } from 'node:http2';
import { type AddressInfo, createServer as createNetServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import { promisify } from 'node:util';
import { tempDir } from './fs.js';
import type { Teardownable } from './relay.js';

const run = promisify(execFile);

export interface TestPki {
  dir: string;
  caPem: string;
  certFile: string;
  keyFile: string;
  caFile: string;
  /**
   * Issues another certificate from the same CA for `names` (DNS names) into
   * `outDir` (default the PKI's own) as BASE.crt + BASE.key, valid for a
   * number of days from now (default 2) or over the given dates.
   */
  issue(
    base: string,
    names: string[],
    outDir?: string,
    validity?: Validity,
  ): Promise<{ certFile: string; keyFile: string }>;
}

/** Days from now, or exact dates (which may lie in the past). */
export type Validity = number | { from: Date; until: Date };

/** A date as openssl ca takes it: YYMMDDHHMMSSZ. */
function asn1Time(d: Date): string {
  return `${d.toISOString().slice(2, 19).replace(/[-T:]/g, '')}Z`;
}

/** A throwaway CA and a server certificate for localhost / 127.0.0.1, made with openssl. */
export async function testPki(t: Teardownable): Promise<TestPki> {
  const dir = await tempDir(t, 'burrow-pki-');
  const f = (n: string) => join(dir, n);
  const ssl = (...args: string[]) => run('openssl', args, { cwd: dir });
  const P256 = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  await ssl(
    'req',
    '-x509',
    ...P256,
    '-keyout',
    f('ca.key'),
    '-out',
    f('ca.pem'),
    '-days',
    '2',
    '-subj',
    '/CN=Burrow test CA',
  );
  /** A key, and a certificate from the CA for `san` (an openssl subjectAltName value): NAME.key, NAME.crt. */
  const leaf = async (name: string, cn: string, san: string, validity: Validity = 2) => {
    await ssl('req', ...P256, '-keyout', f(`${name}.key`), '-out', f(`${name}.csr`), '-subj', `/CN=${cn}`);
    await writeFile(f(`${name}.cnf`), `subjectAltName=${san}\n`);
    const signing = ['-in', f(`${name}.csr`), '-out', f(`${name}.crt`), '-extfile', f(`${name}.cnf`)];
    if (typeof validity === 'number') {
      await ssl(
        'x509',
        '-req',
        ...signing,
        '-CA',
        f('ca.pem'),
        '-CAkey',
        f('ca.key'),
        '-CAcreateserial',
        '-days',
        String(validity),
      );
      return;
    }
    // Only openssl ca sets a start date (x509 -req starts every certificate now).
    await ssl(
      'ca',
      '-batch',
      '-notext',
      '-config',
      await caConfig(),
      '-cert',
      f('ca.pem'),
      '-keyfile',
      f('ca.key'),
      '-startdate',
      asn1Time(validity.from),
      '-enddate',
      asn1Time(validity.until),
      ...signing,
    );
  };
  let caConfigFile: string | undefined;
  /** The files openssl ca keeps its database in, made once. */
  const caConfig = async () => {
    if (caConfigFile) return caConfigFile;
    await mkdir(f('ca-issued'));
    await writeFile(f('ca-index.txt'), '');
    await writeFile(f('ca-serial'), '1000\n');
    await writeFile(
      f('ca.cnf'),
      [
        '[ca]',
        'default_ca = test_ca',
        '[test_ca]',
        `database = ${f('ca-index.txt')}`,
        `new_certs_dir = ${f('ca-issued')}`,
        `serial = ${f('ca-serial')}`,
        'default_md = sha256',
        'unique_subject = no',
        'policy = any_name',
        '[any_name]',
        'commonName = supplied',
        '',
      ].join('\n'),
    );
    caConfigFile = f('ca.cnf');
    return caConfigFile;
  };
  await leaf('server', 'localhost', 'DNS:localhost,IP:127.0.0.1');
  let serial = 0;
  const issue = async (base: string, names: string[], outDir = dir, validity: Validity = 2) => {
    const n = `leaf-${++serial}`;
    await leaf(n, names[0]!, names.map((h) => `DNS:${h}`).join(','), validity);
    // Key first, then the certificate: a directory watcher sees a complete pair last.
    const keyFile = join(outDir, `${base}.key`);
    const certFile = join(outDir, `${base}.crt`);
    await writeFile(keyFile, await readFile(f(`${n}.key`)));
    await writeFile(certFile, await readFile(f(`${n}.crt`)));
    return { certFile, keyFile };
  };
  return {
    dir,
    caPem: await readFile(f('ca.pem'), 'utf8'),
    certFile: f('server.crt'),
    keyFile: f('server.key'),
    caFile: f('ca.pem'),
    issue,
  };
}

/** A real ClientHello for `name` from node's TLS client, captured on a plain TCP server. */
export async function clientHelloFor(name: string): Promise<Buffer> {
  const server = createNetServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const client = tlsConnect({
    host: '127.0.0.1',
    port: (server.address() as AddressInfo).port,
    servername: name,
  });
  client.on('error', () => {});
  const [socket] = (await once(server, 'connection')) as [Socket];
  const [chunk] = (await once(socket, 'data')) as [Buffer];
  client.destroy();
  socket.destroy();
  server.close();
  return chunk;
}

/** An HTTP/2 session to a TLS port on 127.0.0.1 for `name` (SNI and authority), connected; destroyed at teardown. */
export async function h2Session(
  t: Teardownable,
  port: number,
  name: string,
  ca: string,
): Promise<ClientHttp2Session> {
  const session = h2connect(`https://${name}:${port}`, { ca, servername: name, host: '127.0.0.1' } as never);
  session.on('error', () => {});
  t.teardown(() => session.destroy());
  await once(session, 'connect');
  return session;
}
