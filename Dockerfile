# syntax=docker/dockerfile:1
# Gatehouse image. glibc base on purpose: uWS ships glibc-only binaries (no Alpine).
#   docker build -t gatehouse .
#   docker run --rm -p 8080:8080 -v "$PWD/my-config:/etc/gatehouse:ro" gatehouse
# The admin port binds 127.0.0.1 unless `--admin-bind 0.0.0.0` is passed (see deploy/base/deployment.yaml).
# Kept in step with deploy/base/deployment.yaml (a test checks it): uid/gid 1000, the state folder,
# the ports. The root filesystem can be read-only: only GATEHOUSE_STATE_DIR and /tmp are written.

# ---- build: install, compile, drop dev dependencies and foreign uWS binaries ----
FROM node:20-bookworm-slim AS build
WORKDIR /app
# Sources are copied before `npm ci` because its `prepare` script runs the build.
COPY package.json package-lock.json tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN --mount=type=cache,target=/root/.npm \
    npm ci && npm run build && npm prune --omit=dev
# uWebSockets.js ships ~250 MB of binaries for every OS and Node ABI; keep Linux x64/arm64 for
# Node 20 (ABI 115) and fail the build if neither is left.
RUN find node_modules/uWebSockets.js -maxdepth 1 -name 'uws_*.node' \
        ! -name 'uws_linux_x64_115.node' ! -name 'uws_linux_arm64_115.node' -delete \
 && ls node_modules/uWebSockets.js/uws_linux_*_115.node \
 && test -f dist/cli.js

# ---- runtime ----
FROM node:20-bookworm-slim
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build /app/package.json ./package.json
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY config ./config
# /etc/gatehouse: mount point for YAML configuration (standalone mode); an empty folder starts with
# no listeners. /var/lib/gatehouse: ACME account keys and certificates, the mesh CA (an emptyDir in
# Kubernetes).
ENV GATEHOUSE_STATE_DIR=/var/lib/gatehouse
RUN mkdir -p /etc/gatehouse /var/lib/gatehouse && chown 1000:1000 /var/lib/gatehouse && chmod 0700 /var/lib/gatehouse
# The base image's `node` user, by number so that Kubernetes' runAsNonRoot can verify it; the app
# files stay root-owned, read-only to it. Ports below 1024 (a Gateway on 80/443) need
# net.ipv4.ip_unprivileged_port_start=0: Docker sets it in a container's network namespace, the
# Kubernetes manifests set it as a pod sysctl.
USER 1000:1000
# 80/443: Gateway listeners as in Istio's samples (8080: the bundled example's), 15000: admin,
# 15010: xDS (off in the Kubernetes manifests)
EXPOSE 80 443 8080 15000 15010
ENTRYPOINT ["node", "/app/dist/cli.js"]
CMD ["run", "--config", "/etc/gatehouse"]
