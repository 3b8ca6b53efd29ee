import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdir, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { formatHelp, parseOptions } from '@burrow/shared';
import t from 'tap';
import { tempDir } from '../../../test/helpers/fs.js';
import { AGENT_OPTIONS, agentOptionsFrom } from '../src/config.js';
import { fakeRelay } from './helpers/fake-relay.js';

const CLI = join(dirname(fileURLToPath(import.meta.url)), '..', 'dist', 'cli.js');
const run = promisify(execFile);
const TOKEN = 'eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ0ZXN0In0.c2VjcmV0LXNpZ25hdHVyZQ';

function parse(argv: string[], env: NodeJS.ProcessEnv = {}) {
  const { values, sources } = parseOptions(AGENT_OPTIONS, argv, env);
  return agentOptionsFrom(values, env, sources);
}

t.test('--help lists every option with its environment variable and default', async (t) => {
  const help = formatHelp('usage', AGENT_OPTIONS);
  for (const spec of AGENT_OPTIONS) {
    t.match(help, `--${spec.name}`, `--${spec.name} is in --help`);
    if (spec.env) t.match(help, `env ${spec.env}`, `${spec.env} is in --help`);
    if (spec.default !== undefined)
      t.match(help, `default ${String(spec.default)}`, `default of --${spec.name}`);
    t.ok(spec.description.length > 10, `--${spec.name} is described`);
  }
  const { stdout } = await run(process.execPath, [CLI, '--help']);
  t.equal(stdout.trimEnd(), (await run(process.execPath, [CLI, '-h'])).stdout.trimEnd());
  for (const spec of AGENT_OPTIONS) t.match(stdout, `--${spec.name}`);
  t.match((await run(process.execPath, [CLI, '--version'])).stdout, /^burrow-agent \d+\.\d+\.\d+\n$/);
});

t.test('a complete configuration from flags, a token file and a routes file', async (t) => {
  const dir = await tempDir(t, 'burrow-agent-');
  await writeFile(join(dir, 'token'), `${TOKEN}\n`);
  await writeFile(
    join(dir, 'routes.yaml'),
    'routes:\n  - hostnames: [b.example.com]\n    target: http://127.0.0.1:2\n',
  );
  const { options, logLevel } = await parse([
    '--relay',
    'wss://relay.example.com:8443',
    '--token-file',
    join(dir, 'token'),
    '--expose',
    'a.example.com=http://127.0.0.1:1',
    '--routes',
    join(dir, 'routes.yaml'),
    '--connections',
    '3',
    '--keepalive-interval',
    '5s',
    '--drain-timeout',
    '1m',
    '--stream-idle-timeout',
    '0',
    '--connect-timeout',
    '250ms',
    '--log-level',
    'debug',
  ]);
  t.equal(logLevel, 'debug');
  const token = options.token;
  t.type(token, 'function', 'a token file is read again at each connection attempt');
  const read = token as () => string;
  t.equal(read(), TOKEN, 'token read from the file, trimmed');
  await writeFile(join(dir, 'token'), `${TOKEN}.rotated\n`);
  t.equal(read(), `${TOKEN}.rotated`, 'a rotated file is read afresh');
  await writeFile(join(dir, 'token'), 'not a token\n');
  t.throws(read, { code: 'BURROW_ERR_CONFIG', message: /not a bearer token/ }, 'a broken file is an error');
  t.same(options, {
    relayUrl: 'wss://relay.example.com:8443',
    token: read,
    routes: [
      { id: 'static:a.example.com', hostnames: ['a.example.com'], target: 'http://127.0.0.1:1' },
      { id: 'static:b.example.com', hostnames: ['b.example.com'], target: 'http://127.0.0.1:2' },
    ],
    connections: 3,
    connectTimeout: 250,
    session: { keepaliveInterval: 5_000, streamIdleTimeout: 0, drainTimeout: 60_000 },
  });
});

t.test('environment variables, and the token straight from BURROW_TOKEN or a named variable', async (t) => {
  const env = {
    BURROW_RELAY_URL: 'ws://127.0.0.1:8443',
    BURROW_TOKEN: TOKEN,
    BURROW_EXPOSE: 'a.example.com,b.example.com=http://127.0.0.1:1',
  };
  const { options } = await parse([], env);
  t.equal(options.token, TOKEN);
  t.same(options.routes, [
    {
      id: 'static:a.example.com',
      hostnames: ['a.example.com', 'b.example.com'],
      target: 'http://127.0.0.1:1',
    },
  ]);
  t.equal(options.connections, 2, 'default');
  t.same(
    options.session,
    { keepaliveInterval: 20_000, streamIdleTimeout: 15 * 60_000, drainTimeout: 30_000 },
    'defaults',
  );
  const named = await parse(['--token-env-var', 'AGENT_SECRET'], {
    ...env,
    BURROW_TOKEN: '',
    AGENT_SECRET: TOKEN,
  });
  t.equal(named.options.token, TOKEN);
});

