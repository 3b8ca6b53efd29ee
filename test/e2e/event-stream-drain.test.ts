// A relay drain and event streams that end by themselves: an answer to a POST (an LLM
// completion, an MCP Streamable HTTP answer) that pauses during the drain must reach the
// client whole, not end "cleanly" after its first part; EventSource's GET is still ended.
import { request } from 'node:http';
import t from 'tap';
import { testAgent } from '../helpers/agent.js';
import { deferred, within } from '../helpers/deferred.js';
import { testServer } from '../helpers/http.js';
import { testRelay } from '../helpers/relay.js';

const PART_1 = 'data: {"part":1}\n\n';
const REST = 'data: {"part":2}\n\ndata: [DONE]\n\n';

/** An event-stream request through the relay: resolves `first` at its first event, `done` at its end. */
function open(port: number, method: 'GET' | 'POST') {
  const first = deferred();
  const done = new Promise<{ body: string; how: string }>((resolve) => {
    let body = '';
    const req = request(
      {
        host: '127.0.0.1',
        port,
        method,
        path: '/v1/events',
        headers: { host: 'llm.example.com' },
        agent: false,
      },
      (res) => {
        res.setEncoding('utf8');
        res.on('data', (c: string) => {
          body += c;
          if (body.includes(PART_1)) first.resolve();
        });
        res.on('end', () => resolve({ body, how: 'end' }));
        res.on('error', (e) => resolve({ body, how: `error ${e.message}` }));
      },
    );
    req.on('error', (e) => resolve({ body, how: `request error ${e.message}` }));
    req.end(method === 'POST' ? '{"prompt":"hi"}' : undefined);
  });
  return { first: first.promise, done };
}

for (const fastPath of [true, false]) {
  const path = fastPath ? 'fast path' : 'general path';
  t.test(`relay drain, ${path}: a quiet GET event stream ends, a quiet POST one is waited for`, async (t) => {
    // A drain timeout far beyond the guards below: the GET stream ends by the quiet rule alone.
    const relay = await testRelay(t, { drainTimeout: 60_000, http1FastPath: fastPath });
    const release = deferred();
    const app = await testServer(t, (req, res) => {
      req.resume();
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write(PART_1);
      // The POST's answer ends once the test says; the GET's (EventSource's) never does.
      if (req.method === 'POST') release.promise.then(() => res.end(REST));
    });
    // One tunnel connection, so one session's drain looks at both streams.
    await testAgent(t, relay, [{ id: 'llm', hostnames: ['llm.example.com'], target: app.url }], {
      connections: 1,
    });
    const port = relay.httpAddress.port;
    // The POST's first event before the GET's: by the time the GET has been quiet long enough
    // to be ended, so has the POST.
    const post = open(port, 'POST');
    await post.first;
    const get = open(port, 'GET');
    await get.first;

    const stopping = relay.close();
    t.same(
      await within(15_000, get.done, 'the GET event stream ended by the drain'),
      { body: PART_1, how: 'end' },
      'GET: ended well-formed once quiet',
    );
    release.resolve();
    t.same(
      await within(15_000, post.done, 'the POST answer'),
      { body: PART_1 + REST, how: 'end' },
      'POST: whole, though it was as quiet as the GET',
    );
    await within(15_000, stopping, 'the relay stopped');
  });
}

t.test('agent drain: a quiet GET event stream through it ends well-formed at the relay', async (t) => {
  const relay = await testRelay(t);
  const app = await testServer(t, (req, res) => {
    req.resume();
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    res.write(PART_1); // and never ends: only the agent's drain can
  });
  // A drain timeout far beyond the guards below: only the quiet rule ends the stream in time.
  const agent = await testAgent(t, relay, [{ id: 'llm', hostnames: ['llm.example.com'], target: app.url }], {
    connections: 1,
    session: { drainTimeout: 60_000 },
  });
  const get = open(relay.httpAddress.port, 'GET');
  await get.first;
  const closing = agent.close();
  t.same(
    await within(15_000, get.done, 'the event stream ended by the agent drain'),
    { body: PART_1, how: 'end' },
    'ended well-formed once quiet, as on a relay drain',
  );
  await within(15_000, closing, 'the agent drained');
});
