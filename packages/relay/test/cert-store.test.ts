// Which certificate the TLS listener presents for an SNI name.
import { createSecureContext } from 'node:tls';
import t from 'tap';
import { type CertEntry, CertStore } from '../src/certs/store.js';

const DAY = 86_400_000;

function entry(origin: string, names: string[], daysLeft: number, daysAgo = 1): CertEntry {
  return {
    names,
    notBefore: new Date(Date.now() - daysAgo * DAY),
    notAfter: new Date(Date.now() + daysLeft * DAY),
    origin,
    context: createSecureContext(),
    certPem: '',
  };
}

const originOf = (store: CertStore, host: string) => store.find(host)?.origin;

t.test('an exact name beats a wildcard; a wildcard covers exactly one label', async (t) => {
  const store = new CertStore();
  store.set('files', [entry('wild', ['*.example.com'], 60), entry('exact', ['api.example.com'], 10)]);
  t.equal(originOf(store, 'api.example.com'), 'exact', 'exact, though it expires sooner');
  t.equal(originOf(store, 'www.example.com'), 'wild');
  t.equal(originOf(store, 'example.com'), undefined, 'the wildcard does not cover its own parent');
  t.equal(originOf(store, 'a.b.example.com'), undefined, 'nor two labels');
  t.equal(originOf(store, 'other.test'), undefined);
});

t.test('among equals the one valid longest wins, across sources; expired ones never', async (t) => {
  const store = new CertStore();
  store.set('files', [entry('old', ['a.example.com', 'b.example.com'], 5)]);
  store.set('acme', [entry('renewed', ['a.example.com'], 80), entry('expired', ['b.example.com'], -1)]);
  t.equal(originOf(store, 'a.example.com'), 'renewed');
  t.equal(originOf(store, 'b.example.com'), 'old', 'the expired certificate is skipped');
  store.set('files', [entry('expired-wild', ['*.example.com'], -1)]);
  t.equal(originOf(store, 'b.example.com'), undefined, 'nothing valid left for the name');
  t.equal(originOf(store, 'c.example.com'), undefined, 'an expired wildcard covers nothing');
});

t.test('a certificate not valid yet is never chosen over one valid now', async (t) => {
  const store = new CertStore();
  store.set('files', [
    entry('current', ['a.example.com', '*.example.com'], 10),
    entry('future', ['a.example.com', '*.example.com'], 90, -2),
  ]);
  t.equal(originOf(store, 'a.example.com'), 'current', 'clients would refuse the one starting in two days');
  t.equal(originOf(store, 'b.example.com'), 'current', 'also among wildcards');
  store.set('files', [entry('future', ['a.example.com'], 90, -2)]);
  t.equal(originOf(store, 'a.example.com'), undefined, 'nothing valid yet');
});

t.test('a source replaces its whole set, and listeners hear of it', async (t) => {
  const store = new CertStore();
  let changes = 0;
  store.on('change', () => changes++);
  store.set('files', [entry('first', ['a.example.com'], 30)]);
  store.set('files', [entry('second', ['b.example.com'], 30)]);
  t.equal(originOf(store, 'a.example.com'), undefined, 'the replaced certificate is gone');
  t.equal(originOf(store, 'b.example.com'), 'second');
  t.equal(changes, 2);
  t.same(
    store.expiries().map((e) => e.hostname),
    ['b.example.com'],
  );
});
