// An announcement that arrives together with the end of its tunnel binds
// nothing: names are never left held by a connection that is gone.
import type { Socket } from 'node:net';
import { encodeFrame, encodeGoAway, FrameType, Reason } from '@burrow/shared';
import t from 'tap';
import { testAgent } from '../helpers/agent.js';
import { get, testServer } from '../helpers/http.js';
import { testRelay, tokenFor, tunnelUrl } from '../helpers/relay.js';
import { controlMessage, RogueAgent } from '../helpers/rogue-agent.js';

/** One masked binary WebSocket frame (client to server), all-zero masking key. */
function wsFrame(payload: Buffer): Buffer {
  const len = payload.length;
  const head =
    len < 126
      ? Buffer.from([0x82, 0x80 | len])
      : len < 65536
        ? Buffer.from([0x82, 0x80 | 126, len >> 8, len & 0xff])
        : Buffer.concat([Buffer.from([0x82, 0x80 | 127]), Buffer.alloc(8)]);
  if (len >= 65536) head.writeUInt32BE(len, 6);
  return Buffer.concat([head, Buffer.alloc(4), payload]);
}

t.test('an announcement that arrives with the end of its tunnel leaves no name behind', async (t) => {
  const relay = await testRelay(t);
  const backend = await testServer(t, (_req, res) => res.end('bob'));
  const rogue = await RogueAgent.connect(t, tunnelUrl(relay), await tokenFor('alice', ['*.claims.test']));
  const gone = new Promise<void>((resolve) => {
    const conn = [...relay.connections][0]!;
    conn.session.once('close', () => resolve());
  });
  // The control stream, an announcement and an error GOAWAY, read by the relay in one go.
  const bytes = Buffer.concat([
    wsFrame(encodeFrame(FrameType.Open, 1, Buffer.from('{"kind":"control"}'))),
    wsFrame(
      encodeFrame(
        FrameType.Data,
        1,
        controlMessage({ type: 'announce', routes: [{ id: 'a', hostnames: ['app.claims.test'] }] }),
      ),
    ),
    wsFrame(encodeGoAway({ lastStreamId: 0, reason: Reason.InternalError, message: 'agent failed' })),
  ]);
  (rogue.ws as unknown as { _socket: Socket })._socket.write(bytes);
  await gone;
  await rogue.closed;
  t.same(relay.routes.list(), [], 'no name is bound to the closed connection');
  t.equal((await get(relay.httpAddress.port, 'app.claims.test')).status, 404);

  const other = await testAgent(
    t,
    relay,
    [{ id: 'b', hostnames: ['app.claims.test'], target: backend.url }],
    {
      sub: 'bob',
    },
  );
  t.equal(other.routeStatus()[0]?.status, 'active', 'another tenant may claim the name');
  t.equal((await get(relay.httpAddress.port, 'app.claims.test')).body.toString(), 'bob');
});
