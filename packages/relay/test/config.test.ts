import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { generateSigningKeyPair, parseOptions } from '@burrow/shared';
import t from 'tap';
import { tempDir } from '../../../test/helpers/fs.js';
import { testPki } from '../../../test/helpers/tls.js';
import {
  loadRevokedTokens,
  loadVerifyKeys,
  readConfigFile,
  relayOptionsFrom,
  SERVE_OPTIONS,
} from '../src/config.js';

t.test('revocation list: ids, comments, and lines that are not ids', async (t) => {
  const dir = await tempDir(t, 'burrow-config-');
  const file = join(dir, 'revoked');
  await writeFile(file, '# leaked 2026-11-01\n\n  0b6f-jti-1  \njti-2 # laptop stolen\n');
  t.same(await loadRevokedTokens(file), ['0b6f-jti-1', 'jti-2']);
  // Saved with CRLF line ends: the same list.
  await writeFile(file, '# leaked 2026-11-01\r\n\r\n0b6f-jti-1\r\njti-2  # laptop stolen\r\n');
  t.same(await loadRevokedTokens(file), ['0b6f-jti-1', 'jti-2'], 'CRLF');
  await writeFile(file, 'ok-id\ntwo words\n');
  await t.rejects(loadRevokedTokens(file), {
    code: 'BURROW_ERR_CONFIG',
    message: /line 2 is not a token id/,
  });
  await t.rejects(loadRevokedTokens(join(dir, 'missing')), {
    code: 'BURROW_ERR_CONFIG',
    message: /--revoked-tokens: cannot read .*missing \(ENOENT\)/,
  });
  // Empty: fine when nothing is revoked (a list made with touch); while tokens are, a file caught mid-rewrite.
  await writeFile(file, '');
  t.same(await loadRevokedTokens(file), []);
  await t.rejects(loadRevokedTokens(file, { refuseEmpty: true }), {
    code: 'BURROW_ERR_CONFIG',
    message: /is empty \(caught while being rewritten\?\); to revoke nothing, keep a comment line in it$/,
  });
  await writeFile(file, '# nothing revoked\n');
  t.same(await loadRevokedTokens(file, { refuseEmpty: true }), []);
});

t.test('admin options: listener, token from a file or the environment, checked', async (t) => {
  const dir = await tempDir(t, 'burrow-config-');
  await writeFile(join(dir, 'signing.pub'), (await generateSigningKeyPair()).publicPem);
  const options = (argv: string[], env: NodeJS.ProcessEnv = {}) =>
    relayOptionsFrom(parseOptions(SERVE_OPTIONS, ['--verify-key', dir, ...argv], env).values);

  const defaults = (await options([])).options;
  t.same(defaults.admin, { host: '127.0.0.1', port: 9090 }, 'loopback by default');
  t.equal(defaults.adminToken, undefined, 'no token unless configured');

  const tokenFile = join(dir, 'admin.token');
  await writeFile(tokenFile, 'a-long-enough-admin-token\n');
  t.equal((await options(['--admin-token-file', tokenFile])).options.adminToken, 'a-long-enough-admin-token');
  t.equal(
    (await options([], { BURROW_ADMIN_TOKEN: 'another-long-admin-token' })).options.adminToken,
    'another-long-admin-token',
  );
  await t.rejects(options(['--admin-token', 'short']), { message: /16 to 512 printable characters/ });
  await t.rejects(options(['--admin-token-file', tokenFile, '--admin-token', 'x'.repeat(20)]), {
    message: /exclude each other/,
  });
  await t.rejects(options(['--admin-token-file', join(dir, 'nope')]), {
    message: /--admin-token-file: cannot read/,
  });
  await t.rejects(options(['--admin-listen', 'everywhere']), { message: /--admin-listen must be HOST:PORT/ });
  const err = await options(['--admin-token', 'short secret value']).catch((e: Error) => e);
  t.notMatch((err as Error).message, 'short secret value', 'the rejected token is not echoed');
});

t.test('files are read up to a size: a wrong path cannot fill the memory', async (t) => {
  const dir = await tempDir(t, 'burrow-config-');
  const big = join(dir, 'revoked');
  // Over the 32 MiB a list of 100,000 ids can take: refused before any of it is split.
  await writeFile(big, Buffer.alloc(33 * 1024 * 1024, 'a\n'));
  await t.rejects(loadRevokedTokens(big), {
    code: 'BURROW_ERR_CONFIG',
    message: `--revoked-tokens: ${big} is over 33554432 bytes; is it the right file?`,
  });
  await t.rejects(
    loadRevokedTokens('/dev/zero'),
    { message: /is over 33554432 bytes/ },
    'not even an endless one',
  );
  await t.rejects(readConfigFile('/dev/zero'), { message: /--config: \/dev\/zero is over 1048576 bytes/ });
});

