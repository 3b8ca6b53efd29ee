/**
 * The Service annotations Burrow reads and writes (docs/install.md), and
 * the pure function from a Service to the route it asks for. Everything here is
 * validated: a bad value becomes an error message for write-back, never a throw.
 */
import { checkHostPattern, ellipsize, MAX_ALLOW_CIDRS, parseCidr, portNumber } from '@burrow/shared';
import { stableRouteId } from '../routes/validate.js';

export const ANNOTATION = {
  hostname: 'burrow.dev/hostname',
  /** Instead of a hostname: the relay's public TCP port the Service is reached on. */
  tcpPort: 'burrow.dev/tcp-port',
  port: 'burrow.dev/port',
  protocol: 'burrow.dev/protocol',
  allowCidrs: 'burrow.dev/allow-cidrs',
  /** Written by the agent: where the Service is reachable. */
  url: 'burrow.dev/url',
  /** Written by the agent: why it is not. */
  error: 'burrow.dev/error',
  /** Written by the agent: the hostnames the Service holds, with proof (holds.ts). */
  holds: 'burrow.dev/holds',
} as const;

/** Protocols of a Service exposed by hostname; one exposed by `burrow.dev/tcp-port` is `tcp`. */
export const PROTOCOLS = ['http', 'https', 'h2c', 'tls-passthrough'] as const;
/** A Service port's `appProtocol` for HTTP/2 without TLS (Kubernetes' standard name). */
const APP_PROTOCOL_H2C = 'kubernetes.io/h2c';
export type BackendProtocol = (typeof PROTOCOLS)[number] | 'tcp';

/** The slice of a v1 Service this module reads. */
export interface ServiceLike {
  metadata?: {
    name?: string;
    namespace?: string;
    uid?: string;
    resourceVersion?: string;
    annotations?: Record<string, string>;
    /** Set once deletion started; the object stays while finalizers run. */
    deletionTimestamp?: Date | string;
  };
  spec?: {
    type?: string;
    clusterIP?: string;
    ports?: Array<{ name?: string; port: number; protocol?: string; appProtocol?: string }>;
  };
}

/**
 * Why `obj` does not have the shape of a Service where this module reads it,
 * or undefined. The API server never sends such an object, but a proxy in
 * between, or a server that is not quite one, might: the agent drops it rather
 * than fail on it.
 */
export function serviceShapeError(obj: unknown): string | undefined {
  const isObject = (v: unknown): v is Record<string, unknown> =>
    typeof v === 'object' && v !== null && !Array.isArray(v);
  const optional = (v: unknown, type: string) => v === undefined || v === null || typeof v === type;
  if (!isObject(obj)) return 'not an object';
  const meta = obj['metadata'];
  if (!isObject(meta)) return 'no metadata';
  if (typeof meta['name'] !== 'string' || meta['name'] === '') return 'no metadata.name';
  if (typeof meta['namespace'] !== 'string' || meta['namespace'] === '') return 'no metadata.namespace';
  const ann = meta['annotations'];
  if (
    ann !== undefined &&
    ann !== null &&
    (!isObject(ann) || Object.values(ann).some((v) => typeof v !== 'string'))
  )
    return 'metadata.annotations is not a map of strings';
  const spec = obj['spec'];
  if (spec === undefined || spec === null) return undefined;
  if (!isObject(spec)) return 'spec is not an object';
  if (!optional(spec['type'], 'string') || !optional(spec['clusterIP'], 'string'))
    return 'spec.type or spec.clusterIP is not a string';
  const ports = spec['ports'];
  if (ports === undefined || ports === null) return undefined;
  if (
    !Array.isArray(ports) ||
    !ports.every(
      (p) =>
        isObject(p) &&
        typeof p['port'] === 'number' &&
        optional(p['name'], 'string') &&
        optional(p['protocol'], 'string') &&
        optional(p['appProtocol'], 'string'),
    )
  )
    return 'spec.ports is not a list of ports';
  return undefined;
}

