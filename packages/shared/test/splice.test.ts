import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { connect, createServer, type Socket } from 'node:net';
import t, { type Test } from 'tap';
import { splice } from '../src/splice.js';

/**
 * A TCP connection pair on loopback: `outer` is the far end a peer holds,
 * `inner` the accepted socket the code under test splices.
 */
async function socketPair(t: Test): Promise<{ outer: Socket; inner: Socket }> {
  const server = createServer({ allowHalfOpen: true });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as { port: number };
  const outer = connect({ port, host: '127.0.0.1', allowHalfOpen: true });
  const [inner] = (await once(server, 'connection')) as [Socket];
  server.close();
  t.teardown(() => {
    outer.destroy();
    inner.destroy();
  });
  return { outer, inner };
}

/** Two connections joined in the middle: bytes written at `left` come out at `right` and back. */
async function joined(t: Test) {
  const l = await socketPair(t);
  const r = await socketPair(t);
  splice(l.inner, r.inner);
  return { left: l.outer, right: r.outer, middle: [l.inner, r.inner] as const };
}

const digest = (b: Buffer) => createHash('sha256').update(b).digest('hex');

async function readAll(s: Socket, slow = false): Promise<Buffer> {
  const parts: Buffer[] = [];
  s.on('data', (c: Buffer) => {
    parts.push(c);
    if (slow) {
      // A reader that keeps stopping: the spliced writer sees backpressure again and again.
      s.pause();
      setImmediate(() => s.resume());
    }
  });
  await once(s, 'end');
  return Buffer.concat(parts);
}

t.test('bytes cross both ways intact, and a half-close travels end to end', async (t) => {
  const { left, right } = await joined(t);
  const up = randomBytes(3 * 1024 * 1024);
  const down = randomBytes(2 * 1024 * 1024);
  const atRight = readAll(right);
  left.end(up);
  // The right end saw the left's end but can still answer on its half.
  const got = await atRight;
  t.equal(digest(got), digest(up), 'left → right byte-exact, then end');
  const atLeft = readAll(left);
  right.end(down);
  t.equal(digest(await atLeft), digest(down), 'right → left byte-exact after the half-close');
});

t.test('a slow reader holds the writer back instead of filling memory', async (t) => {
  const { left, right, middle } = await joined(t);
  const payload = randomBytes(16 * 1024 * 1024);
  let peak = 0;
  const sample = setInterval(() => {
    peak = Math.max(peak, middle[1].writableLength);
  }, 1);
  const got = readAll(right, true);
  left.end(payload);
  const data = await got;
  clearInterval(sample);
  t.equal(digest(data), digest(payload), 'every byte arrives in order');
  // Without backpressure the spliced socket would queue most of the 16 MiB.
  t.ok(peak < 2 * 1024 * 1024, `at most ${peak} bytes queued in the middle`);
});

t.test('a side destroyed mid-transfer does not throw; the caller tears the other down', async (t) => {
  const { left, middle } = await joined(t);
  middle[1].on('error', () => {});
  middle[0].on('error', () => {});
  middle[1].destroy();
  middle[1].once('close', () => middle[0].destroy());
  const closed = new Promise((resolve) => left.on('close', resolve));
  left.on('error', () => {}); // the reset that follows
  left.write(randomBytes(1024 * 1024));
  await closed;
  t.pass('the left end was closed by the caller after the right side went away');
});
