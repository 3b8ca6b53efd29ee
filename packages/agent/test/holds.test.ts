// burrow.dev/holds records: they verify for the route they were made for and
// no other, and only with the key they were made with.
import t from 'tap';
import { holdsKey, holdsRecord, verifiedHolds } from '../src/kubernetes/holds.js';

const key = holdsKey('header.payload.signature');

t.test('a record verifies for its route, with its key', async (t) => {
  const record = holdsRecord(key, 'k8s:prod/shop', ['www.example.com', 'shop.example.com']);
  t.same(verifiedHolds(key, 'k8s:prod/shop', record), ['shop.example.com', 'www.example.com']);
  t.same(verifiedHolds(key, 'k8s:dev/old', record), [], 'copied onto another route: nothing');
  t.same(verifiedHolds(holdsKey('another.token.value'), 'k8s:prod/shop', record), [], 'another key');
});

t.test('a record altered or malformed holds nothing', async (t) => {
  const record = holdsRecord(key, 'k8s:prod/shop', ['shop.example.com']);
  const mac = record.split(';')[1]!;
  for (const bad of [
    `shop.example.com,bank.example.com;${mac}`,
    `bank.example.com;${mac}`,
    `shop.example.com;${mac.slice(0, -2)}`,
    'shop.example.com',
    `;${mac}`,
    '',
    `${'a'.repeat(20_000)};${mac}`,
  ]) {
    t.same(verifiedHolds(key, 'k8s:prod/shop', bad), [], JSON.stringify(bad.slice(0, 60)));
  }
  t.same(verifiedHolds(key, 'k8s:prod/shop', undefined), []);
});
