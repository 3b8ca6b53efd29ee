// Edge cases of the trust-relevant pure functions: client IP allowlists,
// agent token verification and Host normalisation.
import { generateKeyPairSync } from 'node:crypto';
import { SignJWT } from 'jose';
import t from 'tap';
import { createAllowlist, parseCidr } from '../src/cidr.js';
import { TokenError } from '../src/errors.js';
import {
  checkHostPattern,
  isValidHostname,
  normalizeHost,
  patternAllows,
  patternMatcher,
} from '../src/hostname.js';
import {
  createAgentToken,
  DEFAULT_AUDIENCE,
  loadSigningKey,
  loadVerifyKey,
  type SigningKey,
  type VerifyKey,
  verifyAgentToken,
} from '../src/token.js';
import { mulberry32 } from './helpers/prng.js';

async function keyPair(): Promise<{ signing: SigningKey; verify: VerifyKey }> {
  const { privateKey } = generateKeyPairSync('ed25519');
  const pem = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  return { signing: await loadSigningKey(pem), verify: await loadVerifyKey(pem) };
}

t.test('CIDR allowlists', async (t) => {
  t.test('IPv4 rules match IPv4-mapped clients and the other way round', async (t) => {
    t.ok(createAllowlist(['10.0.0.0/8']).allows('::ffff:10.0.0.1'));
    t.ok(createAllowlist(['::ffff:10.0.0.0/104']).allows('10.0.0.1'));
    t.notOk(createAllowlist(['::ffff:10.0.0.0/104']).allows('11.0.0.1'));
    t.notOk(createAllowlist(['0.0.0.0/0']).allows('2001:db8::1'), 'an IPv4 /0 is not every IPv6 client');
  });

  t.test('/32 and /128 are single addresses; bare addresses are the same', async (t) => {
    t.ok(createAllowlist(['10.0.0.1/32']).allows('10.0.0.1'));
    t.notOk(createAllowlist(['10.0.0.1/32']).allows('10.0.0.2'));
    t.ok(createAllowlist(['2001:db8::1']).allows('2001:db8::1'));
    t.notOk(createAllowlist(['2001:db8::1/128']).allows('2001:db8::2'));
  });

  t.test('non-canonical and malformed entries are refused', async (t) => {
    for (const bad of ['010.0.0.1', '10.0.0.0/', '10.0.0.0/33', '::/129', '10.0.0.0/+8', '10.0.0.0/ 8', '']) {
      t.type(parseCidr(bad), 'string', JSON.stringify(bad));
    }
    t.notOk(createAllowlist(['10.0.0.0/8']).allows(''), 'no address: not allowed');
  });

  t.test('an IPv4-mapped rule shorter than /96 is refused: it would cover every IPv4 client', async (t) => {
    // `::ffff:10.0.0.0/8` reads like 10.0.0.0/8 but is the IPv6 range ::/8,
    // which holds ::ffff:0:0/96 and so every IPv4 address.
    const parsed = parseCidr('::ffff:10.0.0.0/8');
    if (typeof parsed === 'string') {
      t.pass('refused');
      return;
    }
    t.notOk(
      createAllowlist(['::ffff:10.0.0.0/8']).allows('198.51.100.7'),
      'a client outside 10/8 is not allowed',
    );
  });
});

