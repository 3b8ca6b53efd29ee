// The agent's view of its routes when its tunnel connections, each answered on
// its own (by different relay replicas, say), are told different things.
import { once } from 'node:events';
import type { RouteResult } from '@burrow/shared';
import t from 'tap';
import { type Agent, startAgent } from '../src/agent.js';
import { StaticRouteSource } from '../src/routes/source.js';
import { TEST_TOKEN } from './helpers/agent-on.js';
import { type FakeConnection, type FakeRelay, fakeRelay, type Teardownable } from './helpers/fake-relay.js';
import { memoryLogger } from './helpers/log.js';

const HOST = 'app.example.com';
const ROUTE = { id: 'app', hostnames: [HOST], target: 'http://127.0.0.1:9' };

/** An agent with two connections to `relay`, once both have had their first answer. */
async function twoConnections(t: Teardownable, relay: FakeRelay) {
  const source = new StaticRouteSource([ROUTE]);
  const log = memoryLogger();
  const agent = startAgent({
    relayUrl: relay.url,
    token: TEST_TOKEN,
    routes: source,
    connections: 2,
    logger: log.logger,
    backoff: { base: 5, cap: 40 },
  });
  t.teardown(() => agent.close());
  await answers(agent, 2);
  const [first, second] = relay.live();
  return { agent, source, log, first: first!, second: second! };
}

/** Resolves after the agent's next `n` 'routes' events. */
function answers(agent: Agent, n: number): Promise<void> {
  return new Promise((resolve) => {
    let seen = 0;
    const on = () => {
      if (++seen < n) return;
      agent.off('routes', on);
      resolve();
    };
    agent.on('routes', on);
  });
}

/**
 * Has the agent announce again on both connections, and `late` answer last: it
 * does not read its control stream until the agent has taken the other's answer.
 */
async function answerLast(agent: Agent, source: StaticRouteSource, late: FakeConnection): Promise<void> {
  late.control!.pause();
  const earlyAnswer = once(agent, 'routes');
  source.update([ROUTE]);
  await earlyAnswer;
  const lateAnswer = once(agent, 'routes');
  late.control!.resume();
  await lateAnswer;
}

const status = (agent: Agent): RouteResult | undefined =>
  agent.routeStatus().find((r) => r.hostname === HOST);

t.test(
  'a name is active while any connection serves it, and refused once none that answered does',
  async (t) => {
    const relay = await fakeRelay(t);
    const { agent, source, log, first, second } = await twoConnections(t, relay);
    t.match(status(agent), { status: 'active', url: `http://${HOST}` });

    // One connection's relay refuses the name, and its answer is the latest the agent got.
    first.refusedHosts.set(HOST, 'held by another agent on this replica');
    await answerLast(agent, source, first);
    t.match(status(agent), { status: 'active', url: `http://${HOST}` }, 'served by the other connection');
    t.equal(agent.routeStatus().length, 1, 'one result per name');
    const refusedLines = () => log.lines.filter((l) => l.msg === 'route refused by the relay');
    t.equal(refusedLines().length, 0, 'no refusal logged while the name is served');

    // The connection that serves it goes down: the refusal is what is left.
    const down = once(agent, 'disconnected');
    const changed = once(agent, 'routes');
    second.ws.terminate();
    await down;
    t.match(status(agent), { status: 'refused', error: 'held by another agent on this replica' });
    const [results] = (await changed) as [RouteResult[]];
    t.match(results, [{ hostname: HOST, status: 'refused' }], 'the change is reported (and written back)');
    t.equal(refusedLines().length, 1, 'and logged once');

    // It comes back, and its new answer serves the name again.
    while (status(agent)?.status !== 'active') await once(agent, 'routes');
    t.equal(agent.connectionCount, 2);
    t.equal(log.lines.filter((l) => l.msg === 'route active').length, 2, 'active at first, and again now');
  },
);

t.test('refused by every connection: the same refusal, whichever answered last', async (t) => {
  const relay = await fakeRelay(t);
  const { agent, source, log, first, second } = await twoConnections(t, relay);
  first.refusedHosts.set(HOST, 'refused by the first');
  second.refusedHosts.set(HOST, 'refused by the second');
  await answerLast(agent, source, second);
  const error = status(agent)?.error;
  t.match(error, /^refused by the (first|second)$/);
  await answerLast(agent, source, first);
  t.equal(status(agent)?.error, error, 'the order of the answers does not decide');
  await answerLast(agent, source, second);
  t.equal(status(agent)?.error, error);
  t.equal(
    log.lines.filter((l) => l.msg === 'route refused by the relay').length,
    1,
    'one refusal logged, not one per answer',
  );
});

t.test('a refusal that asks to be retried is, though another connection serves the name', async (t) => {
  const relay = await fakeRelay(t);
  relay.refusedRetryAfter = 1000;
  let connections = 0;
  relay.on('connection', (conn) => {
    // The first connection's relay replica holds the name for another agent a little longer.
    if (connections++ === 0) conn.refusedHosts.set(HOST, 'held for another agent');
  });
  const { agent, first } = await twoConnections(t, relay);
  t.match(status(agent), { status: 'active' });
  t.equal(first.announcements.length, 1);
  first.refusedHosts.clear();
  while (first.announcements.length < 2) await once(relay, 'announce');
  t.pass('the agent announced again by itself on the connection that was refused');
  t.match(status(agent), { status: 'active', url: `http://${HOST}` });
});
