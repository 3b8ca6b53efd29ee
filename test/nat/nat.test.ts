// Burrow behind a real NAT: relay and client in a "public" namespace, agent
// and backend in a "lan" namespace behind a masquerading router that drops
// every new inbound connection (test/helpers/netns.ts). Needs root; CI runs as
// root and must run these (CI=true turns a skip into a failure).
import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import t from 'tap';
import { tempDir } from '../helpers/fs.js';
import { LAN_IP, type NatLab, natLab, natUnavailable, PUBLIC_IP, ROUTER_WAN_IP } from '../helpers/netns.js';
import { AGENT_CLI, type LoggedProcess, RELAY_CLI, ROOT, spawnLogged } from '../helpers/proc.js';
import { type Teardownable, testKeys, tokenFor } from '../helpers/relay.js';

const BACKEND = join(ROOT, 'test/fixtures/lan-backend.mjs');
const HTTP_PORT = 8080;
const TUNNEL_PORT = 8443;
const HOST = 'app.nat.example.com';
/** The router forgets an idle established TCP connection after this many seconds. */
const CONNTRACK_TIMEOUT = 2;

const why = await natUnavailable();
if (why && process.env['CI'] !== 'true') {
  t.plan(0, `NAT suite skipped: ${why}`);
} else {
  if (why) t.fail(`CI=true but the NAT suite cannot run: ${why}`);
  else run();
}

interface Reply {
  /** curl's exit code: 0, or e.g. 28 (timed out), 7 (connection refused). */
  exit: number;
  status: number;
  body: string;
}

/** One HTTP request made from inside a namespace with curl, bounded by `maxTime` seconds. */
function curl(ns: string, url: string, host?: string, maxTime = 5): Promise<Reply> {
  const args = ['-sS', '--max-time', String(maxTime), '-o', '-', '-w', '\n%{http_code}', url];
  if (host) args.push('-H', `Host: ${host}`);
  return new Promise((resolve) => {
    execFile('ip', ['netns', 'exec', ns, 'curl', ...args], (err, stdout) => {
      const at = stdout.lastIndexOf('\n');
      resolve({
        exit: err ? Number((err as { code?: number }).code ?? -1) : 0,
        status: Number(stdout.slice(at + 1)) || 0,
        body: stdout.slice(0, Math.max(0, at)),
      });
    });
  });
}

/** Relay in public, backend and agent in lan; resolves once the agent's route is active. */
async function deploy(
  t: Teardownable,
  lab: NatLab,
  keepalive: string,
): Promise<{ relay: LoggedProcess; agent: LoggedProcess; backendPort: number }> {
  const dir = await tempDir(t, 'burrow-nat-');
  await writeFile(join(dir, 'signing.pub'), (await testKeys()).publicPem);
  await writeFile(join(dir, 'agent.token'), await tokenFor('home', [HOST]), { mode: 0o600 });

  const relay = spawnLogged(
    t,
    RELAY_CLI,
    [
      'serve',
      '--http-listen',
      `${PUBLIC_IP}:${HTTP_PORT}`,
      '--tunnel-listen',
      `${PUBLIC_IP}:${TUNNEL_PORT}`,
      '--verify-key',
      join(dir, 'signing.pub'),
      '--keepalive-interval',
      keepalive,
      '--response-timeout',
      '3s',
    ],
    {},
    { netns: lab.public },
  );
  await relay.waitFor((l) => l['msg'] === 'relay listening');
  const backend = spawnLogged(t, BACKEND, [LAN_IP, '0'], {}, { netns: lab.lan });
  const backendPort = Number((await backend.waitFor((l) => l['msg'] === 'backend listening'))['port']);
  const agent = spawnLogged(
    t,
    AGENT_CLI,
    [
      '--relay',
      `ws://${PUBLIC_IP}:${TUNNEL_PORT}`,
      '--token-file',
      join(dir, 'agent.token'),
      '--expose',
      `${HOST}=http://${LAN_IP}:${backendPort}`,
      '--connections',
      '1',
      '--keepalive-interval',
      keepalive,
    ],
    {},
    { netns: lab.lan },
  );
  await agent.waitFor((l) => l['msg'] === 'route active');
  // Both ends say that the token crosses this network in clear text (no TLS on the tunnel).
  for (const [p, pattern] of [
    [relay, /^the tunnel listener has no TLS and is reachable from other machines/],
    [agent, /^--relay is ws:\/\/ to another machine/],
  ] as const) {
    if (!p.lines.some((l) => l['level'] === 40 && pattern.test(String(l['msg']))))
      throw new Error(`no clear-text warning matching ${pattern}`);
  }
  return { relay, agent, backendPort };
}

const count = (p: LoggedProcess, msg: string) => p.lines.filter((l) => l['msg'] === msg).length;

