import t from 'tap';
import { RouteTable, type RouteTarget } from '../src/routes/table.js';

function target(
  id: number,
  subject: string,
  inFlight = 0,
): RouteTarget & { inFlight: number; usable: boolean } {
  return { id, subject, inFlight, usable: true };
}

t.test('hostnames are checked against the token and other tenants', async (t) => {
  const table = new RouteTable({ urlFor: (h) => `http://${h}:8080` });
  const alice = target(1, 'alice');
  const bob = target(2, 'bob');
  const res = table.announce(
    alice,
    ['*.alice.example.com', 'shop.example.com'],
    [
      { id: 'r1', hostnames: ['app.alice.example.com', 'shop.example.com'] },
      { id: 'r2', hostnames: ['evil.example.com', 'Bad_Name.alice.example.com'] },
    ],
  );
  t.same(
    res.map((r) => [r.hostname, r.status]),
    [
      ['app.alice.example.com', 'active'],
      ['shop.example.com', 'active'],
      ['evil.example.com', 'refused'],
      ['Bad_Name.alice.example.com', 'refused'],
    ],
  );
  t.equal(res[0]!.url, 'http://app.alice.example.com:8080');
  t.match(res[2]!.error, /not allowed by this agent's token/);
  const many = Array.from({ length: 256 }, (_, i) => `service-${i}.team.example.com`);
  const [refused] = table.announce(target(3, 'carol'), many, [{ id: 'x', hostnames: ['other.example.com'] }]);
  t.equal(
    refused?.error,
    `hostname "other.example.com" is not allowed by this agent's token (allowed: ${many.slice(0, 5).join(', ')} and 251 more)`,
    "a token's 256 patterns are not all listed",
  );

  const taken = table.announce(
    bob,
    ['*.example.com'],
    [{ id: 'b', hostnames: ['shop.example.com', 'bob.example.com'] }],
  );
  t.equal(taken[0]!.status, 'refused');
  t.match(taken[0]!.error, /already served by another agent/);
  t.equal(taken[1]!.status, 'active');
  const found = table.lookup('shop.example.com');
  t.equal(found.kind === 'found' && found.binding.target.id, 1, 'the first tenant keeps serving');
});

t.test('exact beats wildcard; longer suffix beats shorter; unknown is none', async (t) => {
  const table = new RouteTable();
  const a = target(1, 'a');
  table.announce(
    a,
    ['*.example.com'],
    [
      { id: 'wild', hostnames: ['*.example.com'] },
      { id: 'deeper', hostnames: ['*.b.example.com'] },
      { id: 'exact', hostnames: ['x.b.example.com'] },
    ],
  );
  const id = (h: string) => {
    const r = table.lookup(h);
    return r.kind === 'found' ? r.binding.routeId : r.kind;
  };
  t.equal(id('x.b.example.com'), 'exact');
  t.equal(id('y.b.example.com'), 'deeper');
  t.equal(id('z.example.com'), 'wild');
  t.equal(id('q.r.example.com'), 'wild');
  t.equal(id('p.y.b.example.com'), 'deeper');
  t.equal(id('example.com'), 'none');
  t.equal(id('other.org'), 'none');
});

t.test('connections of one subject share names; the least loaded is picked; removal withdraws', async (t) => {
  const table = new RouteTable({ offlineGrace: 60_000 });
  const c1 = target(1, 'alice', 5);
  const c2 = target(2, 'alice', 1);
  table.announce(c1, ['app.example.com'], [{ id: 'r', hostnames: ['app.example.com'] }]);
  table.announce(c2, ['app.example.com'], [{ id: 'r', hostnames: ['app.example.com'] }]);
  let r = table.lookup('app.example.com');
  t.equal(r.kind === 'found' && r.binding.target.id, 2);
  c2.inFlight = 9;
  r = table.lookup('app.example.com');
  t.equal(r.kind === 'found' && r.binding.target.id, 1);
  table.remove(c1);
  r = table.lookup('app.example.com');
  t.equal(r.kind === 'found' && r.binding.target.id, 2);
  // Losing the last connection leaves the name offline (503) for a grace period...
  table.remove(c2);
  t.equal(table.lookup('app.example.com').kind, 'offline');
  t.same(table.list(), []);
  // ...while withdrawing it on purpose makes it unknown (404) at once.
  const c3 = target(3, 'alice');
  table.announce(c3, ['*.example.com'], [{ id: 'r', hostnames: ['b.example.com'] }]);
  table.announce(c3, ['*.example.com'], []);
  t.equal(table.lookup('b.example.com').kind, 'none');
});

t.test('a bad allowlist refuses that route only', async (t) => {
  const table = new RouteTable();
  const res = table.announce(
    target(1, 'a'),
    ['*.example.com'],
    [
      { id: 'ok', hostnames: ['a.example.com'], allowCidrs: ['10.0.0.0/8', '::1'] },
      { id: 'bad', hostnames: ['b.example.com'], allowCidrs: ['10.0.0.0/33'] },
    ],
  );
  t.same(
    res.map((r) => r.status),
    ['active', 'refused'],
  );
  t.match(res[1]!.error, /allowCidrs: .*prefix length/);
  const r = table.lookup('a.example.com');
  t.ok(r.kind === 'found' && r.binding.allowlist?.allows('10.1.2.3'));
  t.ok(
    r.kind === 'found' && r.binding.allowlist?.allows('::ffff:10.1.2.3'),
    'IPv4-mapped addresses match IPv4 ranges',
  );
  t.notOk(r.kind === 'found' && r.binding.allowlist?.allows('192.0.2.1'));
});
