// Combining the tunnel connections' answers per name (src/verdicts.ts), which
// the agent's routeStatus()/portStatus() show.
import t from 'tap';
import { Verdicts } from '../src/verdicts.js';

type R = { id: string; hostname: string; status: 'active' | 'refused'; url?: string; error?: string };
const active = (url = 'http://a'): R => ({ id: 'r', hostname: 'a', status: 'active', url });
const refused = (error: string): R => ({ id: 'r', hostname: 'a', status: 'refused', error });

t.test('active on any connection, else the lowest-numbered refusal, over all 64 indexes', async (t) => {
  const v = new Verdicts<R>();
  for (let i = 0; i < 64; i++) v.answer(i, [['k', refused(`by ${i}`)]]);
  t.match(v.get('k'), { status: 'refused', error: 'by 0' });
  for (const i of [63, 40, 32, 31, 5, 0]) {
    v.answer(i, [['k', active(`http://${i}`)]]);
    t.match(v.get('k'), { status: 'active', url: `http://${i}` }, `the lowest active: ${i}`);
  }
  for (const i of [0, 5, 31, 32, 40]) v.forget(i);
  t.match(v.get('k'), { status: 'active', url: 'http://63' }, 'only a connection in the high half serves it');
  v.forget(63);
  t.match(v.get('k'), { status: 'refused', error: 'by 1' });
  for (let i = 1; i < 64; i++) v.forget(i);
  t.equal(v.get('k'), undefined, 'no answer left');
});

t.test('an answer replaces the connection’s previous one, names it left out included', async (t) => {
  const v = new Verdicts<R>();
  v.answer(3, [
    ['k', active()],
    ['gone', active()],
  ]);
  v.answer(3, [['k', refused('no')]]);
  t.match(v.get('k'), { status: 'refused', error: 'no' });
  t.equal(v.get('gone'), undefined);
  v.answer(1, [['k', active()]]);
  v.answer(1, []);
  t.match(v.get('k'), { status: 'refused' });
});

t.test('a name given twice in one answer counts once, active if either is', async (t) => {
  const v = new Verdicts<R>();
  v.answer(0, [
    ['k', refused('first')],
    ['k', active()],
    ['k', refused('last')],
  ]);
  t.match(v.get('k'), { status: 'active' });
  v.answer(1, [['k', refused('x')]]);
  v.forget(0);
  t.match(v.get('k'), { status: 'refused', error: 'x' });
});

t.test('connections that agree share one result object', async (t) => {
  const v = new Verdicts<R>();
  v.answer(0, [['k', active()]]);
  const first = v.get('k');
  v.answer(1, [['k', active()]]);
  v.forget(0);
  t.equal(v.get('k'), first, 'the equal answer of connection 1 is the same object');
  v.answer(1, [['k', active('http://other')]]);
  t.match(v.get('k'), { url: 'http://other' });
});
