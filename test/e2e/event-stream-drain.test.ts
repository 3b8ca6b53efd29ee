// A relay drain and event streams that end by themselves: an answer to a POST (an LLM
// completion, an MCP Streamable HTTP answer) that pauses for more than 1 s must reach the
// client whole, not end "cleanly" after its first part; EventSource's GET is still ended.
import { request } from 'node:http';
import t from 'tap';
import { testAgent } from '../helpers/agent.js';
import { within } from '../helpers/deferred.js';
import { testServer } from '../helpers/http.js';
import { testRelay } from '../helpers/relay.js';

for (const fastPath of [true, false]) {
  for (const method of ['POST', 'GET']) {
    const path = fastPath ? 'fast path' : 'general path';
    t.test(`relay drain, ${path}: a ${method} event stream that pauses 2.5 s, then ends`, async (t) => {
      const relay = await testRelay(t, { drainTimeout: 20_000, http1FastPath: fastPath });
      const app = await testServer(t, (req, res) => {
        req.resume();
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        res.write('data: {"part":1}\n\n');
        setTimeout(() => res.end('data: {"part":2}\n\ndata: [DONE]\n\n'), 2500);
      });
      await testAgent(t, relay, [{ id: 'llm', hostnames: ['llm.example.com'], target: app.url }]);
      const started = performance.now();
      const result = new Promise<{ body: string; how: string }>((resolve) => {
        let body = '';
        const req = request(
          {
            host: '127.0.0.1',
            port: relay.httpAddress.port,
            method,
            path: '/v1/chat',
            headers: { host: 'llm.example.com' },
            agent: false,
          },
          (res) => {
            res.setEncoding('utf8');
            res.on('data', (c: string) => {
              body += c;
              if (body.includes('part":1')) void relay.close(); // the drain starts during the pause
            });
            res.on('end', () => resolve({ body, how: 'end' }));
            res.on('error', (e) => resolve({ body, how: `error ${e.message}` }));
          },
        );
        req.on('error', (e) => resolve({ body, how: `request error ${e.message}` }));
        req.end(method === 'POST' ? '{"prompt":"hi"}' : undefined);
      });
      const r = await within(25_000, result, 'the response ended');
      if (method === 'POST') {
        t.same(r, { body: 'data: {"part":1}\n\ndata: {"part":2}\n\ndata: [DONE]\n\n', how: 'end' }, 'whole');
      } else {
        t.same(r, { body: 'data: {"part":1}\n\n', how: 'end' }, 'ended well-formed once quiet');
        t.ok(performance.now() - started < 2400, 'before the backend would have ended it');
      }
    });
  }
}
