# syntax=docker/dockerfile:1
#
# highload container image.
#
#   docker build -t highload --build-arg GIT_COMMIT="$(git rev-parse --short HEAD)" .
#   docker run --rm -p 8080:8080 highload          # embedded SQLite in /data
#
# Stages: chef (toolchain + cargo-chef) -> planner (dependency recipe) ->
# builder (dependencies cooked in their own layer, then our crate) ->
# runtime (debian-slim, non-root). Editing src/ only re-runs the last
# `cargo build`, not the dependency build (librdkafka alone takes minutes).

ARG RUST_IMAGE=rust:1.95-slim-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS chef
ARG CARGO_CHEF_VERSION=0.1.78
# rdkafka-sys compiles librdkafka from source with its configure script:
# that needs a C++ compiler, make, perl, pkg-config and bash (gcc and
# libc6-dev already come with the rust image).
# hadolint DL3008 (pin apt package versions) is ignored on purpose, here and
# in the runtime stage: the Debian release is fixed by the image tag
# (bookworm), and the archive deletes superseded versions at every point or
# security release, so exact pins would break rebuilds within weeks and hold
# back security fixes.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends g++ make perl pkg-config bash \
    && rm -rf /var/lib/apt/lists/*
RUN cargo install cargo-chef --locked --version "${CARGO_CHEF_VERSION}"
WORKDIR /app

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /app/recipe.json recipe.json
# Dependencies only: this layer is reused until Cargo.toml/Cargo.lock change.
RUN cargo chef cook --release --locked --recipe-path recipe.json
COPY . .
# The build script takes the commit from GIT_COMMIT when there is no .git
# directory (.dockerignore keeps .git out of the context). Declared after
# the cook step so a new commit does not invalidate the dependency layer.
ARG GIT_COMMIT=unknown
ENV GIT_COMMIT=${GIT_COMMIT}
RUN cargo build --release --locked \
    && cp target/release/highload /usr/local/bin/highload

FROM ${RUNTIME_IMAGE} AS runtime
# curl is only for HEALTHCHECK (and debugging with `docker exec`);
# ca-certificates for TLS to managed services. See DL3008 note above.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 highload \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin highload \
    && mkdir -p /data \
    && chown 10001:10001 /data

COPY --from=builder /usr/local/bin/highload /usr/local/bin/highload

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
# Through sh so a changed SERVER_PORT is honoured, and so curl's own exit
# codes (7, 22, ...) become the 1 that Docker defines as unhealthy.
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD ["/bin/sh", "-c", "curl -fsS -o /dev/null \"http://127.0.0.1:${SERVER_PORT:-8080}/health/live\" || exit 1"]

# SIGTERM turns readiness to 503, drains within SHUTDOWN_TIMEOUT (30s) and
# exits 0: give the container more than that (`docker stop -t 40`,
# compose stop_grace_period, Kubernetes terminationGracePeriodSeconds).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/highload"]
