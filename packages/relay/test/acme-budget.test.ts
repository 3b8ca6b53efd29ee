// How AcmeManager hands out the order budget over hours: a virtual clock with
// Node's timer order (timers due together run one by one, in the order they
// were set, with microtasks in between), orders to a CA that refuses at once.
import { once } from 'node:events';
import { mkdtempSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createSecureContext } from 'node:tls';
import type { Logger } from '@burrow/shared';
import t, { type Test } from 'tap';
import { AcmeManager } from '../src/certs/acme.js';
import { CertStore } from '../src/certs/store.js';
import type { RouteTable, RouteTarget } from '../src/routes/table.js';

const H = 3600_000;
const M = 60_000;
const DAY = 24 * H;

class FakeTimeout {
  constructor(
    readonly at: number,
    readonly seq: number,
    readonly fn: () => void,
  ) {}
  unref() {
    return this;
  }
  ref() {
    return this;
  }
  hasRef() {
    return false;
  }
}

/** Replaces the clock and timers until the test ends. */
function virtualClock(t: Test) {
  const real = {
    setTimeout: globalThis.setTimeout,
    clearTimeout: globalThis.clearTimeout,
    dateNow: Date.now,
    perfNow: performance.now,
  };
  const realImmediate = setImmediate;
  let now = real.dateNow();
  const start = now;
  let seq = 0;
  const timers = new Map<number, FakeTimeout>();
  globalThis.setTimeout = ((fn: (...args: unknown[]) => void, d?: number, ...args: unknown[]) => {
    const timer = new FakeTimeout(now + Math.max(1, Math.floor(Number(d) || 0)), seq++, () => fn(...args));
    timers.set(timer.seq, timer);
    return timer;
  }) as unknown as typeof setTimeout;
  globalThis.clearTimeout = ((timer: unknown) => {
    if (timer instanceof FakeTimeout) timers.delete(timer.seq);
  }) as typeof clearTimeout;
  Date.now = () => now;
  performance.now = () => now;
  t.teardown(() => {
    globalThis.setTimeout = real.setTimeout;
    globalThis.clearTimeout = real.clearTimeout;
    Date.now = real.dateNow;
    performance.now = real.perfNow;
  });
  const tick = () => new Promise<void>((resolve) => realImmediate(resolve));
  return {
    start,
    now: () => now,
    tick,
    async advanceTo(at: number): Promise<void> {
      for (;;) {
        let next: FakeTimeout | undefined;
        for (const timer of timers.values()) {
          if (timer.at > at) continue;
          if (!next || timer.at < next.at || (timer.at === next.at && timer.seq < next.seq)) next = timer;
        }
        if (!next) break;
        timers.delete(next.seq);
        now = Math.max(now, next.at);
        next.fn();
        await tick();
      }
      now = Math.max(now, at);
      await tick();
    },
  };
}

async function setup(t: Test, opts: { ordersPerHour?: number; store?: CertStore } = {}) {
  // A CA that refuses every request at once (no retries): an order fails as soon as it starts.
  const ca = createServer((_req, res) => res.writeHead(404).end());
  ca.listen(0, '127.0.0.1');
  await once(ca, 'listening');
  t.teardown(() => {
    ca.close();
    ca.closeAllConnections();
  });
  const { port } = ca.address() as AddressInfo;
  const clock = virtualClock(t);
  const lines: Array<{ at: number; msg: string; hostname?: string }> = [];
  const record = (o: Record<string, unknown>, msg: string) =>
    lines.push({ at: clock.now() - clock.start, msg, hostname: o['hostname'] as string | undefined });
  const logger = {
    child: () => logger,
    info: record,
    warn: record,
    error: record,
    debug: () => {},
  } as unknown as Logger;
  let served: Array<[string, string]> = [];
  const listeners = new Set<() => void>();
  const table = {
    served: () => served.map(([hostname, subject]) => ({ hostname, mode: 'http', subject })),
    onChange(fn: () => void) {
      listeners.add(fn);
      return () => listeners.delete(fn);
    },
  } as unknown as RouteTable<RouteTarget>;
  const acme = new AcmeManager({
    directoryUrl: `http://127.0.0.1:${port}/directory`,
    domains: ['*.example.com'],
    stateDir: mkdtempSync(join(tmpdir(), 'burrow-acme-budget-')),
    retryBase: 1000 * H,
    retryCap: 1000 * H,
    ...(opts.ordersPerHour ? { ordersPerHour: opts.ordersPerHour } : {}),
    store: opts.store ?? new CertStore(),
    table,
    logger,
  });
  let failed = 0;
  acme.on('failed', () => failed++);
  t.teardown(() => acme.close());
  return {
    acme,
    clock,
    lines,
    /** When each name's order started, minutes after the start. */
    started: () =>
      lines
        .filter((l) => l.msg === 'acme order started')
        .map((l) => [l.hostname!, Math.round(l.at / M)] as const),
    /** Lets the orders under way fail (the CA answers on real sockets), so that none is left retrying. */
    async settle() {
      for (let i = 0; i < 1000 && failed < acme.orders; i++) {
        await clock.advanceTo(clock.now() + 1000);
        await new Promise((resolve) => setImmediate(resolve));
      }
    },
    async serve(list: Array<[string, string]>) {
      served = list;
      for (const fn of listeners) fn();
      await clock.tick();
    },
  };
}

const names = (prefix: string, subject: string, n: number, from = 0): Array<[string, string]> =>
  Array.from({ length: n }, (_, i) => [`${prefix}${from + i}.example.com`, subject]);

