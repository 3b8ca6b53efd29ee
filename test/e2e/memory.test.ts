// After floods of hostile input the relay gives its memory back: no streams,
// timers, sockets or listeners outlive the connections that made them. The
// relay runs in its own process (test/fixtures/relay-heap.mjs, --expose-gc)
// so the test's own allocations do not blur the figures.
import { join } from 'node:path';
import { encodeFrame, encodeWindow, FrameType } from '@burrow/shared';
import t from 'tap';
import { mulberry32 } from '../../packages/shared/test/helpers/prng.js';
import { testAgent } from '../helpers/agent.js';
import { get, testServer } from '../helpers/http.js';
import { requestLoop } from '../helpers/load.js';
import { type LoggedProcess, listeningPorts, ROOT, spawnLogged } from '../helpers/proc.js';
import { rawRequest } from '../helpers/raw-http.js';
import { testKeys, tokenFor } from '../helpers/relay.js';
import { hostileFrame, RogueAgent } from '../helpers/rogue-agent.js';

const FIXTURE = join(ROOT, 'test/fixtures/relay-heap.mjs');
const MiB = 1024 * 1024;
/** Heap growth tolerated over all rounds, warm-up included. */
const HEAP_BOUND = 8 * MiB;
/**
 * Growth tolerated over the last of three identical rounds: far below what one leaked
 * flood would hold (10,000 refused streams, 40 sessions, 300 requests).
 */
const LEAK_BOUND = 3 * MiB;

interface Snapshot {
  heapUsed: number;
  connections: number;
  streams: number;
  resources: number;
}

async function snapshot(relay: LoggedProcess): Promise<Snapshot> {
  const seq = relay.lines.filter((l) => l['msg'] === 'heap').length + 1;
  relay.child.kill('SIGUSR2');
  return (await relay.waitFor((l) => l['msg'] === 'heap' && l['seq'] === seq)) as unknown as Snapshot;
}

const BAD_HTTP = [
  'POST / HTTP/1.1\r\nHost: rogue.example.com\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n',
  `GET / HTTP/1.1\r\nHost: rogue.example.com\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`,
  `GET / HTTP/1.1\r\nHost: rogue.example.com\r\n${'X-A: b\r\n'.repeat(600)}\r\n`,
  'GET / HTTP/1.1\r\nHost: rogue.example.com\r\nHost: steady.example.com\r\n\r\n',
];

