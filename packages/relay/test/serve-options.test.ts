// Option validation edge cases of `burrow-relay serve`: list defaults and
// durations that the relay later hands to timers.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { generateSigningKeyPair, parseOptions } from '@burrow/shared';
import t from 'tap';
import { tempDir } from '../../../test/helpers/fs.js';
import { relayOptionsFrom, SERVE_OPTIONS } from '../src/config.js';

async function optionsFor(t: Parameters<typeof tempDir>[0], argv: string[], env: NodeJS.ProcessEnv = {}) {
  const dir = await tempDir(t, 'burrow-relay-edges-');
  await writeFile(join(dir, 'signing.pub'), (await generateSigningKeyPair()).publicPem);
  return relayOptionsFrom(parseOptions(SERVE_OPTIONS, ['--verify-key', dir, ...argv], env).values);
}

t.test('ACME with the default --acme-challenges starts with http-01, then tls-alpn-01', async (t) => {
  const acme = ['--acme-directory', 'https://acme.example.net/dir', '--acme-domains', 'app.example.com'];
  const fromDefault = await optionsFor(t, acme).then(
    (r) => r.options.acme?.challenges,
    (err: Error) => `rejected: ${err.message}`,
  );
  t.same(fromDefault, ['http-01', 'tls-alpn-01'], 'the documented default is accepted');
  const fromEnv = await optionsFor(t, acme, { BURROW_ACME_CHALLENGES: 'http-01,tls-alpn-01' });
  t.same(fromEnv.options.acme?.challenges, ['http-01', 'tls-alpn-01'], 'the same list from the environment');
});

t.test(
  'durations a timer cannot hold (over 24.8 days) are refused at start, not turned into 1 ms',
  async (t) => {
    const TIMER_MAX = 2 ** 31 - 1;
    const cases: Array<[string, (o: Awaited<ReturnType<typeof relayOptionsFrom>>['options']) => unknown]> = [
      ['tls-hello-timeout', (o) => o.helloTimeout],
      ['headers-timeout', (o) => o.headersTimeout],
      ['response-timeout', (o) => o.responseHeadTimeout],
      ['drain-timeout', (o) => o.drainTimeout],
      ['keepalive-interval', (o) => o.session?.keepaliveInterval],
    ];
    for (const [flag, pick] of cases) {
      const outcome = await optionsFor(t, [`--${flag}`, '30d']).then(
        (r) => {
          const ms = Number(pick(r.options));
          return ms <= TIMER_MAX ? 'usable' : `accepted ${ms} ms, which setTimeout turns into 1 ms`;
        },
        (err: Error & { code?: string }) => (err.code === 'BURROW_ERR_CONFIG' ? 'usable' : err.message),
      );
      t.equal(outcome, 'usable', `--${flag} 30d`);
    }
  },
);

t.test('--stream-idle-timeout: 15 minutes by default, 0 for never, nothing under a second', async (t) => {
  t.equal((await optionsFor(t, [])).options.session?.streamIdleTimeout, 15 * 60_000);
  t.equal((await optionsFor(t, ['--stream-idle-timeout', '0'])).options.session?.streamIdleTimeout, 0);
  const fromEnv = await optionsFor(t, [], { BURROW_STREAM_IDLE_TIMEOUT: '2h' });
  t.equal(fromEnv.options.session?.streamIdleTimeout, 2 * 3_600_000);
  await t.rejects(optionsFor(t, ['--stream-idle-timeout', '500ms']), {
    code: 'BURROW_ERR_CONFIG',
    message: '--stream-idle-timeout must be 0 (never) or at least 1s (got "500ms")',
  });
});

t.test('--audience: printable, without spaces around it, which would match no token', async (t) => {
  const audience = (value: string) =>
    optionsFor(t, ['--audience', value]).then(
      (r) => r.options.audience,
      (err: Error) => err.message,
    );
  t.equal(await audience('burrow-relay.example'), 'burrow-relay.example');
  t.match(
    await audience(' burrow-relay'),
    /^--audience must be 1 to 256 printable characters without spaces/,
  );
});

t.test('two listeners on one address: the two options named, not "another process"', async (t) => {
  const failure = (argv: string[]) =>
    optionsFor(t, argv).then(
      () => 'started',
      (err: Error) => err.message,
    );
  t.equal(
    await failure(['--http-listen', '127.0.0.1:9090', '--admin-listen', '127.0.0.1:9090']),
    '--http-listen and --admin-listen both listen on port 9090 (127.0.0.1 and 127.0.0.1); give each its own port',
  );
  t.match(
    await failure(['--tls-listen', '0.0.0.0:8443']),
    /^--tunnel-listen and --tls-listen both listen on port 8443/,
    'a wildcard overlaps every host',
  );
  t.match(await failure(['--tcp-ports', '80']), /^--http-listen and --tcp-ports both listen on port 80/);
  t.equal(
    await failure([
      '--http-listen',
      '127.0.0.1:0',
      '--tunnel-listen',
      '127.0.0.1:0',
      '--tls-listen',
      '127.0.0.1:0',
    ]),
    'started',
    'port 0 (any free port) never collides',
  );
  t.equal(
    await failure(['--http-listen', '127.0.0.1:8080', '--admin-listen', '127.0.0.2:8080']),
    'started',
    'two hosts, one port',
  );
  t.equal(
    await failure(['--http-listen', '0.0.0.0:8080', '--admin-listen', '[::1]:8080']),
    'started',
    'the IPv4 wildcard leaves IPv6 addresses free',
  );
  t.match(
    await failure(['--http-listen', '[::]:8080', '--admin-listen', '127.0.0.1:8080']),
    /^--http-listen and --admin-listen both listen on port 8080/,
    'the IPv6 wildcard takes IPv4 addresses too',
  );
  t.match(
    await failure(['--http-listen', '0.0.0.0:8080', '--admin-listen', '[::ffff:127.0.0.1]:8080']),
    /^--http-listen and --admin-listen both listen on port 8080/,
    'an IPv4-mapped address is an IPv4 one',
  );
  t.match(
    await failure(['--http-listen', '[0:0:0:0:0:0:0:0]:8080', '--admin-listen', '127.0.0.1:8080']),
    /^--http-listen and --admin-listen both listen on port 8080/,
    ':: however spelt',
  );
});