export interface ServiceRoute {
  /**
   * Stable route id: `k8s:NAMESPACE/NAME`, or `k8s:` and a hash of
   * `NAMESPACE/NAME` when that is longer than a route id may be (128).
   */
  id: string;
  /** Empty for a Service exposed by `burrow.dev/tcp-port`. */
  hostnames: string[];
  /** The relay's public TCP port, for a Service exposed by `burrow.dev/tcp-port`. */
  ports?: number[];
  /** Dial target: http://, https://, tls-passthrough:// or tcp://CLUSTER-IP:PORT. */
  target: string;
  protocol: BackendProtocol;
  allowCidrs: string[];
}

export type ServiceVerdict =
  | { kind: 'ignored' }
  | { kind: 'route'; route: ServiceRoute }
  | { kind: 'invalid'; error: string };

export function serviceKey(svc: ServiceLike): string {
  return `${svc.metadata?.namespace ?? 'default'}/${svc.metadata?.name ?? ''}`;
}

/** What a Service's annotations ask for: nothing, a route, or an error to report on the Service. */
export function routeForService(svc: ServiceLike): ServiceVerdict {
  const verdict = judge(svc);
  // Errors quote the values they refuse, and an annotation may be 100s of KB: what is
  // written back (annotation, Event) and logged stays short.
  return verdict.kind === 'invalid'
    ? { kind: 'invalid', error: ellipsize(verdict.error, MAX_ERROR) }
    : verdict;
}

/** Longest error the agent writes back for a Service, in characters. */
const MAX_ERROR = 1024;

function judge(svc: ServiceLike): ServiceVerdict {
  const ann = svc.metadata?.annotations ?? {};
  const rawHosts = ann[ANNOTATION.hostname];
  const rawTcpPort = ann[ANNOTATION.tcpPort];
  if (rawHosts === undefined && rawTcpPort === undefined) return { kind: 'ignored' };
  // Being deleted (finalizers, a load balancer's cleanup, may hold it for minutes): its
  // backends are going away, and so does its name.
  if (svc.metadata?.deletionTimestamp) return { kind: 'ignored' };
  if (rawHosts !== undefined && rawTcpPort !== undefined) {
    return {
      kind: 'invalid',
      error: `${ANNOTATION.hostname} and ${ANNOTATION.tcpPort} exclude each other: a Service is reached by hostname or by a TCP port of the relay; expose the other with a second Service`,
    };
  }
  let publicPort: number | undefined;
  if (rawTcpPort !== undefined) {
    const text = rawTcpPort.trim();
    publicPort = portNumber(text);
    if (Number.isNaN(publicPort)) {
      return {
        kind: 'invalid',
        error: `${ANNOTATION.tcpPort}: "${text}" is not a port number (1 to 65535) of the relay`,
      };
    }
  }

  // Names are case-insensitive: `A.example.com, a.example.com` is one name, announced once.
  const hostnames = [
    ...new Set(
      (rawHosts ?? '')
        .split(',')
        .map((h) => h.trim().toLowerCase())
        .filter(Boolean),
    ),
  ];
  if (hostnames.length === 0 && publicPort === undefined)
    return { kind: 'invalid', error: `${ANNOTATION.hostname} is empty` };
  if (hostnames.length > 64)
    return { kind: 'invalid', error: `${ANNOTATION.hostname} lists more than 64 names` };
  for (const h of hostnames) {
    const err = checkHostPattern(h);
    if (err) return { kind: 'invalid', error: `${ANNOTATION.hostname}: ${err}` };
  }

  // The port to dial, or why there is none (reported below, after the checks that come first).
  const picked = pickPort(svc.spec?.ports ?? [], ann[ANNOTATION.port]);
  const protocol = (ann[ANNOTATION.protocol] ?? defaultProtocol(picked, publicPort)).trim().toLowerCase();
  if (publicPort !== undefined && protocol !== 'tcp') {
    return {
      kind: 'invalid',
      error: `${ANNOTATION.protocol}: a Service exposed by ${ANNOTATION.tcpPort} carries bytes as they are; remove "${protocol}" (or set tcp)`,
    };
  }
  if (publicPort === undefined && !(PROTOCOLS as readonly string[]).includes(protocol)) {
    return {
      kind: 'invalid',
      error: `${ANNOTATION.protocol}: "${protocol}" is not one of ${PROTOCOLS.join(', ')}${protocol === 'grpc' ? ' (a gRPC server without TLS is h2c; one with TLS, tls-passthrough)' : ''}`,
    };
  }
  const allowText = ann[ANNOTATION.allowCidrs];
  const allowCidrs = (allowText ?? '')
    .split(',')
    .map((c) => c.trim())
    .filter(Boolean);
  // Set but naming no range: a typo or a templating gap, not "everyone". Fail closed.
  if (allowText !== undefined && allowCidrs.length === 0) {
    return {
      kind: 'invalid',
      error: `${ANNOTATION.allowCidrs}: names no address range; list CIDRs (e.g. 203.0.113.0/24) or remove the annotation`,
    };
  }
  if (allowCidrs.length > MAX_ALLOW_CIDRS) {
    return {
      kind: 'invalid',
      error: `${ANNOTATION.allowCidrs}: lists ${allowCidrs.length} ranges, more than the ${MAX_ALLOW_CIDRS} one route may have; merge neighbouring ranges into wider ones`,
    };
  }
  for (const c of allowCidrs) {
    const parsed = parseCidr(c);
    if (typeof parsed === 'string') return { kind: 'invalid', error: `${ANNOTATION.allowCidrs}: ${parsed}` };
  }

  const spec = svc.spec ?? {};
  if (spec.type === 'ExternalName') {
    return {
      kind: 'invalid',
      error: 'ExternalName Services have no ClusterIP; expose the Service it points to instead',
    };
  }
  const ip = spec.clusterIP;
  if (!ip || ip === 'None') {
    return {
      kind: 'invalid',
      error: 'headless Service (clusterIP: None) has no ClusterIP to dial; give it a ClusterIP',
    };
  }

  if (typeof picked === 'string') return { kind: 'invalid', error: picked };
  const port = picked.port;

  const host = ip.includes(':') ? `[${ip}]` : ip;
  return {
    kind: 'route',
    route: {
      id: stableRouteId('k8s', serviceKey(svc)),
      hostnames,
      ...(publicPort !== undefined ? { ports: [publicPort] } : {}),
      // https: the agent dials TLS; tls-passthrough and tcp: the agent splices the client's bytes.
      target: `${protocol}://${host}:${port}`,
      protocol: protocol as BackendProtocol,
      allowCidrs,
    },
  };
}

