// Receive-window auto-tuning (docs/protocol.md §6.2), driven through a
// stream's real read path with a host whose round-trip figures the test sets.
// Round trips are made long (seconds) so that "half the window drained in
// under two round trips" holds however slowly the test itself runs.
import t from 'tap';
import { FrameType } from '../src/protocol/frame.js';
import { Stream, type StreamHost } from '../src/protocol/stream.js';
import { WindowBudget } from '../src/protocol/window-budget.js';

const KiB = 1024;

interface FakeHost extends StreamHost {
  rtt: number;
  baseRtt: number;
  rttSampledAt: number;
  /** Increments of the WINDOW frames the stream sent. */
  windows: number[];
}

function fakeHost(): FakeHost {
  return {
    rtt: 0,
    baseRtt: 0,
    rttSampledAt: 0,
    windows: [],
    peerMaxFramePayload: 64 * KiB,
    schedule() {},
    sendControl(type, _id, value) {
      if (type === FrameType.Window) this.windows.push(value!);
    },
    sendRst() {},
    sendData() {},
    release() {},
    watchQuiet() {},
    resizeWindow: (_window, resize) => resize,
  };
}

function receiver(host: FakeHost, { initial = 256 * KiB, max = 16 * 1024 * KiB, queueDelay = 5 } = {}) {
  return new Stream(host, {
    id: 2,
    metadata: Buffer.alloc(0),
    local: false,
    sendCredit: 0,
    recvWindow: initial,
    maxRecvWindow: max,
    maxQueueDelay: queueDelay,
  });
}

/**
 * The peer sends half the current window and the application reads it: one
 * WINDOW update. Returns its increment (undefined if none was sent).
 */
function drainHalf(stream: Stream, host: FakeHost): number | undefined {
  const before = host.windows.length;
  stream.onData(Buffer.alloc(stream.receiveWindow / 2));
  while (stream.read() !== null);
  return host.windows.length > before ? host.windows.at(-1) : undefined;
}

/** A fresh round-trip sample: `rtt` ms, taken now. */
function sample(host: FakeHost, rtt: number, base: number): void {
  host.rtt = rtt;
  host.baseRtt = base;
  host.rttSampledAt += 1;
}

t.test('the first update only returns what was consumed', async (t) => {
  const host = fakeHost();
  const s = receiver(host);
  sample(host, 2000, 2000);
  t.equal(drainHalf(s, host), 128 * KiB);
  t.equal(s.receiveWindow, 256 * KiB, 'no earlier update to compare the drain time with');
});

t.test('a window that drains within two round trips without a queue doubles', async (t) => {
  const host = fakeHost();
  const s = receiver(host);
  sample(host, 2000, 2000);
  drainHalf(s, host);
  sample(host, 2000, 2000);
  t.equal(drainHalf(s, host), 128 * KiB + 256 * KiB, 'the increment carries the growth');
  t.equal(s.receiveWindow, 512 * KiB);
});

t.test('a queue longer than allowed shrinks the window, at most by half, down to 16 KiB', async (t) => {
  const host = fakeHost();
  const s = receiver(host, { initial: 512 * KiB });
  sample(host, 2000, 2000);
  drainHalf(s, host);
  // 1 s of queue in front of the data against 5 ms allowed (the base is 1 ms).
  sample(host, 1001, 1);
  t.equal(drainHalf(s, host), undefined, 'a halving that takes all that was consumed sends no WINDOW');
  t.equal(s.receiveWindow, 256 * KiB);
  const sizes = [];
  for (let i = 0; i < 6; i++) {
    sample(host, 1001, 1);
    drainHalf(s, host);
    sizes.push(s.receiveWindow / KiB);
  }
  t.same(sizes, [128, 64, 32, 16, 16, 16]);
});

t.test(
  'a peer that always sends all its credit never overruns a window that shrinks and grows',
  async (t) => {
    const host = fakeHost();
    const s = receiver(host, { initial: 1024 * KiB });
    let sent = 0;
    const granted = () => 1024 * KiB + host.windows.reduce((a, b) => a + b, 0);
    // Round trips with no queue (the window grows) and with 1 s of queue (it shrinks).
    const queues = [0, 0, 1000, 1000, 0, 1000, 0, 1000, 1000, 1000];
    const sizes: number[] = [];
    for (const queued of queues) {
      if (queued === 0) sample(host, 2000, 2000);
      else sample(host, 1 + queued, 1);
      // The peer sends all the credit it holds in 16 KiB frames (onData throws FLOW_CONTROL_ERROR
      // past it), and the application reads in 100 KiB pieces meanwhile.
      const limit = granted();
      while (limit > sent) {
        const n = Math.min(16 * KiB, limit - sent);
        s.onData(Buffer.alloc(n));
        sent += n;
        if (s.readableLength >= 100 * KiB) s.read(100 * KiB);
      }
      while (s.read() !== null);
      t.ok(
        granted() - sent <= s.receiveWindow,
        `credit ${granted() - sent} within the window ${s.receiveWindow}`,
      );
      sizes.push(s.receiveWindow / KiB);
    }
    t.ok(
      Math.max(...sizes) > 1024 && Math.min(...sizes) < 1024,
      `the window grew and shrank: ${sizes.join(', ')} KiB`,
    );
  },
);

