# Build: docker build -t ws_assets .
# Run:   docker run -p 8080:8080 ws_assets
#
# Two base images, the official ones by default:
#   rust:1.95-slim-bookworm  the build stage (Rust toolchain, gcc, libc6-dev, CA certificates)
#   debian:bookworm-slim     the runtime stage (glibc; the binary needs nothing else)
# Without a registry, .ci/docker-test makes local images under these two names (from
# `debootstrap --variant=minbase bookworm` and the host's own Rust toolchain) and builds
# with `docker build --network host` so cargo can reach the crate registry. Any bookworm-based
# image with cargo on its PATH works as the builder: --build-arg RUST_IMAGE=...
ARG RUST_IMAGE=rust:1.95-slim-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
WORKDIR /src
# Dependencies first, so editing the sources does not rebuild them.
COPY Cargo.toml Cargo.lock ./
# The workspace names the load tool as a member and the manifest a bench: stubs of their
# mains are enough for cargo to read the manifests; only the service is built.
COPY tools/wsbench/Cargo.toml tools/wsbench/Cargo.toml
RUN mkdir -p src benches tools/wsbench/src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && echo 'fn main() {}' > tools/wsbench/src/main.rs && echo 'fn main() {}' > benches/compression.rs \
    && cargo build --release --locked --bin ws_assets \
    && rm -rf src
COPY src ./src
COPY sql ./sql
COPY static ./static
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin ws_assets

FROM ${RUNTIME_IMAGE}
# The root certificates for https:// feeds and TLS to PostgreSQL, taken from the
# build stage so the runtime stage needs no package manager run.
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /src/target/release/ws_assets /usr/local/bin/ws_assets
RUN useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin ws_assets
ENV WS_ASSETS_HOST=0.0.0.0 \
    WS_ASSETS_PORT=8080 \
    WS_ASSETS_ENABLE_UI=TRUE \
    WS_ASSETS_AUTO_APPLY_MIGRATIONS=TRUE \
    WS_ASSETS_LOG_LEVEL=INFO \
    WS_ASSETS_POSTGRESQL_DSN= \
    WS_ASSETS_POSTGRESQL_POOL_SIZE=10
USER 10001:10001
EXPOSE 8080
# SIGTERM (what `docker stop` sends) closes every client with 1001, writes the queued
# points (at most 5 s) and exits 0, within docker stop's default 10 s.
STOPSIGNAL SIGTERM
# `ws_assets health` asks GET /health on the configured port (0.0.0.0 -> 127.0.0.1):
# exit 0 on 200, 1 otherwise (the image has no curl).
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/ws_assets", "health"]
ENTRYPOINT ["/usr/local/bin/ws_assets"]
