// Which announce-results a tunnel connection takes: answers to its own
// announcements, matched by the `seq` the relay echoes, or counted with a
// relay that predates it.
import { writeMessage } from '@burrow/shared';
import t from 'tap';
import { StaticRouteSource } from '../src/routes/source.js';
import { agentOn } from './helpers/agent-on.js';
import { type FakeConnection, fakeRelay } from './helpers/fake-relay.js';

const route = (v: string) => ({ id: 'app', hostnames: [`${v}.example.com`], target: 'http://127.0.0.1:9' });

/** Writes an announce-result on `conn` as a relay would, `seq` as given (left out when undefined). */
function answer(conn: FakeConnection, hostname: string, status: 'active' | 'refused', seq?: unknown): void {
  writeMessage(conn.control!, {
    type: 'announce-result',
    routes: [
      status === 'active'
        ? { id: 'app', hostname, status, url: `http://${hostname}` }
        : { id: 'app', hostname, status, error: 'unsolicited' },
    ],
    ...(seq !== undefined ? { seq } : {}),
  });
}

t.test(
  'one answer for several waiting announcements answers them all: no later result is taken',
  async (t) => {
    const relay = await fakeRelay(t);
    const source = new StaticRouteSource([route('v1')]);
    const { agent, log } = await agentOn(t, relay, source);
    const conn = await relay.announced();
    t.equal(conn.seqs[0], 1, 'the first announcement on a control stream is 1');

    // Two announcements go out; the relay answers only the latest, as its gate does with those
    // that wait (the earlier one is replaced before it is applied).
    relay.answering = false;
    const sent = relay.nextAnnouncements(2);
    source.update([route('v2')]);
    source.update([route('v3')]);
    await sent;
    const latest = conn.seqs.at(-1)!;
    t.same(conn.seqs, [1, 2, 3]);
    const answered = new Promise((resolve) => agent.once('routes', resolve));
    answer(conn, 'v3.example.com', 'active', latest);
    await answered;
    t.match(agent.routeStatus(), [{ hostname: 'v3.example.com', status: 'active' }]);

    // Nothing is outstanding now, whatever a result says it answers.
    const ignored = () =>
      log.lines.filter((l) => l.msg === 'announce-result with no announcement outstanding; ignored').length;
    let taken = 0;
    const onRoutes = () => taken++;
    agent.on('routes', onRoutes);
    for (const seq of [latest, latest - 1, latest + 1, undefined, 'not a number'])
      answer(conn, 'v3.example.com', 'refused', seq);
    await log.waitFor(() => ignored() + taken === 5);
    agent.off('routes', onRoutes);
    t.equal(taken, 0, 'none of them taken');
    t.match(agent.routeStatus(), [{ hostname: 'v3.example.com', status: 'active' }]);

    // And the next announcement is answered as usual.
    relay.answering = true;
    const next = new Promise((resolve) => agent.once('routes', resolve));
    source.update([route('v4')]);
    await next;
    t.match(agent.routeStatus(), [{ hostname: 'v4.example.com', status: 'active' }]);
    t.equal(conn.seqs.at(-1), latest + 1);
  },
);

t.test('a relay that echoes no seq: each result answers one announcement, as before', async (t) => {
  const relay = await fakeRelay(t);
  relay.echoSeq = false;
  const source = new StaticRouteSource([route('v1')]);
  const { agent, log } = await agentOn(t, relay, source);
  t.match(agent.routeStatus(), [{ hostname: 'v1.example.com', status: 'active' }]);
  const next = new Promise((resolve) => agent.once('routes', resolve));
  source.update([route('v2')]);
  await next;
  t.match(agent.routeStatus(), [{ hostname: 'v2.example.com', status: 'active' }]);
  answer(await relay.announced(), 'v2.example.com', 'refused');
  await log.waitFor((l) => l.msg === 'announce-result with no announcement outstanding; ignored');
  t.match(agent.routeStatus(), [{ hostname: 'v2.example.com', status: 'active' }]);
});
