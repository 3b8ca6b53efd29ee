import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { generateSigningKeyPair, parseOptions } from '@burrow/shared';
import t from 'tap';
import { tempDir } from '../../../test/helpers/fs.js';
import { loadRevokedTokens, relayOptionsFrom, SERVE_OPTIONS } from '../src/config.js';

t.test('revocation list: ids, comments, and lines that are not ids', async (t) => {
  const dir = await tempDir(t, 'burrow-config-');
  const file = join(dir, 'revoked');
  await writeFile(file, '# leaked 2026-11-01\n\n  0b6f-jti-1  \njti-2 # laptop stolen\n');
  t.same(await loadRevokedTokens(file), ['0b6f-jti-1', 'jti-2']);
  await writeFile(file, 'ok-id\ntwo words\n');
  await t.rejects(loadRevokedTokens(file), {
    code: 'BURROW_ERR_CONFIG',
    message: /line 2 is not a token id/,
  });
  await t.rejects(loadRevokedTokens(join(dir, 'missing')), {
    code: 'BURROW_ERR_CONFIG',
    message: /--revoked-tokens: cannot read .*missing \(ENOENT\)/,
  });
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