t.test('the relay heap returns near its baseline after the flood cases', async (t) => {
  const keys = await testKeys();
  const relay = spawnLogged(
    t,
    FIXTURE,
    [],
    { BURROW_TEST_PUBLIC_KEY: keys.publicPem },
    { nodeArgs: ['--expose-gc'] },
  );
  const { http: httpPort, tunnel } = await listeningPorts(relay);
  const tunnelUrl = `ws://127.0.0.1:${tunnel}`;
  const app = await testServer(t, (_req, res) => res.end('steady'));
  await testAgent(t, tunnelUrl, [{ id: 's', hostnames: ['steady.example.com'], target: app.url }], {
    sub: 'steady',
  });
  const rogueToken = await tokenFor('rogue', ['rogue.example.com']);
  const routes = [{ id: 'r', hostnames: ['rogue.example.com'] }];

  /** One round of every flood; `scale` 1 is the full flood, smaller for the warm-up. */
  const floods = async (scale: number) => {
    const loop = requestLoop(t, httpPort, 'steady.example.com', {
      workers: 2,
      body: 'steady',
      max: 500 * scale,
    });
    // Hostile HTTP, and slow heads that time out.
    for (let i = 0; i < 300 * scale; i++) await rawRequest(httpPort, BAD_HTTP[i % BAD_HTTP.length]!);
    const slow = Array.from({ length: 30 * scale }, () =>
      rawRequest(httpPort, 'GET / HTTP/1.1\r\nHost: steady.example.com\r\nX-Slow: ', 30_000),
    );
    // Seeded hostile frames from agents holding a valid token.
    for (let seed = 1; seed <= 40 * scale; seed++) {
      const rng = mulberry32(1000 + seed);
      const peer = await RogueAgent.connect(t, tunnelUrl, rogueToken);
      await peer.announce(routes);
      for (let i = 1 + rng.int(4); i > 0 && !peer.isClosed; i--) peer.send(hostileFrame(rng));
      await peer.alive();
      peer.ws.terminate();
    }
    // A stream flood past the concurrency limit.
    const flooder = await RogueAgent.connect(t, tunnelUrl, rogueToken);
    await flooder.announce(routes);
    const count = 10_000 * scale;
    for (let i = 0; i < count; i++) flooder.send(encodeFrame(FrameType.Open, 3 + 2 * i, Buffer.from('{}')));
    await flooder.waitFor((f) => f.type === FrameType.Rst && f.streamId === 3 + 2 * (count - 1));
    flooder.ws.terminate();
    // Requests left hanging on an agent that never answers, which then vanishes.
    const mute = await RogueAgent.connect(t, tunnelUrl, rogueToken, { maxConcurrentStreams: 4 });
    await mute.announce(routes);
    const hanging = Array.from({ length: 20 * scale }, () => get(httpPort, 'rogue.example.com'));
    while (mute.frames.filter((f) => f.type === FrameType.Open).length < 4)
      await mute.waitFor(() => true, mute.frames.length);
    mute.ws.terminate();
    await Promise.all(hanging);
    // Huge OPEN metadata and a window overflow.
    const big = await RogueAgent.connect(t, tunnelUrl, rogueToken);
    big.send(encodeFrame(FrameType.Open, 3, Buffer.alloc(1024 * 1024, 'm')));
    await big.closed;
    const overflow = await RogueAgent.connect(t, tunnelUrl, rogueToken);
    await overflow.announce(routes);
    const pending = get(httpPort, 'rogue.example.com');
    const open = await overflow.waitFor((f) => f.type === FrameType.Open);
    overflow.send(encodeWindow(open.streamId, 2 ** 31 - 1));
    await overflow.closed;
    await pending;
    await Promise.all(slow);
    await loop.stop();
    t.same(loop.failures, [], `the steady tenant saw no errors during the floods (${loop.summary()})`);
  };

  /**
   * Snapshot once only the steady agent's connections are left and, after the
   * first round, no more timers and sockets than the round before holds: the
   * relay notices closes asynchronously (a client's kept-alive socket closes
   * a moment after its loop stops). A leak stays past the 5 s bound.
   */
  const settled = async (connections: number, resources = Number.POSITIVE_INFINITY) => {
    const done = (s: Snapshot) =>
      s.connections === connections && s.streams === connections && s.resources <= resources;
    let s = await snapshot(relay);
    for (let i = 0; i < 50 && !done(s); i++) {
      await new Promise((r) => setTimeout(r, 100));
      s = await snapshot(relay);
    }
    return s;
  };

  // The first rounds also warm up what is created lazily (JIT code, pools,
  // caches): the heap plateaus after about two. A leak shows as growth that
  // repeats round after round, so the last round is the one bounded tightly.
  const rounds = [await settled(2)]; // the steady agent's two connections
  for (let i = 0; i < 3; i++) {
    await floods(1);
    rounds.push(await settled(2, rounds.at(-1)!.resources));
  }
  const start = rounds[0]!;
  const baseline = rounds.at(-2)!;
  const after = rounds.at(-1)!;
  t.comment(
    `relay heapUsed after GC, at start and after each flood round: ${rounds.map((r) => (r.heapUsed / MiB).toFixed(2)).join(' → ')} MiB; ` +
      `active handles ${rounds.map((r) => r.resources).join(' → ')}`,
  );
  t.ok(
    after.heapUsed - start.heapUsed < HEAP_BOUND,
    `all rounds within ${HEAP_BOUND / MiB} MiB of the start`,
  );
  t.equal(after.connections, baseline.connections, 'no tunnel connection outlived its peer');
  t.equal(after.streams, baseline.streams, 'no stream outlived its connection (control streams only)');
  t.ok(after.resources <= baseline.resources, 'no timer or socket left behind');
  t.ok(
    after.heapUsed - baseline.heapUsed < LEAK_BOUND,
    `the last round grew the heap by less than ${LEAK_BOUND / MiB} MiB`,
  );
  t.equal(relay.child.exitCode, null, 'the relay process is alive');
});
