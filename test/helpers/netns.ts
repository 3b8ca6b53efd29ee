/**
 * A small NAT lab in network namespaces (needs root):
 *
 *   public ── 192.0.2.0/24 ── router ── 198.51.100.0/24 ── lan
 *   192.0.2.1           192.0.2.254 │ 198.51.100.1        198.51.100.2
 *
 * The router forwards, masquerades lan → public, and drops every new
 * connection from the public side (forwarded or to itself), as a home router
 * or a cloud NAT gateway does. Its conntrack is strict (tcp_loose off): once
 * an entry is gone, mid-stream packets are invalid and dropped, so a flushed
 * or expired mapping really kills the tunnel instead of being silently
 * re-learnt from the next packet.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type { Teardownable } from './relay.js';

const run = promisify(execFile);

/** Namespace names start with this and end with the pid of the test process that made them. */
const PREFIX = 'burrow-nat-';

export const PUBLIC_IP = '192.0.2.1';
export const ROUTER_WAN_IP = '192.0.2.254';
export const LAN_IP = '198.51.100.2';

export interface NatLab {
  public: string;
  router: string;
  lan: string;
  /** Runs a command inside a namespace; rejects on a non-zero exit. */
  exec(ns: string, cmd: string, args: string[]): Promise<{ stdout: string; stderr: string }>;
  /** Sets a sysctl inside the router namespace (conntrack timeouts are per namespace). */
  routerSysctl(name: string, value: string | number): Promise<void>;
  /** Conntrack entries in the router for TCP to `port`, as conntrack prints them. */
  conntrack(port: number): Promise<string[]>;
  /** Packets dropped by the router's "new inbound from public" rule so far. */
  droppedInbound(): Promise<number>;
}

let counter = 0;

async function ip(...args: string[]): Promise<void> {
  await run('ip', args);
}

/**
 * Why the lab cannot be built here, or undefined when it can: root, `ip netns`,
 * nft and conntrack are all needed.
 */
export async function natUnavailable(): Promise<string | undefined> {
  if (process.platform !== 'linux') return 'network namespaces need Linux';
  if (process.getuid?.() !== 0) return 'creating network namespaces needs root (CI runs as root)';
  for (const tool of ['ip', 'nft', 'conntrack']) {
    try {
      await run('sh', ['-c', `command -v ${tool}`]);
    } catch {
      return `${tool} is not installed (Debian packages iproute2, nftables, conntrack)`;
    }
  }
  const probe = `${PREFIX}probe-${process.pid}`;
  try {
    await ip('netns', 'add', probe);
  } catch (err) {
    return `cannot create a network namespace: ${(err as { stderr?: string }).stderr?.trim() || String(err)}`;
  } finally {
    await ip('netns', 'del', probe).catch(() => {});
  }
  return undefined;
}

/** Deletes namespaces left by earlier test processes that were killed before their teardown ran. */
async function removeStaleNamespaces(): Promise<void> {
  const { stdout } = await run('ip', ['netns', 'list']);
  for (const line of stdout.split('\n')) {
    const name = line.split(' ')[0] ?? '';
    if (!name.startsWith(PREFIX)) continue;
    const pid = Number(name.split('-').pop());
    if (pid === process.pid) continue;
    let alive = false;
    try {
      process.kill(pid, 0);
      alive = Number.isInteger(pid) && pid > 0;
    } catch {}
    if (!alive) await ip('netns', 'del', name).catch(() => {});
  }
}

const RULES = `
table inet burrow {
  chain forward {
    type filter hook forward priority 0; policy drop;
    ct state established,related accept
    ct state invalid drop
    iifname "lan" oifname "wan" accept
    iifname "wan" counter name inbound drop
  }
  chain input {
    type filter hook input priority 0; policy drop;
    ct state established,related accept
    iifname "lo" accept
    iifname "wan" counter name inbound drop
  }
  chain postrouting {
    type nat hook postrouting priority 100;
    oifname "wan" masquerade
  }
  counter inbound {}
}
`;

/** Builds the three namespaces; everything is deleted at teardown, also when the test fails. */
export async function natLab(t: Teardownable): Promise<NatLab> {
  await removeStaleNamespaces();
  const n = counter++;
  const name = (role: string) => `${PREFIX}${role}${n}-${process.pid}`;
  const lab = { public: name('pub'), router: name('rtr'), lan: name('lan') };
  const created: string[] = [];
  t.teardown(async () => {
    // Deleting a namespace deletes its veth ends (and their peers) with it.
    for (const ns of created) await ip('netns', 'del', ns).catch(() => {});
  });
  for (const ns of [lab.public, lab.router, lab.lan]) {
    await ip('netns', 'add', ns);
    created.push(ns);
    await ip('-n', ns, 'link', 'set', 'lo', 'up');
  }
  // Interface names are created in the namespaces directly, so they never clash in the root one.
  await ip(
    '-n',
    lab.public,
    'link',
    'add',
    'eth0',
    'type',
    'veth',
    'peer',
    'name',
    'wan',
    'netns',
    lab.router,
  );
  await ip('-n', lab.lan, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'lan', 'netns', lab.router);
  const up = async (ns: string, dev: string, addr: string) => {
    await ip('-n', ns, 'addr', 'add', addr, 'dev', dev);
    await ip('-n', ns, 'link', 'set', dev, 'up');
  };
  await up(lab.public, 'eth0', `${PUBLIC_IP}/24`);
  await up(lab.router, 'wan', `${ROUTER_WAN_IP}/24`);
  await up(lab.router, 'lan', '198.51.100.1/24');
  await up(lab.lan, 'eth0', `${LAN_IP}/24`);
  await ip('-n', lab.lan, 'route', 'add', 'default', 'via', '198.51.100.1');
  // The public side knows where the lan is, so "unreachable" below is the
  // router's doing, not a missing route.
  await ip('-n', lab.public, 'route', 'add', '198.51.100.0/24', 'via', ROUTER_WAN_IP);

  const exec = (ns: string, cmd: string, args: string[]) => run('ip', ['netns', 'exec', ns, cmd, ...args]);
  const routerSysctl = async (key: string, value: string | number) => {
    await exec(lab.router, 'sysctl', ['-qw', `${key}=${value}`]);
  };
  await routerSysctl('net.ipv4.ip_forward', 1);
  await new Promise<void>((resolve, reject) => {
    const child = execFile('ip', ['netns', 'exec', lab.router, 'nft', '-f', '-'], (err) =>
      err ? reject(err) : resolve(),
    );
    child.stdin!.end(RULES);
  });
  await routerSysctl('net.netfilter.nf_conntrack_tcp_loose', 0);

  return {
    ...lab,
    exec,
    routerSysctl,
    async conntrack(port) {
      // conntrack exits 0 with entries on stdout; its summary line goes to stderr.
      const { stdout } = await exec(lab.router, 'conntrack', ['-L', '-p', 'tcp', '--dport', String(port)]);
      return stdout.split('\n').filter((l) => l.includes(`dport=${port}`));
    },
    async droppedInbound() {
      const { stdout } = await exec(lab.router, 'nft', ['list', 'counter', 'inet', 'burrow', 'inbound']);
      return Number(/packets (\d+)/.exec(stdout)?.[1] ?? Number.NaN);
    },
  };
}
