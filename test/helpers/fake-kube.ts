/**
 * A fake Kubernetes API server for tests: real HTTP on 127.0.0.1, speaking the
 * parts of the REST and watch protocol Burrow's agent uses, so the agent runs
 * its production code path with the real @kubernetes/client-node:
 *
 * - list with resourceVersion (and labelSelector equality terms);
 * - watch as a chunked stream of JSON lines (ADDED/MODIFIED/DELETED, BOOKMARK on demand),
 *   410 Gone for a compacted resourceVersion, server-side timeouts, and
 *   dropping every open watch on demand; as the API server's watch cache, a
 *   watch with a label selector sees an object whose labels stop matching as
 *   DELETED, and one that starts matching as ADDED;
 * - JSON merge-patch (RFC 7386) on Services (422 for one that changes
 *   metadata.uid) and JSON patch (RFC 6902; 422 for a test that fails);
 *   create/patch of core/v1 Events;
 *   coordination.k8s.io/v1 Leases (get/create/update with resourceVersion
 *   conflicts; timestamps must be MicroTime, or 400).
 */
import { EventEmitter, once } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { startAgent, startKubernetes } from '@burrow/agent';
import { KubeConfig } from '@kubernetes/client-node';
import { type Teardownable, testLogger, tokenFor } from './relay.js';

// Kubernetes objects of any kind pass through untyped, as JSON does on a real API server.
// biome-ignore lint/suspicious/noExplicitAny: arbitrary JSON objects
type Obj = { apiVersion?: string; kind?: string; metadata: Record<string, any>; [k: string]: any };
type WatchEvent = {
  type: 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK';
  object: Obj;
  rv: number;
  /** The object before a MODIFIED: what a filtered watch compares with to see it enter or leave. */
  prev?: Obj;
};

interface Collection {
  kind: string;
  apiVersion: string;
  objects: Map<string, Obj>; // key ns/name
}

export interface FakeKubeRequest {
  method: string;
  path: string;
  contentType: string | undefined;
  body: unknown;
}

