import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { tempDir } from '../../../test/helpers/fs.js';
import { loadRoutesFile, parseRoutesYaml } from '../src/routes/file.js';
import { parseExpose, parseExposeList } from '../src/routes/static.js';
import { checkTarget, routeIdFor, toAnnounced, validateRoutes } from '../src/routes/validate.js';

t.test('--expose: good values', async (t) => {
  t.same(parseExpose('app.example.com=http://127.0.0.1:3000'), {
    id: 'static:app.example.com',
    hostnames: ['app.example.com'],
    target: 'http://127.0.0.1:3000',
  });
  t.same(parseExpose('a.example.com, b.example.com=https://10.0.0.7:8443/'), {
    id: 'static:a.example.com',
    hostnames: ['a.example.com', 'b.example.com'],
    target: 'https://10.0.0.7:8443',
  });
  t.equal(
    parseExpose('*.apps.example.com=http://web').id,
    'static:_.apps.example.com',
    'ids never contain *',
  );
  t.equal(parseExpose('web.example.com=http://[::1]:8080').target, 'http://[::1]:8080');
  const grpc = parseExpose('grpc.example.com=H2C://Backend:50051');
  t.equal(grpc.target, 'h2c://backend:50051', 'h2c://: scheme and host in lower case');
  t.same(
    toAnnounced(grpc),
    { id: 'static:grpc.example.com', hostnames: ['grpc.example.com'], backend: 'h2c' },
    'announced with backend h2c, so the relay sends it no http1 streams',
  );
  t.equal(
    parseExpose('web.example.com=http://svc.ns.svc:80').target,
    'http://svc.ns.svc',
    'default port dropped',
  );
  t.equal(
    parseExpose('x.example.com=http://127.0.0.1:1').id,
    parseExpose('x.example.com=http://127.0.0.1:2').id,
    'the id depends on the hostnames only, so it is stable across restarts and replicas',
  );
});

t.test('--expose: each bad value names the flag and the problem', async (t) => {
  const cases: Array<[string, RegExp]> = [
    ['app.example.com', /--expose "app.example.com": expected HOST=URL/],
    ['=http://127.0.0.1:3000', /no hostname before "="/],
    ['App.example.com=http://127.0.0.1', /hostname "App.example.com" must be lower case/],
    ['bad_name.example.com=http://127.0.0.1', /"bad_name.example.com" is not a valid hostname/],
    ['*.com=http://127.0.0.1', /too broad/],
    ['a.*.example.com=http://127.0.0.1', /wildcard is only allowed as the whole first label/],
    [
      'app.example.com=ftp://127.0.0.1',
      /target must be an http:\/\/, https:\/\/, h2c:\/\/, tls-passthrough:\/\/ or tcp:\/\/ URL \(got "ftp:\/\/127.0.0.1"\)/,
    ],
    [
      'app.example.com=127.0.0.1:3000',
      /target must be an http:\/\/, https:\/\/, h2c:\/\/, tls-passthrough:\/\/ or tcp:\/\/ URL/,
    ],
    [
      'app.example.com=',
      /target must be an http:\/\/, https:\/\/, h2c:\/\/, tls-passthrough:\/\/ or tcp:\/\/ URL/,
    ],
    ['app.example.com=http://127.0.0.1:3000/api', /must be an origin .* without a path/],
    ['app.example.com=http://127.0.0.1:3000/?x=1', /without a path/],
    ['app.example.com=http://user:pw@127.0.0.1', /must not contain credentials/],
    ['app.example.com=http://127.0.0.1:0', /must name a port from 1 to 65535/],
    ['app.example.com=tls-passthrough://127.0.0.1:0', /must name a port from 1 to 65535/],
    ['app.example.com=h2c://127.0.0.1', /must name a host and port, e\.g\. h2c:\/\/10\.0\.0\.7:50051/],
    ['app.example.com=h2c://127.0.0.1:50051/api', /must be h2c:\/\/HOST:PORT without a path/],
  ];
  for (const [value, message] of cases) {
    t.throws(() => parseExpose(value), { code: 'BURROW_ERR_CONFIG', message }, value);
  }
});

t.test('--expose list: an env value split on commas is glued back to HOST,HOST=URL', async (t) => {
  const routes = parseExposeList([
    'a.example.com',
    'b.example.com=http://127.0.0.1:1',
    'c.example.com=http://127.0.0.1:2',
  ]);
  t.same(
    routes.map((r) => [r.id, r.hostnames]),
    [
      ['static:a.example.com', ['a.example.com', 'b.example.com']],
      ['static:c.example.com', ['c.example.com']],
    ],
  );
  t.throws(() => parseExposeList(['c.example.com=http://127.0.0.1:2', 'dangling.example.com']), {
    message: /--expose "dangling.example.com": expected HOST=URL/,
  });
});

