// Route table and request routing edges between tenants: exact names,
// wildcards, names whose agent went away, and Hosts that are not names.
import { once } from 'node:events';
import { createServer, type IncomingMessage } from 'node:http';
import { connect } from 'node:net';
import { createLogger } from '@burrow/shared';
import t from 'tap';
import { type Routed, route } from '../src/proxy/forward.js';
import { RouteTable, type RouteTarget, TAKEN_RETRY } from '../src/routes/table.js';
import type { AgentConnection } from '../src/tunnel/agent-connection.js';

function target(id: number, subject: string): RouteTarget & { inFlight: number; usable: boolean } {
  return { id, subject, inFlight: 0, usable: true };
}

t.test("another tenant's wildcard never takes a name of a tenant whose agent went away", async (t) => {
  const table = new RouteTable({ offlineGrace: 60_000 });
  const alice = target(1, 'alice');
  const bob = target(2, 'bob');
  t.equal(
    table.announce(alice, ['app.example.com'], [{ id: 'a', hostnames: ['app.example.com'] }])[0]!.status,
    'active',
  );
  t.equal(
    table.announce(bob, ['*.example.com'], [{ id: 'b', hostnames: ['*.example.com'] }])[0]!.status,
    'active',
  );
  const before = table.lookup('app.example.com');
  t.equal(before.kind === 'found' && before.binding.target.subject, 'alice', 'exact beats wildcard');
  // Alice's agent reconnects (network blip, relay restart on her side...).
  table.remove(alice);
  const during = table.lookup('app.example.com');
  t.same(
    during.kind === 'found'
      ? { kind: 'found', subject: during.binding.target.subject }
      : { kind: during.kind },
    { kind: 'offline' },
    "the name answers 503 for its grace period; requests (and their cookies) do not go to bob's agent",
  );
});

t.test('a name whose agent is reconnecting cannot be claimed by another tenant meanwhile', async (t) => {
  const table = new RouteTable({ offlineGrace: 60_000 });
  const alice = target(1, 'alice');
  const bob = target(2, 'bob');
  table.announce(alice, ['app.example.com'], [{ id: 'a', hostnames: ['app.example.com'] }]);
  table.remove(alice);
  const [grab] = table.announce(bob, ['*.example.com'], [{ id: 'b', hostnames: ['app.example.com'] }]);
  t.match(grab, {
    status: 'refused',
    error:
      /^hostname "app\.example\.com" belongs to another agent that is reconnecting \(held for it until \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\)$/,
  });
  t.ok(
    grab!.retryAfter! > 59_000 && grab!.retryAfter! <= 61_000,
    'and says to ask again when the hold ends, a second late',
  );
  const aliceAgain = target(3, 'alice');
  const [back] = table.announce(
    aliceAgain,
    ['app.example.com'],
    [{ id: 'a', hostnames: ['app.example.com'] }],
  );
  t.equal(back?.status, 'active', 'the owner gets it back when it reconnects');
  // Served again: another tenant is told to ask again in a while, as nothing will tell it sooner.
  const carol = target(4, 'carol');
  t.match(table.announce(carol, ['*.example.com'], [{ id: 'c', hostnames: ['app.example.com'] }])[0], {
    status: 'refused',
    retryAfter: TAKEN_RETRY,
  });
  const [outside] = table.announce(carol, ['*.example.net'], [{ id: 'c', hostnames: ['app.example.com'] }]);
  t.equal(outside?.retryAfter, undefined, 'a name outside the token: asking again changes nothing');
});