export class FakeKube extends EventEmitter {
  server!: Server;
  url = '';
  #rv = 100;
  /** Oldest resourceVersion a watch may resume from; older gets 410 Gone. */
  #compactedBefore = 0;
  readonly #history: Array<WatchEvent & { resource: string }> = [];
  readonly #collections = new Map<string, Collection>([
    ['services', { kind: 'Service', apiVersion: 'v1', objects: new Map() }],
    ['events', { kind: 'Event', apiVersion: 'v1', objects: new Map() }],
    ['leases', { kind: 'Lease', apiVersion: 'coordination.k8s.io/v1', objects: new Map() }],
  ]);
  readonly #watches = new Set<{
    res: ServerResponse;
    resource: string;
    ns?: string;
    selector?: Record<string, string>;
    /** The watch asked for bookmarks (allowWatchBookmarks=true). */
    bookmarks: boolean;
  }>();
  /** Every request received, for assertions (e.g. that no write touched keys we do not own). */
  readonly requests: FakeKubeRequest[] = [];
  /**
   * When set, the next `count` requests of `method` (default GET: list and
   * watch) on this resource fail with `status`; with `namespace` or `name`,
   * only those there, or for that object.
   */
  failNext:
    | { resource: string; status: number; count: number; method?: string; namespace?: string; name?: string }
    | undefined;
  /**
   * When set, every watch opened is answered with this ERROR event, then ended: how the API
   * server reports a failure it meets once a watch is under way (an etcd timeout, say).
   */
  watchError: { code: number; reason?: string; message: string } | undefined;
  /**
   * When set, the next `count` requests of `method` (default GET) on this resource get no answer
   * at all (`watch`: only watches; otherwise lists and other requests): an API server, or a proxy
   * in front of it, that took the request and went quiet. They stay open until the server stops.
   */
  hangNext: { resource: string; count: number; method?: string; watch?: boolean } | undefined;
  /** Delay of every watch event after the change it reports, ms: a real watch cache trails writes. */
  watchDelay = 0;
  /** When set, every watch opened is answered 200 and ended at once, with no event (a proxy that cuts streams). */
  watchEndsAtOnce = false;
  /** Namespaces whose every request is refused with 403, as RBAC refuses one the agent's Role does not cover. */
  readonly forbidden = new Set<string>();

  async start(t: Teardownable): Promise<this> {
    this.server = createServer((req, res) => {
      this.#handle(req, res).catch((err) => {
        res.writeHead(500, { 'content-type': 'application/json' });
        res.end(JSON.stringify(status(500, String(err))));
      });
    });
    this.server.listen(0, '127.0.0.1');
    await once(this.server, 'listening');
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    t.teardown(() => this.stop());
    return this;
  }

  async stop(): Promise<void> {
    this.dropWatches();
    this.server.closeAllConnections();
    await new Promise<void>((r) => this.server.close(() => r()));
  }

  /** A kubeconfig (YAML) pointing at this server without TLS or auth. */
  kubeconfig(): string {
    return [
      'apiVersion: v1',
      'kind: Config',
      'clusters: [{ name: fake, cluster: { server: "' + this.url + '", insecure-skip-tls-verify: true } }]',
      'users: [{ name: fake, user: { token: fake-token } }]',
      'contexts: [{ name: fake, context: { cluster: fake, user: fake, namespace: default } }]',
      'current-context: fake',
      '',
    ].join('\n');
  }

  // ---- Test controls ----

  /** Creates or replaces a Service; emits ADDED or MODIFIED to watchers. */
  upsertService(svc: Obj): Obj {
    return this.#put('services', svc);
  }

  deleteService(namespace: string, name: string): void {
    this.#delete('services', namespace, name);
  }

  getService(namespace: string, name: string): Obj | undefined {
    return structuredClone(this.#collections.get('services')!.objects.get(`${namespace}/${name}`));
  }

  events(): Obj[] {
    return [...this.#collections.get('events')!.objects.values()].map((e) => structuredClone(e));
  }

  leases(): Obj[] {
    return [...this.#collections.get('leases')!.objects.values()].map((e) => structuredClone(e));
  }

  /** Forgets history: watches resuming from any older resourceVersion get 410 Gone. */
  compact(): void {
    this.#compactedBefore = this.#rv;
    this.#history.length = 0;
  }

  /**
   * As after a restore of etcd from an older backup: the resourceVersion
   * counter goes back to `rv`, history is gone, and the Services become
   * `services`, with no watch event. A watch resuming from a resourceVersion
   * past `rv` is then answered 504 "Too large resource version", as the API
   * server answers one its cache has not reached.
   */
  restore(rv: number, services: Obj[]): void {
    this.#rv = rv;
    this.#history.length = 0;
    this.#compactedBefore = 0;
    const c = this.#collections.get('services')!;
    c.objects.clear();
    for (const svc of services) {
      const ns = svc.metadata.namespace ?? 'default';
      const key = `${ns}/${svc.metadata.name}`;
      c.objects.set(key, {
        apiVersion: c.apiVersion,
        kind: c.kind,
        ...structuredClone(svc),
        metadata: {
          uid: `uid-${key}`,
          ...structuredClone(svc.metadata),
          namespace: ns,
          resourceVersion: String(rv),
        },
      });
    }
  }

  /** Ends every open watch stream (as an apiserver restart or a load balancer would). */
  dropWatches(): void {
    for (const w of this.#watches) w.res.end();
    this.#watches.clear();
  }

  /** Sends a watch ERROR event with 410 to every open watch, then ends them (expired mid-watch). */
  expireWatches(): void {
    this.compact();
    for (const w of this.#watches) {
      w.res.write(`${JSON.stringify({ type: 'ERROR', object: status(410, 'too old resource version') })}\n`);
      w.res.end();
    }
    this.#watches.clear();
  }

  /**
   * Sends a BOOKMARK at the latest resourceVersion to every open watch that asked for bookmarks, as
   * the API server does now and then (about once a minute) while nothing a watch sees changes.
   * Returns that resourceVersion.
   */
  bookmark(): number {
    for (const w of this.#watches) {
      if (!w.bookmarks) continue;
      const c = this.#collections.get(w.resource)!;
      const object = {
        kind: c.kind,
        apiVersion: c.apiVersion,
        metadata: { resourceVersion: String(this.#rv) },
      };
      w.res.write(`${JSON.stringify({ type: 'BOOKMARK', object })}\n`);
    }
    return this.#rv;
  }

  /** Writes `event` as it is (no checks) on every open watch: what a broken server or proxy might send. */
  sendRawWatchEvent(event: unknown): void {
    for (const w of this.#watches) w.res.write(`${JSON.stringify(event)}\n`);
  }

  /** The latest resourceVersion handed out. */
  get resourceVersion(): number {
    return this.#rv;
  }

  get openWatches(): number {
    return this.#watches.size;
  }

  // ---- Store ----

  #put(resource: string, obj: Obj): Obj {
    const c = this.#collections.get(resource)!;
    const ns = obj.metadata.namespace ?? 'default';
    const key = `${ns}/${obj.metadata.name}`;
    const existing = c.objects.get(key);
    const existed = existing !== undefined;
    const stored: Obj = structuredClone({ apiVersion: c.apiVersion, kind: c.kind, ...obj });
    stored.metadata = {
      uid: `uid-${key}`,
      // As the API server: whole seconds, set at creation and kept by updates.
      creationTimestamp: new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
      ...stored.metadata,
      ...(existing
        ? { uid: existing.metadata['uid'], creationTimestamp: existing.metadata['creationTimestamp'] }
        : {}),
      namespace: ns,
      resourceVersion: String(++this.#rv),
    };
    c.objects.set(key, stored);
    this.#emit(resource, existed ? 'MODIFIED' : 'ADDED', stored, existing);
    return structuredClone(stored);
  }

  #delete(resource: string, namespace: string, name: string): boolean {
    const c = this.#collections.get(resource)!;
    const obj = c.objects.get(`${namespace}/${name}`);
    if (!obj) return false;
    c.objects.delete(`${namespace}/${name}`);
    const gone = structuredClone(obj);
    gone.metadata.resourceVersion = String(++this.#rv);
    this.#emit(resource, 'DELETED', gone);
    return true;
  }

  #emit(resource: string, type: WatchEvent['type'], object: Obj, prev?: Obj): void {
    const ev = {
      type,
      object: structuredClone(object),
      rv: this.#rv,
      resource,
      ...(prev ? { prev: structuredClone(prev) } : {}),
    };
    this.#history.push(ev);
    if (this.#history.length > 10_000) this.#history.shift();
    for (const w of this.#watches) {
      const line = w.resource === resource ? watchLine(ev, w.ns, w.selector) : undefined;
      if (!line) continue;
      if (this.watchDelay > 0) setTimeout(() => w.res.writable && w.res.write(line), this.watchDelay);
      else w.res.write(line);
    }
    this.emit('change', ev);
  }

  // ---- HTTP ----

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', this.url);
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const raw = Buffer.concat(chunks).toString();
    let body: unknown;
    try {
      body = raw ? JSON.parse(raw) : undefined;
    } catch {
      return send(res, 400, status(400, 'body is not JSON'));
    }
    this.requests.push({
      method: req.method ?? '',
      path: url.pathname + url.search,
      contentType: req.headers['content-type'],
      body,
    });
    this.emit('request', this.requests.at(-1));

    const m =
      /^\/api\/v1(?:\/namespaces\/([^/]+))?\/(services|events)(?:\/([^/]+))?$/.exec(url.pathname) ??
      /^\/apis\/coordination\.k8s\.io\/v1(?:\/namespaces\/([^/]+))?\/(leases)(?:\/([^/]+))?$/.exec(
        url.pathname,
      );
    if (!m)
      return send(
        res,
        404,
        status(404, `the server could not find the requested resource (${url.pathname})`),
      );
    const [, ns, resource, name] = m as unknown as [string, string | undefined, string, string | undefined];
    const c = this.#collections.get(resource)!;

    if (ns !== undefined && this.forbidden.has(ns))
      return send(res, 403, status(403, `${resource} is forbidden in the namespace "${ns}"`));
    if (
      this.failNext &&
      this.failNext.resource === resource &&
      req.method === (this.failNext.method ?? 'GET') &&
      (this.failNext.namespace === undefined || this.failNext.namespace === ns) &&
      (this.failNext.name === undefined || this.failNext.name === name) &&
      this.failNext.count > 0
    ) {
      this.failNext.count--;
      return send(res, this.failNext.status, status(this.failNext.status, 'injected failure'));
    }
    const hang = this.hangNext;
    if (
      hang &&
      hang.resource === resource &&
      req.method === (hang.method ?? 'GET') &&
      (url.searchParams.get('watch') === 'true') === (hang.watch ?? false) &&
      hang.count > 0
    ) {
      hang.count--;
      this.emit('hung', this.requests.at(-1));
      // The client giving up closes its connection: said, so a test can tell it was not left behind.
      res.once('close', () => this.emit('hungClosed'));
      return;
    }

    if (req.method === 'GET' && !name) {
      const selector = parseSelector(url.searchParams.get('labelSelector'));
      if (url.searchParams.get('watch') === 'true') return this.#watch(req, res, resource, ns, selector, url);
      const items = [...c.objects.values()].filter((o) => matches(o, ns, selector));
      return send(res, 200, {
        apiVersion: c.apiVersion,
        kind: `${c.kind}List`,
        metadata: { resourceVersion: String(this.#rv) },
        items,
      });
    }
    if (!ns) return send(res, 405, status(405, 'method not allowed'));
    const key = `${ns}/${name}`;
    switch (req.method) {
      case 'GET': {
        const obj = c.objects.get(key);
        return obj ? send(res, 200, obj) : send(res, 404, status(404, `${resource} "${name}" not found`));
      }
      case 'POST': {
        const obj = body as Obj;
        const invalid = resource === 'leases' ? invalidLeaseTimes(obj) : undefined;
        if (invalid) return send(res, 400, status(400, invalid));
        const objName = obj?.metadata?.name;
        if (!objName) return send(res, 422, status(422, 'metadata.name is required'));
        if (c.objects.has(`${ns}/${objName}`))
          return send(res, 409, status(409, `${resource} "${objName}" already exists`));
        return send(res, 201, this.#put(resource, { ...obj, metadata: { ...obj.metadata, namespace: ns } }));
      }
      case 'PUT': {
        const obj = body as Obj;
        const invalid = resource === 'leases' ? invalidLeaseTimes(obj) : undefined;
        if (invalid) return send(res, 400, status(400, invalid));
        const current = c.objects.get(key);
        if (!current) return send(res, 404, status(404, `${resource} "${name}" not found`));
        if (
          obj.metadata?.resourceVersion &&
          obj.metadata.resourceVersion !== current.metadata.resourceVersion
        ) {
          return send(
            res,
            409,
            status(409, 'the object has been modified; please apply your changes to the latest version'),
          );
        }
        return send(
          res,
          200,
          this.#put(resource, { ...obj, metadata: { ...obj.metadata, namespace: ns, name } }),
        );
      }
      case 'PATCH': {
        const type = req.headers['content-type'] ?? '';
        const json = type.startsWith('application/json-patch+json');
        if (!json && !type.startsWith('application/merge-patch+json')) {
          return send(
            res,
            415,
            status(415, `unsupported patch type ${type}; this fake speaks merge-patch and JSON patch only`),
          );
        }
        const current = c.objects.get(key);
        if (!current) return send(res, 404, status(404, `${resource} "${name}" not found`));
        let patched: Obj;
        try {
          patched = (
            json ? jsonPatch(structuredClone(current), body) : mergePatch(structuredClone(current), body)
          ) as Obj;
        } catch (err) {
          // As the API server: a JSON patch that cannot apply (a test that fails) is 422.
          return send(res, 422, status(422, (err as Error).message));
        }
        // As the API server's validation: a patch naming another uid is for another object.
        if (patched.metadata?.['uid'] !== current.metadata['uid']) {
          return send(
            res,
            422,
            status(
              422,
              `${c.kind} "${name}" is invalid: metadata.uid: Invalid value: "${patched.metadata?.['uid']}": field is immutable`,
            ),
          );
        }
        patched.metadata.name = name;
        patched.metadata.namespace = ns;
        return send(res, 200, this.#put(resource, patched));
      }
      case 'DELETE':
        return this.#delete(resource, ns, name!)
          ? send(res, 200, status(200, 'deleted'))
          : send(res, 404, status(404, 'not found'));
    }
    return send(res, 405, status(405, 'method not allowed'));
  }

  #watch(
    req: IncomingMessage,
    res: ServerResponse,
    resource: string,
    ns: string | undefined,
    selector: Record<string, string> | undefined,
    url: URL,
  ): void {
    const from = Number(url.searchParams.get('resourceVersion') || '0');
    if (from && from < this.#compactedBefore) {
      return send(res, 410, status(410, `too old resource version: ${from} (${this.#compactedBefore})`));
    }
    if (from > this.#rv) {
      return send(res, 504, {
        ...status(504, `Too large resource version: ${from}, current: ${this.#rv}`),
        reason: 'Timeout',
        details: { causes: [{ reason: 'ResourceVersionTooLarge', message: 'Too large resource version' }] },
      });
    }
    res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
    res.flushHeaders();
    if (this.watchEndsAtOnce) {
      res.end();
      this.emit('watch', { resource, from });
      return;
    }
    if (this.watchError) {
      const { code, reason, message } = this.watchError;
      const object = { ...status(code, message), ...(reason ? { reason } : {}) };
      res.end(`${JSON.stringify({ type: 'ERROR', object })}\n`);
      this.emit('watch', { resource, from });
      return;
    }
    // Replay what happened after `from` (rv 0 means "now": nothing to replay).
    if (from) {
      for (const ev of this.#history) {
        const line = ev.resource === resource && ev.rv > from ? watchLine(ev, ns, selector) : undefined;
        if (line) res.write(line);
      }
    }
    const w = {
      res,
      resource,
      ...(ns ? { ns } : {}),
      ...(selector ? { selector } : {}),
      bookmarks: url.searchParams.get('allowWatchBookmarks') === 'true',
    };
    this.#watches.add(w);
    const timeout = Number(url.searchParams.get('timeoutSeconds') || '0');
    const timer = timeout > 0 ? setTimeout(() => res.end(), timeout * 1000) : undefined;
    const done = () => {
      clearTimeout(timer);
      this.#watches.delete(w);
      this.emit('watch-closed');
    };
    req.on('close', done);
    res.on('close', done);
    this.emit('watch', { resource, from });
  }
}

function send(res: ServerResponse, code: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(code, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function status(code: number, message: string) {
  return {
    kind: 'Status',
    apiVersion: 'v1',
    metadata: {},
    status: code < 400 ? 'Success' : 'Failure',
    message,
    code,
    reason: code === 410 ? 'Expired' : undefined,
  };
}

function parseSelector(text: string | null): Record<string, string> | undefined {
  if (!text) return undefined;
  const out: Record<string, string> = {};
  for (const term of text.split(',')) {
    const [k, v] = term.split('=');
    if (k) out[k.trim()] = (v ?? '').trim();
  }
  return out;
}

function matches(obj: Obj, ns: string | undefined, selector: Record<string, string> | undefined): boolean {
  if (ns && obj.metadata.namespace !== ns) return false;
  if (!selector) return true;
  const labels = (obj.metadata.labels ?? {}) as Record<string, string>;
  return Object.entries(selector).every(([k, v]) => labels[k] === v);
}

/**
 * The line a watch of `ns` and `selector` gets for `ev`, if any. As the API
 * server's watch cache: a change that makes an object match is ADDED, one that
 * makes it stop matching is DELETED (the object as it was, at the new
 * resourceVersion).
 */
function watchLine(
  ev: WatchEvent,
  ns: string | undefined,
  selector: Record<string, string> | undefined,
): string | undefined {
  const now = matches(ev.object, ns, selector);
  const before = ev.prev !== undefined && matches(ev.prev, ns, selector);
  let type = ev.type;
  let object = ev.object;
  if (ev.type === 'MODIFIED' && now !== before) {
    type = now ? 'ADDED' : 'DELETED';
    if (!now)
      object = {
        ...ev.prev!,
        metadata: { ...ev.prev!.metadata, resourceVersion: ev.object.metadata['resourceVersion'] },
      };
  } else if (!now) return undefined;
  return `${JSON.stringify({ type, object })}\n`;
}

/**
 * RFC 6902 JSON patch: test, add, replace and remove, on objects (not arrays). Throws when an
 * operation cannot apply: a test whose value differs, a path that is not there.
 */
export function jsonPatch(target: Obj, ops: unknown): Obj {
  if (!Array.isArray(ops)) throw new Error('a JSON patch is a list of operations');
  for (const op of ops as Array<{ op: string; path: string; value?: unknown }>) {
    const keys = op.path
      .split('/')
      .slice(1)
      .map((k) => k.replace(/~1/g, '/').replace(/~0/g, '~'));
    const last = keys.pop()!;
    // biome-ignore lint/suspicious/noExplicitAny: arbitrary JSON objects
    let parent: any = target;
    for (const k of keys) {
      parent = parent?.[k];
      if (parent === null || typeof parent !== 'object') throw new Error(`path ${op.path} not found`);
    }
    const there = Object.hasOwn(parent, last);
    if (op.op === 'test') {
      if (!there || JSON.stringify(parent[last]) !== JSON.stringify(op.value))
        throw new Error(`testing value ${op.path} failed`);
    } else if (op.op === 'remove' || op.op === 'replace') {
      if (!there) throw new Error(`path ${op.path} not found`);
      if (op.op === 'remove') delete parent[last];
      else parent[last] = op.value;
    } else if (op.op === 'add') parent[last] = op.value;
    else throw new Error(`unsupported JSON patch operation ${op.op}`);
  }
  return target;
}

/** RFC 7386 JSON merge patch. */
export function mergePatch(target: unknown, patch: unknown): unknown {
  if (patch === null || typeof patch !== 'object' || Array.isArray(patch)) return patch;
  const out: Record<string, unknown> =
    target && typeof target === 'object' && !Array.isArray(target)
      ? { ...(target as Record<string, unknown>) }
      : {};
  for (const [k, v] of Object.entries(patch as Record<string, unknown>)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

/** A ClusterIP Service with one TCP port (named `portName`, with `appProtocol` if given) and the given annotations. */
export function kubeService(
  name: string,
  clusterIP: string,
  port: number,
  annotations: Record<string, string>,
  {
    namespace = 'default',
    portName = 'http',
    appProtocol,
  }: { namespace?: string; portName?: string; appProtocol?: string } = {},
): Obj {
  const spec = { name: portName, port, protocol: 'TCP', ...(appProtocol ? { appProtocol } : {}) };
  return {
    metadata: { name, namespace, annotations },
    spec: { type: 'ClusterIP', clusterIP, ports: [spec] },
  };
}

/** Resolves when `check` holds, re-checking after every change the fake API server sees. */
export function untilKube<T>(kube: FakeKube, check: () => T | undefined | false): Promise<T> {
  return new Promise((resolve) => {
    const tryNow = () => {
      const v = check();
      if (v) {
        kube.off('change', tryNow);
        resolve(v);
      }
    };
    kube.on('change', tryNow);
    tryNow();
  });
}

/** Starts a fake API server for the test. */
export function fakeKube(t: Teardownable): Promise<FakeKube> {
  return new FakeKube().start(t);
}

/** RFC 3339 with exactly six fractional digits: how the API server parses a MicroTime. */
const MICRO_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}(?:Z|[+-]\d{2}:\d{2})$/;

/** Why the API server would refuse a Lease's timestamps, if it would. */
function invalidLeaseTimes(obj: Obj): string | undefined {
  const spec = (obj as { spec?: Record<string, unknown> }).spec ?? {};
  for (const field of ['acquireTime', 'renewTime']) {
    const v = spec[field];
    if (v !== undefined && !(typeof v === 'string' && MICRO_TIME.test(v)))
      return `Lease in version "v1" cannot be handled as a Lease: spec.${field}: parsing time ${JSON.stringify(v)} as MicroTime`;
  }
  return undefined;
}

/**
 * A Kubernetes route source on `kube` and an agent announcing it to the relay
 * at `relayUrl`, write-back attached; ready once the relay answered. Both stop
 * at teardown.
 */
export async function kubeAgent(
  t: Teardownable,
  kube: FakeKube,
  relayUrl: string,
  opts: {
    lease?: boolean;
    identity?: string;
    /** Default: subject cluster-1, hosts *.example.com. */
    token?: string;
    /** Write and read `burrow.dev/holds` records, keyed by the token, as the CLI does. */
    holds?: boolean;
    /** How long a Service whose route lapsed keeps its names (startKubernetes holdGrace), ms. */
    holdGrace?: number;
  } = {},
) {
  const kc = new KubeConfig();
  kc.loadFromString(kube.kubeconfig());
  const token = opts.token ?? (await tokenFor('cluster-1', ['*.example.com']));
  const k = await startKubernetes({
    ...(opts.holds ? { token } : {}),
    ...(opts.holdGrace !== undefined ? { holdGrace: opts.holdGrace } : {}),
    kubeConfig: kc,
    logger: testLogger('kube'),
    backoff: { base: 10, cap: 100 },
    lease: opts.lease
      ? {
          namespace: 'burrow-system',
          identity: opts.identity ?? 'agent-a',
          leaseDuration: 2_000,
          renewInterval: 200,
        }
      : false,
  });
  const agent = startAgent({
    relayUrl,
    token,
    routes: k.source,
    connections: 2,
    logger: testLogger('agent'),
    backoff: { base: 20, cap: 200 },
  });
  k.attach(agent);
  t.teardown(async () => {
    await agent.close();
    await k.stop();
  });
  await agent.ready();
  return { agent, k };
}