function run(): void {
  t.test('behind NAT: unreachable directly, reachable through the relay by hostname', async (t) => {
    const lab = await natLab(t);
    await lab.routerSysctl('net.netfilter.nf_conntrack_tcp_timeout_established', CONNTRACK_TIMEOUT);
    const { relay, backendPort } = await deploy(t, lab, '500ms');

    const connected = await relay.waitFor((l) => l['msg'] === 'agent connected');
    t.equal(connected['remote'], ROUTER_WAN_IP, "the relay sees the agent as the router's public address");

    const dropped = await lab.droppedInbound();
    const direct = await curl(lab.public, `http://${LAN_IP}:${backendPort}/`, undefined, 2);
    t.equal(
      direct.exit,
      28,
      'a direct connection from public to the backend never completes (curl timed out)',
    );
    t.ok((await lab.droppedInbound()) > dropped, "the router's drop rule counted the attempt");

    const via = await curl(lab.public, `http://${PUBLIC_IP}:${HTTP_PORT}/`, HOST);
    t.equal(via.status, 200);
    t.equal(via.body, `hello from the lan (${LAN_IP})`, 'the backend answered through the tunnel');
    const unknown = await curl(lab.public, `http://${PUBLIC_IP}:${HTTP_PORT}/`, 'other.example.com');
    t.equal(unknown.status, 404, 'a hostname nobody exposes is not routed anywhere');
  });

  t.test('keepalive holds the NAT mapping open past the conntrack timeout', async (t) => {
    const lab = await natLab(t);
    await lab.routerSysctl('net.netfilter.nf_conntrack_tcp_timeout_established', CONNTRACK_TIMEOUT);
    const { agent } = await deploy(t, lab, '500ms');
    const before = count(agent, 'tunnel connected');
    t.equal(before, 1);
    // The property under test is time itself: the tunnel carries no requests for
    // three conntrack timeouts and must still be mapped (polled, bounded).
    const idleUntil = performance.now() + 3 * CONNTRACK_TIMEOUT * 1000;
    let polls = 0;
    let missing = 0;
    while (performance.now() < idleUntil) {
      if ((await lab.conntrack(TUNNEL_PORT)).length === 0) missing++;
      polls++;
      await delay(250);
    }
    t.equal(missing, 0, `the tunnel's conntrack entry was present at every one of ${polls} polls`);
    t.equal(count(agent, 'tunnel connected'), before, 'the agent never had to reconnect');
    const r = await curl(lab.public, `http://${PUBLIC_IP}:${HTTP_PORT}/`, HOST);
    t.equal(r.status, 200, 'the idle tunnel still serves');
  });

  t.test('without a short keepalive the same router forgets the tunnel', async (t) => {
    // The control experiment: proves the timeout above is real, so survival there is the keepalive's doing.
    const lab = await natLab(t);
    await lab.routerSysctl('net.netfilter.nf_conntrack_tcp_timeout_established', CONNTRACK_TIMEOUT);
    await deploy(t, lab, '60s');
    let entries = await lab.conntrack(TUNNEL_PORT);
    for (let i = 0; i < 60 && entries.length > 0; i++) {
      await delay(250);
      entries = await lab.conntrack(TUNNEL_PORT);
    }
    t.equal(entries.length, 0, 'the mapping expired');
    const r = await curl(lab.public, `http://${PUBLIC_IP}:${HTTP_PORT}/`, HOST, 10);
    t.ok(r.status === 502 || r.status === 504, `the relay cannot reach the agent any more (${r.status})`);
  });

  for (const cut of ['conntrack flush', 'router link down and up'] as const) {
    t.test(`${cut}: the agent detects the dead tunnel by keepalive and reconnects`, async (t) => {
      const lab = await natLab(t);
      const { agent, relay } = await deploy(t, lab, '500ms');
      t.equal((await curl(lab.public, `http://${PUBLIC_IP}:${HTTP_PORT}/`, HOST)).status, 200);
      const connects = count(agent, 'tunnel connected');
      const disconnects = count(agent, 'tunnel disconnected');

      const cutAt = performance.now();
      if (cut === 'conntrack flush') {
        await lab.exec(lab.router, 'conntrack', ['-F']);
      } else {
        await lab.exec(lab.router, 'ip', ['link', 'set', 'wan', 'down']);
      }
      const down = await agent.waitFor(
        (l) => l['msg'] === 'tunnel disconnected' && count(agent, 'tunnel disconnected') > disconnects,
      );
      const detectedMs = Math.round(performance.now() - cutAt);
      t.match(String(down['reason']), /no PONG for 3 intervals of 500 ms/, 'detected by the keepalive');
      t.comment(`dead tunnel detected ${detectedMs} ms after the ${cut} (liveness window 3 × 500 ms)`);
      if (cut !== 'conntrack flush') await lab.exec(lab.router, 'ip', ['link', 'set', 'wan', 'up']);

      await agent.waitFor(
        (l) => l['msg'] === 'tunnel connected' && count(agent, 'tunnel connected') > connects,
      );
      // The relay may still hold the dead session until its own keepalive
      // fires; a request routed to it fails, so poll (bounded) for service.
      let r: Reply | undefined;
      for (let i = 0; i < 20 && r?.status !== 200; i++) {
        r = await curl(lab.public, `http://${PUBLIC_IP}:${HTTP_PORT}/`, HOST);
      }
      t.equal(r?.status, 200, 'traffic resumes');
      t.equal(r?.body, `hello from the lan (${LAN_IP})`);
      await relay.waitFor(
        (l) => l['msg'] === 'agent disconnected' && /PONG/.test(JSON.stringify(l['err'] ?? '')),
      );
      t.pass('the relay dropped the dead session by its own keepalive');
    });
  }
}
