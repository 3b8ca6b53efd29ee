import t, { type Test } from 'tap';
import { AnnounceGate } from '../src/tunnel/announce-gate.js';

/**
 * A gate on a clock that runs with real time, and that an announcement moves
 * on by `cost` ms as if applying it had taken that long. Each apply records
 * its name and resolves the promise `ran` hands out for it.
 */
/** With `burst`, a subject may run this many ms ahead of its pace before anything waits. */
const BURST = 10;

function harness(t: Test, share = 0.25) {
  // The gate's timers do not keep a process alive (a relay's listeners do): this does.
  const alive = setInterval(() => {}, 60_000);
  t.teardown(() => clearInterval(alive));
  let spent = 0;
  const gate = new AnnounceGate({ share, burst: BURST, now: () => now() });
  const applied: string[] = [];
  /** The gate's clock when each was applied. */
  const at = new Map<string, number>();
  const now = () => performance.now() + spent;
  const waiters = new Map<string, () => void>();
  const announcement = (name: string, cost: number) => () => {
    at.set(name, now());
    spent += cost;
    applied.push(name);
    waiters.get(name)?.();
  };
  const ran = (name: string) =>
    applied.includes(name) ? Promise.resolve() : new Promise<void>((r) => waiters.set(name, r));
  return { gate, applied, announcement, ran, at, now };
}

t.test('an announcement is applied at once while its subject has had no costly one', async (t) => {
  const { gate, applied, announcement } = harness(t);
  const a = {};
  t.equal(gate.submit('alice', a, announcement('a1', 0)), true, 'applied now');
  t.equal(gate.submit('alice', a, announcement('a2', 0)), true);
  t.same(applied, ['a1', 'a2'], 'free announcements are never held back');
  t.equal(gate.waiting, 0);
});

t.test(
  'after a costly one, its subject waits; a later one of the same connection replaces it in place',
  async (t) => {
    const { gate, applied, announcement, ran } = harness(t);
    const a = {};
    const b = {};
    gate.submit('alice', a, announcement('a1', 20)); // 20 ms at a 25 % share: 80 on its account, 60 to wait
    t.equal(gate.submit('alice', a, announcement('a2', 1)), false, 'held');
    gate.submit('alice', b, announcement('b1', 1));
    gate.submit('alice', a, announcement('a3', 1)); // replaces a2 where it stood: before b1
    gate.submit('bob', {}, announcement('bob1', 0));
    t.same(applied, ['a1', 'bob1'], 'another subject is not held back by alice');
    t.equal(gate.waiting, 2);
    await ran('b1');
    t.same(applied, ['a1', 'bob1', 'a3', 'b1'], 'connections take turns; a2 never ran');
    t.equal(gate.waiting, 0);
  },
);

t.test('a connection that closes leaves nothing behind', async (t) => {
  const { gate, applied, announcement, ran } = harness(t);
  const a = {};
  const b = {};
  gate.submit('alice', a, announcement('a1', 20));
  gate.submit('alice', a, announcement('a2', 1));
  gate.submit('alice', b, announcement('b1', 1));
  gate.drop('alice', a);
  t.equal(gate.waiting, 1);
  await ran('b1');
  t.same(applied, ['a1', 'b1'], 'the closed connection’s announcement is not applied');
  gate.submit('alice', a, announcement('a3', 1));
  gate.forget('alice'); // its last connection closed
  t.equal(gate.waiting, 0);
});

t.test('time spent outside apply counts; reconnecting does not skip the wait', async (t) => {
  const { gate, applied, announcement, ran } = harness(t);
  gate.charge('alice', 20); // reading a large announcement, say
  t.equal(gate.submit('alice', {}, announcement('a1', 0)), false, 'charged time delays the next');
  await ran('a1');
  // Applied at once, or after a wait: the real time a1's apply took counts too (a pause of a
  // few ms under load puts a2 behind its turn).
  if (!gate.submit('alice', {}, announcement('a2', 20))) await ran('a2');
  gate.forget('alice'); // its last connection closed, with its pace still running
  t.equal(gate.submit('alice', {}, announcement('a3', 0)), false, 'a new connection still waits');
  await ran('a3');
  t.same(applied, ['a1', 'a2', 'a3']);
});

t.test('time charged while an announcement waits moves its turn on', async (t) => {
  const { gate, announcement, ran, at, now } = harness(t);
  gate.submit('alice', {}, announcement('a1', 20)); // paid for 60 ms from now; its turn BURST before
  const turn = now() + 60 - BURST;
  gate.submit('alice', {}, announcement('b1', 0)); // waits for it
  gate.charge('alice', 20); // another connection's read: 80 ms more on its account
  await ran('b1');
  // Up to a millisecond of slack: `turn` was read a moment after the gate set it.
  t.ok(at.get('b1')! >= turn + 80 - 1, `applied at ${at.get('b1')! - turn} ms past the first turn`);
});

t.test('a share outside (0, 1] is refused', async (t) => {
  t.throws(() => new AnnounceGate({ share: 0 }), RangeError);
  t.throws(() => new AnnounceGate({ share: 1.5 }), RangeError);
});
