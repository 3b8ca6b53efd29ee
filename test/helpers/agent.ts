import { type Agent, type RouteSource, startAgent } from '@burrow/agent';
import type { Relay } from '@burrow/relay';
import { type Teardownable, testLogger, tokenFor, tunnelUrl } from './relay.js';

export interface TestRoute {
  id: string;
  hostnames: string[];
  /** Public TCP ports of a tcp:// route. */
  ports?: number[];
  target: string;
  allowCidrs?: string[];
  /** An https target's certificate is not verified. */
  tlsInsecure?: boolean;
}

/**
 * An agent connected to `relay`, ready (routes acknowledged), closed at
 * teardown. `routes` may be a live source (a StaticRouteSource the test
 * changes); its token then needs `opts.hosts`, or names its current routes.
 */
export async function testAgent(
  t: Teardownable,
  relay: Relay | string,
  routes: TestRoute[] | RouteSource,
  opts: {
    sub?: string;
    hosts?: string[];
    /** The token's ports; default: those of the routes. */
    ports?: number[];
    connections?: number;
    token?: string;
    /** Multiplexer settings (a low stream limit, say). */
    session?: Parameters<typeof startAgent>[0]['session'];
    /** The CA that signed the relay's tunnel certificate (PEM), for a wss:// relay. */
    relayCa?: string;
  } = {},
): Promise<Agent> {
  const listed = Array.isArray(routes) ? routes : routes.routes();
  const token =
    opts.token ??
    (await tokenFor(
      opts.sub ?? 'tenant-a',
      opts.hosts ?? listed.flatMap((r) => r.hostnames),
      undefined,
      opts.ports ?? listed.flatMap((r) => r.ports ?? []),
    ));
  const agent = startAgent({
    relayUrl: typeof relay === 'string' ? relay : tunnelUrl(relay),
    token,
    routes,
    connections: opts.connections ?? 2,
    logger: testLogger('agent'),
    backoff: { base: 20, cap: 200 },
    ...(opts.session ? { session: opts.session } : {}),
    ...(opts.relayCa ? { relayCa: opts.relayCa } : {}),
  });
  t.teardown(() => agent.close());
  await agent.ready();
  await allConnected(agent, opts.connections ?? 2);
  return agent;
}

/**
 * Resolves once `n` connections are up (the relay welcomed each, so it counts
 * them too), or as soon as one fails to connect: a test of refusals gets its
 * agent back with what the relay let in.
 */
function allConnected(agent: Agent, n: number): Promise<void> {
  if (agent.connectionCount >= n) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      agent.off('connected', onConnected).off('connectFailed', done);
      resolve();
    };
    const onConnected = () => {
      if (agent.connectionCount >= n) done();
    };
    agent.on('connected', onConnected).on('connectFailed', done);
  });
}