t.test('route sets: duplicates are refused naming both routes', async (t) => {
  const r = (id: string, hostnames: string[]) => ({ id, hostnames, target: 'http://127.0.0.1:1' });
  t.throws(() => validateRoutes([r('a', ['x.example.com']), r('b', ['x.example.com'])]), {
    message:
      'routes[1]: hostname "x.example.com" is already exposed by routes[0]; a hostname may appear in one route only',
  });
  t.throws(() => validateRoutes([r('a', ['x.example.com']), r('a', ['y.example.com'])]), {
    message: 'routes[1]: route id "a" is already used by routes[0]',
  });
  t.throws(() => validateRoutes([r('a', ['x.example.com', 'x.example.com'])]), { message: /listed twice/ });
  t.throws(() => validateRoutes([r('has space', ['x.example.com'])]), { message: /^routes\[0\]\.id: / });
  t.throws(() => validateRoutes([{ ...r('a', ['x.example.com']), target: 'http://x/y' }]), {
    message: /^routes\[0\]\.target: must be an origin/,
  });
  t.throws(() => validateRoutes([{ ...r('a', ['x.example.com']), allowCidrs: [] }]), {
    message: /^routes\[0\]\.allowCidrs: must list at least one CIDR/,
  });
  t.throws(() => validateRoutes([{ ...r('a', ['x.example.com']), allowCidrs: ['10.0.0.0/33'] }]), {
    message: /^routes\[0\]\.allowCidrs\[0\]: .*prefix length/,
  });
  t.same(
    validateRoutes([{ ...r('a', ['x.example.com']), target: 'http://127.0.0.1:1/' }])[0]?.target,
    'http://127.0.0.1:1',
  );
});

t.test('checkTarget and routeIdFor', async (t) => {
  t.same(checkTarget('https://svc.ns.svc.cluster.local:8443'), {
    origin: 'https://svc.ns.svc.cluster.local:8443',
  });
  t.match(checkTarget('ws://127.0.0.1'), {
    error: /http:\/\/, https:\/\/, h2c:\/\/, tls-passthrough:\/\/ or tcp:\/\//,
  });
  t.same(checkTarget('tls-passthrough://10.0.0.7:8443'), { origin: 'tls-passthrough://10.0.0.7:8443' });
  t.same(checkTarget('tls-passthrough://[FD00::7]:8443/'), { origin: 'tls-passthrough://[fd00::7]:8443' });
  t.match(checkTarget('tls-passthrough://10.0.0.7'), { error: /must name a host and port/ });
  t.match(checkTarget('tls-passthrough://10.0.0.7:8443/x'), { error: /without a path/ });
  t.match(checkTarget('tls-passthrough://u:p@10.0.0.7:8443'), { error: /credentials/ });
  const [pass] = validateRoutes([
    { id: 'p', hostnames: ['s.example.com'], target: 'tls-passthrough://10.0.0.7:8443' },
  ]);
  t.same(
    toAnnounced(pass!),
    { id: 'p', hostnames: ['s.example.com'], protocol: 'tls-passthrough' },
    'announced as passthrough',
  );
  t.same(
    toAnnounced({ id: 'h', hostnames: ['h.example.com'], target: 'http://127.0.0.1:1' }),
    { id: 'h', hostnames: ['h.example.com'] },
    'HTTP routes announce no protocol',
  );
  t.throws(
    () =>
      validateRoutes([
        {
          id: 'p',
          hostnames: ['s.example.com'],
          target: 'tls-passthrough://10.0.0.7:8443',
          tlsInsecure: true,
        },
      ]),
    /tlsInsecure: applies to https:\/\/ targets only/,
  );
  const long = `${'a'.repeat(60)}.${'b'.repeat(60)}.${'c'.repeat(60)}.example.com`;
  t.match(routeIdFor('static', [long]), /^static:[0-9a-f]{16}$/, 'an id over 128 characters becomes a hash');
});

const GOOD = `
routes:
  - hostnames: [app.example.com, www.example.com]
    target: http://127.0.0.1:3000
  - id: api
    hostnames: ["*.api.example.com"]
    target: https://10.0.0.9:8443
    allowCidrs: [203.0.113.0/24, 2001:db8::/32]
    tlsInsecure: true
`;

t.test('routes file: a good file', async (t) => {
  t.same(parseRoutesYaml(GOOD, 'routes.yaml'), [
    {
      id: 'static:app.example.com',
      hostnames: ['app.example.com', 'www.example.com'],
      target: 'http://127.0.0.1:3000',
    },
    {
      id: 'api',
      hostnames: ['*.api.example.com'],
      target: 'https://10.0.0.9:8443',
      allowCidrs: ['203.0.113.0/24', '2001:db8::/32'],
      tlsInsecure: true,
    },
  ]);
  t.same(
    parseRoutesYaml('routes: []', 'r.yaml'),
    [],
    'an empty list is valid (the CLI then asks for routes)',
  );
});