/**
 * The protocol when `burrow.dev/protocol` is absent: `tcp` for a Service
 * exposed by a public port, `h2c` when the port to dial declares
 * `appProtocol: kubernetes.io/h2c`, else `http`.
 */
function defaultProtocol(picked: ServicePort | string, publicPort: number | undefined): string {
  if (publicPort !== undefined) return 'tcp';
  return typeof picked !== 'string' && picked.appProtocol === APP_PROTOCOL_H2C ? 'h2c' : 'http';
}

type ServicePort = NonNullable<NonNullable<ServiceLike['spec']>['ports']>[number];

/** The Service port to dial: named or numbered by the annotation, else the only port, else the one named http. */
function pickPort(ports: readonly ServicePort[], wanted: string | undefined): ServicePort | string {
  const tcp = ports.filter((p) => (p.protocol ?? 'TCP') === 'TCP');
  if (tcp.length === 0) return 'the Service has no TCP ports';
  if (wanted !== undefined && wanted.trim() !== '') {
    const w = wanted.trim();
    const byName = tcp.find((p) => p.name === w);
    if (byName) return byName;
    if (/^\d+$/.test(w)) {
      const byNumber = tcp.find((p) => p.port === Number(w));
      if (byNumber) return byNumber;
    }
    const known = tcp.map((p) => (p.name ? `${p.name} (${p.port})` : String(p.port))).join(', ');
    return `${ANNOTATION.port}: the Service has no TCP port "${w}" (ports: ${known})`;
  }
  if (tcp.length === 1) return tcp[0]!;
  const http = tcp.find((p) => p.name === 'http');
  if (http) return http;
  return `the Service has ${tcp.length} ports and none is named "http"; set ${ANNOTATION.port}`;
}
