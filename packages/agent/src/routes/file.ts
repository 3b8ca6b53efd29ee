/**
 * Routes from a YAML file (`--routes FILE`):
 *
 *   routes:
 *     - hostnames: [app.example.com]
 *       target: http://127.0.0.1:3000
 *       allowCidrs: [203.0.113.0/24]   # optional
 *       tlsInsecure: false             # optional, https targets only
 *       id: app                        # optional; default static:FIRST-HOSTNAME
 *     - ports: [5432]                  # a public TCP port on the relay
 *       target: tcp://127.0.0.1:5432   # optional id; default static:tcp-FIRST-PORT
 *
 * Every mistake is reported as `FILE: routes[1].target: must be …`.
 */
import { ConfigError, checkHostPattern, parseCidr, parseUserYaml, readOptionFile } from '@burrow/shared';
import { z } from 'zod';
import type { Route } from './source.js';
import { STATIC_ID_PREFIX, tcpRouteId } from './static.js';
import { checkTarget, EMPTY_ALLOWLIST, isTcp, routeIdFor } from './validate.js';

const hostname = z.string().superRefine((h, ctx) => {
  const problem = checkHostPattern(h);
  if (problem) ctx.addIssue({ code: 'custom', message: problem });
});

const routeSchema = z
  .strictObject({
    id: z
      .string()
      .regex(/^[A-Za-z0-9._:/-]{1,128}$/, 'must be 1 to 128 letters, digits or . _ : / -')
      .optional(),
    // Required for all but tcp:// routes, which list ports instead (checked with the whole route).
    hostnames: z.array(hostname).max(64, 'at most 64 hostnames').optional(),
    ports: z
      .array(
        z
          .number()
          .int('must be whole numbers')
          .min(1, 'must be from 1 to 65535')
          .max(65535, 'must be from 1 to 65535'),
      )
      .max(16, 'at most 16 ports')
      .optional(),
    target: z.string().superRefine((t, ctx) => {
      const checked = checkTarget(t);
      if ('error' in checked) ctx.addIssue({ code: 'custom', message: checked.error });
    }),
    allowCidrs: z
      .array(
        z.string().superRefine((c, ctx) => {
          const parsed = parseCidr(c);
          if (typeof parsed === 'string') ctx.addIssue({ code: 'custom', message: parsed });
        }),
      )
      .min(1, EMPTY_ALLOWLIST)
      .max(256)
      .optional(),
    tlsInsecure: z.boolean().optional(),
  })
  // A tcp:// route is reached by its ports, any other by its hostnames.
  .superRefine((r, ctx) => {
    const tcp = isTcp(r);
    const need = tcp ? 'ports' : 'hostnames';
    const other = tcp ? 'hostnames' : 'ports';
    const list = r[need];
    if (list === undefined) ctx.addIssue({ code: 'custom', path: [need], message: 'is required' });
    else if (list.length === 0) {
      const message = tcp ? 'must list at least one port' : 'must list at least one hostname';
      ctx.addIssue({ code: 'custom', path: [need], message });
    }
    if (r[other]?.length) {
      const message = tcp
        ? 'a tcp:// route is reached by its ports, not by hostname; list none'
        : 'apply to tcp:// targets only; other routes are reached by hostname';
      ctx.addIssue({ code: 'custom', path: [other], message });
    }
  });

const fileSchema = z.strictObject({
  routes: z.array(routeSchema).max(1024, 'at most 1024 routes'),
});

/** `routes.1.target` → `routes[1].target`. */
function fieldPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const p of path) out += typeof p === 'number' ? `[${p}]` : `${out ? '.' : ''}${String(p)}`;
  return out;
}

function valueAt(root: unknown, path: readonly PropertyKey[]): unknown {
  let v = root;
  for (const p of path) v = v && typeof v === 'object' ? (v as Record<PropertyKey, unknown>)[p] : undefined;
  return v;
}

function issueMessage(issue: z.core.$ZodIssue, raw: unknown): string {
  // zod's defaults for type mismatches are terse; say what the field should be.
  if (issue.code === 'invalid_type') {
    if (valueAt(raw, issue.path) === undefined) return 'is required';
    const what: Record<string, string> = {
      array: 'a list',
      object: 'a mapping',
      boolean: 'true or false',
      int: 'a whole number',
    };
    return `must be ${what[issue.expected] ?? `a ${issue.expected}`}`;
  }
  if (issue.code === 'unrecognized_keys') {
    return `unknown key${issue.keys.length > 1 ? 's' : ''} ${issue.keys.map((k) => `"${k}"`).join(', ')}`;
  }
  return issue.message;
}

/** Parses the text of a routes file. Throws ConfigError naming the file and the field. */
export function parseRoutesYaml(text: string, fileName: string): Route[] {
  const raw = parseUserYaml(text, fileName);
  if (raw !== null && raw !== undefined && (typeof raw !== 'object' || Array.isArray(raw))) {
    // A bare list of routes is the usual slip: the file is `routes:` and the list under it.
    throw new ConfigError(
      `${fileName}: expected a mapping with a "routes:" list (see docs/configuration.md)`,
    );
  }
  const parsed = fileSchema.safeParse(raw ?? {});
  if (!parsed.success) {
    // A misspelt key explains a missing one better than "is required" does.
    const issue = parsed.error.issues.find((i) => i.code === 'unrecognized_keys') ?? parsed.error.issues[0]!;
    const field = fieldPath(issue.path);
    throw new ConfigError(`${fileName}: ${field ? `${field}: ` : ''}${issueMessage(issue, raw ?? {})}`);
  }
  return parsed.data.routes.map((r) => {
    const target = checkTarget(r.target);
    const hostnames = r.hostnames ?? [];
    return {
      id:
        r.id ??
        (r.ports && hostnames.length === 0 ? tcpRouteId(r.ports) : routeIdFor(STATIC_ID_PREFIX, hostnames)),
      hostnames,
      ...(r.ports ? { ports: r.ports } : {}),
      target: 'origin' in target ? target.origin : r.target,
      ...(r.allowCidrs?.length ? { allowCidrs: r.allowCidrs } : {}),
      ...(r.tlsInsecure ? { tlsInsecure: true } : {}),
    };
  });
}

/** Reads and parses a routes file. */
export async function loadRoutesFile(path: string): Promise<Route[]> {
  const text = await readOptionFile('routes', path);
  return parseRoutesYaml(text, path);
}