t.test('agent tokens', async (t) => {
  const a = await keyPair();
  const b = await keyPair();

  t.test('a token is verified by the key its kid names, among several', async (t) => {
    const token = await createAgentToken(b.signing, {
      sub: 'alice',
      hosts: ['app.example.com'],
      ttl: 60_000,
    });
    const claims = await verifyAgentToken(token, [a.verify, b.verify]);
    t.equal(claims.sub, 'alice');
  });

  t.test('with several keys and no kid, an expired token is reported as expired', async (t) => {
    const now = Math.floor(Date.now() / 1000);
    const expired = await new SignJWT({ hosts: ['app.example.com'], ports: [] })
      .setProtectedHeader({ alg: 'EdDSA' })
      .setSubject('alice')
      .setAudience(DEFAULT_AUDIENCE)
      .setIssuedAt(now - 120)
      .setExpirationTime(now - 60)
      .setJti('j1')
      .sign(a.signing.privateKey);
    await t.rejects(verifyAgentToken(expired, [a.verify]), { message: 'token expired' }, 'one key');
    await t.rejects(
      verifyAgentToken(expired, [a.verify, b.verify]),
      { message: 'token expired' },
      'two keys',
    );
  });

  t.test('a token whose jti is not a string is refused (revocation lists hold strings)', async (t) => {
    const now = Math.floor(Date.now() / 1000);
    const token = await new SignJWT({
      hosts: ['app.example.com'],
      ports: [],
      jti: 12345 as unknown as string,
    })
      .setProtectedHeader({ alg: 'EdDSA', kid: a.signing.kid })
      .setSubject('alice')
      .setAudience(DEFAULT_AUDIENCE)
      .setExpirationTime(now + 60)
      .sign(a.signing.privateKey);
    const outcome = await verifyAgentToken(token, [a.verify]).then(
      (claims) => `accepted with jti ${JSON.stringify(claims.jti)} (${typeof claims.jti})`,
      (err: unknown) => (err instanceof TokenError ? 'refused' : `threw ${String(err)}`),
    );
    t.equal(outcome, 'refused');
  });

  t.test('a token createAgentToken signs verifies, or createAgentToken refuses the claims', async (t) => {
    // 60 valid patterns of ~200 characters: well within the 256-pattern limit.
    const long = (i: number) => `${'a'.repeat(60)}.${'b'.repeat(60)}.${'c'.repeat(60)}.host${i}.example.com`;
    const hosts = Array.from({ length: 60 }, (_, i) => long(i));
    t.equal(checkHostPattern(hosts[0]!), undefined);
    let token: string;
    try {
      token = await createAgentToken(a.signing, { sub: 'alice', hosts, ttl: 60_000 });
    } catch (err) {
      t.type(err, TokenError, 'refused at creation');
      return;
    }
    await t.resolves(verifyAgentToken(token, [a.verify]), `a ${token.length}-character token it signed`);
  });
});

t.test('hostnames', async (t) => {
  t.test('a wildcard pattern allows names under it, never its own suffix', async (t) => {
    t.notOk(patternAllows('*.example.com', 'example.com'));
    t.ok(patternAllows('*.example.com', 'a.b.example.com'));
    t.notOk(patternAllows('*.example.com', 'badexample.com'));
    t.notOk(patternAllows('app.example.com', '*.app.example.com'));
    t.notOk(isValidHostname(`${'a'.repeat(64)}.example.com`));
    t.notOk(isValidHostname('a..example.com'));
  });

  t.test('a matcher over many patterns agrees with patternAllows on each name', async (t) => {
    const labels = ['a', 'b', 'example', 'com', 'net', 'x-1'];
    const rng = mulberry32(11);
    const name = (wildcardOk: boolean) => {
      const parts = Array.from({ length: 1 + rng.int(4) }, () => labels[rng.int(labels.length)]!);
      return wildcardOk && rng.int(3) === 0 ? `*.${parts.join('.')}` : parts.join('.');
    };
    let disagreements = 0;
    let allowed = 0;
    for (let round = 0; round < 300; round++) {
      const patterns = Array.from({ length: rng.int(6) }, () => name(true));
      const matches = patternMatcher(patterns);
      for (let i = 0; i < 30; i++) {
        const n = name(true);
        const expected = patterns.some((p) => patternAllows(p, n));
        if (matches(n) !== expected) {
          disagreements++;
          t.fail(`${JSON.stringify(patterns)} and "${n}": patternAllows says ${expected}`);
        }
        if (expected) allowed++;
      }
    }
    t.equal(disagreements, 0, 'the same answer for 9000 names');
    t.ok(allowed > 300, `and many of them allowed (${allowed}), so both answers were tried`);
    t.notOk(patternMatcher(['*.example.com'])('.example.com'), 'never the suffix itself');
    t.ok(patternMatcher(['*.example.com'])('*.a.example.com'), 'a narrower wildcard');
  });

  t.test('normalizeHost returns "" for a Host that is not a DNS name', async (t) => {
    // These would otherwise be routed by their last labels to a `*.example.com`
    // route and reach its backend as the Host, naming another site first.
    for (const host of [
      'evil.test/.example.com',
      'evil.test#.example.com',
      'evil.test?.example.com',
      'evil.test\\.example.com',
      'a b.example.com',
      'a..example.com',
      'user@evil.test.example.com',
      // What surrounds a field value is spaces and tabs (RFC 9110 §5.5), nothing else: a
      // backend would get this Host as it came, not the name it was routed by.
      'app.example.com\u00a0',
      '\u2003app.example.com',
    ]) {
      t.equal(normalizeHost(host), '', JSON.stringify(host));
    }
    t.equal(normalizeHost('App.Example.COM.:8080'), 'app.example.com', 'case, trailing dot and port');
    t.equal(normalizeHost('[::1]:80'), '', 'IPv6 literal');
    t.equal(normalizeHost(' \tapp.example.com\t '), 'app.example.com', 'spaces and tabs around it');
  });
});