t.test('a freed slot goes to the subject with the fewest orders, not to the first timer', async (t) => {
  const { acme, clock, started, serve, settle } = await setup(t, { ordersPerHour: 4 });
  await acme.start();
  const [a1, a2, a3, a4] = names('a', 'tenant-a', 4, 1);
  const [b1, b2] = names('b', 'tenant-b', 2, 1);
  await serve([a1!]);
  await clock.advanceTo(clock.start + 10 * M);
  await serve([a1!, b1!]);
  await clock.advanceTo(clock.start + 20 * M);
  await serve([a1!, b1!, a2!, a3!]);
  await clock.advanceTo(clock.start + 30 * M);
  // Both wait for a1's slot, and a4's route comes first in the table.
  await serve([a1!, b1!, a2!, a3!, a4!, b2!]);
  await clock.advanceTo(clock.start + 2 * H);
  await settle();
  const at = new Map(started());
  t.equal(at.get('b2.example.com'), 60, 'tenant-b (one order in the window) takes the slot a1 frees');
  t.equal(at.get('a4.example.com'), 70, 'tenant-a (two) the next one');
});

t.test('a small tenant last in the route table is not starved by two large ones', async (t) => {
  const { acme, clock, lines, started, serve, settle } = await setup(t);
  await acme.start();
  const a = names('a', 'tenant-a', 245);
  const c = names('c', 'tenant-c', 215);
  const b = names('b', 'tenant-b', 3);
  // tenant-a starts 45 orders and tenant-c 15, one a minute; then both announce many more.
  for (let m = 0; m < 60; m++) {
    await serve([...a.slice(0, Math.min(m + 1, 45)), ...c.slice(0, Math.max(0, m - 44))]);
    await clock.advanceTo(clock.start + (m + 1) * M - 30_000);
  }
  await serve([...a, ...c]);
  await clock.advanceTo(clock.start + 60.5 * M);
  await serve([...a, ...c, ...b]);
  await clock.advanceTo(clock.start + 3 * H);
  await settle();
  const small = started().filter(([hostname]) => hostname.startsWith('b'));
  t.equal(small.length, 3);
  t.ok(
    small.every(([, at]) => at <= 64),
    `tenant-b's names take the next slots that come free: ${JSON.stringify(small)}`,
  );
  const resumed = lines.filter((l) => l.msg === 'acme orders resume').length;
  const spent = lines.filter((l) => l.msg.startsWith('acme order budget spent')).length;
  t.ok(spent <= 2 && resumed <= 2, `budget logged once per spell (spent ${spent}, resume ${resumed})`);
});

t.test("names that keep failing do not hold a working name's renewal past its expiry", async (t) => {
  const store = new CertStore();
  // A certificate from files for shop.example.com, two days from its end: ACME takes it over now.
  store.set('files', [
    {
      names: ['shop.example.com'],
      notBefore: new Date(Date.now() - 88 * DAY),
      notAfter: new Date(Date.now() + 2 * DAY),
      origin: 'files',
      context: createSecureContext(),
      certPem: '',
    },
  ]);
  const { acme, clock, started, serve, settle } = await setup(t, { store, ordersPerHour: 4 });
  await acme.start();
  // The same tenant's new names: more than its share can order in the time left.
  await serve([...names('new', 'tenant-a', 400), ['shop.example.com', 'tenant-a']]);
  await clock.advanceTo(clock.start + 2 * H);
  await settle();
  const shop = started().find(([hostname]) => hostname === 'shop.example.com');
  t.ok(shop, 'the renewal is ordered');
  t.equal(shop?.[1], 0, 'in the first slot');
});

t.test('a waiting name that moves to another tenant is planned again for that tenant', async (t) => {
  const { acme, clock, started, serve, settle } = await setup(t, { ordersPerHour: 4 });
  await acme.start();
  // tenant-a spends its share (3 of 4) and its fourth name waits an hour for tenant-a's slot.
  const a = names('a', 'tenant-a', 4, 1);
  await serve(a);
  await clock.advanceTo(clock.start + 10 * M);
  t.same(
    started().map(([hostname]) => hostname),
    ['a1.example.com', 'a2.example.com', 'a3.example.com'],
  );
  // a4's route moves to tenant-b, which has spent nothing: the budget's last slot is its.
  await serve([...a.slice(0, 3), ['a4.example.com', 'tenant-b']]);
  await clock.advanceTo(clock.start + 20 * M);
  await settle();
  t.same(new Map(started()).get('a4.example.com'), 10, 'ordered when it moved, not an hour later');
});

t.test(
  'a spell of waiting that ends because the names went is over: the next one is warned of',
  async (t) => {
    const { acme, clock, lines, serve, settle } = await setup(t, { ordersPerHour: 2 });
    await acme.start();
    const [n1, n2, n3, n4] = names('n', 'tenant-a', 4, 1);
    await serve([n1!, n2!, n3!]);
    await clock.advanceTo(clock.start + M);
    // n3's route goes while it waits; later n4 comes, with the budget still spent.
    await serve([n1!, n2!]);
    await clock.advanceTo(clock.start + 2 * M);
    await serve([n1!, n2!, n4!]);
    await clock.advanceTo(clock.start + 3 * M);
    await settle();
    const said = lines
      .filter((l) => l.msg.startsWith('acme order budget spent') || l.msg === 'acme orders resume')
      .map((l) => [l.msg.split(';')[0], Math.round(l.at / M)]);
    t.same(said, [
      ['acme order budget spent', 0],
      ['acme orders resume', 1],
      ['acme order budget spent', 2],
    ]);
  },
);