t.test('--kubernetes with a holds key file, read again when it changes', async (t) => {
  const dir = await tempDir(t, 'burrow-agent-');
  const file = join(dir, 'holds-key');
  await writeFile(file, `${'ab'.repeat(32)}\n`);
  const { kubernetes } = await parse(['--kubernetes', '--holds-key-file', file], {
    BURROW_RELAY_URL: 'ws://127.0.0.1:8443',
    BURROW_TOKEN: TOKEN,
  });
  t.equal(kubernetes?.holdsKey?.(), 'ab'.repeat(32), 'trimmed');
  await writeFile(file, 'cd'.repeat(32));
  t.equal(kubernetes?.holdsKey?.(), 'cd'.repeat(32), 'a changed file is read again');
  const without = await parse(['--kubernetes'], {
    BURROW_RELAY_URL: 'ws://127.0.0.1:8443',
    BURROW_TOKEN: TOKEN,
  });
  t.equal(without.kubernetes?.holdsKey, undefined, 'optional');
});

t.test(
  'the holds key is read once while its file is unchanged, and again once a Secret volume rotates it',
  async (t) => {
    const shared = await import('@burrow/shared');
    const reads: string[] = [];
    const { holdsKeyFile } = await t.mockImport<typeof import('../src/token.js')>('../src/token.js', {
      '@burrow/shared': {
        ...shared,
        readOptionFileSync: (flag: string, file: string) => {
          reads.push(file);
          return shared.readOptionFileSync(flag, file);
        },
      },
    });
    // A Secret volume as the kubelet lays it out: holds-key -> ..data/holds-key, ..data -> ..v1.
    const dir = await tempDir(t, 'burrow-agent-holds-');
    const version = async (name: string, key: string) => {
      await mkdir(join(dir, name));
      await writeFile(join(dir, name, 'holds-key'), key);
    };
    await version('..v1', 'ab'.repeat(32));
    await symlink('..v1', join(dir, '..data'));
    await symlink(join('..data', 'holds-key'), join(dir, 'holds-key'));
    // A clock a minute ahead: the files count as settled (a file changed lately is read each time).
    const key = holdsKeyFile(join(dir, 'holds-key'), () => Date.now() + 60_000);
    t.equal(key(), 'ab'.repeat(32));
    t.equal(key(), 'ab'.repeat(32));
    t.equal(reads.length, 1, 'read once while unchanged');

    // The kubelet's update: the new files in a directory of their own, ..data swapped to it by a
    // rename, the old directory removed. The new key is as long as the old one.
    await version('..v2', 'cd'.repeat(32));
    await symlink('..v2', join(dir, '..data_tmp'));
    await rename(join(dir, '..data_tmp'), join(dir, '..data'));
    await rm(join(dir, '..v1'), { recursive: true });
    t.equal(key(), 'cd'.repeat(32), 'the rotated key is read');
    t.equal(key(), 'cd'.repeat(32));
    t.equal(reads.length, 2, 'once');
  },
);

t.test('an edit in place within the file system time granularity is not missed', async (t) => {
  // A file system whose times have whole seconds (ext4 with 128-byte inodes, vfat, some NFS
  // servers), or the clock tick of a kernel before 6.13: two edits of the same size in that time
  // leave the file's identity as it was.
  const fs = await import('node:fs');
  const { holdsKeyFile } = await t.mockImport<typeof import('../src/token.js')>('../src/token.js', {
    'node:fs': {
      ...fs,
      statSync: (file: string, opts: { bigint: true }) => {
        const s = fs.statSync(file, opts);
        const second = (ns: bigint) => (ns / 1_000_000_000n) * 1_000_000_000n;
        return Object.assign(s, { mtimeNs: second(s.mtimeNs), ctimeNs: second(s.ctimeNs) });
      },
    },
  });
  const dir = await tempDir(t, 'burrow-agent-holds-');
  const file = join(dir, 'holds-key');
  let stale = 0;
  for (let i = 0; i < 20; i++) {
    await writeFile(file, 'ab'.repeat(32));
    const key = holdsKeyFile(file);
    t.equal(key(), 'ab'.repeat(32));
    await writeFile(file, 'cd'.repeat(32)); // the same size, the same inode, most likely the same second
    if (key() !== 'cd'.repeat(32)) stale++;
  }
  t.equal(stale, 0, 'the new key is read every time');
});

