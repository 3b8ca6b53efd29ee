// Which route keys a request's Host is looked up under, most specific first.
import t from 'tap';
import { isLoopbackHost } from '../src/cidr.js';
import { nextWildcardDot } from '../src/hostname.js';

/** The keys the route lookup tries for `host`, in order. */
function routeKeys(host: string): string[] {
  const keys = [host];
  for (let dot = nextWildcardDot(host, -1); dot >= 0; dot = nextWildcardDot(host, dot)) {
    keys.push(`*${host.slice(dot)}`);
  }
  return keys;
}

t.test('the name, then a wildcard for each parent with at least two labels', async (t) => {
  t.same(routeKeys('a.b.example.com'), ['a.b.example.com', '*.b.example.com', '*.example.com']);
  t.same(routeKeys('app.example.com'), ['app.example.com', '*.example.com']);
  t.same(routeKeys('example.com'), ['example.com'], 'no `*.com`');
  t.same(routeKeys('localhost'), ['localhost']);
  t.same(routeKeys('hello.localhost'), ['hello.localhost'], 'no wildcard over a single label');
});

t.test('isLoopbackHost: this machine by name or address, nothing else', async (t) => {
  for (const host of [
    'localhost',
    'LOCALHOST',
    'hello.localhost',
    '127.0.0.1',
    '127.8.9.10',
    '::1',
    '[::1]',
    '::ffff:127.0.0.1',
    '[::ffff:7f00:1]',
  ])
    t.ok(isLoopbackHost(host), host);
  for (const host of [
    '0.0.0.0',
    '::',
    '[::]',
    '192.0.2.1',
    '10.0.0.1',
    'relay.example.com',
    'localhost.example.com',
    '128.0.0.1',
    '::ffff:192.0.2.1',
    '',
  ])
    t.notOk(isLoopbackHost(host), host || '(empty)');
});
