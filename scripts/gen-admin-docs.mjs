#!/usr/bin/env node
// Renders docs/admin-api.md from the admin API's route table and JSON schemas
// (packages/relay/src/admin/schemas.ts), the same ones Fastify validates and
// serialises with. A test fails when the committed file differs.
//   node scripts/gen-admin-docs.mjs          write docs/admin-api.md
//   node scripts/gen-admin-docs.mjs --check  exit 1 if it is out of date
import { fileURLToPath } from 'node:url';
import { ADMIN_ROUTES } from '@burrow/relay';
import { writeGeneratedDoc } from './lib/generated-doc.mjs';

function typeOf(schema) {
  if (schema.type === 'array') return `array of ${typeOf(schema.items)}`;
  if (schema.enum) return schema.enum.map((v) => `"${v}"`).join(' \\| ');
  if (schema.format) return `${schema.type} (${schema.format})`;
  return schema.type;
}

function fields(schema) {
  const item = schema.type === 'array' ? schema.items : schema;
  if (item.type !== 'object') return `A ${typeOf(schema)}.`;
  const rows = Object.entries(item.properties).map(
    ([name, s]) => `| \`${name}\` | ${typeOf(s)} | ${(s.description ?? '').replace(/\|/g, '\\|')} |`,
  );
  const intro = schema.type === 'array' ? 'An array of objects:' : 'An object:';
  return [intro, '', '| field | type | meaning |', '|---|---|---|', ...rows].join('\n');
}

function route(spec) {
  const parts = [
    `### \`${spec.method} ${spec.url}\``,
    '',
    `${spec.description} ${spec.auth ? 'Needs the admin token.' : 'No token needed.'}`,
  ];
  for (const [status, schema] of Object.entries(spec.schema.response)) {
    parts.push('', `**${status}**${spec.produces && status === '200' ? ` (\`${spec.produces}\`)` : ''}`, '');
    parts.push(spec.produces && status === '200' ? 'Text.' : fields(schema));
  }
  return parts.join('\n');
}

export function render() {
  return `# Admin API

Generated from \`packages/relay/src/admin/schemas.ts\` by \`node scripts/gen-admin-docs.mjs\`; Fastify
validates and serialises every response with the same schemas. The admin listener
(\`--admin-listen\`, default \`127.0.0.1:9090\`) also serves the dashboard at \`/\`
([operations.md](operations.md#dashboard)).

Authentication: \`Authorization: Bearer <admin token>\` (\`--admin-token-file\` or
\`BURROW_ADMIN_TOKEN\`), compared in constant time. A missing or wrong token gets \`401\` with
\`WWW-Authenticate: Bearer\` and \`{"error":"unauthorized","message":...}\`; without a configured token
every route that needs one answers \`401\`. \`/healthz\` and \`/readyz\` are open so that probes need no
secret; they reveal nothing but "up" and "draining". Unknown routes answer \`404\` with
\`{"error":"not_found"}\`. The API is read-only.

| route | token | what |
|---|---|---|
${ADMIN_ROUTES.map((r) => `| \`${r.method} ${r.url}\` | ${r.auth ? 'yes' : 'no'} | ${r.description} |`).join('\n')}

## Routes

${ADMIN_ROUTES.map(route).join('\n\n')}
`;
}

writeGeneratedDoc('docs/admin-api.md', render(), fileURLToPath(import.meta.url));
