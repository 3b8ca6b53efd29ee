// Hostile peers at the relay's tunnel endpoint: a malicious agent holding a
// valid token, garbage and non-WebSocket requests, forged tokens; and the
// admin API without its token. Each gets its
// status or close, the relay process stays up, and a bystander tenant's steady
// request loop sees no error throughout.
import { once } from 'node:events';
import {
  decodeGoAway,
  decodeRst,
  encodeFrame,
  encodeWindow,
  FrameType,
  Reason,
  TUNNEL_PATH,
  TUNNEL_SUBPROTOCOL,
} from '@burrow/shared';
import { decodeJwt } from 'jose';
import t from 'tap';
import { mulberry32 } from '../../packages/shared/test/helpers/prng.js';
import { get } from '../helpers/http.js';
import { bystander } from '../helpers/load.js';
import { rawRequest } from '../helpers/raw-http.js';
import { type Teardownable, tokenFor } from '../helpers/relay.js';
import { relayProcess } from '../helpers/relay-process.js';
import { hostileFrame, RogueAgent } from '../helpers/rogue-agent.js';
import { attempt, forge } from '../helpers/tunnel-client.js';

/** Each subtest's rogue announces its own name under this, so no request can land on another's connection. */
const ROGUE_HOSTS = '*.rogue.example.com';

