// The relay holds an agent to the framing of the response head it sent, on
// the general path. An agent is a tenant, not a trusted party: one that sent
// more body bytes than its Content-Length would inject a response of its own
// into the client connection (which a front proxy may share between tenants),
// and one that sent fewer would leave the client waiting for bytes the next
// response then supplies.
import { encodeFrame, FrameType, type HeaderPairs } from '@burrow/shared';
import t from 'tap';
import { testAgent } from '../helpers/agent.js';
import { within } from '../helpers/deferred.js';
import { testServer } from '../helpers/http.js';
import { type Client, client, field, get } from '../helpers/raw-wire.js';
import { type Teardownable, testRelay, tokenFor, tunnelUrl } from '../helpers/relay.js';
import { controlMessage, RogueAgent } from '../helpers/rogue-agent.js';

/**
 * A relay with an honest tenant (victim.example.test, a real backend) and a
 * rogue agent of another tenant (evil.example.test; it announces no `http1`,
 * so its requests and the rest of their connection take the general path).
 * `answer` sends the rogue's response: head, body bytes, FIN.
 */
async function setup(t: Teardownable) {
  const relay = await testRelay(t);
  const victim = await testServer(t, (_req, res) => res.end('victim says hi'));
  await testAgent(t, relay, [{ id: 'victim', hostnames: ['victim.example.test'], target: victim.url }], {
    sub: 'tenant-b',
    connections: 1,
  });
  const rogue = await RogueAgent.connect(t, tunnelUrl(relay), await tokenFor('rogue', ['evil.example.test']));
  await rogue.announce([{ id: 'evil', hostnames: ['evil.example.test'] }]);
  let seen = 0;
  const answer = async (
    head: { status: number; statusText?: string; headers: HeaderPairs },
    body: string,
  ) => {
    const open = await within(
      5_000,
      rogue.waitFor((f) => f.type === FrameType.Open, seen),
      'the request at the rogue',
    );
    seen = rogue.frames.indexOf(open) + 1;
    rogue.send(
      encodeFrame(FrameType.Data, open.streamId, controlMessage(head)),
      encodeFrame(FrameType.Data, open.streamId, Buffer.from(body, 'latin1')),
      encodeFrame(FrameType.Fin, open.streamId),
    );
  };
  return { relay, answer, client: (): Client => client(t, relay.httpAddress.port) };
}

t.test(
  'an agent body longer than its Content-Length cannot inject a response for another tenant',
  async (t) => {
    const { answer, client } = await setup(t);
    const c = client();
    c.write(get('evil.example.test', '/'));
    await answer(
      { status: 200, headers: [['Content-Length', '5']] },
      'helloHTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nPWNED!',
    );
    const first = await within(5_000, c.response(), 'the rogue response');
    t.equal(first?.body.toString(), 'hello');
    // The same keep-alive connection then carries a request for the other tenant
    // (a front proxy or load balancer pooling its connections to the relay does this).
    c.write(get('victim.example.test', '/'));
    const second = await within(5_000, c.response(), 'the next response on the connection');
    t.not(second?.body.toString(), 'PWNED!', "the rogue agent's bytes answered another tenant's request");
    t.ok(
      second === undefined || second.body.toString() === 'victim says hi',
      'the victim answer, or no answer',
    );
  },
);

t.test('an agent body shorter than its Content-Length is not completed with the next response', async (t) => {
  const { answer, client } = await setup(t);
  const c = client();
  // Pipelined: the second response follows the first on the wire.
  c.write(get('evil.example.test', '/') + get('victim.example.test', '/'));
  await answer({ status: 200, headers: [['Content-Length', '5']] }, 'hel');
  const first = await within(5_000, c.response(), 'the rogue response, or the connection cut');
  t.equal(
    first,
    undefined,
    `a cut response must end the connection; the client read the body ${JSON.stringify(first?.body.toString())}`,
  );
});

t.test('conflicting Content-Length fields from an agent never reach the client', async (t) => {
  const { answer, client } = await setup(t);
  for (const headers of [
    [
      ['Content-Length', '5'],
      ['Content-Length', '40'],
    ],
    [['Content-Length', '5, 40']],
  ] as HeaderPairs[]) {
    const c = client();
    c.write(get('evil.example.test', '/'));
    await answer({ status: 200, headers }, 'hello');
    const r = await within(5_000, c.response(), 'a response');
    t.ok(r, 'a response');
    const lengths = field(r!, 'content-length');
    t.ok(
      r!.status === 502 || (lengths.length === 1 && /^\d+$/.test(lengths[0]!)),
      `one plain Content-Length or a 502 (got ${r!.status} with ${JSON.stringify(lengths)})`,
    );
    c.socket.destroy();
  }
});

t.test('the 502 for an invalid agent response head has a 502 reason phrase', async (t) => {
  const { answer, client } = await setup(t);
  const c = client();
  let raw = '';
  c.socket.on('data', (d: Buffer) => (raw += d.toString('latin1')));
  c.write(get('evil.example.test', '/'));
  // A header value Node refuses to write: the relay answers invalid_response_head.
  await answer({ status: 201, statusText: 'Created', headers: [['X-Bad', 'a\r\nb']] }, '');
  const r = await within(5_000, c.response(), 'a response');
  t.equal(r?.status, 502);
  t.same(field(r!, 'x-burrow-error'), ['invalid_response_head']);
  t.match(raw, /^HTTP\/1\.1 502 Bad Gateway\r\n/, `status line: ${JSON.stringify(raw.split('\r\n')[0])}`);
});

t.test('an upgrade answered with an interim status is a 502; no raw byte reaches the client', async (t) => {
  const { answer, client } = await setup(t);
  for (const status of [100, 103]) {
    const c = client();
    c.write(get('evil.example.test', '/ws', 'Connection: upgrade\r\nUpgrade: websocket\r\n'));
    // After a 1xx head the relay would pass the rest on as it came: a forged response, say.
    await answer({ status, headers: [] }, 'HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nPWNED!');
    const reply = await within(5_000, c.response(), 'the answer');
    t.equal(reply?.status, 502, `${status}: 502`);
    t.same(c.interim, [], `${status}: no interim head passed on`);
    t.notMatch(String(reply?.body), /PWNED/);
  }
});
