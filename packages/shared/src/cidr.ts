import { BlockList, isIP } from 'node:net';

/** A parsed client IP allowlist (CIDR ranges), matched with node's BlockList. */
export interface Allowlist {
  readonly cidrs: readonly string[];
  allows(ip: string): boolean;
}

/** Parses one CIDR (or a bare address = /32 or /128). Returns an error message or the parts. */
export function parseCidr(
  text: string,
): { address: string; prefix: number; family: 'ipv4' | 'ipv6' } | string {
  const [address = '', prefixText, extra] = text.trim().split('/');
  if (extra !== undefined) return `"${text}" is not a CIDR range`;
  const version = isIP(address);
  if (version === 0) return `"${text}": "${address}" is not an IP address`;
  const max = version === 4 ? 32 : 128;
  const prefix = prefixText === undefined ? max : Number(prefixText);
  if (!/^\d{1,3}$/.test(prefixText ?? String(max)) || prefix > max) {
    return `"${text}": prefix length must be 0 to ${max}`;
  }
  // ::ffff:a.b.c.d/N is IPv4 written as IPv6 (clients on dual-stack sockets
  // look like that). Below /96 it would be the IPv6 range around the whole
  // mapped space, every IPv4 client included: take it as the IPv4 range meant.
  const mapped = version === 6 ? /^::ffff:(\d{1,3}(?:\.\d{1,3}){3})$/i.exec(address)?.[1] : undefined;
  if (mapped !== undefined && isIP(mapped) === 4) {
    if (prefix < 96)
      return `"${text}": an IPv4-mapped range needs a prefix of 96 to 128 (or write it as IPv4)`;
    return { address: mapped, prefix: prefix - 96, family: 'ipv4' };
  }
  return { address, prefix, family: version === 4 ? 'ipv4' : 'ipv6' };
}

/** Builds an allowlist; throws TypeError naming the first bad entry. */
export function createAllowlist(cidrs: readonly string[]): Allowlist {
  const list = new BlockList();
  for (const c of cidrs) {
    const parsed = parseCidr(c);
    if (typeof parsed === 'string') throw new TypeError(parsed);
    list.addSubnet(parsed.address, parsed.prefix, parsed.family);
  }
  return {
    cidrs: [...cidrs],
    allows(ip: string): boolean {
      // Dual-stack sockets report IPv4 clients as ::ffff:a.b.c.d.
      const plain = ip.startsWith('::ffff:') && isIP(ip.slice(7)) === 4 ? ip.slice(7) : ip;
      const family = isIP(plain);
      if (family === 0) return false;
      return list.check(plain, family === 4 ? 'ipv4' : 'ipv6');
    },
  };
}

/** 127.0.0.0/8 and ::1, and IPv4-mapped 127.0.0.0/8 in either spelling (URL parsing writes ::ffff:7f00:1). */
const LOOPBACK = new BlockList();
LOOPBACK.addSubnet('127.0.0.0', 8, 'ipv4');
LOOPBACK.addAddress('::1', 'ipv6');
LOOPBACK.addSubnet('::ffff:127.0.0.0', 104, 'ipv6');

/**
 * Whether `host` (an address, a bracketed IPv6 address or a name) is this
 * machine: localhost, 127.0.0.0/8 or ::1, also as an IPv4-mapped address.
 */
export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[(.*)\]$/, '$1').toLowerCase();
  if (h === 'localhost' || h.endsWith('.localhost')) return true;
  const family = isIP(h);
  return family !== 0 && LOOPBACK.check(h, family === 4 ? 'ipv4' : 'ipv6');
}
