import { type Agent, startAgent } from '@burrow/agent';
import type { Relay } from '@burrow/relay';
import { type Teardownable, testLogger, tokenFor, tunnelUrl } from './relay.js';

export interface TestRoute {
  id: string;
  hostnames: string[];
  target: string;
  allowCidrs?: string[];
  /** An https target's certificate is not verified. */
  tlsInsecure?: boolean;
}

/** An agent connected to `relay`, ready (routes acknowledged), closed at teardown. */
export async function testAgent(
  t: Teardownable,
  relay: Relay | string,
  routes: TestRoute[],
  opts: { sub?: string; hosts?: string[]; connections?: number; token?: string } = {},
): Promise<Agent> {
  const token =
    opts.token ?? (await tokenFor(opts.sub ?? 'tenant-a', opts.hosts ?? routes.flatMap((r) => r.hostnames)));
  const agent = startAgent({
    relayUrl: typeof relay === 'string' ? relay : tunnelUrl(relay),
    token,
    routes,
    connections: opts.connections ?? 2,
    logger: testLogger('agent'),
    backoff: { base: 20, cap: 200 },
  });
  t.teardown(() => agent.close());
  await agent.ready();
  return agent;
}