t.test('one sample moves the window once', async (t) => {
  const host = fakeHost();
  const s = receiver(host);
  sample(host, 2000, 2000);
  drainHalf(s, host);
  sample(host, 2000, 2000);
  drainHalf(s, host);
  t.equal(s.receiveWindow, 512 * KiB);
  drainHalf(s, host);
  t.equal(s.receiveWindow, 512 * KiB, 'no new sample: no new step');
  sample(host, 2000, 2000);
  drainHalf(s, host);
  t.equal(s.receiveWindow, 1024 * KiB);
});

t.test('the allowed queue is one base round trip when that is longer than maxQueueDelay', async (t) => {
  const host = fakeHost();
  const s = receiver(host);
  sample(host, 2000, 2000);
  drainHalf(s, host);
  // 1.5 s of queue on a path with a 2 s base round trip: within one base round trip, so it grows.
  sample(host, 3500, 2000);
  drainHalf(s, host);
  t.equal(s.receiveWindow, 512 * KiB);
  // 2.5 s of queue: more than one base round trip, so it shrinks.
  sample(host, 4500, 2000);
  drainHalf(s, host);
  t.equal(s.receiveWindow, 256 * KiB);
});

t.test('maxQueueDelay 0: windows only grow, whatever the queue', async (t) => {
  const host = fakeHost();
  const s = receiver(host, { queueDelay: 0 });
  sample(host, 2000, 2000);
  drainHalf(s, host);
  for (let i = 0; i < 3; i++) {
    sample(host, 3001, 1);
    drainHalf(s, host);
  }
  t.equal(s.receiveWindow, 2048 * KiB);
});

t.test('a reader slower than two round trips does not grow the window', async (t) => {
  const host = fakeHost();
  const s = receiver(host);
  // A round trip far shorter than the time this test takes between two updates.
  sample(host, 0.000001, 0.000001);
  drainHalf(s, host);
  sample(host, 0.000001, 0.000001);
  await new Promise((resolve) => setTimeout(resolve, 5));
  drainHalf(s, host);
  t.equal(s.receiveWindow, 256 * KiB);
});

t.test('windows grow past their start only as far as the connection budget allows, together', async (t) => {
  // A peer delaying every PONG by the same amount: round trips with no queue, so each window doubles.
  const host = fakeHost();
  const budget = new WindowBudget(256 * KiB, 32 * 1024 * KiB);
  host.resizeWindow = (window, resize) => budget.resize(window, resize);
  const streams = Array.from({ length: 8 }, () => receiver(host));
  for (let round = 0; round < 12; round++) {
    for (const s of streams) {
      sample(host, 2000, 2000);
      drainHalf(s, host);
    }
  }
  const total = streams.reduce((n, s) => n + s.receiveWindow, 0);
  t.equal(total, 8 * 256 * KiB + 32 * 1024 * KiB, 'eight windows hold their start and the budget, no more');
  t.ok(
    streams.every((s) => s.receiveWindow <= 16 * 1024 * KiB),
    'none past maxWindow',
  );
  t.equal(budget.used, 32 * 1024 * KiB);
  // A stream that ends gives its growth back; one that shrinks too.
  budget.release(streams[0]!.receiveWindow);
  t.equal(budget.used, 32 * 1024 * KiB - (streams[0]!.receiveWindow - 256 * KiB));
  t.equal(budget.resize(1024 * KiB, -512 * KiB), -512 * KiB, 'a shrink is always granted');
  t.equal(budget.resize(100 * KiB, 50 * KiB), 50 * KiB, 'a window below its start moves freely up to it');
});

t.test('a window below its start that grows past it with the budget spent ends at its start', async (t) => {
  const budget = new WindowBudget(256 * KiB, 1024 * KiB);
  t.equal(budget.resize(256 * KiB, 1024 * KiB), 1024 * KiB, 'one stream takes the whole budget');
  // Another stream, shrunk to 200 KiB, doubles: it may only come back to 256 KiB.
  t.equal(budget.resize(200 * KiB, 200 * KiB), 56 * KiB);
  t.equal(budget.used, 1024 * KiB, 'nothing uncounted');
  budget.release(1280 * KiB);
  budget.release(256 * KiB);
  t.equal(budget.used, 0, 'and all of it given back when both end');
});
