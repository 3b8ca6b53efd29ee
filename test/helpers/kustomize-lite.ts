/**
 * A deliberately small stand-in for `kustomize build`, for the one base this
 * repository ships (deploy/agent). Neither kustomize nor a kubectl that bundles
 * it is packaged for the Debian release CI runs on, so the manifests test renders
 * with this instead, and cross-checks against `kubectl kustomize` where one is
 * installed.
 *
 * Supported, with kustomize's meaning:
 * - `resources`: local files only (no directories, no remote bases)
 * - `namespace`: set on every object except cluster-scoped kinds, and on
 *   ServiceAccount subjects of (Cluster)RoleBindings that name no namespace or
 *   "default"
 * - `labels`: `pairs` added to metadata.labels, and with `includeTemplates` to
 *   pod templates; `includeSelectors: true` is refused
 * - `images`: `name` matched against container images; `newName`, `newTag`,
 *   `digest`
 *
 * Any other kustomization field makes render() throw, so the test fails loudly
 * instead of silently checking something kustomize would render differently.
 */
import { readFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { parseAllDocuments } from 'yaml';

/** A Kubernetes object as rendered: only the type metadata is assumed. */
export interface KubeObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; [k: string]: unknown };
  [field: string]: unknown;
}

const SUPPORTED = new Set(['apiVersion', 'kind', 'namespace', 'labels', 'resources', 'images']);

/** Kinds that have no namespace (the ones a base like ours could contain). */
const CLUSTER_SCOPED = new Set([
  'Namespace',
  'ClusterRole',
  'ClusterRoleBinding',
  'CustomResourceDefinition',
  'PersistentVolume',
  'StorageClass',
  'PriorityClass',
  'IngressClass',
  'RuntimeClass',
  'ValidatingWebhookConfiguration',
  'MutatingWebhookConfiguration',
  'APIService',
]);

interface LabelsEntry {
  pairs?: Record<string, string>;
  includeSelectors?: boolean;
  includeTemplates?: boolean;
}

interface ImageEntry {
  name: string;
  newName?: string;
  newTag?: string;
  digest?: string;
}

interface Kustomization {
  namespace?: string;
  labels?: LabelsEntry[];
  resources?: string[];
  images?: ImageEntry[];
}

/**
 * Parses a multi-document YAML file as kubectl does: YAML 1.1 (go-yaml), so
 * that `0440` is octal and `yes` a boolean there too. Empty documents are dropped.
 */
export function parseYamlDocuments(text: string, file: string, version: '1.1' | '1.2' = '1.1'): unknown[] {
  const out: unknown[] = [];
  for (const doc of parseAllDocuments(text, { version })) {
    const problem = doc.errors[0] ?? doc.warnings[0];
    if (problem) throw new Error(`${file}: ${problem.message}`);
    const value = doc.toJS();
    if (value !== null && value !== undefined) out.push(value);
  }
  return out;
}

function asObject(value: unknown, file: string): KubeObject {
  const o = value as Partial<KubeObject> | null;
  if (!o || typeof o !== 'object' || typeof o.apiVersion !== 'string' || typeof o.kind !== 'string') {
    throw new Error(`${file}: a document without apiVersion and kind`);
  }
  if (!o.metadata || typeof o.metadata.name !== 'string')
    throw new Error(`${file}: ${o.kind} without a name`);
  return o as KubeObject;
}

/** The pod templates of a workload object (where labels and images apply). */
function podTemplates(
  obj: KubeObject,
): Array<{ metadata?: { labels?: Record<string, string> }; spec?: unknown }> {
  const spec = obj['spec'] as Record<string, unknown> | undefined;
  if (!spec) return [];
  if (obj.kind === 'CronJob') {
    const job = spec['jobTemplate'] as { spec?: { template?: object } } | undefined;
    return job?.spec?.template ? [job.spec.template] : [];
  }
  return spec['template'] && typeof spec['template'] === 'object' ? [spec['template'] as object] : [];
}

function containersOf(podSpec: unknown): Array<{ image?: string }> {
  const spec = podSpec as { containers?: unknown[]; initContainers?: unknown[] } | undefined;
  return [...(spec?.containers ?? []), ...(spec?.initContainers ?? [])] as Array<{ image?: string }>;
}

/** Splits "registry:5000/repo/name:tag@sha256:..." into name, tag and digest. */
function splitImage(image: string): { name: string; tag?: string; digest?: string } {
  const [ref = '', digest] = image.split('@', 2);
  const colon = ref.lastIndexOf(':');
  const tagged = colon > ref.lastIndexOf('/');
  return {
    name: tagged ? ref.slice(0, colon) : ref,
    ...(tagged ? { tag: ref.slice(colon + 1) } : {}),
    ...(digest ? { digest } : {}),
  };
}

function retag(image: string, entry: ImageEntry): string {
  const parts = splitImage(image);
  if (parts.name !== entry.name) return image;
  const name = entry.newName ?? parts.name;
  // kustomize: a digest replaces any tag; a new tag drops an old digest.
  if (entry.digest) return `${name}@${entry.digest}`;
  const tag = entry.newTag ?? parts.tag;
  return `${name}${tag ? `:${tag}` : ''}${!entry.newTag && parts.digest ? `@${parts.digest}` : ''}`;
}

/** Renders the kustomization in `dir` into a list of objects, in resource order. */
export async function renderKustomization(dir: string): Promise<KubeObject[]> {
  const path = join(dir, 'kustomization.yaml');
  const [raw] = parseYamlDocuments(await readFile(path, 'utf8'), path);
  const k = raw as Kustomization & Record<string, unknown>;
  for (const key of Object.keys(k)) {
    if (!SUPPORTED.has(key)) throw new Error(`${path}: "${key}" is not supported by kustomize-lite`);
  }

  const objects: KubeObject[] = [];
  for (const res of k.resources ?? []) {
    const file = resolve(dir, res);
    if (dirname(file) !== resolve(dir))
      throw new Error(`${path}: resource ${res}: only local files are supported`);
    for (const doc of parseYamlDocuments(await readFile(file, 'utf8'), file))
      objects.push(asObject(doc, file));
  }

  for (const obj of objects) {
    if (k.namespace && !CLUSTER_SCOPED.has(obj.kind)) obj.metadata.namespace = k.namespace;
    if (k.namespace && (obj.kind === 'RoleBinding' || obj.kind === 'ClusterRoleBinding')) {
      for (const s of (obj['subjects'] ?? []) as Array<{ kind?: string; namespace?: string }>) {
        if (s.kind === 'ServiceAccount' && (!s.namespace || s.namespace === 'default'))
          s.namespace = k.namespace;
      }
    }
    for (const entry of k.labels ?? []) {
      if (entry.includeSelectors) throw new Error(`${path}: labels.includeSelectors is not supported`);
      const pairs = entry.pairs ?? {};
      obj.metadata.labels = { ...obj.metadata.labels, ...pairs };
      if (entry.includeTemplates) {
        for (const tpl of podTemplates(obj)) {
          tpl.metadata ??= {};
          tpl.metadata.labels = { ...tpl.metadata.labels, ...pairs };
        }
      }
    }
    for (const entry of k.images ?? []) {
      for (const tpl of podTemplates(obj)) {
        for (const c of containersOf(tpl.spec)) if (c.image) c.image = retag(c.image, entry);
      }
    }
  }
  return objects;
}

/** "Kind/namespace/name", the identity kustomize itself uses to tell objects apart. */
export function objectKey(obj: KubeObject): string {
  return `${obj.kind}/${obj.metadata.namespace ?? ''}/${obj.metadata.name}`;
}
