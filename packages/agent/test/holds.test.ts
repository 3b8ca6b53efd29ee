// burrow.dev/holds records: they verify for the route they were made for and
// no other, only with the keys they were checked with, and keep their time
// while the route holds the same names, also when the key they are made with
// changes.
import t from 'tap';
import { holdsKey, holdsRecord, verifiedHolds } from '../src/kubernetes/holds.js';

const key = [holdsKey('header.payload.signature')];
const T = 1_780_000_000_000;

t.test('a record verifies for its route, with its key, and says since when', async (t) => {
  const record = holdsRecord(key, 'k8s:prod/shop', ['www.example.com', 'shop.example.com'], T + 0.5);
  t.same(verifiedHolds(key, 'k8s:prod/shop', record), {
    names: ['shop.example.com', 'www.example.com'],
    since: T,
    current: true,
  });
  t.same(verifiedHolds(key, 'k8s:dev/old', record).names, [], 'copied onto another route: nothing');
  t.same(verifiedHolds([holdsKey('another.token.value')], 'k8s:prod/shop', record).names, [], 'another key');
});

t.test('the same names keep the record and its time; other names get a new one', async (t) => {
  const first = holdsRecord(key, 'k8s:prod/shop', ['shop.example.com', 'www.example.com'], T);
  const again = holdsRecord(key, 'k8s:prod/shop', ['www.example.com', 'shop.example.com'], T + 60_000, first);
  t.equal(again, first, 'unchanged: no write');
  const fewer = holdsRecord(key, 'k8s:prod/shop', ['shop.example.com'], T + 60_000, first);
  t.same(verifiedHolds(key, 'k8s:prod/shop', fewer), {
    names: ['shop.example.com'],
    since: T + 60_000,
    current: true,
  });
  const copied = holdsRecord(key, 'k8s:dev/old', ['shop.example.com', 'www.example.com'], T + 1, first);
  t.same(verifiedHolds(key, 'k8s:dev/old', copied).since, T + 1, 'a record of another route is not kept');
});

t.test('a record altered or malformed holds nothing', async (t) => {
  const record = holdsRecord(key, 'k8s:prod/shop', ['shop.example.com'], T);
  const [, since, mac] = record.split(';');
  for (const bad of [
    `shop.example.com,bank.example.com;${since};${mac}`,
    `bank.example.com;${since};${mac}`,
    `shop.example.com;${Number(since) + 1};${mac}`,
    `shop.example.com;${since}0;${mac}`,
    `shop.example.com;;${mac}`,
    `shop.example.com;-1;${mac}`,
    `shop.example.com;${since};${mac!.slice(0, -2)}`,
    `shop.example.com;${since};${mac};`,
    `shop.example.com;${mac}`,
    'shop.example.com',
    `;${since};${mac}`,
    '',
    `${'a'.repeat(20_000)};${since};${mac}`,
  ]) {
    t.same(
      verifiedHolds(key, 'k8s:prod/shop', bad),
      { names: [], since: 0, current: false },
      JSON.stringify(bad.slice(0, 60)),
    );
  }
  t.same(verifiedHolds(key, 'k8s:prod/shop', undefined).names, []);
});

t.test(
  'a record made with an earlier key keeps its time and is made again with the current one',
  async (t) => {
    const tokenKey = holdsKey('header.payload.signature');
    const own = holdsKey('a-holds-key-of-its-own-0123456789abcdef');
    const before = holdsRecord([tokenKey], 'k8s:prod/shop', ['shop.example.com'], T);
    t.same(
      verifiedHolds([own, tokenKey], 'k8s:prod/shop', before),
      { names: ['shop.example.com'], since: T, current: false },
      'verifies with the second key, as not current',
    );
    const after = holdsRecord([own, tokenKey], 'k8s:prod/shop', ['shop.example.com'], T + 60_000, before);
    t.not(after, before, 'made again');
    t.same(verifiedHolds([own], 'k8s:prod/shop', after), {
      names: ['shop.example.com'],
      since: T,
      current: true,
    });
    t.equal(
      holdsRecord([own, tokenKey], 'k8s:prod/shop', ['shop.example.com'], T + 120_000, after),
      after,
      'and then kept as it is',
    );
  },
);
