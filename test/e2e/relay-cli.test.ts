// The relay binary as an operator runs it: keygen, token create, serve, and a
// SIGTERM that lets in-flight downloads finish before exiting 0.
import { execFile } from 'node:child_process';
import { once } from 'node:events';
import { chmod, mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { connect } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { decodeJwt } from 'jose';
import t from 'tap';
import { testAgent } from '../helpers/agent.js';
import { deferred } from '../helpers/deferred.js';
import { tempDir } from '../helpers/fs.js';
import { testServer } from '../helpers/http.js';
import { AGENT_CLI, LOOPBACK_SERVE, listeningPorts, RELAY_CLI, spawnLogged } from '../helpers/proc.js';

const run = promisify(execFile);

t.test('keygen, token create, serve, SIGTERM drain', async (t) => {
  const dir = await tempDir(t, 'burrow-relay-');
  const keys = join(dir, 'keys');

  await run(process.execPath, [RELAY_CLI, 'keygen', '--out', keys]);
  t.equal(
    (await stat(join(keys, 'signing.key'))).mode & 0o777,
    0o600,
    'private key is readable by its owner only',
  );
  // Under a hardened umask (027), the relay's own user can still reach and read the public key.
  const strict = join(dir, 'strict', 'keys');
  await run('/bin/sh', [
    '-c',
    'umask 027 && exec "$0" "$@"',
    process.execPath,
    RELAY_CLI,
    'keygen',
    '--out',
    strict,
  ]);
  t.same(
    await Promise.all(
      ['..', '', 'signing.pub', 'signing.key'].map(async (f) => (await stat(join(strict, f))).mode & 0o777),
    ),
    [0o755, 0o755, 0o644, 0o600],
    'umask 027: the directories keygen made and signing.pub stay readable, signing.key stays private',
  );
  const again = await run(process.execPath, [RELAY_CLI, 'keygen', '--out', keys]).catch((e) => e);
  t.equal(again.code, 1, 'keygen refuses to overwrite a key pair');
  t.match(again.stderr, /already exists; pass --force/);

  const { stdout: token, stderr: tokenInfo } = await run(process.execPath, [
    RELAY_CLI,
    'token',
    'create',
    '--key',
    join(keys, 'signing.key'),
    '--sub',
    'cli',
    '--hosts',
    'dl.example.com',
    '--ttl',
    '1h',
  ]);
  t.match(token.trim(), /^[\w-]+\.[\w-]+\.[\w-]+$/, 'prints one compact JWT');
  const { jti } = decodeJwt(token);
  t.equal(tokenInfo, `token id (jti, for --revoked-tokens): ${jti}\n`, 'the token id goes to stderr');

  const bad = await run(process.execPath, [RELAY_CLI, 'serve', '--http-listen', 'nonsense']).catch((e) => e);
  t.equal(bad.code, 1);
  t.match(bad.stderr, /--http-listen must be HOST:PORT/, 'config errors name the field');

  const relay = spawnLogged(t, RELAY_CLI, [
    'serve',
    '--http-listen',
    '127.0.0.1:0',
    '--tunnel-listen',
    '127.0.0.1:0',
    '--tls-listen',
    '127.0.0.1:0',
    '--admin-listen',
    '127.0.0.1:0',
    '--verify-key',
    keys,
    '--drain-timeout',
    '20s',
  ]);
  const { http: httpPort, tunnel: tunnelPort } = await listeningPorts(relay);

  // A download that stays in flight until the test releases it.
  const released = deferred();
  const app = await testServer(t, (_req, res) => {
    res.writeHead(200, { 'content-length': '8' });
    res.write('part1-');
    released.promise.then(() => res.end('ok'));
  });
  await testAgent(
    t,
    `ws://127.0.0.1:${tunnelPort}`,
    [{ id: 'dl', hostnames: ['dl.example.com'], target: app.url }],
    {
      token: token.trim(),
    },
  );

  const res = await new Promise<import('node:http').IncomingMessage>((resolve, reject) =>
    request(
      { host: '127.0.0.1', port: httpPort, path: '/file', headers: { host: 'dl.example.com' } },
      resolve,
    )
      .on('error', reject)
      .end(),
  );
  res.setEncoding('utf8');
  const [first] = await once(res, 'data');
  t.equal(first, 'part1-');

  relay.child.kill('SIGTERM');
  await relay.waitFor((l) => l['msg'] === 'relay draining');
  let rest = '';
  res.on('data', (c: string) => (rest += c));
  const ended = once(res, 'end');
  released.resolve();
  await ended;
  t.equal(rest, 'ok', 'the in-flight download completed after SIGTERM');
  t.equal(await relay.exited, 0, 'relay exits 0 after draining');
});

t.test('a request head left unfinished on the tunnel or admin port does not hold up the exit', async (t) => {
  const dir = await tempDir(t, 'burrow-relay-');
  const keys = join(dir, 'keys');
  await run(process.execPath, [RELAY_CLI, 'keygen', '--out', keys]);
  const relay = spawnLogged(t, RELAY_CLI, [
    'serve',
    ...LOOPBACK_SERVE,
    ...['--admin-listen', '127.0.0.1:0', '--verify-key', keys, '--drain-timeout', '1s'],
  ]);
  const { tunnel, admin } = await listeningPorts(relay);
  // Clients anywhere may reach both (the tunnel endpoint is public): each sends half a head.
  for (const port of [tunnel, admin!]) {
    const socket = connect(port, '127.0.0.1');
    socket.on('error', () => {});
    t.teardown(() => socket.destroy());
    await once(socket, 'connect');
    socket.write('GET /healthz HTTP/1.1\r\nHost: relay\r\n');
  }
  relay.child.kill('SIGTERM');
  t.equal(await relay.exited, 0, 'the relay exits at its drain deadline');
});

t.test('an address already in use: one line naming it, exit 1, for relay and agent', async (t) => {
  const busy = await testServer(t, (_req, res) => res.end());
  const where = `127.0.0.1:${busy.port}`;
  const dir = await tempDir(t, 'burrow-busy-');
  const relay = await serveFailing(dir, where);
  t.equal(relay.code, 1, 'the relay exits 1');
  t.equal(
    relay.stderr,
    `burrow-relay: cannot listen on ${where}: the address is already in use (another process holds it; pick another address or stop it)\n`,
    'with one line, no stack trace',
  );
  await writeFile(join(dir, 'token'), 'abc.def.ghi\n');
  const agent = await run(process.execPath, [
    AGENT_CLI,
    '--relay',
    'ws://127.0.0.1:1',
    '--token-file',
    join(dir, 'token'),
    '--expose',
    'a.example.com=http://127.0.0.1:1',
    '--health-listen',
    where,
    '--log-level',
    'silent',
  ]).catch((e) => e);
  t.equal(agent.code, 1, 'the agent exits 1');
  t.match(
    agent.stderr,
    new RegExp(`^burrow-agent: cannot listen on ${where}: the address is already in use`),
  );
  t.notMatch(agent.stderr, /\n\s+at /, 'no stack trace');
});

t.test('a listen address whose host name does not resolve: one line naming it, exit 1', async (t) => {
  // A 64-character label is not a valid DNS name: the resolver refuses it without asking a server.
  const host = `${'x'.repeat(64)}.invalid`;
  const relay = await serveFailing(await tempDir(t, 'burrow-nohost-'), `${host}:0`);
  t.equal(relay.code, 1, 'the relay exits 1');
  t.equal(
    relay.stderr,
    `burrow-relay: cannot listen on ${host}: no such host name; use an IP address of this machine, or 0.0.0.0 for all\n`,
    'with one line, no stack trace',
  );
});

/** `burrow-relay serve` with a fresh key in `dir` and --http-listen `listen`, expected to fail: its error. */
async function serveFailing(dir: string, listen: string) {
  await run(process.execPath, [RELAY_CLI, 'keygen', '--out', join(dir, 'keys')]);
  const serve = ['serve', '--verify-key', join(dir, 'keys'), '--tls-listen', 'off', '--http-listen', listen];
  return run(process.execPath, [RELAY_CLI, ...serve]).catch((e) => e);
}

/** Runs a binary to its exit: exit code and stderr. With `uid`, as that user. */
async function failing(cli: string, argv: string[], env: NodeJS.ProcessEnv = {}, uid?: number) {
  // tap's NODE_OPTIONS hook records every child in .tap/, which another user cannot write.
  const [command, ...args] =
    uid === undefined
      ? [process.execPath, cli, ...argv]
      : ['env', '-u', 'NODE_OPTIONS', process.execPath, cli, ...argv];
  return run(command!, args, {
    env: { PATH: process.env['PATH'], ...env },
    ...(uid !== undefined ? { uid, gid: uid } : {}),
  }).then(
    ({ stderr }) => ({ code: 0, stderr }),
    (e: { code: number; stderr: string }) => ({ code: e.code, stderr: e.stderr }),
  );
}

t.test('stray arguments are refused by every command, with one line', async (t) => {
  // --out keeps a keygen that wrongly ran out of the working directory.
  const out = join(await tempDir(t, 'burrow-stray-'), 'keys');
  const cases: Array<[string, string[], string]> = [
    [
      RELAY_CLI,
      ['serve', 'relay.yaml'],
      'unexpected argument "relay.yaml" (did you mean --config relay.yaml?)',
    ],
    [RELAY_CLI, ['serve', '--tls-listen', 'off', 'extra'], 'unexpected argument "extra" (see --help)'],
    [
      RELAY_CLI,
      ['keygen', '--out', out, '/etc/burrow/keys'],
      'unexpected argument "/etc/burrow/keys" (see --help)',
    ],
    [RELAY_CLI, ['token', 'create', 'extra', '--sub', 'a'], 'unexpected argument "extra" (see --help)'],
    [RELAY_CLI, ['token', '--help', 'extra'], 'unexpected argument "extra" (see --help)'],
    [RELAY_CLI, ['token', 'list'], 'unknown token command "list"; try: burrow-relay token create --help'],
    [RELAY_CLI, ['--version', 'extra'], 'unexpected argument "extra" (see --help)'],
    [AGENT_CLI, ['extra', '--relay', 'ws://127.0.0.1:1'], 'unexpected argument "extra" (see --help)'],
    [
      AGENT_CLI,
      ['--relay', 'ws://127.0.0.1:1', 'routes.yaml'],
      'unexpected argument "routes.yaml" (did you mean --routes routes.yaml?)',
    ],
  ];
  for (const [cli, argv, message] of cases) {
    const name = cli === RELAY_CLI ? 'burrow-relay' : 'burrow-agent';
    t.same(
      await failing(cli, argv),
      { code: 1, stderr: `${name}: ${message}\n` },
      `${name} ${argv.join(' ')}`,
    );
  }
});

t.test('durations need a unit, and a dash-prefixed value is a one-line error', async (t) => {
  const dir = await tempDir(t, 'burrow-units-');
  const keys = join(dir, 'keys');
  await run(process.execPath, [RELAY_CLI, 'keygen', '--out', keys]);
  const token = [
    'token',
    'create',
    '--key',
    join(keys, 'signing.key'),
    '--sub',
    'a',
    '--hosts',
    'a.example.com',
  ];
  t.same(await failing(RELAY_CLI, [...token, '--ttl', '90']), {
    code: 1,
    stderr: 'burrow-relay: --ttl: "90" needs a unit: ms, s, m, h or d\n',
  });
  t.same(await failing(RELAY_CLI, [...token, '--ttl', '0']), {
    code: 1,
    stderr: 'burrow-relay: --ttl must be at least 1s (got "0")\n',
  });
  const serve = ['serve', '--verify-key', keys, '--tls-listen', 'off', '--http-listen', '127.0.0.1:0'];
  t.same(await failing(RELAY_CLI, [...serve, '--drain-timeout', '30']), {
    code: 1,
    stderr: 'burrow-relay: --drain-timeout: "30" needs a unit: ms, s, m, h or d\n',
  });
  t.same(await failing(RELAY_CLI, serve, { BURROW_DRAIN_TIMEOUT: '30' }), {
    code: 1,
    stderr: 'burrow-relay: BURROW_DRAIN_TIMEOUT: "30" needs a unit: ms, s, m, h or d\n',
  });
  await writeFile(join(dir, 'relay.yaml'), 'drain-timeout: 30\n');
  t.same(await failing(RELAY_CLI, [...serve, '--config', join(dir, 'relay.yaml')]), {
    code: 1,
    stderr: `burrow-relay: ${join(dir, 'relay.yaml')}: "drain-timeout": "30" needs a unit: ms, s, m, h or d\n`,
  });
  const dash = await failing(RELAY_CLI, [...serve, '--drain-timeout', '-5s']);
  t.equal(dash.code, 1);
  t.match(dash.stderr, /^burrow-relay: Option '--drain-timeout' argument is ambiguous\. .*\(see --help\)\n$/);
  t.equal(dash.stderr.split('\n').length, 2, `one line (got ${JSON.stringify(dash.stderr)})`);
});

t.test('a bad value is reported where it was set: flag, environment variable or config file', async (t) => {
  const dir = await tempDir(t, 'burrow-value-sources-');
  const keys = join(dir, 'keys');
  await run(process.execPath, [RELAY_CLI, 'keygen', '--out', keys]);
  const serve = ['serve', '--verify-key', join(keys, 'signing.pub'), '--tls-listen', 'off'];
  const listen = 'must be HOST:PORT, e.g. 0.0.0.0:8080 (got "nowhere")';
  t.same(await failing(RELAY_CLI, [...serve, '--http-listen', 'nowhere']), {
    code: 1,
    stderr: `burrow-relay: --http-listen ${listen}\n`,
  });
  t.same(await failing(RELAY_CLI, serve, { BURROW_HTTP_LISTEN: 'nowhere' }), {
    code: 1,
    stderr: `burrow-relay: BURROW_HTTP_LISTEN ${listen}\n`,
  });
  const file = join(dir, 'relay.yaml');
  await writeFile(file, 'http-listen: nowhere\n');
  t.same(await failing(RELAY_CLI, [...serve, '--config', file]), {
    code: 1,
    stderr: `burrow-relay: ${file}: "http-listen" ${listen}\n`,
  });
  // An error naming two options names each where it was set.
  await writeFile(file, 'cert-file: /etc/burrow/tls.crt\n');
  t.same(
    await failing(RELAY_CLI, ['serve', '--verify-key', join(keys, 'signing.pub'), '--config', file], {
      BURROW_TLS_LISTEN: 'off',
    }),
    {
      code: 1,
      stderr: `burrow-relay: ${file}: "cert-file" needs the TLS listener, but BURROW_TLS_LISTEN is "off"\n`,
    },
  );
  t.same(await failing(RELAY_CLI, serve, { BURROW_CONFIG: join(dir, 'none.yaml') }), {
    code: 1,
    stderr: `burrow-relay: BURROW_CONFIG: cannot read ${join(dir, 'none.yaml')} (ENOENT)\n`,
  });
  await writeFile(file, 'http-listen: nowhere\n');
  // A flag still wins over the file, and the error names the flag.
  t.same(await failing(RELAY_CLI, [...serve, '--config', file, '--http-listen', 'nowhere']), {
    code: 1,
    stderr: `burrow-relay: --http-listen ${listen}\n`,
  });
  t.same(
    await failing(RELAY_CLI, ['token', 'create', '--sub', 'a', '--hosts', 'a.example.com'], {
      BURROW_SIGNING_KEY: join(dir, 'none.key'),
    }),
    {
      code: 1,
      stderr: `burrow-relay: BURROW_SIGNING_KEY: cannot read ${join(dir, 'none.key')} (ENOENT: no such file; create a key pair with: burrow-relay keygen)\n`,
    },
  );
  t.same(
    await failing(AGENT_CLI, ['--relay', 'ws://127.0.0.1:1', '--token-file', join(dir, 'none')], {
      BURROW_CONNECTIONS: '99',
    }),
    { code: 1, stderr: 'burrow-agent: BURROW_CONNECTIONS must be an integer from 1 to 64 (got "99")\n' },
  );
});

t.test('token create: why the key cannot be used, and keygen advice only for a missing key', async (t) => {
  const dir = await tempDir(t, 'burrow-key-errors-');
  const keys = join(dir, 'keys');
  await run(process.execPath, [RELAY_CLI, 'keygen', '--out', keys]);
  const create = (key: string, uid?: number) =>
    failing(RELAY_CLI, ['token', 'create', '--sub', 'a', '--hosts', 'a.example.com', '--key', key], {}, uid);

  t.same(await create(join(dir, 'nope.key')), {
    code: 1,
    stderr: `burrow-relay: --key: cannot read ${join(dir, 'nope.key')} (ENOENT: no such file; create a key pair with: burrow-relay keygen)\n`,
  });
  t.same(await create(join(keys, 'signing.pub')), {
    code: 1,
    stderr: `burrow-relay: --key: ${join(keys, 'signing.pub')} is a public key; token create needs the private signing.key (from burrow-relay keygen)\n`,
  });
  t.same(await create(keys), {
    code: 1,
    stderr: `burrow-relay: --key: cannot read ${keys} (EISDIR: a directory; pass the signing.key file in it)\n`,
  });
  // A key that exists but cannot be read: root reads any file, so then run as nobody.
  const key = join(keys, 'signing.key');
  let uid: number | undefined;
  if (process.getuid?.() === 0) {
    await chmod(dir, 0o755);
    await chmod(keys, 0o755);
    uid = 65534;
  } else {
    await chmod(key, 0o000);
  }
  const denied = await create(key, uid);
  t.same(denied, {
    code: 1,
    stderr: `burrow-relay: --key: cannot read ${key} (EACCES: permission denied; run as the key's owner or root)\n`,
  });
  t.notMatch(denied.stderr, /keygen/, 'no advice to replace a key that exists');
});

t.test('keygen --force leaves the new private key readable by its owner only', async (t) => {
  const keys = join(await tempDir(t, 'burrow-keygen-force-'), 'keys');
  await run(process.execPath, [RELAY_CLI, 'keygen', '--out', keys]);
  const key = join(keys, 'signing.key');
  // A key copied in or restored from a backup under the default umask.
  await chmod(key, 0o644);
  const before = await readFile(key, 'utf8');
  await run(process.execPath, [RELAY_CLI, 'keygen', '--out', keys, '--force']);
  t.not(await readFile(key, 'utf8'), before, 'the key was replaced');
  t.equal((await stat(key)).mode & 0o777, 0o600, 'mode 0600, as keygen --help promises');
});

t.test('token create: a subject or host pattern that cannot be signed names its flag', async (t) => {
  const keys = join(await tempDir(t, 'burrow-claims-'), 'keys');
  await run(process.execPath, [RELAY_CLI, 'keygen', '--out', keys]);
  const create = (...argv: string[]) =>
    failing(RELAY_CLI, ['token', 'create', '--key', join(keys, 'signing.key'), ...argv]);
  t.same(await create('--sub', 'home cluster', '--hosts', 'a.example.com'), {
    code: 1,
    stderr:
      'burrow-relay: --sub must be 1-128 characters of letters, digits and . _ : @ - (got "home cluster")\n',
  });
  t.same(await create('--sub', 'a', '--hosts', 'a.example.com,App.example.com'), {
    code: 1,
    stderr: 'burrow-relay: --hosts: hostname "App.example.com" must be lower case\n',
  });
  t.same(await create('--sub', 'a', '--hosts', '*'), {
    code: 1,
    stderr:
      'burrow-relay: --hosts: "*": a wildcard is only allowed as the whole first label ("*.example.com")\n',
  });
});

t.test('keygen where it cannot write: one line naming --out and the path, exit 1', async (t) => {
  const dir = await tempDir(t, 'burrow-keygen-denied-');
  const existing = join(dir, 'existing');
  await mkdir(existing);
  // As a user who cannot write there: root writes anywhere, so then run as nobody.
  let uid: number | undefined;
  if (process.getuid?.() === 0) {
    await chmod(dir, 0o755);
    uid = 65534;
  } else {
    await chmod(existing, 0o555);
    await chmod(dir, 0o555);
    t.teardown(() => Promise.all([chmod(dir, 0o755), chmod(existing, 0o755)]));
  }
  const denied = "EACCES: permission denied; run as the directory's owner or root";
  t.same(await failing(RELAY_CLI, ['keygen', '--out', join(dir, 'keys')], {}, uid), {
    code: 1,
    stderr: `burrow-relay: --out: cannot write ${join(dir, 'keys')} (${denied})\n`,
  });
  t.same(await failing(RELAY_CLI, ['keygen', '--out', existing], {}, uid), {
    code: 1,
    stderr: `burrow-relay: --out: cannot write ${join(existing, 'signing.key')} (${denied})\n`,
  });
});

t.test('keygen replaces no file of a pair without --force, signing.pub alone included', async (t) => {
  const dir = await tempDir(t, 'burrow-keygen-pub-');
  // As install.md suggests: signing.key moved off the relay's machine, signing.pub left.
  await run(process.execPath, [RELAY_CLI, 'keygen', '--out', dir]);
  await rm(join(dir, 'signing.key'));
  const pub = await readFile(join(dir, 'signing.pub'), 'utf8');
  t.same(await failing(RELAY_CLI, ['keygen', '--out', dir]), {
    code: 1,
    stderr: `burrow-relay: ${join(dir, 'signing.pub')} already exists; pass --force to replace the pair (existing tokens stop verifying)\n`,
  });
  t.equal(await readFile(join(dir, 'signing.pub'), 'utf8'), pub, 'the public key is as it was');
  await t.rejects(stat(join(dir, 'signing.key')), { code: 'ENOENT' }, 'and no new private key was written');
  // --out naming a file, or nothing: one line.
  t.same(await failing(RELAY_CLI, ['keygen', '--out', join(dir, 'signing.pub')]), {
    code: 1,
    stderr: `burrow-relay: --out: cannot write ${join(dir, 'signing.pub')} (EEXIST: a file stands where a directory should, or appeared meanwhile)\n`,
  });
  t.same(await failing(RELAY_CLI, ['keygen', '--out', '']), {
    code: 1,
    stderr: 'burrow-relay: --out: needs a directory\n',
  });
});

t.test('a key or certificate option naming an endless file: one line, not all the memory', async (t) => {
  const dir = await tempDir(t, 'burrow-endless-');
  await run(process.execPath, [RELAY_CLI, 'keygen', '--out', dir]);
  const over = (flag: string) =>
    `burrow-relay: --${flag}: /dev/zero is over 1048576 bytes; is it the right file?\n`;
  const serve = ['serve', ...LOOPBACK_SERVE];
  t.same(await failing(RELAY_CLI, [...serve, '--verify-key', '/dev/zero']), {
    code: 1,
    stderr: over('verify-key'),
  });
  t.same(
    await failing(RELAY_CLI, [
      ...serve.slice(0, -2),
      ...['--tls-listen', '127.0.0.1:0', '--verify-key', dir, '--cert-file', '/dev/zero'],
      ...['--key-file', join(dir, 'signing.key')],
    ]),
    { code: 1, stderr: over('cert-file') },
  );
  t.same(
    await failing(RELAY_CLI, [
      'token',
      'create',
      '--key',
      '/dev/zero',
      '--sub',
      'a',
      '--hosts',
      'a.example.com',
    ]),
    {
      code: 1,
      stderr:
        'burrow-relay: --key: cannot read /dev/zero (EFBIG: over 1048576 bytes; is it the right file?)\n',
    },
  );
});

t.test('--help answers even when the environment holds a mistake', async (t) => {
  const env = {
    PATH: process.env['PATH'],
    BURROW_NO_HTTPS_REDIRECT: 'yes',
    BURROW_CONNECTIONS: '99',
    BURROW_TTL: 'soon',
  };
  for (const [cli, argv, usage] of [
    [RELAY_CLI, ['serve', '--help'], /^Usage: burrow-relay serve/],
    [RELAY_CLI, ['keygen', '--help'], /^Usage: burrow-relay keygen/],
    [RELAY_CLI, ['token', 'create', '--help'], /^Usage: burrow-relay token create/],
    [AGENT_CLI, ['--help'], /^burrow-agent — /],
  ] as const) {
    const { stdout } = await run(process.execPath, [cli, ...argv], { env });
    t.match(stdout, usage, argv.join(' '));
  }
});

t.test('--version prints the package version, and the top-level help says so', async (t) => {
  const { version } = JSON.parse(
    await readFile(new URL('../../packages/relay/package.json', import.meta.url), 'utf8'),
  );
  t.equal((await run(process.execPath, [RELAY_CLI, '--version'])).stdout, `burrow-relay ${version}\n`);
  t.match(
    (await run(process.execPath, [RELAY_CLI, '--help'])).stdout,
    /^ {2}burrow-relay --version +print the version and exit$/m,
  );
});
