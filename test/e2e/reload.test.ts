// Hot reload of the real relay binary under a steady request loop: SIGHUP and
// file changes reload keys, the revocation list and the admin token; options
// that need a restart keep their running value; a broken config is logged and
// the relay stays up. Not one request of the loop may fail.
import { X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import { copyFile, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import { startAgent } from '@burrow/agent';
import { createAgentToken, generateSigningKeyPair, loadSigningKey } from '@burrow/shared';
import { decodeJwt } from 'jose';
import t from 'tap';
import { stringify } from 'yaml';
import { testAgent } from '../helpers/agent.js';
import { deferred } from '../helpers/deferred.js';
import { tempDir } from '../helpers/fs.js';
import { get, testServer } from '../helpers/http.js';
import { requestLoop } from '../helpers/load.js';
import { listeningPorts, RELAY_CLI, spawnLogged } from '../helpers/proc.js';
import { testKeys, testLogger, tokenFor } from '../helpers/relay.js';
import { testPki } from '../helpers/tls.js';
import { attempt } from '../helpers/tunnel-client.js';

type Line = Record<string, unknown>;

t.test('SIGHUP and file changes reload without failing a request', async (t) => {
  const dir = await tempDir(t, 'burrow-reload-');
  const keysDir = join(dir, 'keys');
  await import('node:fs/promises').then((fs) => fs.mkdir(keysDir));
  await writeFile(join(keysDir, 'a.pub'), (await testKeys()).publicPem);
  const adminFile = join(dir, 'admin.token');
  const revokedFile = join(dir, 'revoked.txt');
  const configFile = join(dir, 'relay.yaml');
  const adminToken = 'first-admin-token-0123456789';
  await writeFile(adminFile, `${adminToken}\n`);
  await writeFile(revokedFile, ''); // as `touch` makes it: nothing revoked yet
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
  const { http: httpPort, tunnel: tunnelPort, admin: adminPort } = await listeningPorts(relay);
  /** The next log line matching `pred` that comes after everything seen so far. */
  const next = (pred: (l: Line) => boolean) => {
    const seen = relay.lines.length;
    return relay.waitFor((l) => relay.lines.indexOf(l) >= seen && pred(l));
  };
  const admin = (path: string, token: string) =>
    fetch(`http://127.0.0.1:${adminPort}${path}`, { headers: { authorization: `Bearer ${token}` } });

  const held = deferred();
  const heldArrived = deferred();
  const backend = await testServer(t, (req, res) => {
    req.resume();
    req.on('end', () => {
      if (req.url === '/held') {
        heldArrived.resolve();
        held.promise.then(() => res.end('held to the end'));
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
  const loop = requestLoop(t, httpPort, 'steady.reload.test', {
    workers: 2,
    max: 40_000,
    keepAlive: true,
    path: (n) => `/loop/${n}`,
    body: (path) => `ok ${path}`,
  });

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
  await heldArrived.promise;
  let reloaded = next((l) => l['msg'] === 'config reloaded');
  relay.child.kill('SIGHUP');
  t.match(await reloaded, { trigger: 'SIGHUP', verifyKeys: 2 });
  held.resolve();
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
  // A mistake in an option that needs a restart: said, and the rest applies.
  const PARTLY =
    'config has a mistake in an option that needs a restart (a restart would fail on it); applying the rest';
  let partly = next((l) => l['msg'] === PARTLY);
  reloaded = next((l) => l['msg'] === 'config reloaded');
  await writeFile(configFile, stringify({ ...config, 'drain-timeout': 'soon' }));
  t.match(await partly, { reason: /relay\.yaml: "drain-timeout": "soon" is not a duration/ });
  await reloaded;
  t.equal((await admin('/api/stats', adminToken)).status, 200, 'still serving the admin API');

  // 4. The revocation list names the doomed agent's token: only it goes, though the mistake is
  // still in the file.
  // (A write may be seen half done first: the line that counts is the one with the id.)
  const revokedLine = next((l) => l['msg'] === 'config reloaded' && l['revokedTokens'] === 1);
  partly = next((l) => l['msg'] === PARTLY);
  const doomedDown = new Promise((resolve) => doomed.once('disconnected', (_i, reason) => resolve(reason)));
  await writeFile(revokedFile, `# revoked after a leak\n${decodeJwt(doomedToken).jti}\n`);
  await partly;
  t.match(await revokedLine, { revokedTokens: 1, revokedConnections: 1 });
  t.match(await doomedDown, /TokenRevoked/);
  t.same(await attempt(`ws://127.0.0.1:${tunnelPort}`, doomedToken), { status: 401, body: 'token revoked' });
  reloaded = next((l) => l['msg'] === 'config reloaded');
  await writeFile(configFile, stringify(config));
  await reloaded;

  // The list read empty while a token is revoked (a file caught mid-rewrite): the list in force stays.
  const KEPT = 'revocation list not reloaded; keeping the running one and applying the rest';
  let kept = next((l) => l['msg'] === KEPT);
  await writeFile(revokedFile, '');
  await kept;
  t.same(await attempt(`ws://127.0.0.1:${tunnelPort}`, doomedToken), { status: 401, body: 'token revoked' });

  // 5. A new admin token in its file: the old one stops working (the rest of a reload applies while
  // the revocation list is still empty).
  reloaded = next((l) => l['msg'] === 'config reloaded');
  kept = next((l) => l['msg'] === KEPT);
  await writeFile(adminFile, 'second-admin-token-0123456789\n');
  await kept;
  await reloaded;
  t.equal((await admin('/api/stats', adminToken)).status, 401);
  const stats = await admin('/api/stats', 'second-admin-token-0123456789');
  t.equal(stats.status, 200);
  const metrics = await (await admin('/metrics', 'second-admin-token-0123456789')).text();
  // The broken YAML, the mistake, each reload while it stayed, and the two with the list read
  // empty: at least five, a few more where a write is seen half done first.
  const failures = Number(
    /^burrow_relay_config_reloads_total\{result="failure"\} (\d+)$/m.exec(metrics)?.[1],
  );
  t.ok(failures >= 5 && failures <= 10, `failed reloads counted (${failures})`);

  await loop.stop();
  t.ok(loop.done > 0, `${loop.done} requests during the reloads`);
  t.same(loop.failures, [], 'no request failed');
  const all = relay.lines.map((l) => JSON.stringify(l)).join('\n');
  t.notMatch(all, adminToken, 'the admin token never reaches the log');
  t.notMatch(all, 'second-admin-token', 'nor the new one');

  relay.child.kill('SIGTERM');
  t.equal(await relay.exited, 0);
});

const BROKEN_PAIR = 'tunnel certificate not reloaded; keeping the running one and applying the rest';

/** The fingerprint of the certificate a TLS listener on `port` presents to a new client. */
async function servedFingerprint(port: number): Promise<string> {
  const socket = tlsConnect({ host: '127.0.0.1', port, servername: 'localhost', rejectUnauthorized: false });
  await once(socket, 'secureConnect');
  const fingerprint = socket.getPeerX509Certificate()?.fingerprint256 ?? '';
  socket.destroy();
  return fingerprint;
}

t.test(
  'a broken tunnel certificate on reload keeps the running one and holds back nothing else',
  async (t) => {
    const dir = await tempDir(t, 'burrow-reload-tls-');
    const pki = await testPki(t);
    const certFile = join(dir, 'tunnel.crt');
    const keyFile = join(dir, 'tunnel.key');
    await copyFile(pki.certFile, certFile);
    await copyFile(pki.keyFile, keyFile);
    const revokedFile = join(dir, 'revoked.txt');
    await writeFile(revokedFile, '');
    const keysDir = join(dir, 'keys');
    await mkdir(keysDir);
    await writeFile(join(keysDir, 'a.pub'), (await testKeys()).publicPem);
    const relay = spawnLogged(
      t,
      RELAY_CLI,
      [
        'serve',
        ...[
          '--http-listen',
          '127.0.0.1:0',
          '--tunnel-listen',
          '127.0.0.1:0',
          '--admin-listen',
          '127.0.0.1:0',
        ],
        ...['--tls-listen', 'off', '--verify-key', keysDir, '--revoked-tokens', revokedFile],
        ...['--tunnel-tls-cert', certFile, '--admin-token', 'admin-token-0123456789'],
      ],
      { BURROW_TUNNEL_TLS_KEY: keyFile },
    );
    const { http: httpPort, tunnel: tunnelPort, admin: adminPort } = await listeningPorts(relay);
    const next = (msg: string) => {
      const seen = relay.lines.length;
      return relay.waitFor((l) => relay.lines.indexOf(l) >= seen && l['msg'] === msg);
    };
    const served = () => servedFingerprint(tunnelPort);
    const original = await served();

    const backend = await testServer(t, (_req, res) => res.end('through wss'));
    const token = await tokenFor('doomed-tls', ['doomed.tls.test']);
    const agent = startAgent({
      relayUrl: `wss://localhost:${tunnelPort}`,
      relayCa: pki.caPem,
      token,
      routes: [{ id: 'd', hostnames: ['doomed.tls.test'], target: backend.url }],
      connections: 1,
      logger: testLogger('agent'),
    });
    t.teardown(() => agent.close());
    await agent.ready();
    t.equal((await get(httpPort, 'doomed.tls.test')).body.toString(), 'through wss');

    // A rotation caught halfway: the key is not there yet.
    let broken = next(BROKEN_PAIR);
    let reloaded = next('config reloaded');
    await rm(keyFile);
    t.match(await broken, { trigger: 'file changed', reason: /^BURROW_TUNNEL_TLS_KEY: cannot read / });
    await reloaded;
    t.equal(await served(), original, 'new handshakes still get the running certificate');

    // Meanwhile the token leaks: its revocation applies although the pair is still broken.
    broken = next(BROKEN_PAIR);
    reloaded = next('config reloaded');
    const down = new Promise((resolve) => agent.once('disconnected', (_i, reason) => resolve(reason)));
    await writeFile(revokedFile, `${decodeJwt(token).jti}\n`);
    await broken;
    t.match(await reloaded, { revokedTokens: 1, revokedConnections: 1 });
    t.match(await down, /TokenRevoked/);
    const metrics = await fetch(`http://127.0.0.1:${adminPort}/metrics`, {
      headers: { authorization: 'Bearer admin-token-0123456789' },
    }).then((r) => r.text());
    t.match(metrics, /^burrow_relay_config_reloads_total\{result="failure"\} 2$/m, 'counted as failures');

    // The rotation completes with a new pair. Each file's change may reload on its own; the
    // reload that finds both in place is the one not preceded by the complaint.
    const renewed = await pki.issue('renewed', ['localhost']);
    const seen = relay.lines.length;
    const whole = relay.waitFor((l) => {
      const i = relay.lines.indexOf(l);
      return i >= seen && l['msg'] === 'config reloaded' && relay.lines[i - 1]?.['msg'] !== BROKEN_PAIR;
    });
    await copyFile(renewed.keyFile, keyFile);
    await copyFile(renewed.certFile, certFile);
    await whole;
    t.equal(
      await served(),
      new X509Certificate(await readFile(renewed.certFile)).fingerprint256,
      'new handshakes get the new certificate once both files are in place',
    );

    relay.child.kill('SIGTERM');
    t.equal(await relay.exited, 0);
  },
);