t.test('hostile tunnel peers', async (t) => {
  const adminToken = 'admin-token-for-the-hostile-suite';
  const relay = await relayProcess(t, ['--response-timeout', '5s', '--admin-token', adminToken]);
  const loop = await bystander(t, relay);
  const rogueToken = await tokenFor('rogue', [ROGUE_HOSTS]);
  // Each subtest's rogue connections close with it, so a later subtest's requests cannot land on them.
  const rogue = (t: Teardownable, hello = {}) => RogueAgent.connect(t, relay.tunnelUrl, rogueToken, hello);
  const routes = (name: string) => [{ id: 'r', hostnames: [`${name}.rogue.example.com`] }];

  t.test('seeded random and mutated frames from an agent with a valid token', async (t) => {
    const seeds = 60;
    let frames = 0;
    const outcomes = new Map<string, number>();
    for (let seed = 1; seed <= seeds; seed++) {
      const rng = mulberry32(seed);
      const peer = await rogue(t);
      const result = await peer.announce(routes(`seed${seed}`));
      t.equal(result.routes[0]?.status, 'active', `seed ${seed}: announced`);
      // A few frames per connection: most hostile frames end a session, and a
      // session that ends early would leave the rest of a long run untested.
      for (let i = 1 + rng.int(4); i > 0 && !peer.isClosed; i--, frames++) peer.send(hostileFrame(rng));
      let outcome = 'still open';
      if (!(await peer.alive())) {
        const { code } = await peer.closed;
        t.ok(code !== 1005 && code !== 1006, `seed ${seed}: closed with a real code (${code})`);
        outcome = `closed ${code}`;
      }
      outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1);
      peer.ws.terminate();
    }
    t.comment(
      `outcomes of ${frames} hostile frames over ${seeds} connections: ${JSON.stringify([...outcomes])}`,
    );
  });

  t.test('OPEN metadata over the limit: the stream is refused, the tunnel stays', async (t) => {
    const peer = await rogue(t);
    await peer.announce(routes('metadata'));
    peer.send(encodeFrame(FrameType.Open, 3, Buffer.alloc(40 * 1024, 'x')));
    const rst = decodeRst((await peer.waitFor((f) => f.type === FrameType.Rst && f.streamId === 3)).payload);
    t.equal(rst.reason, Reason.MetadataTooLarge);
    t.ok(await peer.alive(), 'the tunnel is still up');
  });

  t.test('a frame larger than the relay takes: the tunnel is closed, unread, as too big', async (t) => {
    const peer = await rogue(t);
    // The relay's WebSocket reads no message over one frame (64 KiB): it is not held in memory.
    peer.send(encodeFrame(FrameType.Open, 3, Buffer.alloc(1024 * 1024, 'x')));
    const { code } = await peer.closed;
    t.equal(code, 1009, 'WebSocket close 1009, message too big');
    const logged = await relay.proc.waitFor(
      (l) => (l['err'] as { code?: string } | undefined)?.code === 'BURROW_ERR_FRAME_SIZE',
    );
    t.match(logged, { msg: 'agent disconnected', subject: 'rogue', err: { message: /larger than a frame/ } });
  });

  t.test('WINDOW overflow on a request stream: tunnel closed, the client gets a clean error', async (t) => {
    const peer = await rogue(t);
    await peer.announce(routes('window'));
    const pending = get(relay.httpPort, 'window.rogue.example.com');
    const open = await peer.waitFor((f) => f.type === FrameType.Open);
    peer.send(encodeWindow(open.streamId, 2 ** 31 - 1));
    const { code } = await peer.closed;
    t.equal(code, 4000 + Reason.FlowControlError);
    const goAway = peer.frames.find((f) => f.type === FrameType.GoAway);
    t.match(decodeGoAway(goAway!.payload).message, /overflows credit/);
    const r = await pending;
    t.ok(r.status === 502 || r.status === 503, `the client got ${r.status}`);
  });

  t.test('a flood of agent-opened streams past the concurrency limit', async (t) => {
    const peer = await rogue(t);
    await peer.announce(routes('flood'));
    const count = 10_000; // past the relay's limit of 8192 concurrent streams
    for (let i = 0; i < count; i++) {
      peer.send(encodeFrame(FrameType.Open, 3 + 2 * i, Buffer.from('{"kind":"control"}')));
    }
    const last = 3 + 2 * (count - 1);
    const rst = decodeRst(
      (await peer.waitFor((f) => f.type === FrameType.Rst && f.streamId === last)).payload,
    );
    t.equal(rst.reason, Reason.RefusedStream);
    t.equal(
      peer.frames.filter((f) => f.type === FrameType.Rst && f.streamId > 1).length,
      count,
      'every extra stream was refused',
    );
    t.ok(await peer.alive(), 'the tunnel itself stays up');
  });

  t.test('requests past the limit the agent advertised get 503 at once', async (t) => {
    const peer = await rogue(t, { maxConcurrentStreams: 4 });
    await peer.announce(routes('limit'));
    // Four streams open and hang (the rogue never answers); the other six are refused.
    let answered = 0;
    let onAnswer = () => {};
    const replies = Array.from({ length: 10 }, () =>
      get(relay.httpPort, 'limit.rogue.example.com').then((r) => {
        answered++;
        onAnswer();
        return r;
      }),
    );
    // Only once all six are answered may the four be reset: a slot freed earlier would take a seventh.
    while (answered < 6) await new Promise<void>((resolve) => (onAnswer = resolve));
    while (peer.frames.filter((f) => f.type === FrameType.Open).length < 4) await once(peer, 'frame');
    const opens = peer.frames.filter((f) => f.type === FrameType.Open);
    for (const f of opens) peer.send(encodeFrame(FrameType.Rst, f.streamId, Buffer.from([0, 0, 0, 5])));
    const statuses = (await Promise.all(replies)).map((r) => r.status).sort();
    t.same(statuses, [502, 502, 502, 502, 503, 503, 503, 503, 503, 503]);
    t.equal(opens.length, 4, 'the relay never opened more streams than the agent allows');
  });

  t.test('garbage and non-WebSocket requests on the tunnel port', async (t) => {
    const rng = mulberry32(7);
    for (let i = 0; i < 10; i++) {
      const r = await rawRequest(relay.tunnelPort, rng.bytes(1 + rng.int(512)));
      t.ok(r.status === 400 || (r.status === 0 && r.closed), `random bytes ${i}: 400 or closed`);
    }
    const plain = await rawRequest(relay.tunnelPort, 'GET / HTTP/1.1\r\nHost: relay\r\n\r\n');
    t.equal(plain.status, 404);
    const atPath = await rawRequest(relay.tunnelPort, `GET ${TUNNEL_PATH} HTTP/1.1\r\nHost: relay\r\n\r\n`);
    t.equal(atPath.status, 426, 'Upgrade Required at the tunnel path');
    const withQuery = await rawRequest(
      relay.tunnelPort,
      `GET ${TUNNEL_PATH}?x=1 HTTP/1.1\r\nHost: relay\r\n\r\n`,
    );
    t.equal(withQuery.status, 426, 'the tunnel path with a query: the same answer');
    const h2c = await rawRequest(
      relay.tunnelPort,
      `GET ${TUNNEL_PATH} HTTP/1.1\r\nHost: relay\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n`,
    );
    t.equal(h2c.status, 400, 'another upgrade protocol: 400');
    const badKey = await rawRequest(
      relay.tunnelPort,
      `GET ${TUNNEL_PATH} HTTP/1.1\r\nHost: relay\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n` +
        `Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: nope\r\nSec-WebSocket-Protocol: ${TUNNEL_SUBPROTOCOL}\r\n` +
        `Authorization: Bearer ${rogueToken}\r\n\r\n`,
    );
    t.equal(badKey.status, 400, 'a malformed WebSocket handshake with a valid token: 400');
    // A valid upgrade followed by bytes that are not WebSocket frames.
    const afterUpgrade = await rawRequest(
      relay.tunnelPort,
      (socket) => {
        socket.write(
          `GET ${TUNNEL_PATH} HTTP/1.1\r\nHost: relay\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n` +
            `Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n` +
            `Sec-WebSocket-Protocol: ${TUNNEL_SUBPROTOCOL}\r\nAuthorization: Bearer ${rogueToken}\r\n\r\n`,
        );
        socket.once('data', () => socket.write(mulberry32(9).bytes(256)));
      },
      15_000,
      true,
    );
    t.equal(afterUpgrade.status, 101);
    t.ok(afterUpgrade.closed, 'garbage after the upgrade: the relay closes the connection');
  });

  t.test('forged and misused tokens', async (t) => {
    const url = relay.tunnelUrl;
    const cases: Array<[string, string, RegExp]> = [
      ['alg none', await forge.algNone(), /algorithm "none" is not allowed/],
      [
        'HS256 signed with the public key',
        await forge.hs256WithPublicKey(),
        /algorithm "HS256" is not allowed/,
      ],
      ['wrong audience', await forge.wrongAudience(), /claim "aud"/],
    ];
    for (const [name, token, reason] of cases) {
      const r = await attempt(url, token);
      t.equal(r.status, 401, `${name}: 401`);
      t.match(r.body, reason);
    }
    // Replay: a token that worked is refused once it has expired. exp has one-second
    // resolution, so a 2 s lifetime leaves it valid for more than a second after issue.
    const shortLived = await tokenFor('replayer', ['replay.example.com'], 2_000);
    t.equal((await attempt(url, shortLived)).status, 101, 'accepted while valid');
    // Wait for the moment exp passes (the relay allows no clock skew), then replay.
    const { exp } = decodeJwt<{ exp: number }>(shortLived);
    await new Promise((r) => setTimeout(r, Math.max(0, exp * 1000 - Date.now()) + 20));
    const replay = await attempt(url, shortLived);
    t.equal(replay.status, 401, 'the same token replayed after expiry: 401');
    t.match(replay.body, /expired/);
    // A valid token cannot claim a name outside it, nor one another tenant holds.
    const peer = await rogue(t);
    const result = await peer.announce([
      { id: 'x', hostnames: ['bystander.example.com', 'evil.example.org'] },
    ]);
    t.same(
      result.routes.map((r) => r.status),
      ['refused', 'refused'],
    );
    t.equal((await get(relay.httpPort, 'evil.example.org')).status, 404);
  });

  t.test('the admin API without a token or with a wrong one: 401', async (t) => {
    const admin = async (authorization?: string) => {
      const r = await get(relay.adminPort!, '127.0.0.1', '/api/agents', {
        headers: authorization ? { authorization } : {},
      });
      return { status: r.status, body: r.body.toString() };
    };
    for (const [name, authorization] of [
      ['no token', undefined],
      ['a wrong token', 'Bearer not-the-admin-token'],
      ['an agent token', `Bearer ${rogueToken}`],
      ['the right token in the wrong scheme', `Basic ${adminToken}`],
      ['the right token with one character more', `Bearer ${adminToken}x`],
    ] as const) {
      const r = await admin(authorization);
      t.equal(r.status, 401, `${name}: 401`);
      t.notOk(r.body.includes('rogue'), 'and nothing about agents');
    }
    t.equal((await admin(`Bearer ${adminToken}`)).status, 200, 'the right token works');
  });

  await t.test('afterwards', async (t) => {
    await loop.after(10);
    await loop.stop();
    t.same(loop.failures, [], `the bystander tenant saw no errors (${loop.summary()})`);
    t.equal(relay.proc.child.exitCode, null, 'the relay process is alive');
    t.equal((await get(relay.httpPort, 'bystander.example.com')).status, 200, 'and serving');
  });
});
