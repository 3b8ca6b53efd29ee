// Which route keys a request's Host is looked up under, most specific first.
import t from 'tap';
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
