# syntax=docker/dockerfile:1
#
# highload container image.
#
#   docker build -t highload --build-arg GIT_COMMIT="$(git rev-parse --short HEAD)" .
#   docker run --rm -p 8080:8080 highload          # embedded SQLite in /data
#
# Stages: chef (toolchain + cargo-chef) -> planner (dependency recipe) ->
# builder (dependencies cooked in their own layer, then our crate) ->
# runtime (distroless: the binary, glibc, CA certificates; no shell, no
# package manager, non-root). Editing src/ only re-runs the last
# `cargo build`, not the dependency build (librdkafka alone takes minutes).
# BuildKit cache mounts keep cargo's registry between builds.
#
# Base images are pinned by digest (the tag stays for readers). To move to a
# newer image: `docker buildx imagetools inspect <image>:<tag>` and replace
# the digest; both are multi-platform indexes (linux/amd64 and linux/arm64).

ARG RUST_IMAGE=rust:1.95-slim-bookworm@sha256:d7482085ff5b415f84dba5647ae71606650bdef00db7aeb69f4b3d170c3e4082
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot@sha256:9dac0a79194e45a7da0158a9c6da57b217585af0786db3845d1f0ec1a0dd182f

FROM ${RUST_IMAGE} AS chef
ARG CARGO_CHEF_VERSION=0.1.78
# rdkafka-sys compiles librdkafka, openssl-src OpenSSL for Kafka's TLS and
# tikv-jemalloc-sys the allocator, from source with their configure scripts:
# that needs a C++ compiler, make, perl, pkg-config and bash (gcc and
# libc6-dev come with the rust image).
# hadolint DL3008 (pin apt package versions) is ignored on purpose: the
# Debian release is fixed by the image digest (bookworm), and the archive
# deletes superseded versions at every point or security release, so exact
# pins would break rebuilds within weeks and hold back security fixes.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends g++ make perl pkg-config bash \
    && rm -rf /var/lib/apt/lists/*
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    cargo install cargo-chef --locked --version "${CARGO_CHEF_VERSION}"
WORKDIR /app

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /app/recipe.json recipe.json
# Dependencies only: this layer is reused until Cargo.toml/Cargo.lock change.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    cargo chef cook --release --locked --recipe-path recipe.json
COPY . .
# The build script takes the commit from GIT_COMMIT when there is no .git
# directory (.dockerignore keeps .git out of the context). Declared after
# the cook step so a new commit does not invalidate the dependency layer.
ARG GIT_COMMIT=unknown
ENV GIT_COMMIT=${GIT_COMMIT}
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    cargo build --release --locked \
    && cp target/release/highload /usr/local/bin/highload \
    && mkdir -p /out/data

FROM ${RUNTIME_IMAGE} AS runtime
COPY --from=builder /usr/local/bin/highload /usr/local/bin/highload
# The embedded SQLite database's directory, writable by the service's user.
COPY --from=builder --chown=10001:10001 /out/data /data

ARG GIT_COMMIT=unknown
LABEL org.opencontainers.image.title="highload" \
      org.opencontainers.image.description="Users and events REST service" \
      org.opencontainers.image.revision="${GIT_COMMIT}" \
      org.opencontainers.image.licenses="MIT OR Apache-2.0"

# JSON logs for log collectors; the embedded SQLite database (used only when
# no PostgreSQL is configured) goes to /data: mount a volume there to keep it.
ENV LOG_FORMAT=json \
    SQLITE_PATH=/data/highload.db \
    SERVER_HOST=0.0.0.0 \
    SERVER_PORT=8080

# Numeric user so Kubernetes' runAsNonRoot can verify it without /etc/passwd.
USER 10001:10001
WORKDIR /data
EXPOSE 8080

# Liveness only: readiness (/health/ready) is 503 while PostgreSQL is
# unreachable, and Docker should not mark the process unhealthy for that.
# The binary checks itself (`highload healthcheck`: GET /health/live on
# SERVER_PORT, exit 0 on 200, else 1), so the image needs no shell or curl.
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD ["/usr/local/bin/highload", "healthcheck"]

# SIGTERM turns readiness to 503, drains within SHUTDOWN_TIMEOUT (30s) and
# exits 0: give the container more than that (`docker stop -t 40`,
# compose stop_grace_period, Kubernetes terminationGracePeriodSeconds).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/highload"]
