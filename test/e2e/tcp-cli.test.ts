// Public TCP ports as an operator sets them up with the binaries: a token with
// --ports, a relay with --tcp-ports, an agent with --expose PORT=tcp://…, and a
// client that talks to the port.
import { execFile } from 'node:child_process';
import { once } from 'node:events';
import { writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { decodeJwt } from 'jose';
import t from 'tap';
import { tempDir } from '../helpers/fs.js';
import { get } from '../helpers/http.js';
import { freePort, tcpBackend } from '../helpers/net.js';
import { AGENT_CLI, LOOPBACK_SERVE, listeningPorts, RELAY_CLI, spawnLogged } from '../helpers/proc.js';

const run = promisify(execFile);

/** `burrow-relay serve` on loopback with TCP ports `ports`, trusting the key in `keys`, and `extra`. */
const serveTcp = (t: Parameters<typeof tempDir>[0], keys: string, ports: string, ...extra: string[]) =>
  spawnLogged(t, RELAY_CLI, [
    'serve',
    '--http-listen',
    '127.0.0.1:0',
    '--tunnel-listen',
    '127.0.0.1:0',
    '--tcp-ports',
    ports,
    '--tcp-host',
    '127.0.0.1',
    '--verify-key',
    keys,
    ...extra,
  ]);

/** `burrow-relay token create` for subject `db` with the key in `keys`, and `argv`. */
const createToken = (keys: string, ...argv: string[]) =>
  run(process.execPath, [
    RELAY_CLI,
    'token',
    'create',
    '--key',
    join(keys, 'signing.key'),
    '--sub',
    'db',
    ...argv,
  ]);

t.test(
  'token --ports, serve --tcp-ports, agent --expose PORT=tcp://: a client reaches the backend',
  async (t) => {
    const dir = await tempDir(t, 'burrow-tcp-cli-');
    const keys = join(dir, 'keys');
    await run(process.execPath, [RELAY_CLI, 'keygen', '--out', keys]);
    const [port, other] = [await freePort(), await freePort()];
    const create = (...argv: string[]) => createToken(keys, ...argv);
    const { stdout: token } = await create('--ports', `${port}`);
    t.match(decodeJwt(token.trim()), { sub: 'db', hosts: [], ports: [port] }, 'a token for a TCP port alone');
    const ranged = decodeJwt(
      (await create('--hosts', 'a.example.com', '--ports', '7000-7002,22')).stdout.trim(),
    );
    t.same(ranged['ports'], [22, 7000, 7001, 7002], 'ranges and lists, sorted');
    const none = await create().catch((e) => e);
    t.match(
      none.stderr,
      /--hosts is required \(e\.g\. --hosts "\*\.apps\.example\.com"\), or --ports for TCP only/,
    );
    const bad = await create('--ports', '22-ssh').catch((e) => e);
    t.equal(bad.code, 1);
    t.equal(
      bad.stderr,
      'burrow-relay: --ports: "22-ssh" is not a port (1 to 65535) or a range FROM-TO of them, e.g. 5432 or 10000-10099\n',
    );
    await writeFile(join(dir, 'token'), token);

    const backend = await tcpBackend(t, (s) => {
      s.setEncoding('utf8');
      s.on('data', (text: string) => s.write(text.toUpperCase()));
      s.on('end', () => s.end());
    });
    const relay = serveTcp(t, keys, `${port},${other}`, '--tcp-public-host', 'relay.example.test');
    const { tunnel } = await listeningPorts(relay);
    const listening = await relay.waitFor((l) => l['msg'] === 'relay listening');
    t.match(listening['tcp'], { host: '127.0.0.1' }, 'the relay says where its TCP ports listen');
    // One address for probes and metrics: one listener serves both.
    const probes = await freePort();
    const agent = spawnLogged(t, AGENT_CLI, [
      '--health-listen',
      `127.0.0.1:${probes}`,
      '--metrics-listen',
      `127.0.0.1:${probes}`,
      '--relay',
      `ws://127.0.0.1:${tunnel}`,
      '--token-file',
      join(dir, 'token'),
      '--expose',
      `${port}=tcp://127.0.0.1:${backend}`,
      '--expose',
      `${other}=tcp://127.0.0.1:${backend}`,
    ]);
    const active = await agent.waitFor((l) => l['msg'] === 'port active');
    t.match(active, { port, route: `static:tcp-${port}`, url: `tcp://relay.example.test:${port}` });
    const refused = await agent.waitFor((l) => l['msg'] === 'port refused by the relay');
    t.match(refused, { port: other, reason: /not allowed by this agent's token \(ports: \d+\)/ });
    const ready = await get(probes, '127.0.0.1', '/readyz');
    t.equal(
      ready.status,
      200,
      `an agent with TCP routes only is ready once the relay answered (${ready.body})`,
    );
    const scraped = await get(probes, '127.0.0.1', '/metrics');
    t.equal(scraped.status, 200, 'the same listener serves /metrics');
    t.match(scraped.body.toString(), /^burrow_agent_/m);

    const client = connect(port, '127.0.0.1');
    client.setEncoding('utf8');
    await once(client, 'connect');
    client.write('select 1;');
    const [answer] = await once(client, 'data');
    t.equal(answer, 'SELECT 1;', "the backend's answer comes back through the tunnel");
    client.end();
    await once(client, 'close');
    const logged = await relay.waitFor((l) => l['msg'] === 'tcp connection');
    t.match(logged, { port, route: `static:tcp-${port}`, client: '127.0.0.1', bytesIn: 9, bytesOut: 9 });
    t.notOk('error' in logged, 'the connection ended cleanly');

    // SIGHUP (a closed terminal, a reload habit): said, and nothing else happens.
    agent.child.kill('SIGHUP');
    await agent.waitFor((l) => String(l['msg']).startsWith('SIGHUP ignored'));
    t.equal((await get(probes, '127.0.0.1', '/readyz')).status, 200, 'still running and ready');
  },
);

t.test('a TCP port already in use: one line naming it, exit 1', async (t) => {
  const dir = await tempDir(t, 'burrow-tcp-busy-');
  await run(process.execPath, [RELAY_CLI, 'keygen', '--out', join(dir, 'keys')]);
  const busy = await tcpBackend(t, (s) => s.end());
  const serve = run(process.execPath, [
    RELAY_CLI,
    'serve',
    '--verify-key',
    join(dir, 'keys'),
    ...LOOPBACK_SERVE,
    '--admin-listen',
    '127.0.0.1:0',
    '--tcp-ports',
    `${busy}`,
    '--tcp-host',
    '127.0.0.1',
  ]).catch((e) => e);
  const failed = await serve;
  t.equal(failed.code, 1);
  t.equal(
    failed.stderr,
    `burrow-relay: cannot listen on 127.0.0.1:${busy}: the address is already in use (another process holds it; pick another address or stop it)\n`,
  );
});

/** A relay serving TCP port `port` and an agent exposing it, both started with the extra arguments given. */
async function tcpPair(t: Parameters<typeof tempDir>[0], relayArgs: string[], agentArgs: string[]) {
  const dir = await tempDir(t, 'burrow-tcp-idle-');
  const keys = join(dir, 'keys');
  await run(process.execPath, [RELAY_CLI, 'keygen', '--out', keys]);
  const port = await freePort();
  const { stdout: token } = await createToken(keys, '--ports', `${port}`);
  await writeFile(join(dir, 'token'), token);
  const backend = await tcpBackend(t, (s) => s.pipe(s));
  const relay = serveTcp(t, keys, `${port}`, ...relayArgs);
  const { tunnel } = await listeningPorts(relay);
  const agent = spawnLogged(t, AGENT_CLI, [
    '--relay',
    `ws://127.0.0.1:${tunnel}`,
    '--token-file',
    join(dir, 'token'),
    '--expose',
    `${port}=tcp://127.0.0.1:${backend}`,
    ...agentArgs,
  ]);
  await agent.waitFor((l) => l['msg'] === 'port active');
  return { port, backend, relay };
}

/** The local ends of established TCP connections `filter` selects (ss syntax), with their timers. */
async function sockets(filter: string): Promise<string> {
  const { stdout } = await run('ss', ['-tnoH', 'state', 'established', filter]);
  return stdout;
}

for (const side of ['relay', 'agent'] as const) {
  t.test(`--stream-idle-timeout on the ${side} closes a quiet TCP connection`, async (t) => {
    const short = ['--stream-idle-timeout', '1s'];
    const { port, backend, relay } = await tcpPair(
      t,
      side === 'relay' ? short : [],
      side === 'agent' ? short : [],
    );
    const client = connect(port, '127.0.0.1');
    const closed = new Promise((resolve) => client.on('close', resolve));
    client.on('error', () => {}); // the relay resets the connection: nothing was lost, it was idle
    await once(client, 'connect');
    client.write('ping');
    await once(client, 'data');
    // Both ends of the tunnel ask the kernel to probe their side's peer while it is quiet.
    t.match(await sockets(`( sport = :${port} )`), /timer:\(keepalive/, 'keepalive on the client socket');
    t.match(await sockets(`( dport = :${backend} )`), /timer:\(keepalive/, 'and on the backend socket');
    await closed;
    const logged = await relay.waitFor((l) => l['msg'] === 'tcp connection');
    t.match(logged, { port, bytesIn: 4, bytesOut: 4, error: /IdleTimeout/ }, 'closed for being idle');
  });
}
