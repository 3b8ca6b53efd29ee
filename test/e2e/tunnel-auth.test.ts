// Agents that cannot prove who they are never get a tunnel: every refusal is a
// real HTTP status with a reason, sent before the WebSocket upgrade.
import { generateKeyPairSync } from 'node:crypto';
import { once } from 'node:events';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { startAgent, tokenFile } from '@burrow/agent';
import { createAgentToken, loadSigningKey, TUNNEL_PATH, TUNNEL_SUBPROTOCOL } from '@burrow/shared';
import { SignJWT } from 'jose';
import t from 'tap';
import { WebSocket } from 'ws';
import { memoryLogger } from '../../packages/agent/test/helpers/log.js';
import { deferred, until } from '../helpers/deferred.js';
import { tempDir } from '../helpers/fs.js';
import { get, testServer } from '../helpers/http.js';
import { testKeys, testLogger, testRelay, tokenFor, tunnelUrl } from '../helpers/relay.js';
import { RogueAgent } from '../helpers/rogue-agent.js';
import { attempt, forge } from '../helpers/tunnel-client.js';

t.test('token checks at the tunnel endpoint', async (t) => {
  const relay = await testRelay(t);
  const url = tunnelUrl(relay);
  const keys = await testKeys();

  t.test('a valid token is accepted', async (t) => {
    const r = await attempt(url, await tokenFor('alice', ['app.example.com']));
    t.equal(r.status, 101);
  });

  t.test('the auth scheme is case-insensitive', async (t) => {
    const token = await tokenFor('alice', ['app.example.com']);
    const ws = new WebSocket(`${url}${TUNNEL_PATH}`, TUNNEL_SUBPROTOCOL, {
      headers: { authorization: `bearer ${token}` },
    });
    ws.on('error', () => {});
    const [outcome] = await Promise.race([
      once(ws, 'open').then(() => ['open']),
      once(ws, 'unexpected-response').then(([, res]) => [
        `status ${(res as { statusCode?: number }).statusCode}`,
      ]),
    ]);
    ws.terminate();
    t.equal(outcome, 'open', '`bearer …` opens the tunnel like `Bearer …`');
  });

  t.test('no token: 401', async (t) => {
    const r = await attempt(url, undefined);
    t.equal(r.status, 401);
    t.match(r.body, /missing bearer token/);
  });

  t.test('garbage token: 401 malformed', async (t) => {
    const r = await attempt(url, 'not.a.jwt');
    t.equal(r.status, 401);
    t.match(r.body, /malformed/);
  });

  t.test('expired token: 401 expired', async (t) => {
    const now = Math.floor(Date.now() / 1000);
    const expired = await new SignJWT({ hosts: ['app.example.com'], ports: [] })
      .setProtectedHeader({ alg: 'EdDSA', kid: keys.signing.kid })
      .setSubject('alice')
      .setAudience('burrow-relay')
      .setIssuedAt(now - 7200)
      .setExpirationTime(now - 3600)
      .setJti('old')
      .sign(keys.signing.privateKey);
    const r = await attempt(url, expired);
    t.equal(r.status, 401);
    t.match(r.body, /expired/);
  });

  t.test('signed by another key: 401', async (t) => {
    const other = generateKeyPairSync('ed25519');
    const foreign = await loadSigningKey(
      other.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    );
    const r = await attempt(
      url,
      await createAgentToken(foreign, { sub: 'mallory', hosts: ['app.example.com'], ttl: 60_000 }),
    );
    t.equal(r.status, 401);
    t.match(r.body, /key this relay does not know/);
    // Same kid as the relay's key but a different signature: still refused.
    const forged = await createAgentToken(
      { kid: keys.signing.kid, privateKey: foreign.privateKey },
      { sub: 'mallory', hosts: ['app.example.com'], ttl: 60_000 },
    );
    const r2 = await attempt(url, forged);
    t.equal(r2.status, 401);
    t.match(r2.body, /signature invalid/);
  });

  t.test('alg none: 401', async (t) => {
    const r = await attempt(url, await forge.algNone());
    t.equal(r.status, 401);
    t.match(r.body, /algorithm "none" is not allowed/);
  });

  t.test('HS256 signed with the public key (algorithm confusion): 401', async (t) => {
    const r = await attempt(url, await forge.hs256WithPublicKey());
    t.equal(r.status, 401);
    t.match(r.body, /algorithm "HS256" is not allowed/);
  });

  t.test('wrong audience: 401', async (t) => {
    const r = await attempt(url, await forge.wrongAudience());
    t.equal(r.status, 401);
    t.match(r.body, /token claim "aud" invalid: this relay accepts only "burrow-relay"/);
  });

  t.test('unknown protocol version: 400 naming the supported one', async (t) => {
    const r = await attempt(url, await tokenFor('alice', ['app.example.com']), 'burrow.v99');
    t.equal(r.status, 400);
    t.match(r.body, /unsupported tunnel protocol version.*burrow\.v1/);
  });

  t.test('wrong path: 404', async (t) => {
    const r = await attempt(url, await tokenFor('alice', ['app.example.com']), TUNNEL_SUBPROTOCOL, '/tunnel');
    t.equal(r.status, 404);
  });
});

