# fapi-gateway container image.
#
#   docker build -t fapi-gateway:0.2.0 --build-arg VERSION=0.2.0 \
#     --build-arg REVISION="$(git rev-parse HEAD)" \
#     --build-arg SOURCE="$(git remote get-url origin)" .
#   docker run --rm -p 8443:8443 --stop-timeout 45 \
#     -v "$PWD/my-gateway.yaml:/etc/fapi-gateway/gateway.yaml:ro" \
#     -v "$PWD/my-certs:/etc/fapi-gateway/certs:ro" fapi-gateway
#
# The image holds the binary and nothing else of this repository: no configuration, no
# certificates (the development keys in certs/ are public; .dockerignore keeps them out of
# the build context altogether). Mount the configuration at /etc/fapi-gateway/gateway.yaml
# and the files it names (relative paths resolve against its folder, e.g. certs/server.pem
# -> /etc/fapi-gateway/certs/server.pem), readable by uid/gid 65532. Its listen.address must
# be 0.0.0.0:8443 (or another non-loopback address) inside a container.
#
# Admin listener: FAPI_GATEWAY_ADMIN_ADDRESS=0.0.0.0:9901 replaces the file's admin.address,
# so Prometheus can scrape /metrics and the orchestrator can probe /healthz and /readyz.
# It is plain HTTP without authentication: publish it to a private network only, never to
# the internet (docker: -p 127.0.0.1:9901:9901 or no -p at all; Kubernetes: no public
# Service). Set FAPI_GATEWAY_ADMIN_ADDRESS=127.0.0.1:9901 to keep it inside the container.
#
# Stopping: SIGTERM keeps serving for limits.shutdown_delay (/readyz 503), then drains for up
# to limits.shutdown_grace (30 s by default). Docker's default stop timeout is 10 s: give
# `docker stop -t` / `--stop-timeout` / compose `stop_grace_period` at least
# shutdown_delay + shutdown_grace + 5 s, or the drain is cut short by SIGKILL.
#
# Base images are pinned by exact tag. A tag can still be re-pushed, so the digests below
# pin them for good; they are empty here because digests cannot be resolved without a
# registry. Fill them in with deploy/pin-digests.sh (docker buildx imagetools inspect), or
# pass --build-arg RUST_DIGEST=sha256:… / RUNTIME_DIGEST=sha256:…. The distroless image
# publishes no version tags at all: there the digest is the only real pin.
ARG RUST_IMAGE=docker.io/library/rust:1.95.0-slim-bookworm
ARG RUST_DIGEST=
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot
ARG RUNTIME_DIGEST=

# ---------------------------------------------------------------------------------------
# planner: reduce the sources to what decides the dependency build — Cargo.toml,
# Cargo.lock and a stub for every target (lib, bin, benches, the build script) — so the
# `deps` stage below is rebuilt only when one of those changes, not on every source edit.
FROM ${RUST_IMAGE}${RUST_DIGEST:+@}${RUST_DIGEST} AS planner
WORKDIR /src
COPY . .
RUN sh deploy/docker/cargo-skeleton.sh /src /skeleton

# ---------------------------------------------------------------------------------------
# deps: every dependency compiled once, in its own cached layer. The slim Rust image has
# gcc and libc6-dev, which is all aws-lc-sys (its cc builder with pre-generated bindings on
# x86_64 and aarch64 Linux: no cmake, no clang) and libmimalloc-sys need.
FROM ${RUST_IMAGE}${RUST_DIGEST:+@}${RUST_DIGEST} AS deps
WORKDIR /src
COPY --from=planner /skeleton/ ./
RUN cargo build --release --locked --bin fapi-gateway \
 && cargo clean --release --locked --package fapi-gateway

# ---------------------------------------------------------------------------------------
# build: the real sources over the stubs; only the crate itself compiles here.
FROM deps AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# The revision `fapi-gateway --version` and the build-info metric report (build.rs reads
# FAPI_GATEWAY_GIT_REVISION: the build context has no .git).
ARG REVISION=
COPY . .
# The --version check fails the build if the dependency stage's stub binary survived.
RUN FAPI_GATEWAY_GIT_REVISION="${REVISION}" cargo build --release --locked --bin fapi-gateway \
 && ./target/release/fapi-gateway --version | grep '^fapi-gateway ' \
 && mkdir -p /out/var/lib/fapi-gateway

# ---------------------------------------------------------------------------------------
# runtime: distroless (glibc, libgcc_s, CA certificates, no shell, no package manager),
# Debian 12 like the builder, so the glibc the binary was linked against is the one it gets.
FROM ${RUNTIME_IMAGE}${RUNTIME_DIGEST:+@}${RUNTIME_DIGEST}
# Labels: VERSION is Cargo.toml's version (.ci/check-deploy checks the default), REVISION the
# full git commit, SOURCE the repository URL, CREATED an RFC 3339 time.
ARG VERSION=0.2.0
ARG REVISION=
ARG SOURCE=
ARG CREATED=
LABEL org.opencontainers.image.title="fapi-gateway" \
      org.opencontainers.image.description="TLS reverse proxy that enforces sender-constrained (mTLS / DPoP) OAuth access tokens" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}"

COPY --from=build /src/target/release/fapi-gateway /usr/local/bin/fapi-gateway
# The one writable place, for `dev-as --dir` / `demo --dir` (the compose file mounts its
# development-certificate volume here, so the volume starts out owned by 65532).
COPY --from=build --chown=65532:65532 /out/var/lib/fapi-gateway /var/lib/fapi-gateway

ENV FAPI_GATEWAY_CONFIG=/etc/fapi-gateway/gateway.yaml \
    FAPI_GATEWAY_ADMIN_ADDRESS=0.0.0.0:9901 \
    FAPI_GATEWAY_LOG=info
# distroless's "nonroot" user, numerically, so that Kubernetes' runAsNonRoot can verify it.
USER 65532:65532
WORKDIR /var/lib/fapi-gateway
EXPOSE 8443 9901
STOPSIGNAL SIGTERM
# No shell or curl in the image: the binary probes its own admin listener's /healthz, at
# FAPI_GATEWAY_ADMIN_ADDRESS (exit 0 healthy, 1 unhealthy, 2 usage or configuration error).
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/fapi-gateway", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/fapi-gateway"]
CMD ["--log-format", "json"]
