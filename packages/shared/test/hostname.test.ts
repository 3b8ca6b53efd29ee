// Which route keys a request's Host is looked up under, most specific first.
import t from 'tap';
import { routeKeys } from '../src/hostname.js';

t.test('the name, then a wildcard for each parent with at least two labels', async (t) => {
  t.same(routeKeys('a.b.example.com'), ['a.b.example.com', '*.b.example.com', '*.example.com']);
  t.same(routeKeys('app.example.com'), ['app.example.com', '*.example.com']);
  t.same(routeKeys('example.com'), ['example.com'], 'no `*.com`');
  t.same(routeKeys('localhost'), ['localhost']);
  t.same(routeKeys('hello.localhost'), ['hello.localhost'], 'no wildcard over a single label');
});
