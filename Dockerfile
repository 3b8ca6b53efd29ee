# syntax=docker/dockerfile:1
#
# Container images for the relay and the agent. One file with two targets rather
# than deploy/relay/Dockerfile + deploy/agent/Dockerfile: both images come from
# the same workspace build (install + tsc -b), so they share one build stage and
# its cache, and the two can never be built from different lockfiles. Build from
# the repository root:
#
#   docker build --target relay -t ghcr.io/burrow-dev/burrow-relay:0.1.0 .
#   docker build --target agent -t ghcr.io/burrow-dev/burrow-agent:0.1.0 .

ARG BUILD_IMAGE=node:22-bookworm-slim
# Distroless: Node 22 on Debian 12 and nothing else (no shell, no package
# manager); the :nonroot variant's default user is 65532.
ARG RUNTIME_IMAGE=gcr.io/distroless/nodejs22-debian12:nonroot

FROM ${BUILD_IMAGE} AS build
ENV CI=true
# The version packageManager pins in package.json; newer pnpm may refuse the lock.
RUN npm install -g pnpm@12.4.2
WORKDIR /src
# Manifests first, so the dependency layer is rebuilt only when they change.
COPY package.json pnpm-lock.yaml pnpm-workspace.yaml ./
COPY packages/shared/package.json packages/shared/
COPY packages/relay/package.json packages/relay/
COPY packages/agent/package.json packages/agent/
RUN pnpm install --frozen-lockfile
COPY tsconfig.base.json tsconfig.json ./
COPY packages/ packages/
RUN pnpm run build
# Each package with its production dependencies only (workspace packages are
# copied in as built, following each package.json "files").
RUN pnpm deploy --filter @burrow/relay --prod /out/relay \
 && pnpm deploy --filter @burrow/agent --prod /out/agent \
 && mkdir -p /out/state/acme

FROM ${RUNTIME_IMAGE} AS relay
COPY --from=build /out/relay /app/packages/relay
# ACME state (account key, certificates): owned by the runtime user, so a named
# volume mounted at /var/lib/burrow/acme starts writable (Docker copies the
# ownership into it). The working directory is there too, so a relative
# acme-state-dir (the default, burrow-acme) lands somewhere writable.
COPY --from=build --chown=65532:65532 /out/state /var/lib/burrow
WORKDIR /var/lib/burrow
USER 65532:65532
# 80: public HTTP. 443: public TLS. 8443: tunnel endpoint for agents. Docker
# (20.10+) lets a non-root process bind :80 and :443 inside a container; on
# Kubernetes, either grant NET_BIND_SERVICE or listen on high ports
# (--http-listen 0.0.0.0:8080 --tls-listen 0.0.0.0:4443).
# 9090: admin API, metrics, probes and dashboard; it listens on loopback unless
# --admin-listen 0.0.0.0:9090 (then publish it on the host's loopback only).
EXPOSE 80 443 8443 9090
ENTRYPOINT ["/nodejs/bin/node", "/app/packages/relay/dist/cli.js"]
# Mount /etc/burrow with relay.yaml and keys/*.pub (docs/install.md). keygen and
# token create run from the same image: docker run IMAGE token create --help
CMD ["serve", "--config", "/etc/burrow/relay.yaml"]

FROM ${RUNTIME_IMAGE} AS agent
COPY --from=build /out/agent /app/packages/agent
USER 65532:65532
# 8081: /healthz and /readyz. 9091: /metrics. The agent listens on nothing else.
EXPOSE 8081 9091
ENTRYPOINT ["/nodejs/bin/node", "/app/packages/agent/dist/cli.js"]
