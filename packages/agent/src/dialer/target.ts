import { isIP } from 'node:net';

/** Where a route's target URL points: what the dialers connect to and name in errors. */
export interface TargetAddress {
  https: boolean;
  /** Host name or IP address, IPv6 literals without brackets. */
  host: string;
  port: number;
  /** `host:port` as error messages show it (`[::1]:8080` for IPv6). */
  where: string;
  /**
   * The name an https backend's certificate is checked against and sent as
   * SNI: the target's host name, never the request's Host field (which the
   * relay, or on a wildcard route the client, chooses). Undefined for an IP
   * address: no SNI, and the certificate is checked against the address.
   */
  serverName: string | undefined;
}

/** Parses a route target (`http://`, `https://`, `tls-passthrough://` or `tcp://` URL, already validated). */
export function targetAddress(target: string): TargetAddress {
  const url = new URL(target);
  const https = url.protocol === 'https:';
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1'); // IPv6 literals come bracketed
  const port = Number(url.port) || (https ? 443 : 80);
  return {
    https,
    host,
    port,
    where: host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`,
    serverName: isIP(host) ? undefined : host,
  };
}