t.test('a request whose Host is not a DNS name is not routed to a wildcard', async (t) => {
  const table = new RouteTable<AgentConnection>();
  const bob = target(2, 'bob') as unknown as AgentConnection;
  table.announce(bob, ['*.example.com'], [{ id: 'b', hostnames: ['*.example.com'] }]);
  const opts = {
    table,
    logger: createLogger({ name: 'test', level: 'silent' }),
    proto: 'http' as const,
    responseHeadTimeout: 1000,
  };
  // Real requests through Node's HTTP parser on loopback.
  const routed: Array<{ host: string | undefined; r: Routed }> = [];
  const server = createServer((req: IncomingMessage, res) => {
    routed.push({ host: req.headers.host, r: route(req, opts) });
    res.end();
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => server.close());
  const port = (server.address() as { port: number }).port;
  const hosts = [
    'ok.example.com',
    'evil.test/.example.com',
    'evil.test#.example.com',
    'evil.test?.example.com',
  ];
  const sock = connect(port, '127.0.0.1');
  sock.write(hosts.map((h) => `GET / HTTP/1.1\r\nHost: ${h}\r\n\r\n`).join(''));
  sock.resume();
  while (routed.length < hosts.length) await once(server, 'request');
  sock.destroy();
  t.same(
    routed.map(({ host }) => host),
    hosts,
    "Node's parser hands these Hosts over unchanged",
  );
  t.ok(routed[0]!.r.ok, 'a real name is routed');
  for (const { host, r } of routed.slice(1)) {
    t.same({ ok: r.ok, status: r.ok ? 200 : r.status }, { ok: false, status: 400 }, `Host: ${host}`);
  }
});

/** Bob, whose token allows *.example.com, announces 4200 names of his own and drops them. */
function churn(table: RouteTable<RouteTarget>, id: number, prefix: string) {
  const bob = target(id, 'bob');
  const routes = Array.from({ length: 70 }, (_, i) => ({
    id: `c${i}`,
    hostnames: Array.from({ length: 60 }, (_, j) => `${prefix}-${i}-${j}.example.com`),
  }));
  const results = table.announce(bob, ['*.example.com'], routes);
  table.remove(bob);
  return results;
}

/** Bob's wildcard agent asks for alice's name; its result. */
const grab = (table: RouteTable<RouteTarget>) =>
  table.announce(target(20, 'bob'), ['*.example.com'], [{ id: 'grab', hostnames: ['app.example.com'] }])[0]!;

t.test("a tenant churning names of its own never frees another tenant's reserved name", async (t) => {
  const table = new RouteTable({ offlineGrace: 60_000 });
  const alice = target(1, 'alice');
  table.announce(alice, ['app.example.com'], [{ id: 'a', hostnames: ['app.example.com'] }]);
  table.remove(alice); // her agent restarts: app.example.com is reserved for her
  // Bob announces 4200 names and drops them, twice.
  for (let round = 0; round < 2; round++) {
    const results = churn(table, 10 + round, `n${round}`);
    t.equal(results.filter((r) => r.status === 'active').length, 4200, `round ${round}: all active`);
  }
  t.equal(grab(table).status, 'refused', "bob cannot take alice's name while she is away");
  t.equal(table.lookup('app.example.com').kind, 'offline', 'it still answers as offline');
  const back = table.announce(
    target(3, 'alice'),
    ['app.example.com'],
    [{ id: 'a', hostnames: ['app.example.com'] }],
  );
  t.equal(back[0]!.status, 'active', 'alice gets it back when her agent returns');
});

t.test('a tenant that filled the reservations first cannot push out one made after', async (t) => {
  const table = new RouteTable({ offlineGrace: 60_000 });
  // Bob fills the reservations with 4200 names of his own.
  churn(table, 10, 'n');
  // Then Alice's agent restarts.
  const alice = target(1, 'alice');
  table.announce(alice, ['app.example.com'], [{ id: 'a', hostnames: ['app.example.com'] }]);
  table.remove(alice);
  t.equal(table.lookup('app.example.com').kind, 'offline', "alice's name is reserved");
  t.equal(grab(table).status, 'refused', "bob cannot take alice's name while she is away");
});

t.test(
  'a connection with 16,384 names going away with the reservations full keeps the newest reservations',
  async (t) => {
    const table = new RouteTable({ offlineGrace: 60_000 });
    const alice = target(1, 'alice');
    table.announce(alice, ['app.example.com'], [{ id: 'a', hostnames: ['app.example.com'] }]);
    table.remove(alice);
    churn(table, 10, 'full'); // bob's 4200 reservations: the bound is reached
    const bob = target(11, 'bob');
    const names = (i: number) => Array.from({ length: 64 }, (_, j) => `big-${i}-${j}.example.com`);
    const routes = Array.from({ length: 256 }, (_, i) => ({ id: `big${i}`, hostnames: names(i) }));
    table.announce(bob, ['*.example.com'], routes);
    const started = performance.now();
    table.remove(bob);
    // Trimmed once, not name by name: about 20 ms here against 1.4 s before (a figure, not a check).
    t.comment(
      `removing 16,384 names with the reservations full took ${Math.round(performance.now() - started)} ms`,
    );
    t.ok(table.holds('app.example.com'), "alice's reservation stays");
    t.ok(table.holds('big-255-63.example.com'), "bob's newest reservation stays");
    t.notOk(table.holds('full-0-0.example.com'), "bob's oldest went first");
    let kept = 0;
    for (let i = 0; i < 256; i++) for (const h of names(i)) if (table.holds(h)) kept++;
    t.equal(kept, 4096, "bob keeps his newest 4096: the bound is each tenant's");
  },
);

t.test("a tenant's churn never costs a tenant holding many reservations any of them", async (t) => {
  const table = new RouteTable({ offlineGrace: 60_000 });
  // Alice serves 3000 names inside bob's wildcard, then her agent restarts.
  const alice = target(1, 'alice');
  const names = Array.from({ length: 50 }, (_, i) => ({
    id: `a${i}`,
    hostnames: Array.from({ length: 60 }, (_, j) => `a${i}-${j}.example.com`),
  }));
  table.announce(alice, ['*.example.com'], names);
  table.announce(target(2, 'bob'), ['*.example.com'], [{ id: 'w', hostnames: ['*.example.com'] }]);
  table.remove(alice);
  // Bob announces 4200 names of his own on other connections and drops them, twice.
  churn(table, 10, 'n0');
  churn(table, 11, 'n1');
  const held = names.flatMap((r) => r.hostnames).filter((h) => table.holds(h)).length;
  t.equal(held, 3000, 'all of alice’s reservations stay');
  t.equal(table.lookup('a0-0.example.com').kind, 'offline', "her names never go to bob's wildcard");
  const grabbed = table.announce(
    target(20, 'bob'),
    ['*.example.com'],
    [{ id: 'g', hostnames: ['a0-0.example.com'] }],
  );
  t.equal(grabbed[0]!.status, 'refused', 'nor to an exact announcement of his');
});

/** `n` names in routes of 64, each `PREFIX-ROUTE-NAME.example.com`, route ids `PREFIXROUTE`. */
function namedRoutes(prefix: string, n: number) {
  return Array.from({ length: n / 64 }, (_, i) => ({
    id: `${prefix}${i}`,
    hostnames: Array.from({ length: 64 }, (_, j) => `${prefix}-${i}-${j}.example.com`),
  }));
}

t.test('a tenant serves at most 32,768 names over all its connections', async (t) => {
  const table = new RouteTable({ offlineGrace: 60_000 });
  const reasons: string[] = [];
  const active = (results: Array<{ status: string }>) => results.filter((r) => r.status === 'active').length;
  // Two connections of bob's, each with 16,384 names of its own: the bound.
  const bob1 = target(1, 'bob');
  const bob2 = target(2, 'bob');
  const one = namedRoutes('one', 16_384);
  t.equal(active(table.announce(bob1, ['*.example.com'], one, (r) => reasons.push(r))), 16_384);
  t.equal(active(table.announce(bob2, ['*.example.com'], namedRoutes('two', 16_384))), 16_384);
  // A third: new names are refused, names the others serve are shared.
  const third = table.announce(
    target(3, 'bob'),
    ['*.example.com'],
    [...namedRoutes('three', 128), { id: 'shared', hostnames: ['one-0-0.example.com'] }],
    (r) => reasons.push(r),
  );
  t.equal(third.filter((r) => r.status === 'refused').length, 128);
  t.match(third[0]!.error, /over the 32768 names one token subject may serve at once/);
  t.equal(third.at(-1)!.status, 'active', 'a name the subject serves already is shared');
  t.same(new Set(reasons), new Set(['route_limit']));
  // Another tenant is not touched by bob's bound.
  const alice = table.announce(
    target(4, 'alice'),
    ['app.example.com'],
    [{ id: 'a', hostnames: ['app.example.com'] }],
  );
  t.equal(alice[0]!.status, 'active');
  // At the bound, an announcement that swaps 64 names for 64 new ones goes through (the last
  // route: one-0-0, in the first, is served by the third connection too and is not freed).
  const swapped = table.announce(bob1, ['*.example.com'], [...one.slice(0, -1), ...namedRoutes('four', 64)]);
  t.equal(active(swapped), 16_384, 'a swap at the bound is taken whole');
  t.equal(table.size, 32_769);
});

t.test('connections of one agent at 16,384 names move to a new set one after the other', async (t) => {
  const table = new RouteTable({ offlineGrace: 60_000 });
  const names = (prefix: string) => namedRoutes(prefix, 16_384);
  const conns = [target(1, 'bob'), target(2, 'bob')];
  for (const c of conns) table.announce(c, ['*.example.com'], names('old'));
  // The agent's routes change: each connection announces the new set, the first while the
  // second still holds the old one.
  for (const c of conns) {
    const results = table.announce(c, ['*.example.com'], names('new'));
    t.equal(results.filter((r) => r.status === 'active').length, 16_384, `connection ${c.id} takes all`);
  }
  t.equal(table.size, 16_384);
});
