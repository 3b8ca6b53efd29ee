import t from 'tap';
import { Backoff } from '../src/tunnel/backoff.js';

/** A Backoff whose jitter always picks the top of its range, on a clock the test moves. */
function fixture(base = 100, cap = 1_000) {
  const clock = { now: 0 };
  const backoff = new Backoff(
    { base, cap },
    () => 1,
    () => clock.now,
  );
  return { backoff, clock };
}

t.test('failed attempts double the bound up to the cap; reset starts over', async (t) => {
  const { backoff } = fixture();
  t.same(
    Array.from({ length: 6 }, () => backoff.next()),
    [100, 200, 400, 800, 1_000, 1_000],
  );
  backoff.reset();
  t.equal(backoff.next(), 100);
});

t.test('jitter spreads delays over [0, bound]', async (t) => {
  const draws = [0, 0.5, 0.25];
  const backoff = new Backoff({ base: 100, cap: 1_000 }, () => draws.shift() ?? 0);
  t.same([backoff.next(), backoff.next(), backoff.next()], [0, 100, 100]);
});

t.test('a refused token waits between half the cap and the cap, and stays there', async (t) => {
  const { backoff } = fixture();
  t.equal(backoff.capped(), 1_000);
  t.equal(backoff.next(), 1_000, 'the next failure does not start small again');
});

t.test('after a planned shutdown, failures retry within base for the restart window', async (t) => {
  const { backoff, clock } = fixture();
  backoff.next();
  backoff.next(); // the bound had grown to 400 before the relay said GOAWAY
  t.equal(backoff.expectRestart(5_000), 100, 'the first reconnect comes within base');
  const during = [];
  for (let i = 0; i < 8; i++) {
    clock.now += 100;
    during.push(backoff.next());
  }
  t.same(during, Array(8).fill(100), 'a relay that refuses while restarting does not push the bound up');
  clock.now = 5_001;
  t.equal(backoff.next(), 400, 'after the window the schedule resumes where it was');
  t.equal(backoff.next(), 800);
});
