// TCP routes from --expose flags and a routes file: public ports on the relay
// and a tcp:// target, checked like every other route.
import t from 'tap';
import { parseRoutesYaml } from '../src/routes/file.js';
import { parseExpose, parseExposeList } from '../src/routes/static.js';
import { checkTarget, toAnnouncedPorts, validateRoutes } from '../src/routes/validate.js';

t.test('--expose PORT=tcp://HOST:PORT', async (t) => {
  t.same(parseExpose('5432=tcp://10.0.0.7:5432'), {
    id: 'static:tcp-5432',
    hostnames: [],
    ports: [5432],
    target: 'tcp://10.0.0.7:5432',
  });
  t.same(parseExpose('2222, 2223=tcp://[::1]:22').ports, [2222, 2223]);
  t.same(
    parseExposeList(['2222', '2223=tcp://127.0.0.1:22']).map((r) => r.ports),
    [[2222, 2223]],
    'an environment value split on commas is glued back together',
  );
  const bad: Array<[string, RegExp]> = [
    ['=tcp://127.0.0.1:22', /no port before "="; e\.g\. --expose 5432=tcp:\/\/127\.0\.0\.1:5432/],
    [
      'db.example.com=tcp://127.0.0.1:5432',
      /"db\.example\.com" is not a port; a tcp:\/\/ target is exposed on public ports of the relay/,
    ],
    ['0=tcp://127.0.0.1:5432', /"0" is not a port/],
    ['70000=tcp://127.0.0.1:5432', /"70000" is not a port/],
    ['5432=tcp://127.0.0.1', /target must name a host and port, e\.g\. tcp:\/\/10\.0\.0\.7:5432/],
    ['5432=tcp://127.0.0.1:5432/db', /target must be tcp:\/\/HOST:PORT without a path/],
    ['5432=tcp://user:pw@127.0.0.1:5432', /target must not contain credentials/],
    // A port with an HTTP target: the relay would refuse "5432" as a hostname.
    [
      '5432=http://127.0.0.1:5432',
      /"5432" is a port, not a hostname; a TCP service takes a tcp:\/\/ target, e\.g\. --expose 5432=tcp:\/\/127\.0\.0\.1:5432/,
    ],
  ];
  for (const [value, message] of bad) {
    t.throws(
      () => parseExpose(value),
      {
        code: 'BURROW_ERR_CONFIG',
        message: new RegExp(`^--expose "${value.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}": `),
      },
      value,
    );
    t.throws(() => parseExpose(value), { message }, value);
  }
  t.same(checkTarget('TCP://DB.Example.COM:5432'), { origin: 'tcp://db.example.com:5432' });
});

t.test('routes file: ports with a tcp:// target', async (t) => {
  const routes = parseRoutesYaml(
    'routes:\n  - ports: [5432, 5433]\n    target: tcp://10.0.0.7:5432\n    allowCidrs: [203.0.113.0/24]\n  - id: ssh\n    ports: [2222]\n    target: tcp://10.0.0.8:22\n',
    'r.yaml',
  );
  t.same(routes, [
    {
      id: 'static:tcp-5432',
      hostnames: [],
      ports: [5432, 5433],
      target: 'tcp://10.0.0.7:5432',
      allowCidrs: ['203.0.113.0/24'],
    },
    { id: 'ssh', hostnames: [], ports: [2222], target: 'tcp://10.0.0.8:22' },
  ]);
  t.same(
    toAnnouncedPorts(routes[0]!),
    [
      { id: 'static:tcp-5432', port: 5432, allowCidrs: ['203.0.113.0/24'] },
      { id: 'static:tcp-5432', port: 5433, allowCidrs: ['203.0.113.0/24'] },
    ],
    'the relay sees one entry per port, with the allowlist and never the target',
  );
  const cases: Array<[string, string]> = [
    ['- target: tcp://10.0.0.7:5432', 'r.yaml: routes[0].ports: is required'],
    ['- ports: []\n    target: tcp://10.0.0.7:5432', 'r.yaml: routes[0].ports: must list at least one port'],
    ['- ports: [0]\n    target: tcp://10.0.0.7:5432', 'r.yaml: routes[0].ports[0]: must be from 1 to 65535'],
    ['- ports: [1.5]\n    target: tcp://10.0.0.7:5432', 'r.yaml: routes[0].ports[0]: must be a whole number'],
    ['- ports: ["22"]\n    target: tcp://10.0.0.7:5432', 'r.yaml: routes[0].ports[0]: must be a number'],
    [
      '- ports: [22]\n    hostnames: [db.example.com]\n    target: tcp://10.0.0.7:5432',
      'r.yaml: routes[0].hostnames: a tcp:// route is reached by its ports, not by hostname; list none',
    ],
    [
      '- ports: [22]\n    hostnames: [db.example.com]\n    target: http://10.0.0.7:80',
      'r.yaml: routes[0].ports: apply to tcp:// targets only; other routes are reached by hostname',
    ],
  ];
  for (const [route, message] of cases) {
    t.throws(
      () => parseRoutesYaml(`routes:\n  ${route}\n`, 'r.yaml'),
      { code: 'BURROW_ERR_CONFIG', message },
      message,
    );
  }
});

t.test('route sets: a port in two routes, or twice in one, is refused', async (t) => {
  const target = 'tcp://127.0.0.1:5432';
  t.throws(
    () =>
      validateRoutes([
        { id: 'a', hostnames: [], ports: [5432], target },
        { id: 'b', hostnames: [], ports: [6000, 5432], target },
      ]),
    { code: 'BURROW_ERR_CONFIG', message: 'routes[1]: port 5432 is already exposed by routes[0]' },
  );
  t.throws(() => validateRoutes([{ id: 'a', hostnames: [], ports: [22, 22], target }]), {
    message: 'routes[0].ports[1]: port 22 is listed twice',
  });
  t.throws(
    () =>
      validateRoutes([
        { id: 'a', hostnames: [], ports: Array.from({ length: 17 }, (_, i) => 1000 + i), target },
      ]),
    {
      message: 'routes[0].ports: at most 16 ports per route',
    },
  );
  t.throws(() => validateRoutes([{ id: 'a', hostnames: [], target }]), {
    message: 'routes[0].ports: a tcp:// route must list at least one public port on the relay',
  });
});
