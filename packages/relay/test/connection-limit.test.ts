import t from 'tap';
import {
  autoMaxConnections,
  dropReporter,
  FD_HEADROOM,
  openFileLimit,
  parseOpenFileLimit,
} from '../src/listeners/connection-limit.js';

const LIMITS = `Limit                     Soft Limit           Hard Limit           Units
Max cpu time              unlimited            unlimited            seconds
Max open files            65536                524288               files
Max locked memory         8388608              8388608              bytes
`;

t.test('the open-file limit is the soft one from /proc/self/limits', async (t) => {
  t.equal(parseOpenFileLimit(LIMITS), 65536);
  t.equal(
    parseOpenFileLimit(LIMITS.replace('65536  ', 'unlimited')),
    undefined,
    'unlimited: no number to share',
  );
  t.equal(parseOpenFileLimit(''), undefined);
  t.equal(parseOpenFileLimit(undefined), undefined, 'not Linux');
  t.type(openFileLimit(), 'number', 'this machine has one');
});

t.test('the automatic limit leaves headroom and shares the rest among the listeners', async (t) => {
  t.equal(autoMaxConnections(1, 65536), 65536 - FD_HEADROOM);
  t.equal(autoMaxConnections(2, 65536), (65536 - FD_HEADROOM) / 2);
  t.equal(autoMaxConnections(2, 1025), 64, 'never below 64, however low the limit');
  t.equal(autoMaxConnections(2, undefined), undefined, 'no limit where the open-file limit is unknown');
});

t.test('drops are all counted, and warned of at most once per interval', async (t) => {
  const warnings: Array<Record<string, unknown>> = [];
  const counted: string[] = [];
  const logger = { warn: (obj: object) => warnings.push(obj as Record<string, unknown>) };
  const quiet = dropReporter(logger, 10, (l) => counted.push(l), 60_000);
  quiet('http');
  quiet('http');
  quiet('tls');
  t.same(counted, ['http', 'http', 'tls']);
  t.same(
    warnings,
    [
      { listener: 'http', maxConnections: 10, dropped: 1 },
      { listener: 'tls', maxConnections: 10, dropped: 1 },
    ],
    "each listener's first at once, then quiet: one listener's flood hides no other's",
  );

  warnings.length = 0;
  const every = dropReporter(logger, 10, () => {}, 0);
  every('tls');
  every('tls');
  t.same(
    warnings.map((w) => w['dropped']),
    [1, 1],
    'each warning says how many were dropped since the last',
  );
});