t.test('a token file rotated in place is used from the next connection on, without a restart', async (t) => {
  const relay = await testRelay(t);
  const backend = await testServer(t, (_req, res) => res.end('rotated in'));
  const dir = await tempDir(t, 'burrow-token-');
  const file = join(dir, 'token');
  // Well-formed to the agent, refused by the relay (401): the agent keeps retrying.
  await writeFile(file, 'not.a.jwt\n');
  const read = tokenFile(file);
  let reads = 0;
  const refusedOnce = deferred();
  const agent = startAgent({
    relayUrl: tunnelUrl(relay),
    // Read once at start, once per connection attempt: a third read is the retry after a refusal.
    token: () => {
      if (++reads === 3) refusedOnce.resolve();
      return read();
    },
    routes: [{ id: 'web', hostnames: ['rot.example.com'], target: backend.url }],
    connections: 1,
    logger: testLogger('agent'),
    backoff: { base: 20, cap: 200 },
  });
  t.teardown(() => agent.close());
  await refusedOnce.promise;
  t.equal(relay.connections.size, 0, 'the first token was refused');
  await writeFile(file, `${await tokenFor('tenant-rot', ['rot.example.com'])}\n`);
  await agent.ready();
  const reply = await get(relay.httpAddress.port, 'rot.example.com');
  t.equal(reply.status, 200);
  t.equal(reply.body.toString(), 'rotated in');
});

t.test('one subject holds at most --max-tunnels-per-subject tunnels; others are unaffected', async (t) => {
  const relay = await testRelay(t, { maxTunnelsPerSubject: 2 });
  const url = tunnelUrl(relay);
  const token = await tokenFor('busy', ['*.busy.example.com']);
  const first = await RogueAgent.connect(t, url, token);
  await RogueAgent.connect(t, url, token);
  const third = await attempt(url, token);
  t.equal(third.status, 429, 'a third tunnel of the subject is refused');
  t.match(third.body, /subject "busy" already holds 2 tunnel connections/, 'saying why');
  t.equal((await attempt(url, await tokenFor('other', ['app.example.com']))).status, 101, 'another subject');
  // One of the two goes away: there is room again.
  first.ws.terminate();
  await first.closed;
  await until(async () => relay.connections.size === 1, 'the relay saw the tunnel close');
  t.equal((await attempt(url, token)).status, 101, 'accepted once one has closed');
});

t.test(
  "behind a terminator on the relay's machine, the agent's address is X-Forwarded-For's last entry",
  async (t) => {
    const log = memoryLogger('info', 'burrow-relay');
    const relay = await testRelay(t, { logger: log.logger });
    /** The `remote` the relay logs for a refused upgrade from loopback with this X-Forwarded-For. */
    const remoteFor = async (forwarded: string) => {
      const seen = log.lines.length;
      const ws = new WebSocket(tunnelUrl(relay) + TUNNEL_PATH, TUNNEL_SUBPROTOCOL, {
        headers: { authorization: 'Bearer not.a.token', 'x-forwarded-for': forwarded },
      });
      ws.on('error', () => {});
      const line = await log.waitFor(
        (l) => log.lines.indexOf(l) >= seen && l.msg === 'agent refused: token rejected',
      );
      ws.terminate();
      return line['remote'];
    };
    // Caddy appends the address it saw: entries before it are the agent's own say.
    t.equal(await remoteFor('203.0.113.5, 198.51.100.7'), '198.51.100.7');
    t.equal(await remoteFor('::ffff:198.51.100.8'), '198.51.100.8');
    t.equal(await remoteFor('not an address'), '127.0.0.1', 'anything else: the peer');
  },
);
