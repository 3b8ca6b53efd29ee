/**
 * The multiplexer compliance suite: the same behaviour over every transport
 * (in-memory pair, real WebSocket), as libp2p's interface-compliance-tests do.
 */
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import type { Test } from 'tap';
import { FrameType, Reason } from '../../src/protocol/frame.js';
import { MemoryTransport } from '../../src/protocol/memory-transport.js';
import { Session, type SessionOptions } from '../../src/protocol/session.js';
import type { Stream } from '../../src/protocol/stream.js';
import type { MessageTransport, TransportHandlers } from '../../src/protocol/transport.js';
import { holdEventLoop } from './event-loop.js';
import { mulberry32, type Rng } from './prng.js';

export interface TransportPair {
  /** The dialing side's end: the client session runs on it. */
  a: MessageTransport;
  /** The accepting side's end: the server session runs on it. */
  b: MessageTransport;
  cleanup(): Promise<void>;
}

type Config = Omit<SessionOptions, 'role'>;

/** Passes every call through; `filter` may drop outgoing messages and watch them go by. */
class FilteredTransport implements MessageTransport {
  constructor(
    readonly inner: MessageTransport,
    readonly filter: (data: Buffer) => boolean,
  ) {}
  attach(handlers: TransportHandlers): void {
    this.inner.attach(handlers);
  }
  send(data: Buffer): void {
    if (this.filter(data)) this.inner.send(data);
  }
  get writable(): boolean {
    return this.inner.writable;
  }
  get bufferedAmount(): number {
    return this.inner.bufferedAmount;
  }
  close(code: number, reason: string): void {
    this.inner.close(code, reason);
  }
}

/** Drops or watches messages `transport` sends: MemoryTransport's own hook, or a wrapper. */
function withFilter(transport: MessageTransport, filter: (data: Buffer) => boolean): MessageTransport {
  if (transport instanceof MemoryTransport) {
    transport.filter = filter;
    return transport;
  }
  return new FilteredTransport(transport, filter);
}

interface Sessions {
  client: Session;
  server: Session;
}

interface SessionSetup {
  client?: Config;
  server?: Config;
  /** Wraps the transports before the sessions attach (to drop or watch frames). */
  wrap?: (pair: TransportPair) => { a: MessageTransport; b: MessageTransport };
}

async function sessions(
  t: Test,
  makePair: () => Promise<TransportPair>,
  setup: SessionSetup = {},
): Promise<Sessions> {
  const pair = await makePair();
  t.teardown(() => pair.cleanup());
  const { a, b } = setup.wrap ? setup.wrap(pair) : pair;
  // Both sessions attach in the same tick: a WebSocket drops messages that
  // arrive before anyone listens, and each side sends HELLO at once.
  const client = new Session(a, { role: 'client', ...setup.client });
  t.teardown(() => client.destroy());
  const server = new Session(b, { role: 'server', ...setup.server });
  t.teardown(() => server.destroy());
  await Promise.all([client.ready, server.ready]);
  return { client, server };
}

/** Echoes every accepted stream back to its opener (half-close aware: FIN follows the echo). */
function echo(session: Session, onStream?: (s: Stream) => void): void {
  session.on('stream', (s) => {
    s.on('error', () => {});
    onStream?.(s);
    s.pipe(s);
  });
}

/** Reads `stream` to its end; resolves with the sha256 and length of everything it carried. */
function digest(stream: Stream): Promise<{ sha256: string; length: number }> {
  const hash = createHash('sha256');
  let length = 0;
  stream.on('data', (chunk: Buffer) => {
    hash.update(chunk);
    length += chunk.byteLength;
  });
  return once(stream, 'end').then(() => ({ sha256: hash.digest('hex'), length }));
}

function sha256(data: Buffer): { sha256: string; length: number } {
  return { sha256: createHash('sha256').update(data).digest('hex'), length: data.byteLength };
}

function collect(stream: Stream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  stream.on('data', (c: Buffer) => chunks.push(c));
  return once(stream, 'end').then(() => Buffer.concat(chunks));
}