t.test('operator mistakes: one line naming the option, and never the token', async (t) => {
  const dir = await tempDir(t, 'burrow-agent-');
  const tokenFile = join(dir, 'token');
  await writeFile(tokenFile, TOKEN);
  const caFile = join(dir, 'ca.pem');
  await writeFile(caFile, '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n');
  const holdsFile = join(dir, 'holds-key');
  await writeFile(holdsFile, `${'ab'.repeat(32)}\n`);
  const shortHoldsFile = join(dir, 'short-holds-key');
  await writeFile(shortHoldsFile, 'abcd1234\n');
  const base = [
    '--relay',
    'ws://127.0.0.1:1',
    '--token-file',
    tokenFile,
    '--expose',
    'a.example.com=http://127.0.0.1:1',
  ];
  const cases: Array<[string[], NodeJS.ProcessEnv, RegExp]> = [
    [base.slice(2), {}, /^--relay is required/],
    [
      ['--relay', 'https://relay.example.com', ...base.slice(2)],
      {},
      /^--relay must be ws:\/\/HOST:PORT or wss:\/\/HOST:PORT \(use wss:\/\/\) \(got "https:\/\/relay\.example\.com"\)$/,
    ],
    [
      ['--relay', 'https://admin:hunter2@relay.example.com', ...base.slice(2)],
      {},
      /^--relay must be ws:\/\/HOST:PORT or wss:\/\/HOST:PORT \(use wss:\/\/\) \(got "https:\/\/…@relay\.example\.com\/"\)$/,
    ],
    [
      ['--relay', 'wss://admin:hunter2@relay.example.com', ...base.slice(2)],
      {},
      /^--relay must not contain credentials: the token goes in --token-file$/,
    ],
    [
      ['--relay', 'wss://relay.example.com/?token=hunter2', ...base.slice(2)],
      {},
      /^--relay must not have a query or fragment \(got "wss:\/\/relay\.example\.com\/\?…"\)$/,
    ],
    [
      ['--relay', 'not a url', ...base.slice(2)],
      {},
      /^--relay must be ws:\/\/HOST:PORT .*\(got "not a url"\)$/,
    ],
    [
      ['--relay', 'wss://tok:sek/rit@h:99999', ...base.slice(2)],
      {},
      /^--relay must be ws:\/\/HOST:PORT .*\(got "wss:\/\/…@h:99999"\)$/,
    ],
    [
      ['--relay', 'WS://127.0.0.1:1', ...base.slice(2), '--relay-ca', caFile],
      {},
      /^--relay-ca needs a wss:\/\/ relay URL/,
    ],
    [[...base, '--namespaces', 'prod'], {}, /^--namespaces applies with --kubernetes only/],
    [[...base], { BURROW_LABEL_SELECTOR: 'expose=true' }, /^--label-selector applies with --kubernetes only/],
    [[...base.slice(0, 2), ...base.slice(4)], {}, /^no agent token: pass --token-file FILE/],
    [
      [...base.slice(0, 2), '--token-file', join(dir, 'nope'), ...base.slice(4)],
      {},
      /^--token-file: cannot read .*nope \(ENOENT\)$/,
    ],
    [[...base.slice(0, 4)], {}, /^no routes: pass --expose HOST=URL/],
    [
      // A flag without its target is not glued to the next flag's route (it would serve that target).
      [
        ...base.slice(0, 4),
        '--expose',
        'admin.example.com',
        '--expose',
        'public.example.com=http://127.0.0.1:9',
      ],
      {},
      /^--expose "admin\.example\.com": expected HOST=URL/,
    ],
    [[...base, '--connections', '0'], {}, /^--connections must be an integer from 1 to 64/],
    [[...base, '--connections', '0x4'], {}, /^--connections must be an integer from 1 to 64 \(got "0x4"\)/],
    [[...base], { BURROW_CONNECTIONS: '1e1' }, /connections must be an integer from 1 to 64 \(got "1e1"\)/],
    [[...base, '--keepalive-interval', 'soon'], {}, /^--keepalive-interval: "soon" is not a duration/],
    [
      [...base],
      { BURROW_STREAM_IDLE_TIMEOUT: '10ms' },
      /^--stream-idle-timeout must be 0 \(never\) or at least 1s \(got "10ms"\)$/,
    ],
    [[...base, '--connect-timeout', '10'], {}, /^--connect-timeout: "10" needs a unit: ms, s, m, h or d$/],
    [
      [...base, '--drain-timeout', '-5s'],
      {},
      /^Option '--drain-timeout' argument is ambiguous\. [^\n]*\(see --help\)$/,
    ],
    [['extra', ...base], {}, /^unexpected argument "extra" \(see --help\)$/],
    [
      [...base, 'routes.yaml'],
      {},
      /^unexpected argument "routes.yaml" \(did you mean --routes routes.yaml\?\)$/,
    ],
    [[...base, '--log-level', 'loud'], {}, /^--log-level must be one of/],
    [
      [...base.slice(0, 4), '--kubernetes', '--lease-name', 'Shop_Writer'],
      {},
      /^--lease-name: "Shop_Writer" is not a Kubernetes object name/,
    ],
    [[...base, '--holds-key-file', holdsFile], {}, /^--holds-key-file applies with --kubernetes only/],
    [
      [...base.slice(0, 4), '--kubernetes', '--holds-key-file', shortHoldsFile],
      {},
      /^--holds-key-file .*short-holds-key holds 8 characters; a holds key needs 32 or more \(make one with: openssl rand -hex 32\)$/,
    ],
    [
      [...base.slice(0, 4), '--kubernetes'],
      { BURROW_HOLDS_KEY_FILE: join(dir, 'nope') },
      /^--holds-key-file: cannot read .*nope \(ENOENT\)$/,
    ],
    [
      [...base, '--relay-ca', caFile],
      {},
      /^--relay-ca needs a wss:\/\/ relay URL \(got "ws:\/\/127.0.0.1:1"\)/,
    ],
    [
      [...base, '--expose', 'a.example.com=http://127.0.0.1:2'],
      {},
      /^--expose "a.example.com=http:\/\/127.0.0.1:2": hostname "a.example.com" is already exposed by --expose/,
    ],
    [
      [...base.slice(0, 2), ...base.slice(4)],
      { BURROW_TOKEN: `${TOKEN} trailing words` },
      /^the token in environment variable BURROW_TOKEN is not a bearer token/,
    ],
  ];
  for (const [argv, env, message] of cases) {
    // parseOptions throws at once (unknown flags, stray arguments); the rest rejects.
    const err = await Promise.resolve()
      .then(() => parse(argv, env))
      .then(
        () => undefined,
        (e: Error) => e,
      );
    t.match(err, { code: 'BURROW_ERR_CONFIG', message }, String(message));
    t.notMatch(err?.message ?? '', TOKEN.slice(10, 30), 'the token is not in the message');
  }
  await writeFile(tokenFile, '');
  await t.rejects(parse(base), { message: /^the token in --token-file .* is empty$/ });
  t.throws(() => parseOptions(AGENT_OPTIONS, ['--bogus']), { code: 'BURROW_ERR_CONFIG', message: /--bogus/ });
});

