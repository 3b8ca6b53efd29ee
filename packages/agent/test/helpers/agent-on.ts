import { type Agent, type AgentOptions, startAgent } from '../../src/agent.js';
import type { FakeRelay, Teardownable } from './fake-relay.js';
import { memoryLogger } from './log.js';

/** A token the stand-in relay accepts (it checks none); never a real one. */
export const TEST_TOKEN = 'eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ0ZXN0In0.c2VjcmV0LXNpZ25hdHVyZQ';

/**
 * An agent with one tunnel connection to the stand-in `relay`, fast reconnects
 * and its log in memory, ready (routes acknowledged) and closed at teardown.
 * `options` override any of these.
 */
export async function agentOn(
  t: Teardownable,
  relay: FakeRelay,
  routes: AgentOptions['routes'],
  options: Partial<AgentOptions> = {},
): Promise<{ agent: Agent; log: ReturnType<typeof memoryLogger> }> {
  const log = memoryLogger();
  const agent = startAgent({
    relayUrl: relay.url,
    token: TEST_TOKEN,
    routes,
    connections: 1,
    logger: log.logger,
    backoff: { base: 5, cap: 40 },
    ...options,
  });
  t.teardown(() => agent.close());
  await agent.ready();
  return { agent, log };
}
