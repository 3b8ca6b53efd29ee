// A request the fast path sends again, after an agent connection refused it
// unprocessed (GOAWAY), is routed afresh with every check of the first try:
// the name's other connection may carry a route with an allowlist.
import { encodeFrame, encodeGoAway, FrameType, Reason } from '@burrow/shared';
import t from 'tap';
import { testAgent } from '../helpers/agent.js';
import { get, testServer } from '../helpers/http.js';
import { testRelay, tokenFor, tunnelUrl } from '../helpers/relay.js';
import { controlMessage, RogueAgent } from '../helpers/rogue-agent.js';

t.test('a retried request meets the allowlist of the connection it is sent to', async (t) => {
  const relay = await testRelay(t);
  let reached = 0;
  const backend = await testServer(t, (_req, res) => {
    reached++;
    res.end('private');
  });
  // One connection of tenant "s" serves the name with no allowlist, and speaks the http1 streams.
  const first = await RogueAgent.connect(t, tunnelUrl(relay), await tokenFor('s', ['x.allow.test']));
  const from = first.frames.length;
  const announce = {
    type: 'announce',
    routes: [{ id: 'r', hostnames: ['x.allow.test'] }],
    features: ['http1'],
  };
  first.send(
    encodeFrame(FrameType.Open, 1, Buffer.from('{"kind":"control"}')),
    encodeFrame(FrameType.Data, 1, controlMessage(announce)),
  );
  await first.waitFor(
    (f) => f.type === FrameType.Data && f.streamId === 1 && f.payload.includes('announce-result'),
    from,
  );
  // A second connection of the same tenant, the rolled-out one, lets only 10.0.0.0/8 in.
  const route = { id: 'r', hostnames: ['x.allow.test'], target: backend.url, allowCidrs: ['10.0.0.0/8'] };
  await testAgent(t, relay, [route], { sub: 's', connections: 1 });

  // The request goes to the first connection (fewest streams, first bound); it refuses it unread.
  const opened = first.waitFor((f) => f.type === FrameType.Open);
  const reply = get(relay.httpAddress.port, 'x.allow.test');
  await opened;
  first.send(encodeGoAway({ lastStreamId: 0, reason: Reason.NoError, message: '' }));

  const res = await reply;
  t.equal(res.status, 403, 'the client outside the allowlist is refused');
  t.match(res.body.toString(), /not allowed/);
  t.equal(reached, 0, 'nothing reached the backend');
});
