/** Where a route's target URL points: what the dialers connect to and name in errors. */
export interface TargetAddress {
  https: boolean;
  /** Host name or IP address, IPv6 literals without brackets. */
  host: string;
  port: number;
  /** `host:port` as error messages show it (`[::1]:8080` for IPv6). */
  where: string;
}

/** Parses a route target (`http://`, `https://` or `tls-passthrough://` URL, already validated). */
export function targetAddress(target: string): TargetAddress {
  const url = new URL(target);
  const https = url.protocol === 'https:';
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1'); // IPv6 literals come bracketed
  const port = Number(url.port) || (https ? 443 : 80);
  return { https, host, port, where: host.includes(':') ? `[${host}]:${port}` : `${host}:${port}` };
}
