// The relay binary as an operator runs it: keygen, token create, serve, and a
// SIGTERM that lets in-flight downloads finish before exiting 0.
import { execFile } from 'node:child_process';
import { once } from 'node:events';
import { stat, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { decodeJwt } from 'jose';
import t from 'tap';
import { testAgent } from '../helpers/agent.js';
import { deferred } from '../helpers/deferred.js';
import { tempDir } from '../helpers/fs.js';
import { testServer } from '../helpers/http.js';
import { AGENT_CLI, listeningPorts, RELAY_CLI, spawnLogged } from '../helpers/proc.js';

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

t.test('an address already in use: one line naming it, exit 1, for relay and agent', async (t) => {
  const busy = await testServer(t, (_req, res) => res.end());
  const where = `127.0.0.1:${busy.port}`;
  const dir = await tempDir(t, 'burrow-busy-');
  await run(process.execPath, [RELAY_CLI, 'keygen', '--out', join(dir, 'keys')]);
  const relay = await run(process.execPath, [
    RELAY_CLI,
    'serve',
    '--verify-key',
    join(dir, 'keys'),
    '--tls-listen',
    'off',
    '--http-listen',
    where,
  ]).catch((e) => e);
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
