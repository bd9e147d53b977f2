# syntax=docker/dockerfile:1
# Build: docker build -t ws_assets .
# Run:   docker run -p 8080:8080 ws_assets

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# Dependencies first, so editing the sources does not rebuild them.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && cargo build --release --locked --bin ws_assets \
    && rm -rf src
COPY src ./src
COPY sql ./sql
COPY static ./static
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin ws_assets

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin ws_assets
COPY --from=build /src/target/release/ws_assets /usr/local/bin/ws_assets
ENV WS_ASSETS_HOST=0.0.0.0 \
    WS_ASSETS_PORT=8080 \
    WS_ASSETS_ENABLE_UI=TRUE \
    WS_ASSETS_AUTO_APPLY_MIGRATIONS=TRUE \
    WS_ASSETS_LOG_LEVEL=INFO \
    WS_ASSETS_POSTGRESQL_DSN= \
    WS_ASSETS_POSTGRESQL_POOL_SIZE=10
USER ws_assets
EXPOSE 8080
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/ws_assets"]
