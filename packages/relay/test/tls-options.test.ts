import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { generateSigningKeyPair, parseOptions } from '@burrow/shared';
import t from 'tap';
import { tempDir } from '../../../test/helpers/fs.js';
import { testPki } from '../../../test/helpers/tls.js';
import { relayOptionsFrom, SERVE_OPTIONS } from '../src/config.js';

const run = promisify(execFile);

t.test('TLS, certificate and ACME options: defaults, values, and one clear line per mistake', async (t) => {
  const dir = await tempDir(t, 'burrow-tls-options-');
  await writeFile(join(dir, 'signing.pub'), (await generateSigningKeyPair()).publicPem);
  const f = (n: string) => join(dir, n);
  await (await testPki(t)).issue('a', ['a.example.com'], dir);
  await run('openssl', ['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', f('other.key')]);
  const options = async (...argv: string[]) =>
    (await relayOptionsFrom(parseOptions(SERVE_OPTIONS, [...argv, '--verify-key', dir], {}).values)).options;
  const failure = (...argv: string[]) =>
    options(...argv).then(
      () => 'no error',
      (err: Error & { code?: string }) => `${err.code}: ${err.message}`,
    );

  const defaults = await options();
  t.same(defaults.tls, { host: '0.0.0.0', port: 443 }, 'TLS on :443 by default');
  t.equal(defaults.helloTimeout, 10_000);
  t.equal(defaults.httpsRedirect, true, 'redirects on by default');
  t.equal(defaults.http1FastPath, true, 'the HTTP/1.1 fast path on by default');
  t.equal((await options('--no-http1-fast-path')).http1FastPath, false, '--no-http1-fast-path turns it off');
  t.equal(defaults.hstsMaxAge, undefined, 'no HSTS by default');
  t.equal(defaults.acme, undefined);
  t.equal((await options('--tls-listen', 'off')).tls, undefined, '"off" disables the listener');
  t.equal((await options('--tls-listen', 'OFF')).tls, undefined, 'in any case, as BURROW_TLS_LISTEN=OFF');

  const full = await options(
    '--cert-file',
    f('a.crt'),
    '--key-file',
    f('a.key'),
    '--cert-dir',
    dir,
    '--acme-directory',
    'https://acme.example.net/dir',
    '--acme-domains',
    '*.apps.example.com',
    '--acme-email',
    'ops@example.com',
    '--acme-challenges',
    'tls-alpn-01',
    '--no-https-redirect',
    '--hsts-max-age',
    '365d',
    '--public-https-port',
    '8443',
  );
  t.same(full.certFiles, { pairs: [{ cert: f('a.crt'), key: f('a.key') }], dir });
  t.match(full.acme, {
    directoryUrl: 'https://acme.example.net/dir',
    domains: ['*.apps.example.com'],
    email: 'ops@example.com',
    challenges: ['tls-alpn-01'],
    stateDir: 'burrow-acme',
  });
  t.equal(full.httpsRedirect, false);
  t.equal(full.hstsMaxAge, 365 * 86400, 'HSTS max-age in seconds');
  t.equal((await options('--hsts-max-age', '0')).hstsMaxAge, 0, '0 is allowed: max-age=0 withdraws HSTS');
  t.equal((await options('--hsts-max-age', '0s')).hstsMaxAge, 0);
  t.equal(full.publicHttpsPort, 8443);

  const cases: Array<[string[], RegExp]> = [
    [['--cert-file', f('a.crt')], /--cert-file and --key-file go in pairs/],
    [
      ['--cert-file', f('a.crt'), '--key-file', f('other.key')],
      /--cert-file .*a\.crt: the private key does not belong/,
    ],
    [['--cert-file', f('nope.crt'), '--key-file', f('a.key')], /cannot read .*nope\.crt/],
    [['--cert-dir', f('missing')], /--cert-dir: cannot read/],
    [
      ['--tls-listen', 'off', '--cert-dir', dir],
      /--cert-dir needs the TLS listener, but --tls-listen is "off"$/,
    ],
    [
      ['--tls-listen', 'off', '--cert-dir', dir, '--acme-directory', 'https://a.example.net/'],
      /--cert-dir and --acme-directory need the TLS listener, but --tls-listen is "off"$/,
    ],
    [['--tls-listen', 'nonsense'], /--tls-listen must be HOST:PORT/],
    [['--acme-directory', 'https://acme.example.net/dir'], /--acme-domains is required/],
    [
      ['--acme-directory', 'http://acme.example.net/dir', '--acme-domains', 'a.example.com'],
      /must be an https:\/\/ URL/,
    ],
    [
      ['--acme-directory', 'https://a.example.net/', '--acme-domains', '*.com'],
      /--acme-domains: .*too broad/,
    ],
    [
      [
        '--acme-directory',
        'https://a.example.net/',
        '--acme-domains',
        'a.example.com',
        '--acme-challenges',
        'dns-01',
      ],
      /"dns-01" is not one of http-01, tls-alpn-01/,
    ],
    // Refused without --acme-directory too: a mistake is found at once, not when the option first counts.
    [['--acme-domains', 'NOT A NAME'], /--acme-domains: /],
    [['--acme-challenges', 'dns-99'], /"dns-99" is not one of http-01, tls-alpn-01/],
    [['--public-https-port', '0'], /--public-https-port must be a port number/],
    [['--public-https-port', '0x1bb'], /--public-https-port must be a port number \(got "0x1bb"\)/],
    [['--public-http-port', '80.5'], /--public-http-port must be a port number/],
    [['--hsts-max-age', '500ms'], /--hsts-max-age must be 0 \(withdraw HSTS\) or at least 1s/],
    [['--hsts-max-age', '31536000'], /--hsts-max-age: "31536000" needs a unit/],
    [['--hsts-max-age', '300000000d'], /--hsts-max-age must be at most \d+ms/],
    [['--tls-listen', 'nowhere'], /--tls-listen must be HOST:PORT/],
  ];
  for (const [argv, message] of cases) {
    t.match(await failure(...argv), new RegExp(`^BURROW_ERR_CONFIG: .*${message.source}`), argv.join(' '));
  }
});
