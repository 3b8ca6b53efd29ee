// Token revocation: the revoked agent's tunnels close with TOKEN_REVOKED (its
// log says so) and its reconnects get 401 "token revoked"; another agent on
// the same relay keeps serving throughout.
import { once } from 'node:events';
import { startAgent } from '@burrow/agent';
import { decodeJwt } from 'jose';
import t from 'tap';
import { memoryLogger } from '../../packages/agent/test/helpers/log.js';
import { testAgent } from '../helpers/agent.js';
import { get, testServer } from '../helpers/http.js';
import { metricValue } from '../helpers/metrics.js';
import { testRelay, tokenFor, tunnelUrl } from '../helpers/relay.js';
import { attempt } from '../helpers/tunnel-client.js';

t.test('revoking a token closes that agent only, and refuses its reconnects', async (t) => {
  const relay = await testRelay(t);
  const backend = await testServer(t, (req, res) => res.end(`served ${req.headers.host}`));

  const revokedToken = await tokenFor('tenant-revoked', ['a.revoke.test']);
  const log = memoryLogger('info');
  const revoked = startAgent({
    relayUrl: tunnelUrl(relay),
    token: revokedToken,
    routes: [{ id: 'a', hostnames: ['a.revoke.test'], target: backend.url }],
    connections: 2,
    logger: log.logger,
    backoff: { base: 20, cap: 200 },
  });
  t.teardown(() => revoked.close());
  await revoked.ready();
  const other = await testAgent(t, relay, [{ id: 'b', hostnames: ['b.revoke.test'], target: backend.url }], {
    sub: 'tenant-other',
  });
  const port = relay.httpAddress.port;
  t.equal((await get(port, 'a.revoke.test')).status, 200);
  t.equal((await get(port, 'b.revoke.test')).status, 200);

  const bothDown = Promise.all([once(revoked, 'disconnected'), once(revoked, 'disconnected')]);
  const closed = relay.setRevokedTokens([decodeJwt(revokedToken).jti!, 'some-other-jti']);
  t.equal(closed, 2, 'both tunnels of the revoked token were closed');
  const reasons = (await bothDown).map(([, reason]) => String(reason));
  for (const r of reasons) t.match(r, /TokenRevoked: token revoked/, 'the agent learns why');

  t.equal((await get(port, 'a.revoke.test')).status, 503, 'the revoked agent no longer serves');
  t.equal((await get(port, 'b.revoke.test')).status, 200, 'the other agent keeps serving');
  t.equal(other.connectionCount, 2, "the other agent's tunnels stayed up");

  const refused = await attempt(`ws://127.0.0.1:${relay.tunnelAddress.port}`, revokedToken);
  t.same(refused, { status: 401, body: 'token revoked' });
  // The agent's own reconnect attempts hit the same refusal, and say so in its log.
  await log.waitFor((l) => String(l['reason']).includes('HTTP 401: token revoked'));
  t.ok(
    log.lines.some((l) => l['msg'] === 'tunnel disconnected' && String(l['reason']).includes('TokenRevoked')),
    'the agent logs the revocation reason code',
  );
  t.equal(revoked.connectionCount, 0);

  const text = await relay.metrics.registry.metrics();
  t.equal(metricValue(text, 'burrow_relay_revoked_connections_total'), 2);
  t.ok((metricValue(text, 'burrow_relay_refusals_total', { reason: 'token_revoked' }) ?? 0) >= 2);
  t.equal(metricValue(text, 'burrow_relay_revoked_tokens'), 2);

  // Lifting the revocation lets the agent back in on its next attempt.
  relay.setRevokedTokens([]);
  await once(revoked, 'connected');
  t.equal((await get(port, 'b.revoke.test')).status, 200);
});
