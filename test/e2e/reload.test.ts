// Hot reload of the real relay binary under a steady request loop: SIGHUP and
// file changes reload keys, the revocation list and the admin token; options
// that need a restart keep their running value; a broken config is logged and
// the relay stays up. Not one request of the loop may fail.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { Agent as HttpAgent } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createAgentToken, generateSigningKeyPair, loadSigningKey } from '@burrow/shared';
import t from 'tap';
import { stringify } from 'yaml';
import { testAgent } from '../helpers/agent.js';
import { get, testServer } from '../helpers/http.js';
import { RELAY_CLI, spawnLogged } from '../helpers/proc.js';
import { testKeys, tokenFor } from '../helpers/relay.js';
import { attempt } from '../helpers/tunnel-client.js';

type Line = Record<string, unknown>;

function jtiOf(token: string): string {
  return JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString('utf8')).jti;
}

t.test('SIGHUP and file changes reload without failing a request', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'burrow-reload-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const keysDir = join(dir, 'keys');
  await import('node:fs/promises').then((fs) => fs.mkdir(keysDir));
  await writeFile(join(keysDir, 'a.pub'), (await testKeys()).publicPem);
  const adminFile = join(dir, 'admin.token');
  const revokedFile = join(dir, 'revoked.txt');
  const configFile = join(dir, 'relay.yaml');
  const adminToken = 'first-admin-token-0123456789';
  await writeFile(adminFile, `${adminToken}\n`);
  await writeFile(revokedFile, '# nothing revoked yet\n');
  const config = {
    'http-listen': '127.0.0.1:0',
    'tunnel-listen': '127.0.0.1:0',
    'admin-listen': '127.0.0.1:0',
    'verify-key': [keysDir],
    'revoked-tokens': revokedFile,
    'admin-token-file': adminFile,
    'drain-timeout': '5s',
  };
  await writeFile(configFile, stringify(config));

  const relay = spawnLogged(t, RELAY_CLI, ['serve', '--config', configFile]);
  const listening = await relay.waitFor((l) => l['msg'] === 'relay listening');
  const httpPort = (listening['http'] as { port: number }).port;
  const tunnelPort = (listening['tunnel'] as { port: number }).port;
  const adminPort = (listening['admin'] as { port: number }).port;
  /** The next log line matching `pred` that comes after everything seen so far. */
  const next = (pred: (l: Line) => boolean) => {
    const seen = relay.lines.length;
    return relay.waitFor((l) => relay.lines.indexOf(l) >= seen && pred(l));
  };
  const admin = (path: string, token: string) =>
    fetch(`http://127.0.0.1:${adminPort}${path}`, { headers: { authorization: `Bearer ${token}` } });

  let release!: () => void;
  const held = new Promise<void>((r) => (release = r));
  let arrived!: () => void;
  const heldArrived = new Promise<void>((r) => (arrived = r));
  const backend = await testServer(t, (req, res) => {
    req.resume();
    req.on('end', () => {
      if (req.url === '/held') {
        arrived();
        held.then(() => res.end('held to the end'));
      } else res.end(`ok ${req.url}`);
    });
  });
  const tunnel = `ws://127.0.0.1:${tunnelPort}`;
  await testAgent(t, tunnel, [{ id: 'steady', hostnames: ['steady.reload.test'], target: backend.url }], {
    sub: 'steady',
  });
  const doomedToken = await tokenFor('doomed', ['doomed.reload.test']);
  const doomed = await testAgent(
    t,
    tunnel,
    [{ id: 'doomed', hostnames: ['doomed.reload.test'], target: backend.url }],
    { token: doomedToken, connections: 1 },
  );

  // The steady load: two keep-alive clients, each one request after another,
  // bounded in count; it runs until the test has finished reloading.
  let stop = false;
  let sent = 0;
  const failures: string[] = [];
  const keepAlive = new HttpAgent({ keepAlive: true, maxSockets: 2 });
  t.teardown(() => keepAlive.destroy());
  const loop = async (n: number) => {
    for (let i = 0; !stop && i < 20_000; i++) {
      const path = `/loop${n}/${i}`;
      try {
        const r = await get(httpPort, 'steady.reload.test', path, { agent: keepAlive });
        if (r.status !== 200 || r.body.toString() !== `ok ${path}`) failures.push(`${path}: ${r.status}`);
      } catch (err) {
        failures.push(`${path}: ${(err as Error).message}`);
      }
      sent++;
    }
  };
  const loops = Promise.all([loop(1), loop(2)]);

  // 1. SIGHUP with a new verify key dropped next to the first.
  const pair = await generateSigningKeyPair();
  await writeFile(join(keysDir, 'b.pub'), pair.publicPem);
  const newKeyToken = await createAgentToken(await loadSigningKey(pair.privatePem), {
    sub: 'new-key',
    hosts: ['new.reload.test'],
    ttl: 60_000,
  });
  t.equal(
    (await attempt(`ws://127.0.0.1:${tunnelPort}`, newKeyToken)).status,
    401,
    'the new key is not trusted yet',
  );
  // A request in flight across the reload.
  const inFlight = get(httpPort, 'steady.reload.test', '/held');
  await heldArrived;
  let reloaded = next((l) => l['msg'] === 'config reloaded');
  relay.child.kill('SIGHUP');
  t.match(await reloaded, { trigger: 'SIGHUP', verifyKeys: 2 });
  release();
  t.same(
    (await inFlight).body.toString(),
    'held to the end',
    'a request in flight during the reload finished',
  );
  t.equal(
    (await attempt(`ws://127.0.0.1:${tunnelPort}`, newKeyToken)).status,
    101,
    'tokens of the new key verify',
  );

  // 2. The config file changes an option that needs a restart, and the log level.
  const restart = next((l) => l['msg'] === 'option changed but needs restart; keeping the running value');
  reloaded = next((l) => l['msg'] === 'config reloaded');
  await writeFile(configFile, stringify({ ...config, 'http-listen': '127.0.0.1:1', 'log-level': 'debug' }));
  t.match(await restart, { option: 'http-listen', running: '127.0.0.1:0', configured: '127.0.0.1:1' });
  t.match(await reloaded, { trigger: 'file changed', needsRestart: ['http-listen'] });

  // 3. A broken file: logged, the running configuration stays, the relay stays up.
  const failed = next((l) => l['msg'] === 'config reload failed; keeping the running configuration');
  await writeFile(configFile, 'http-listen: [unclosed\n');
  t.match(await failed, { trigger: 'file changed', reason: /not valid YAML/ });
  const invalid = next((l) => l['msg'] === 'config reload failed; keeping the running configuration');
  await writeFile(configFile, stringify({ ...config, 'drain-timeout': 'soon' }));
  t.match(await invalid, { reason: /--drain-timeout/ });
  t.equal((await admin('/api/stats', adminToken)).status, 200, 'still serving the admin API');
  reloaded = next((l) => l['msg'] === 'config reloaded');
  await writeFile(configFile, stringify(config));
  await reloaded;

  // 4. The revocation list names the doomed agent's token: only it goes.
  const revokedLine = next((l) => l['msg'] === 'config reloaded');
  const doomedDown = new Promise((resolve) => doomed.once('disconnected', (_i, reason) => resolve(reason)));
  await writeFile(revokedFile, `# revoked after a leak\n${jtiOf(doomedToken)}\n`);
  t.match(await revokedLine, { revokedTokens: 1, revokedConnections: 1 });
  t.match(await doomedDown, /TokenRevoked/);
  t.same(await attempt(`ws://127.0.0.1:${tunnelPort}`, doomedToken), { status: 401, body: 'token revoked' });

  // 5. A new admin token in its file: the old one stops working.
  reloaded = next((l) => l['msg'] === 'config reloaded');
  await writeFile(adminFile, 'second-admin-token-0123456789\n');
  await reloaded;
  t.equal((await admin('/api/stats', adminToken)).status, 401);
  const stats = await admin('/api/stats', 'second-admin-token-0123456789');
  t.equal(stats.status, 200);
  const metrics = await (await admin('/metrics', 'second-admin-token-0123456789')).text();
  t.match(metrics, /^burrow_relay_config_reloads_total\{result="failure"\} 2$/m);

  stop = true;
  await loops;
  t.ok(sent > 0, `${sent} requests during the reloads`);
  t.same(failures, [], 'no request failed');
  const all = relay.lines.map((l) => JSON.stringify(l)).join('\n');
  t.notMatch(all, adminToken, 'the admin token never reaches the log');
  t.notMatch(all, 'second-admin-token', 'nor the new one');

  relay.child.kill('SIGTERM');
  t.equal(await relay.exited, 0);
});