t.test('--token-file is read up to 1 MiB: a wrong path cannot fill the memory', async (t) => {
  const dir = await tempDir(t, 'burrow-agent-token-size-');
  const file = join(dir, 'big');
  // Characters a bearer token may hold, so only its size can tell it is the wrong file.
  await writeFile(file, 'a'.repeat(2 * 1024 * 1024));
  await t.rejects(
    parse([
      '--relay',
      'ws://127.0.0.1:1',
      '--token-file',
      file,
      '--expose',
      'a.example.com=http://127.0.0.1:2',
    ]),
    {
      code: 'BURROW_ERR_CONFIG',
      message: `--token-file: ${file} is over 1048576 bytes; is it the right file?`,
    },
  );
});

t.test('the binary: a config error is one line on stderr and exit 1', async (t) => {
  const err = await run(process.execPath, [CLI], { env: { PATH: process.env['PATH'] } }).catch((e) => e);
  t.equal(err.code, 1);
  t.equal(err.stderr, 'burrow-agent: --relay is required (e.g. --relay wss://relay.example.com:8443)\n');
});

t.test('the binary: connects, logs JSON without the token, drains on SIGTERM and exits 0', async (t) => {
  const relay = await fakeRelay(t);
  const child = spawn(
    process.execPath,
    [CLI, '--relay', relay.url, '--expose', 'app.example.com=http://127.0.0.1:9', '--connections', '1'],
    { env: { PATH: process.env['PATH'], BURROW_TOKEN: TOKEN }, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const exited = once(child, 'exit');
  t.teardown(() => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  const lines: Array<Record<string, unknown>> = [];
  const raw: string[] = [];
  const active = new Promise<void>((resolve) => {
    createInterface({ input: child.stdout! }).on('line', (line) => {
      raw.push(line);
      const parsed = JSON.parse(line) as Record<string, unknown>;
      lines.push(parsed);
      if (parsed['msg'] === 'route active') resolve();
    });
  });
  const [authorization] = await once(relay, 'attempt');
  t.equal(authorization, `Bearer ${TOKEN}`, 'the token goes to the relay');
  await active;
  t.ok(lines.some((l) => l['msg'] === 'tunnel connected' && l['name'] === 'burrow-agent'));
  child.kill('SIGTERM');
  const [code] = await exited;
  t.equal(code, 0, 'exit 0 after draining');
  t.ok(lines.some((l) => l['msg'] === 'agent stopped'));
  t.notMatch(raw.join('\n'), TOKEN.slice(10, 30), 'the token never reaches the log');
});
