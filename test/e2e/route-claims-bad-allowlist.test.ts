// Routes whose client allowlist the relay cannot parse are refused with a
// reason, and the answer stays one the agent can read, whatever the entries hold.
import { FrameType, MAX_RESULT_MESSAGE } from '@burrow/shared';
import t from 'tap';
import { testRelay, tokenFor, tunnelUrl } from '../helpers/relay.js';
import { RogueAgent } from '../helpers/rogue-agent.js';

t.test('odd allowlist entries on every route: the answer stays within what an agent reads', async (t) => {
  const relay = await testRelay(t);
  const rogue = await RogueAgent.connect(t, tunnelUrl(relay), await tokenFor('odd', ['*.cidr.test']), {
    initialWindow: 64 * 1024 * 1024,
  });
  // 16,384 names, each refused for its route's allowlist: 64 control characters, escaped six-fold in JSON.
  const routes = Array.from({ length: 256 }, (_, r) => ({
    id: `route-${r}`.padEnd(128, '-'),
    hostnames: Array.from({ length: 64 }, (_, h) => `h${h}.r${r}.cidr.test`),
    allowCidrs: ['\u0001'.repeat(64)],
  }));
  const from = rogue.frames.length;
  const result = (await rogue.announce(routes)) as { routes: Array<{ status: string; error?: string }> };
  const answered = rogue.frames
    .slice(from)
    .filter((f) => f.type === FrameType.Data && f.streamId === 1)
    .reduce((n, f) => n + f.payload.length, 0);
  t.equal(result.routes.length, 16_384, 'every name is answered');
  t.ok(
    result.routes.every(
      (r) => r.status === 'refused' && /^allowCidrs: .*not an IP address/.test(r.error ?? ''),
    ),
    'each is refused for its allowlist',
  );
  t.ok(answered <= MAX_RESULT_MESSAGE, `the answer (${answered} bytes) fits in what an agent reads`);
  t.ok(await rogue.alive(), 'the tunnel stays up');
  t.same(relay.routes.list(), []);
});

t.test('a bad allowlist entry is named in the refusal', async (t) => {
  const relay = await testRelay(t);
  const rogue = await RogueAgent.connect(t, tunnelUrl(relay), await tokenFor('typo', ['*.cidr.test']));
  const result = (await rogue.announce([
    { id: 'typo', hostnames: ['typo.cidr.test'], allowCidrs: ['10.0.0.0/33'] },
  ])) as { routes: Array<{ status: string; error?: string }> };
  t.same(result.routes, [
    {
      id: 'typo',
      hostname: 'typo.cidr.test',
      status: 'refused',
      error: 'allowCidrs: "10.0.0.0/33": prefix length must be 0 to 32',
    },
  ]);
});
