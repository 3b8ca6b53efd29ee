import t from 'tap';
import { Activity } from '../src/activity.js';
import type { AccessInfo } from '../src/proxy/forward.js';

function access(status: number, n: number, error?: string): AccessInfo {
  return {
    host: `h${n}.example.com`,
    route: `h${n}.example.com`,
    method: 'GET',
    path: `/secret/path/${n}`,
    status,
    bytesIn: 10,
    bytesOut: 100,
    durationMs: 1,
    client: '192.0.2.7',
    ...(error ? { error } : {}),
  };
}

t.test('totals count everything; the error list keeps the newest, bounded', async (t) => {
  const activity = new Activity(3);
  activity.record(access(200, 0));
  activity.record(access(404, 1, 'unknown_host'));
  activity.record(access(500, 2));
  t.same(activity.totals(), { requests: 3, requestErrors: 2, bytesIn: 30, bytesOut: 300 });
  t.same(
    activity.recentErrors().map((e) => [e.route, e.status, e.reason]),
    [
      ['h2.example.com', 500, 'status'],
      ['h1.example.com', 404, 'unknown_host'],
    ],
  );
  for (let i = 3; i < 10; i++) activity.record(access(502, i, 'backend_refused'));
  const errors = activity.recentErrors();
  t.same(
    errors.map((e) => e.route),
    ['h9.example.com', 'h8.example.com', 'h7.example.com'],
    'the last three, newest first',
  );
  t.equal(activity.totals().requestErrors, 9);
  const text = JSON.stringify(errors);
  t.notMatch(text, '192.0.2.7', 'no client address kept');
  t.notMatch(text, '/secret/path', 'no path kept');
});

t.test('a client that left is counted, but not as an error', async (t) => {
  const activity = new Activity(3);
  activity.record(access(499, 0, 'client_closed'));
  activity.record(access(200, 1, 'client_closed'));
  activity.record(access(200, 2, 'drain_timeout'));
  t.same(activity.totals(), { requests: 3, requestErrors: 1, bytesIn: 30, bytesOut: 300 });
  t.same(
    activity.recentErrors().map((e) => e.reason),
    ['drain_timeout'],
  );
});