t.test('config file: empty refused, numbers kept as written, YAML errors never quote the file', async (t) => {
  const dir = await tempDir(t, 'burrow-config-');
  const file = join(dir, 'relay.yaml');
  for (const text of ['', '# only a comment\n', '---\n']) {
    await writeFile(file, text);
    await t.rejects(readConfigFile(file), {
      message: `${file}: the file is empty; write at least one option, or leave --config out`,
    });
  }
  await writeFile(
    file,
    'admin-token: 00012345678901234567890123\nhosts: [007, x]\ndrain-timeout: 30\nno-https-redirect: true\n',
  );
  t.same(await readConfigFile(file), {
    'admin-token': '00012345678901234567890123',
    hosts: ['007', 'x'],
    'drain-timeout': '30',
    'no-https-redirect': true,
  });
  for (const text of ['admin-token: *Qz8xK2mP9vL4nR7tW1yB\n', 'admin-token: !SECRETsecret x\n', 'a: [\n']) {
    await writeFile(file, text);
    const err = await readConfigFile(file).then(
      () => undefined,
      (e: Error) => e,
    );
    t.match(err?.message, new RegExp(`^${file}: not valid YAML at line \\d+, column \\d+ \\([A-Z_]+\\)$`));
    t.notMatch(err?.message, /Qz8x|SECRET/, 'the value is not in the message');
  }
  // A second document would be dropped without a word: refused, unless it is empty.
  await writeFile(file, 'drain-timeout: 30s\n---\nadmin-token: 00012345678901234567890123\n');
  await t.rejects(readConfigFile(file), {
    message: `${file}: holds more than one YAML document (another begins at line 2); put everything in one`,
  });
  await writeFile(file, 'drain-timeout: 30s\n---\n# nothing more\n');
  t.same(await readConfigFile(file), { 'drain-timeout': '30s' }, 'a trailing empty document is harmless');
});

/** Serve options for a relay keyed in `dir` whose revocation list names jti-1, plus `files` in `dir` by option. */
async function revokingOne(dir: string, files: Record<string, string>) {
  await writeFile(join(dir, 'signing.pub'), (await generateSigningKeyPair()).publicPem);
  await writeFile(join(dir, 'revoked'), 'jti-1\n');
  const argv = Object.entries(files).flatMap(([option, file]) => [`--${option}`, join(dir, file)]);
  return parseOptions(SERVE_OPTIONS, ['--verify-key', dir, '--revoked-tokens', join(dir, 'revoked'), ...argv])
    .values;
}

t.test('a reload does not re-check certificate files: a broken one cannot hold back the rest', async (t) => {
  const dir = await tempDir(t, 'burrow-config-');
  await writeFile(join(dir, 'site.crt'), 'garbage');
  await writeFile(join(dir, 'site.key'), 'garbage');
  const values = await revokingOne(dir, { 'cert-file': 'site.crt', 'key-file': 'site.key' });
  await t.rejects(relayOptionsFrom(values), { message: /--cert-file .*site\.crt: / }, 'at start: refused');
  const reloaded = await relayOptionsFrom(values, { initial: false });
  t.same(reloaded.options.revokedTokens, ['jti-1'], 'on a reload: the revocation list applies');
});

t.test('a broken tunnel certificate is refused at start and reported, not fatal, on a reload', async (t) => {
  const dir = await tempDir(t, 'burrow-config-');
  await writeFile(join(dir, 'tunnel.crt'), 'garbage');
  const values = await revokingOne(dir, { 'tunnel-tls-cert': 'tunnel.crt', 'tunnel-tls-key': 'tunnel.key' });
  await t.rejects(
    relayOptionsFrom(values),
    { message: /^--tunnel-tls-key: cannot read / },
    'at start: refused',
  );
  const missingKey = await relayOptionsFrom(values, { initial: false });
  t.match(missingKey.tunnelTlsError, /^--tunnel-tls-key: cannot read /, 'on a reload: reported');
  t.equal(missingKey.options.tunnelTls, undefined);
  t.same(missingKey.options.revokedTokens, ['jti-1'], 'and the rest is read');
  await writeFile(join(dir, 'tunnel.key'), 'garbage');
  const unusable = await relayOptionsFrom(values, { initial: false });
  t.match(
    unusable.tunnelTlsError,
    /^--tunnel-tls-cert\/--tunnel-tls-key: not a usable certificate and key: /,
  );
  const pki = await testPki(t);
  await writeFile(join(dir, 'tunnel.crt'), await readFile(pki.certFile));
  await writeFile(join(dir, 'tunnel.key'), await readFile(pki.keyFile));
  const fixed = await relayOptionsFrom(values, { initial: false });
  t.equal(fixed.tunnelTlsError, undefined);
  t.equal(fixed.options.tunnelTls?.cert, await readFile(pki.certFile, 'utf8'));
});