t.test('routes file: each mistake names the file and the field', async (t) => {
  const route = (fields: string) =>
    `routes:\n  - hostnames: [ok.example.com]\n    target: http://127.0.0.1:1\n  - ${fields}\n`;
  const cases: Array<[string, string | RegExp]> = [
    [
      route('hostnames: [b.example.com]\n    target: ftp://x'),
      /^r\.yaml: routes\[1\]\.target: must be an http:\/\/, https:\/\/, h2c:\/\/, tls-passthrough:\/\/ or tcp:\/\/ URL/,
    ],
    [
      route('hostnames: [b.example.com]\n    target: http://x:1/path'),
      /^r\.yaml: routes\[1\]\.target: must be an origin/,
    ],
    [route('hostnames: [b.example.com]'), 'r.yaml: routes[1].target: is required'],
    [route('target: http://x'), 'r.yaml: routes[1].hostnames: is required'],
    [route('hostnames: b.example.com\n    target: http://x'), 'r.yaml: routes[1].hostnames: must be a list'],
    [
      route('hostnames: []\n    target: http://x'),
      'r.yaml: routes[1].hostnames: must list at least one hostname',
    ],
    [
      route('hostnames: [Bad.example.com]\n    target: http://x'),
      /^r\.yaml: routes\[1\]\.hostnames\[0\]: hostname "Bad.example.com" must be lower case/,
    ],
    [
      route('hostnames: [b.example.com]\n    target: http://x\n    allowCidrs: [300.0.0.0/8]'),
      /^r\.yaml: routes\[1\]\.allowCidrs\[0\]: .*not an IP address/,
    ],
    [
      route('hostnames: [b.example.com]\n    target: http://x\n    allowCidrs: []'),
      'r.yaml: routes[1].allowCidrs: must list at least one CIDR (leave allowCidrs out to admit every client)',
    ],
    [
      route('hostnames: [b.example.com]\n    target: http://x\n    tlsInsecure: "yes"'),
      'r.yaml: routes[1].tlsInsecure: must be true or false',
    ],
    [
      route('hostnames: [b.example.com]\n    target: http://x\n    port: 80'),
      'r.yaml: routes[1]: unknown key "port"',
    ],
    [
      route('id: "no spaces"\n    hostnames: [b.example.com]\n    target: http://x'),
      /^r\.yaml: routes\[1\]\.id: must be 1 to 128/,
    ],
    ['routes: {}', 'r.yaml: routes: must be a list'],
    ['route: []', 'r.yaml: unknown key "route"'],
    ['', 'r.yaml: routes: is required'],
    ['routes: [5]', 'r.yaml: routes[0]: must be a mapping'],
    ['routes: [', /^r\.yaml: not valid YAML/],
    [
      'routes: []\n---\nroutes:\n  - hostnames: [b.example.com]\n    target: http://x\n',
      'r.yaml: holds more than one YAML document (another begins at line 2); put everything in one',
    ],
    [
      '- hostnames: [a.example.com]\n  target: http://127.0.0.1:1\n',
      'r.yaml: expected a mapping with a "routes:" list (see docs/configuration.md)',
    ],
    ['app.example.com', 'r.yaml: expected a mapping with a "routes:" list (see docs/configuration.md)'],
  ];
  for (const [text, message] of cases) {
    t.throws(() => parseRoutesYaml(text, 'r.yaml'), { code: 'BURROW_ERR_CONFIG', message }, String(message));
  }
});

t.test('routes file: read from disk; a missing file is one clear line', async (t) => {
  const dir = await tempDir(t, 'burrow-routes-');
  const file = join(dir, 'routes.yaml');
  await writeFile(file, GOOD);
  t.equal((await loadRoutesFile(file)).length, 2);
  await t.rejects(loadRoutesFile(join(dir, 'missing.yaml')), {
    code: 'BURROW_ERR_CONFIG',
    message: /^--routes: cannot read .*missing\.yaml \(ENOENT\)$/,
  });
});

t.test('routes file: the example in docs/configuration.md is valid', async (t) => {
  const doc = await readFile(new URL('../../../docs/configuration.md', import.meta.url), 'utf8');
  const agentSection = doc.slice(doc.indexOf('## burrow-agent'));
  const example = /Example `routes\.yaml`[\s\S]*?```yaml\n([\s\S]*?)```/.exec(agentSection);
  t.ok(example, 'the agent section shows a routes file');
  const routes = parseRoutesYaml(example?.[1] ?? '', 'docs/configuration.md');
  t.same(
    routes.map((r) => r.id),
    ['static:app.example.com', 'api', 'static:grpc.example.com', 'static:tcp-5432'],
  );
  t.equal(routes[2]?.target, 'h2c://10.0.0.11:50051', 'an h2c:// target');
  t.match(routes[1], { allowCidrs: ['203.0.113.0/24'], tlsInsecure: true }, 'every optional field is shown');
});
