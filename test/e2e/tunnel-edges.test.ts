// Edge cases of the relay's tunnel endpoint and agent connections: the
// control stream's replies to an agent that does not read them, and agent
// upgrades that complete while the endpoint drains.
import { once } from 'node:events';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  createSession,
  encodeFrame,
  FrameType,
  type Stream,
  TUNNEL_PATH,
  TUNNEL_SUBPROTOCOL,
  WsTransport,
} from '@burrow/shared';
import t from 'tap';
import { WebSocket } from 'ws';
import { RouteTable } from '../../packages/relay/src/routes/table.js';
import type { AgentConnection } from '../../packages/relay/src/tunnel/agent-connection.js';
import { TunnelEndpoint } from '../../packages/relay/src/tunnel/endpoint.js';
import { testKeys, testLogger, testRelay, tokenFor, tunnelUrl } from '../helpers/relay.js';
import { controlMessage, RogueAgent } from '../helpers/rogue-agent.js';

t.test(
  "the relay stops taking announcements while the agent leaves its replies unread (the control stream's writes stay bounded)",
  async (t) => {
    const relay = await testRelay(t);
    const token = await tokenFor('slow-reader', ['*.rogue.example.com']);
    // 1 KiB of credit for everything the relay sends to this agent, and no WINDOW ever.
    const rogue = await RogueAgent.connect(t, tunnelUrl(relay), token, { initialWindow: 1024 });
    const conn = [...relay.connections].find((c) => c.subject === 'slow-reader');
    t.ok(conn, 'the relay holds the connection');
    let control: Stream | undefined;
    conn!.session.on('stream', (s) => {
      control ??= s;
    });

    // Announcements of names the token does not allow: each reply lists one refusal per name.
    const announce = (i: number) =>
      controlMessage({
        type: 'announce',
        routes: [
          { id: 'r', hostnames: Array.from({ length: 60 }, (_, j) => `h${i}-${j}.elsewhere.example.org`) },
        ],
      });
    const frames = [encodeFrame(FrameType.Open, 1, Buffer.from('{"kind":"control"}'))];
    let sent = 0;
    for (let i = 0; sent + announce(i).byteLength < 200 * 1024; i++) {
      const m = announce(i);
      frames.push(encodeFrame(FrameType.Data, 1, m));
      sent += m.byteLength;
    }
    rogue.send(...frames);
    t.ok(await rogue.alive(), 'the relay processed everything sent (within its initial window)');
    t.ok(control, 'the control stream was accepted');
    const buffered = control!.writableLength;
    t.ok(
      buffered < 256 * 1024,
      `${buffered} bytes of replies queued at the relay for ${sent} bytes of announcements nobody reads back`,
    );
  },
);

t.test(
  'an agent upgrade that completes while the endpoint drains does not stay usable',
  // Without the GOAWAY the late session would wait for the drain timeout.
  { timeout: 20_000 },
  async (t) => {
    const keys = await testKeys();
    const server = createServer();
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    let endpoint!: TunnelEndpoint;
    let drained: Promise<void> | undefined;
    endpoint = new TunnelEndpoint({
      server,
      table: new RouteTable<AgentConnection>(),
      keys: () => [keys.verify],
      audience: 'burrow-relay',
      logger: testLogger('endpoint'),
      relayId: 'edge',
      // Called after the token's signature check, which is asynchronous: the
      // drain starts exactly while this upgrade is between verification and
      // the WebSocket handshake.
      isRevoked: () => {
        drained ??= endpoint.drain();
        return false;
      },
    });
    t.teardown(async () => {
      endpoint.destroyAll();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    });
    const token = await tokenFor('late', ['*.late.example.com']);
    const ws = new WebSocket(
      `ws://127.0.0.1:${(server.address() as AddressInfo).port}${TUNNEL_PATH}`,
      TUNNEL_SUBPROTOCOL,
      { headers: { authorization: `Bearer ${token}` }, perMessageDeflate: false },
    );
    ws.on('error', () => {}); // a refused upgrade is one of the allowed outcomes
    t.teardown(() => {
      if (ws.readyState === WebSocket.OPEN) ws.terminate();
    });
    const agent = createSession(new WsTransport(ws), { role: 'client' });
    agent.on('stream', (s) => s.reset());
    const goaway = once(agent, 'goaway');
    const outcome = await agent.ready.then(
      () => 'ready' as const,
      (err: Error) => err,
    );
    if (outcome !== 'ready') {
      t.match(outcome, { message: /Unexpected server response/ }, 'the upgrade was refused during the drain');
      return;
    }
    t.ok(drained, 'the drain started during the upgrade');
    await goaway;
    t.pass('the late agent was told GOAWAY as soon as its session existed');
    t.same(
      [...endpoint.connections].filter((c) => c.usable),
      [],
      'no connection accepted during the drain takes new requests',
    );
    await drained;
    t.pass('and the drain waited for it');
  },
);