t.test('--max-connections: auto by default, else a whole number', async (t) => {
  const dir = await tempDir(t, 'burrow-config-');
  await writeFile(join(dir, 'signing.pub'), (await generateSigningKeyPair()).publicPem);
  const options = (argv: string[]) =>
    relayOptionsFrom(parseOptions(SERVE_OPTIONS, ['--verify-key', dir, ...argv], {}).values);
  t.equal((await options([])).options.maxConnections, undefined, 'auto: the relay derives it');
  t.equal((await options(['--max-connections', '5000'])).options.maxConnections, 5000);
  for (const bad of ['0', '-1', '1e3', '2.5', 'lots', '10000001']) {
    await t.rejects(options([`--max-connections=${bad}`]), {
      message: `--max-connections must be auto or a whole number from 1 to 10000000 (got "${bad}")`,
    });
  }
});

t.test('--max-tunnels-per-subject: 64 by default, else a whole number', async (t) => {
  const dir = await tempDir(t, 'burrow-config-');
  await writeFile(join(dir, 'signing.pub'), (await generateSigningKeyPair()).publicPem);
  const options = (argv: string[]) =>
    relayOptionsFrom(parseOptions(SERVE_OPTIONS, ['--verify-key', dir, ...argv], {}).values);
  t.equal((await options([])).options.maxTunnelsPerSubject, 64);
  t.equal((await options(['--max-tunnels-per-subject', '8'])).options.maxTunnelsPerSubject, 8);
  for (const bad of ['0', '-1', 'many', '100001']) {
    await t.rejects(options([`--max-tunnels-per-subject=${bad}`]), {
      message: `--max-tunnels-per-subject must be a whole number from 1 to 100000 (got "${bad}")`,
    });
  }
});

t.test('verify-key: [] in the config file leaves the default, not a relay without keys', async (t) => {
  const dir = await tempDir(t, 'burrow-config-');
  const file = join(dir, 'relay.yaml');
  await writeFile(file, 'verify-key: []\nacme-challenges: []\n');
  const { values } = parseOptions(SERVE_OPTIONS, [], {}, await readConfigFile(file), file);
  t.same(values['verify-key'], ['burrow-keys']);
  t.same(values['acme-challenges'], ['http-01', 'tls-alpn-01']);
  // A relay started with no key at all would refuse every agent; the default is checked instead.
  await t.rejects(relayOptionsFrom(values), {
    code: 'BURROW_ERR_CONFIG',
    message: /^--verify-key: burrow-keys does not exist/,
  });
});

t.test('--acme-orders-per-hour: 60 by default, else a whole number, checked with ACME off too', async (t) => {
  const dir = await tempDir(t, 'burrow-config-');
  await writeFile(join(dir, 'signing.pub'), (await generateSigningKeyPair()).publicPem);
  const acme = ['--acme-directory', 'https://127.0.0.1:1/dir', '--acme-domains', '*.example.com'];
  const options = (argv: string[]) =>
    relayOptionsFrom(parseOptions(SERVE_OPTIONS, ['--verify-key', dir, ...argv], {}).values);
  t.equal((await options(acme)).options.acme?.ordersPerHour, 60);
  t.equal((await options([...acme, '--acme-orders-per-hour', '5'])).options.acme?.ordersPerHour, 5);
  for (const bad of ['0', '-1', 'lots', '10001']) {
    await t.rejects(options([`--acme-orders-per-hour=${bad}`]), {
      message: `--acme-orders-per-hour must be a whole number from 1 to 10000 (got "${bad}")`,
    });
  }
});

t.test('a private key given as --verify-key is refused: the relay needs only the public half', async (t) => {
  const dir = await tempDir(t, 'burrow-config-');
  const pair = await generateSigningKeyPair();
  await writeFile(join(dir, 'signing.key'), pair.privatePem);
  await writeFile(join(dir, 'signing.pub'), pair.publicPem);
  await t.rejects(loadVerifyKeys([join(dir, 'signing.key')]), {
    code: 'BURROW_ERR_CONFIG',
    message: `--verify-key: ${join(dir, 'signing.key')} is a private key; give the relay only its public half (the .pub file keygen wrote beside it)`,
  });
  t.equal((await loadVerifyKeys([join(dir, 'signing.pub')])).length, 1, 'the public half loads');
  t.equal((await loadVerifyKeys([dir])).length, 1, 'a directory: only its *.pub files are read');
});

t.test('a mistaken value is named before a missing key directory', async (t) => {
  const dir = await tempDir(t, 'burrow-config-');
  const missing = join(dir, 'no-keys-yet');
  const options = (argv: string[]) =>
    relayOptionsFrom(parseOptions(SERVE_OPTIONS, ['--verify-key', missing, ...argv], {}).values);
  await t.rejects(options(['--drain-timeout', '30']), { message: /^--drain-timeout: / });
  await t.rejects(options(['--max-connections', 'lots']), { message: /^--max-connections must be/ });
  await t.rejects(options([]), { message: /^--verify-key: .*no-keys-yet does not exist/ });
});
