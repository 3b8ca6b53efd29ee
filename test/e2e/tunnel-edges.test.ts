// Edge cases of the relay's tunnel endpoint and agent connections: the
// control stream's replies to an agent that does not read them, agent
// upgrades that complete while the endpoint drains, and the control stream
// under the stream idle timeout.
import { once } from 'node:events';
import { createServer, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  createSession,
  encodeFrame,
  FrameType,
  MAX_RESULT_MESSAGE,
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
import { testAgent } from '../helpers/agent.js';
import { within } from '../helpers/deferred.js';
import { get } from '../helpers/http.js';
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
    let drained: Promise<number> | undefined;
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

t.test(
  'the control stream outlives the stream idle timeout: idle requests are cut, the tunnel is not',
  async (t) => {
    // Both sides sweep streams every 100 ms and cut one idle for 400 ms.
    const session = { streamIdleTimeout: 400 };
    const relay = await testRelay(t, { session, responseHeadTimeout: 60_000 });
    const held: ServerResponse[] = [];
    const backend = createServer((req, res) => {
      if (req.url === '/hang') held.push(res);
      else res.end('ok');
    });
    backend.listen(0, '127.0.0.1');
    await once(backend, 'listening');
    t.teardown(() => {
      for (const r of held) r.destroy();
      backend.close();
    });
    const target = `http://127.0.0.1:${(backend.address() as AddressInfo).port}`;
    const agent = await testAgent(t, relay, [{ id: 'quiet', hostnames: ['quiet.example.test'], target }], {
      connections: 1,
      session,
    });
    const tunnel = [...relay.connections][0]!;
    let disconnected = false;
    agent.on('disconnected', () => (disconnected = true));
    // A request whose backend never answers: its stream goes idle and is reset. The control stream,
    // quiet since the announcement before it, was swept in the same pass or an earlier one.
    const cut = await get(relay.httpAddress.port, 'quiet.example.test', '/hang');
    t.ok(cut.status >= 500, `the idle request was cut (${cut.status})`);
    t.equal(tunnel.session.closed, false, 'the tunnel session is still open');
    t.notOk(disconnected, 'the agent never lost its connection');
    t.equal((await get(relay.httpAddress.port, 'quiet.example.test', '/')).body.toString(), 'ok');
    t.equal([...relay.connections][0], tunnel, 'served by the same tunnel');
  },
);

t.test('the answer to an announcement stays bounded, whatever it names', async (t) => {
  const relay = await testRelay(t);
  // A token with six long patterns, none of which allows what is announced.
  const patterns = Array.from(
    { length: 6 },
    (_, i) => `*.${'p'.repeat(60)}${i}.${'q'.repeat(63)}.${'r'.repeat(63)}.example.com`,
  );
  // An agent announcing 16,384 hostnames (the most one announcement carries), as long as that
  // many fit in one message, with long route ids. Each refusal repeating the patterns would make
  // an answer of some 20 MiB, more than an agent reads (it would lose its tunnel for good).
  const label = 'n'.repeat(34);
  const routes = Array.from({ length: 1024 }, (_, i) => ({
    id: `r${i}-${'i'.repeat(100)}`,
    hostnames: Array.from({ length: 16 }, (_, j) => `${label}.${`${i}-${j}`.padEnd(10, 'x')}.test`),
    target: 'http://127.0.0.1:9',
  }));
  const agent = await testAgent(t, relay, routes, { hosts: patterns, connections: 1 });
  const results = agent.routeStatus();
  t.equal(results.length, 16_384, 'the agent read its answer: one result per name');
  t.ok(
    results.every((r) => r.status === 'refused'),
    'all refused: not allowed by the token',
  );
  const size = Buffer.byteLength(JSON.stringify({ type: 'announce-result', routes: results }));
  t.ok(
    size < MAX_RESULT_MESSAGE,
    `the answer is ${size} bytes, under what an agent reads (${MAX_RESULT_MESSAGE})`,
  );

  // One name more than an announcement may carry: refused as a malformed control message.
  const rogue = await RogueAgent.connect(t, tunnelUrl(relay), await tokenFor('over', ['*.over.test']));
  // 257 routes of 64 names: 16,448.
  const many = Array.from({ length: 257 }, (_, i) => ({
    id: `o${i}`,
    hostnames: Array.from({ length: 64 }, (_, j) => `${i}x${j}.t`),
  }));
  await t.rejects(rogue.announce(many), /closed the tunnel/, '16,448 names: the tunnel is closed');
});

t.test(
  "an announce-result echoes its announcement's seq, and has none when the agent sent none",
  async (t) => {
    const relay = await testRelay(t);
    const token = await tokenFor('seq', ['*.seq.test']);
    const routes = [{ id: 'r', hostnames: ['a.seq.test'] }];
    const numbered = await RogueAgent.connect(t, tunnelUrl(relay), token);
    t.match(await numbered.announce(routes, undefined, { seq: 7 }), {
      routes: [{ status: 'active' }],
      seq: 7,
    });
    const unnumbered = await RogueAgent.connect(t, tunnelUrl(relay), token);
    const answer = await unnumbered.announce(routes);
    t.match(answer, { routes: [{ status: 'active' }] });
    t.notOk('seq' in answer, 'an agent that predates seq gets none');
    // One the relay cannot use (0-based, negative, a fraction, a string, past 2^53) is taken
    // as absent: the announcement is answered, with no seq, and the tunnel stays.
    for (const seq of [0, -1, 1.5, '3', 2 ** 60]) {
      const odd = await RogueAgent.connect(t, tunnelUrl(relay), token);
      const oddAnswer = await odd.announce(routes, undefined, { seq });
      t.match(oddAnswer, { routes: [{ status: 'active' }] }, `seq ${JSON.stringify(seq)} answered`);
      t.notOk('seq' in oddAnswer, 'with no seq');
    }
  },
);

t.test('an agent that stops reading is cut by the keepalive, even one answering PINGs blind', async (t) => {
  const relay = await testRelay(t, { session: { keepaliveInterval: 50 } });
  const rogue = await RogueAgent.connect(t, tunnelUrl(relay), await tokenFor('deaf', ['deaf.example.test']));
  const [conn] = [...relay.connections];
  const closed = once(conn!.session, 'close');
  // It reads nothing more (frames the relay sends pile up in front of it), yet answers the
  // PINGs it expects: a counter would be guessed, random payloads are not.
  (rogue.ws as unknown as { _socket: { pause(): void } })._socket.pause();
  const guesses = setInterval(() => {
    for (let seq = 1n; seq <= 1024n; seq++) {
      const payload = Buffer.alloc(8);
      payload.writeBigUInt64BE(seq);
      rogue.send(encodeFrame(FrameType.Pong, 0, payload));
    }
  }, 100);
  t.teardown(() => clearInterval(guesses));
  const [err] = (await within(10_000, closed, 'the relay closing the tunnel')) as [Error | undefined];
  t.match(err, { code: 'BURROW_ERR_KEEPALIVE_TIMEOUT' });
});

t.test(
  'announcements sent back to back wait their turn, and each is applied and answered in order',
  async (t) => {
    const relay = await testRelay(t);
    const rogue = await RogueAgent.connect(
      t,
      tunnelUrl(relay),
      await tokenFor('busy', ['*.pace.example.test']),
      { initialWindow: 64 * 1024 * 1024 }, // room for every answer: the rogue sends no WINDOW frames
    );
    // 2048 names: applying them takes the relay milliseconds, so the next announcement waits 3× that.
    const set = (tag: string) =>
      Array.from({ length: 32 }, (_, r) => ({
        id: `${tag}-${r}`,
        hostnames: Array.from({ length: 64 }, (_, i) => `n${r}-${i}-${tag}.pace.example.test`),
      }));
    const first = await rogue.announce(set('a'));
    t.equal(first.routes.length, 2048, 'the first is applied at once');
    const from = rogue.frames.length;
    // Two more right away, on the control stream the first opened.
    for (const tag of ['b', 'c']) {
      const message = controlMessage({ type: 'announce', routes: set(tag) });
      for (let at = 0; at < message.length; at += 60 * 1024)
        rogue.send(encodeFrame(FrameType.Data, 1, message.subarray(at, at + 60 * 1024)));
    }
    // The answers that follow, read off the control stream.
    let buf = Buffer.alloc(0);
    let next = from;
    const answers: Array<{ routes: Array<{ hostname: string }> }> = [];
    while (answers.length < 2) {
      const f = await within(
        10_000,
        rogue.waitFor((x) => x.type === FrameType.Data && x.streamId === 1, next),
        'an answer',
      );
      next = rogue.frames.indexOf(f, next) + 1;
      buf = Buffer.concat([buf, f.payload]);
      while (buf.length >= 4 && buf.length >= 4 + buf.readUInt32BE(0)) {
        answers.push(JSON.parse(buf.subarray(4, 4 + buf.readUInt32BE(0)).toString()));
        buf = buf.subarray(4 + buf.readUInt32BE(0));
      }
    }
    // The relay reads the next only once the one before has had its turn (announce-gate.ts).
    t.match(answers[0]!.routes[0]!.hostname, /-b\.pace\.example\.test$/, 'b answered');
    t.match(answers[1]!.routes[0]!.hostname, /-c\.pace\.example\.test$/, 'then c');
    t.equal(relay.routes.lookup('n0-0-c.pace.example.test').kind, 'found', 'the last one holds');
    t.not(relay.routes.lookup('n0-0-b.pace.example.test').kind, 'found');
    t.ok(await rogue.alive(), 'the tunnel is up');
  },
);
