#!/usr/bin/env node
// Regenerates docs/configuration.md from the option tables that also drive
// the CLIs' flags, environment variables and --help. A test fails when the
// committed file differs, so docs and binaries cannot drift apart.
//   node scripts/gen-config-docs.mjs          write docs/configuration.md
//   node scripts/gen-config-docs.mjs --check  exit 1 if it is out of date
import { fileURLToPath } from 'node:url';
import { AGENT_OPTIONS } from '@burrow/agent';
import { RELAY_KEYGEN_OPTIONS, RELAY_SERVE_OPTIONS, RELAY_TOKEN_OPTIONS } from '@burrow/relay';
import { writeGeneratedDoc } from './lib/generated-doc.mjs';

function table(specs) {
  const rows = specs
    .filter((s) => s.name !== 'help')
    .map((s) => {
      const flag = `${s.short ? `\`-${s.short}\`, ` : ''}\`--${s.name}${s.type === 'boolean' ? '' : ` ${s.placeholder ?? 'VALUE'}`}\``;
      const env = s.env ? `\`${s.env}\`` : '';
      const def = s.default !== undefined ? `\`${String(s.default)}\`` : '';
      const list = s.env ? ' (repeatable; comma-separated in env)' : ' (repeatable)';
      const desc = `${s.description}${s.type === 'list' ? list : ''}`;
      return `| ${flag} | ${env} | ${def} | ${desc.replace(/\|/g, '\\|')} |`;
    });
  return ['| flag | environment | default | meaning |', '|---|---|---|---|', ...rows].join('\n');
}

export function render() {
  return `# Configuration

Generated from the option tables in \`packages/relay/src/config.ts\` and
\`packages/agent/src/config.ts\` by \`node scripts/gen-config-docs.mjs\`; the same tables drive
\`--help\`. Precedence: command-line flag, then environment variable, then the YAML file given with
\`--config\` (relay; keys are the long flag names), then the default; a list set to nothing
(\`BURROW_VERIFY_KEYS=,\`, \`verify-key: []\`) counts as not set. Durations take a unit
(\`ms\`, \`s\`, \`m\`, \`h\` or \`d\`; decimals allowed): \`500ms\`, \`30s\`, \`15m\`, \`12h\`, \`90d\`; a bare
number such as \`30\` is refused, in a YAML file too (only \`0\` needs no unit). Timeouts and
intervals must be under 24.8 days, the longest a timer can wait (\`--hsts-max-age\` and a token's
\`--ttl\` have no such bound). Every value is checked at start (and at each reload); an error
names where the bad value was set: the flag (\`--http-listen must be HOST:PORT …\`), the environment
variable (\`BURROW_HTTP_LISTEN must be HOST:PORT …\`) or the file and key
(\`relay.yaml: "http-listen" must be HOST:PORT …\`).

The config file is YAML of at most 1 MiB, in one document (a second one after \`---\` is refused, not
ignored; the same holds for routes files and kubeconfigs). A number in it is read as written (\`admin-token:
000123…\` keeps its zeros). An empty file is refused, also on a reload, so a file caught while an
editor rewrites it never counts as "all defaults". A YAML error names its line, column and kind,
never the text, which may hold a secret. Files that options name are read up to 1 MiB (the
revocation list up to 32 MiB). The contents of \`cert-file\`/\`key-file\` are checked at start; after
that they belong to the certificate watcher, which keeps the last good pair, so a broken file does
not hold back the rest of a reload.

## burrow-relay serve

${table(RELAY_SERVE_OPTIONS)}

Example \`relay.yaml\`:

\`\`\`yaml
http-listen: 0.0.0.0:80
tunnel-listen: 0.0.0.0:8443
tcp-ports: [5432, 10000-10009] # optional: public TCP ports agents may claim
verify-key: [/etc/burrow/keys]
drain-timeout: 30s
log-level: info
\`\`\`

## burrow-relay keygen

Creates the Ed25519 key pair that signs agent tokens; the relay verifies with the \`.pub\` half
(\`--verify-key\`).

${table(RELAY_KEYGEN_OPTIONS)}

## burrow-relay token create

Prints a signed agent token, and nothing else, on standard output: redirect it to a file
(\`> cluster.token\`).

${table(RELAY_TOKEN_OPTIONS)}

## burrow-agent

${table(AGENT_OPTIONS)}

With \`--kubernetes\` the agent also reads two variables that the Deployment in
\`deploy/agent/\` sets from the pod (the downward API): \`POD_NAMESPACE\`, the namespace of its Lease
(default: the service account's namespace, else \`default\`), and \`POD_NAME\`, its identity in the
Lease (default: the host name). Run outside a cluster (\`--kubeconfig\`), set \`POD_NAMESPACE\` so
the Lease does not land in \`default\`.

Example \`routes.yaml\` for \`--routes\` (read at start; the root is a mapping whose \`routes:\` key holds
the list, and each route needs \`hostnames\` and \`target\`, or, for a TCP service, \`ports\` and a
\`tcp://\` target):

\`\`\`yaml
routes:
  - hostnames: [app.example.com, www.example.com] # exact names or *.suffix
    target: http://127.0.0.1:3000 # an origin: http://, https://, h2c:// or tls-passthrough://HOST:PORT
  - id: api # optional; default static:FIRST-HOSTNAME
    hostnames: ["*.api.example.com"]
    target: https://10.0.0.9:8443
    allowCidrs: [203.0.113.0/24] # optional: only these client addresses (leave it out for all; [] is an error)
    tlsInsecure: true # optional, https targets: do not verify the backend's certificate
  - hostnames: [grpc.example.com]
    target: h2c://10.0.0.11:50051 # HTTP/2 without TLS (gRPC); clients use https:// at the relay
  - ports: [5432] # public TCP ports of the relay (its --tcp-ports, and the token's --ports)
    target: tcp://10.0.0.12:5432 # bytes both ways, untouched; id default static:tcp-FIRST-PORT
\`\`\`

An \`https://\` target's certificate is checked against the target's own host name (sent as SNI),
or against its IP address when the target is one (10.0.0.9 above), never against the Host of
the request: a client on a wildcard route, or the relay, cannot choose the name it is checked
against.
`;
}

writeGeneratedDoc('docs/configuration.md', render(), fileURLToPath(import.meta.url));
