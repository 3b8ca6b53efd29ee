/**
 * Validation of Kubernetes objects against the API's own schemas, from two
 * generated sources (nothing here restates a field of the API by hand):
 *
 * - kubernetes-models: JSON Schema validators compiled from the Kubernetes
 *   OpenAPI document. They check types, required fields and enums, but, like the
 *   OpenAPI document itself, allow unknown fields, so a misspelt key
 *   (`readinesProbe`) would pass.
 * - @kubernetes/client-node: its generated models carry the attribute map of
 *   every API type; walking an object with them finds keys the API does not
 *   have, as `kubectl apply --validate=strict` would on a real cluster.
 */
import * as k8s from '@kubernetes/client-node';
import type { KubeObject } from './kustomize-lite.js';

interface ModelClass {
  new (data: unknown): { validate(): void };
}

/** `apps/v1` → `kubernetes-models/apps/v1`; the core group `v1` → `kubernetes-models/v1`. */
async function modelFor(obj: KubeObject): Promise<ModelClass> {
  let mod: Record<string, unknown>;
  try {
    mod = await import(`kubernetes-models/${obj.apiVersion}`);
  } catch {
    throw new Error(`no schemas for apiVersion ${obj.apiVersion}`);
  }
  const model = mod[obj.kind];
  if (typeof model !== 'function') throw new Error(`no schema for ${obj.apiVersion} ${obj.kind}`);
  return model as ModelClass;
}

/**
 * Validates one object against its schema. Resolves to a list of problems:
 * empty when the object is valid.
 */
export async function schemaErrors(obj: KubeObject): Promise<string[]> {
  const Model = await modelFor(obj);
  try {
    new Model(obj).validate();
    return [];
  } catch (err) {
    const errors = (err as { errors?: Array<{ instancePath: string; message?: string }> }).errors;
    if (!errors) throw err;
    return errors.map((e) => `${e.instancePath || '/'} ${e.message ?? 'is invalid'}`);
  }
}

interface Attribute {
  baseName: string;
  type: string;
}

const models = k8s as unknown as Record<string, { attributeTypeMap?: Attribute[] } | undefined>;

/** client-node's class name for a top-level kind: apps/v1 Deployment → V1Deployment. */
function className(obj: KubeObject): string {
  const version = obj.apiVersion.split('/').pop() ?? '';
  return `${version.charAt(0).toUpperCase()}${version.slice(1)}${obj.kind}`;
}

function walk(value: unknown, type: string, path: string, out: string[]): void {
  if (value === null || value === undefined) return;
  const array = /^Array<(.+)>$/.exec(type);
  if (array) {
    if (Array.isArray(value)) {
      for (const [i, v] of value.entries()) walk(v, array[1]!, `${path}[${i}]`, out);
    }
    return;
  }
  const map = /^\{ \[key: string\]: (.+); \}$/.exec(type);
  if (map) {
    if (typeof value === 'object')
      for (const [k, v] of Object.entries(value)) walk(v, map[1]!, `${path}.${k}`, out);
    return;
  }
  const attributes = models[type]?.attributeTypeMap;
  // Primitives, IntOrString, Quantity, free-form objects: nothing to look into.
  // A wrong shape (string where an object belongs) is the schema check's finding.
  if (!attributes || typeof value !== 'object' || Array.isArray(value)) return;
  const known = new Map(attributes.map((a) => [a.baseName, a.type]));
  for (const [key, v] of Object.entries(value)) {
    const t = known.get(key);
    if (t === undefined) out.push(`${path}.${key}`);
    else walk(v, t, `${path}.${key}`, out);
  }
}

/** Paths of fields the API type does not define (a strict apply would refuse them). */
export function unknownFields(obj: KubeObject): string[] {
  const name = className(obj);
  if (!models[name]?.attributeTypeMap)
    throw new Error(`no client-node model ${name} for ${obj.apiVersion} ${obj.kind}`);
  const out: string[] = [];
  walk(obj, name, '', out);
  return out;
}