/** Writes `chunks` to `stream`, honouring backpressure, then optionally ends it. */
async function writeAll(stream: Stream, chunks: Iterable<Buffer>, end = true): Promise<void> {
  for (const chunk of chunks) {
    if (!stream.write(chunk)) await once(stream, 'drain');
  }
  if (end) stream.end();
}

/** Cuts `data` into chunks of random sizes from 1 to `max` bytes. */
function* randomChunks(rng: Rng, data: Buffer, max: number): Generator<Buffer> {
  let off = 0;
  while (off < data.byteLength) {
    const n = 1 + rng.int(max);
    yield data.subarray(off, off + n);
    off += n;
  }
}

/** Resolves once `stream` has emitted 'close' (which may already have happened). */
function whenClosed(stream: Stream): Promise<unknown> {
  return stream.closed ? Promise.resolve() : once(stream, 'close');
}

/** The next `n` streams `session` accepts. */
function accepted(session: Session, n: number): Promise<Stream[]> {
  const streams: Stream[] = [];
  return new Promise((resolve) => {
    const onStream = (s: Stream) => {
      streams.push(s);
      if (streams.length === n) {
        session.off('stream', onStream);
        resolve(streams);
      }
    };
    session.on('stream', onStream);
  });
}

export function complianceSuite(t: Test, makePair: () => Promise<TransportPair>): void {
  t.test('echo on one stream; metadata arrives intact', async (t) => {
    const { client, server } = await sessions(t, makePair);
    const meta = Buffer.concat([
      Buffer.from('{"route":"web.example","port":8080}'),
      Buffer.from([0, 1, 0xff, 0xfe]),
    ]);
    const seen: Buffer[] = [];
    echo(server, (s) => seen.push(s.metadata));
    const stream = client.openStream(meta);
    t.equal(stream.id % 2, 1, 'the client opens odd ids');
    const payload = mulberry32(1).bytes(300_000);
    const [echoed] = await Promise.all([collect(stream), writeAll(stream, [payload])]);
    t.ok(echoed.equals(payload), 'echo is byte-exact');
    t.equal(seen.length, 1);
    t.ok(seen[0]?.equals(meta), 'metadata intact on the accepting side');

    const empty = client.openStream();
    const [nothing] = await Promise.all([collect(empty), writeAll(empty, [])]);
    t.equal(nothing.byteLength, 0, 'an empty stream just ends');
    t.equal(seen[1]?.byteLength, 0, 'empty metadata arrives empty');

    // Servers open streams too (even ids).
    echo(client);
    const back = server.openStream(Buffer.from('reverse'));
    t.equal(back.id % 2, 0, 'the server opens even ids');
    const [reply] = await Promise.all([collect(back), writeAll(back, [Buffer.from('ping?')])]);
    t.equal(reply.toString(), 'ping?');
  });

  t.test('half-close both ways', async (t) => {
    const { client, server } = await sessions(t, makePair);
    const serverSide = accepted(server, 1);
    const stream = client.openStream(Buffer.from('half'));
    stream.end('request');
    await once(stream, 'finish');
    t.notOk(stream.readableEnded, 'client finished writing, still reading');

    const [s] = await serverSide;
    const request = await collect(s!);
    t.equal(request.toString(), 'request', 'server read the whole request up to FIN');
    t.notOk(s!.writableEnded, 'server may still write');

    const replyDone = collect(stream);
    s!.write('reply part 1, ');
    s!.end('reply part 2');
    t.equal(
      (await replyDone).toString(),
      'reply part 1, reply part 2',
      'reply arrives after the client ended',
    );

    await Promise.all([whenClosed(stream), whenClosed(s!)]);
    t.equal(client.streamCount, 0, 'client forgot the stream');
    t.equal(server.streamCount, 0, 'server forgot the stream');
    t.equal(stream.resetReason, undefined, 'no RST was involved');
    t.equal(s!.resetReason, undefined);
    t.notOk(client.closed || server.closed, 'the session outlives its streams');
  });

  t.test('RST propagates with its reason', async (t) => {
    const { client, server } = await sessions(t, makePair);
    const serverSide = accepted(server, 1);
    const stream = client.openStream();
    const localError = once(stream, 'error');
    stream.write('some bytes first');
    const [s] = await serverSide;
    const remoteError = once(s!, 'error');
    stream.reset(Reason.ConnectRefused, 'x');
    const [remote] = await remoteError;
    t.match(remote, {
      name: 'StreamResetError',
      code: 'BURROW_ERR_STREAM_RESET',
      reason: Reason.ConnectRefused,
    });
    t.match(remote.message, /ConnectRefused: x/);
    t.equal(s!.resetReason, Reason.ConnectRefused);
    const [local] = await localError;
    t.match(
      local,
      { code: 'BURROW_ERR_STREAM_RESET', reason: Reason.ConnectRefused },
      'the resetting side errors too',
    );
    await whenClosed(s!);
    t.equal(client.streamCount, 0);
    t.equal(server.streamCount, 0);

    // And the other way, from the accepting side.
    const next = accepted(server, 1);
    const second = client.openStream();
    second.write('hi');
    const [s2] = await next;
    s2!.on('error', () => {});
    const clientError = once(second, 'error');
    s2!.reset(Reason.Forbidden);
    const [err] = await clientError;
    t.match(err, { code: 'BURROW_ERR_STREAM_RESET', reason: Reason.Forbidden });
    t.notOk(client.closed || server.closed, 'a stream reset leaves the session up');
  });

  t.test('1,000 concurrent streams with random sizes and interleavings echo byte-exact', async (t) => {
    const { client, server } = await sessions(t, makePair);
    const rng = mulberry32(0xb0_77_0e);
    const metaSeen = new Map<number, string>();
    echo(server, (s) => metaSeen.set(s.id, s.metadata.toString()));

    const N = 1000;
    const jobs = Array.from({ length: N }, (_, i) => {
      // Mostly small streams, a few larger than the initial window.
      const size = rng() < 0.02 ? 256 * 1024 + rng.int(768 * 1024) : Math.floor(rng() ** 2 * 64 * 1024);
      const data = rng.bytes(size);
      const stream = client.openStream(Buffer.from(`stream-${i}`));
      const chunks = [...randomChunks(rng, data, 1 + rng.int(32 * 1024))];
      return { i, stream, want: sha256(data), result: digest(stream), chunks, next: 0 };
    });
    t.equal(client.streamCount, N);

    // Interleave writes across streams in a seeded random order.
    const live = jobs.slice();
    let steps = 0;
    const maxSteps = jobs.reduce((n, j) => n + j.chunks.length + 1, 0);
    while (live.length > 0 && steps++ <= maxSteps) {
      const k = rng.int(live.length);
      const job = live[k]!;
      const chunk = job.chunks[job.next++];
      if (chunk === undefined) {
        job.stream.end();
        live[k] = live[live.length - 1]!;
        live.pop();
      } else if (!job.stream.write(chunk)) {
        await once(job.stream, 'drain');
      }
    }
    t.equal(live.length, 0, 'every stream was written and ended');

    const results = await Promise.all(jobs.map((j) => j.result));
    const bad = jobs.filter(
      (j, k) => results[k]!.sha256 !== j.want.sha256 || results[k]!.length !== j.want.length,
    );
    t.same(
      bad.map((j) => j.i),
      [],
      'every stream echoed byte-exact',
    );
    t.equal(metaSeen.size, N, 'the server saw every stream');
    t.ok(
      jobs.every((j) => metaSeen.get(j.stream.id) === `stream-${j.i}`),
      'each stream carried its own metadata',
    );
    await Promise.all(jobs.map((j) => whenClosed(j.stream)));
    t.equal(client.streamCount, 0);
    t.equal(server.streamCount, 0);
  });

  t.test('an unread stream holds at most its window while another moves 50 MB', async (t) => {
    const { client, server } = await sessions(t, makePair);
    const streams = new Map<string, Stream>();
    const bulkDone = new Promise<{ sha256: string; length: number }>((resolve, reject) => {
      server.on('stream', (s) => {
        s.on('error', () => {});
        streams.set(s.metadata.toString(), s);
        // The stalled stream is never read.
        if (s.metadata.toString() === 'bulk') digest(s).then(resolve, reject);
      });
    });

    const stalled = client.openStream(Buffer.from('stalled'));
    stalled.on('error', () => {});
    stalled.write(Buffer.alloc(4 * 1024 * 1024, 0x5a)); // far more than any window; never drains

    const bulk = client.openStream(Buffer.from('bulk'));
    bulk.on('error', () => {}); // its read side stays open until teardown destroys the session
    const rng = mulberry32(50);
    const sent = createHash('sha256');
    const MB = 1024 * 1024;
    function* chunks(): Generator<Buffer> {
      for (let i = 0; i < 50; i++) {
        const chunk = rng.bytes(MB);
        sent.update(chunk);
        yield chunk;
      }
    }
    const [received] = await Promise.all([bulkDone, writeAll(bulk, chunks())]);
    t.equal(received.length, 50 * MB, '50 MB arrived');
    t.equal(received.sha256, sent.digest('hex'), 'byte-exact');

    const remote = streams.get('stalled')!;
    t.ok(remote, 'the stalled stream was accepted');
    t.ok(remote.unconsumed > 0, 'the stalled stream received data');
    t.ok(
      remote.unconsumed <= remote.receiveWindow,
      `unread bytes (${remote.unconsumed}) within the receive window (${remote.receiveWindow})`,
    );
    t.equal(remote.receiveWindow, server.config.initialWindow, 'an unread window never grows');
    t.equal(stalled.sendCredit, 0, 'the sender ran out of credit');
    t.equal(stalled.bytesOut, remote.unconsumed, 'everything sent is held, nothing more');
  });

  t.test('GOAWAY drains in-flight streams, refuses new ones, then closes', async (t) => {
    const { client, server } = await sessions(t, makePair);
    echo(server);
    echo(client);
    const rng = mulberry32(7);
    const serverAccepted = accepted(server, 3);
    const clientAccepted = accepted(client, 2);
    const flights = [
      ...Array.from({ length: 3 }, () => client.openStream(Buffer.from('c'))),
      ...Array.from({ length: 2 }, () => server.openStream(Buffer.from('s'))),
    ].map((stream) => {
      const data = rng.bytes(200_000 + rng.int(400_000));
      const half = data.byteLength >> 1;
      return { stream, data, half, result: collect(stream) };
    });
    // First halves in flight; wait only until every stream is known to its peer.
    for (const f of flights) f.stream.write(f.data.subarray(0, f.half));
    await Promise.all([serverAccepted, clientAccepted]);

    const clientClosed = once(client, 'close');
    const serverClosed = once(server, 'close');
    const goaway = once(client, 'goaway');
    const drained = server.goAway();
    t.ok(server.draining);
    // An OPEN that crosses the GOAWAY on the wire is refused: safe to retry elsewhere.
    const crossing = client.openStream(Buffer.from('late'));
    const crossingError = once(crossing, 'error');
    const [info] = await goaway;
    t.equal(info.reason, Reason.Shutdown);
    t.equal(
      info.lastStreamId,
      Math.max(...flights.slice(0, 3).map((f) => f.stream.id)),
      'GOAWAY names the last stream the server accepted',
    );
    const [refused] = await crossingError;
    t.match(
      refused,
      { code: 'BURROW_ERR_STREAM_RESET', reason: Reason.RefusedStream },
      'a crossing OPEN is refused',
    );
    t.ok(client.draining);
    t.throws(
      () => client.openStream(),
      { name: 'GoAwayError', code: 'BURROW_ERR_GOAWAY' },
      'client refuses new streams',
    );
    t.throws(
      () => server.openStream(),
      { name: 'GoAwayError', code: 'BURROW_ERR_GOAWAY' },
      'server refuses new streams',
    );
    t.notOk(client.closed || server.closed, 'still open while streams are in flight');

    for (const f of flights) f.stream.end(f.data.subarray(f.half));
    const echoed = await Promise.all(flights.map((f) => f.result));
    flights.forEach((f, k) => {
      t.ok(echoed[k]!.equals(f.data), `stream ${f.stream.id} finished byte-exact`);
    });

    const [[clientError], [serverError]] = await Promise.all([clientClosed, serverClosed]);
    t.equal(clientError, undefined, 'client closed cleanly');
    t.equal(serverError, undefined, 'server closed cleanly');
    await drained;
    t.equal(client.streamCount + server.streamCount, 0);
  });

  t.test('a transport that drops PONGs is detected as dead', async (t) => {
    holdEventLoop(t);
    const { client, server } = await sessions(t, makePair, {
      client: { keepaliveInterval: 20 },
      // The server answers the client's PINGs, but its PONGs never arrive.
      wrap: ({ a, b }) => ({ a, b: withFilter(b, (data) => data[1] !== FrameType.Pong) }),
    });
    server.on('stream', (s) => s.on('error', () => {}));
    const serverClosed = once(server, 'close');
    const stream = client.openStream();
    const streamError = once(stream, 'error');
    const [err] = await once(client, 'close');
    t.match(err, { name: 'KeepaliveTimeoutError', code: 'BURROW_ERR_KEEPALIVE_TIMEOUT' });
    const [streamErr] = await streamError;
    t.match(streamErr, { code: 'BURROW_ERR_SESSION_CLOSED', cause: err }, 'open streams fail with the cause');
    const [serverErr] = await serverClosed;
    t.match(
      serverErr,
      { code: 'BURROW_ERR_PROTOCOL', message: /peer closed the session: KeepaliveTimeout/ },
      'the peer closes too, and learns why from the GOAWAY',
    );
  });

  t.test('a healthy transport stays up across many keepalive intervals', async (t) => {
    holdEventLoop(t);
    const interval = 20;
    let pings = 0;
    let onPing: (() => void) | undefined;
    const { client, server } = await sessions(t, makePair, {
      client: { keepaliveInterval: interval },
      server: { keepaliveInterval: interval },
      wrap: ({ a, b }) => ({
        a: withFilter(a, (data) => {
          if (data[1] === FrameType.Ping) {
            pings++;
            onPing?.();
          }
          return true;
        }),
        b,
      }),
    });
    // keepaliveMisses (3) intervals without a PONG would end the session: outlast that twice over.
    const want = pings + 2 * (client.config.keepaliveMisses + 1);
    await new Promise<void>((resolve) => {
      onPing = () => {
        if (pings >= want) resolve();
      };
    });
    t.notOk(client.closed || server.closed, `still up after ${want} PINGs`);
    for (let i = 0; i < 3; i++) {
      const rtt = await client.ping();
      t.ok(Number.isFinite(rtt) && rtt >= 0, `ping ${i + 1} answered`);
    }
    t.notOk(client.closed || server.closed);
  });

  t.test('ping() resolves with a finite RTT and sets session.rtt', async (t) => {
    const { client, server } = await sessions(t, makePair);
    const rtt = await client.ping();
    t.ok(Number.isFinite(rtt), `finite RTT (${rtt} ms)`);
    t.ok(rtt >= 0);
    t.ok(client.rtt > 0, 'session.rtt is measured');
    const back = await server.ping();
    t.ok(Number.isFinite(back));
    t.ok(server.rtt > 0);
    // More pings in flight than the session's table of outstanding keepalive pings holds.
    // PONGs come back in order, so once a later ping resolves every earlier one has settled too.
    let answered = 0;
    for (let i = 0; i < 100; i++) {
      client.ping().then(
        (rtt) => {
          if (Number.isFinite(rtt)) answered++;
        },
        () => {},
      );
    }
    await client.ping();
    t.equal(answered, 100, 'a burst of 100 concurrent pings all resolve');
    client.destroy();
    await t.rejects(client.ping(), { code: 'BURROW_ERR_SESSION_CLOSED' }, 'no ping on a closed session');
  });
}
