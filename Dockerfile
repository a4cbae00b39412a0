# prescale's container image: `docker build -t REGISTRY/prescale:TAG .` from the repository root.
#
# Two stages: the release build in the Rust image the crate's rust-version names, then a slim Debian
# runtime holding the binary, CA certificates (for https Prometheus sources) and nothing else. The
# binary links glibc dynamically, so the runtime is the builder's Debian release (bookworm).
# deploy/kubernetes runs it as UID/GID 10001 (runAsUser, runAsGroup, fsGroup), the user made here.

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# The build needs the manifest and lock, build.rs, the sources, the protos it compiles, the models
# it embeds for the demo, the sample data, the example files the sources include, and the
# benchmarks Cargo.toml names; .dockerignore leaves out everything else.
COPY . .
RUN cargo build --release --locked --bin prescale \
    && install -m 0755 target/release/prescale /usr/local/bin/prescale

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 prescale \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/prescale --no-create-home \
       --shell /usr/sbin/nologin prescale \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/prescale
COPY --from=build /usr/local/bin/prescale /usr/local/bin/prescale
USER 10001:10001
WORKDIR /var/lib/prescale
# 50051 gRPC (server.listen), 50052 KEDA external scaler ([scaler] listen),
# 9464 HTTP /metrics and remote-write (server.metrics_listen).
EXPOSE 50051 50052 9464
ENTRYPOINT ["/usr/local/bin/prescale"]
CMD ["serve", "--config", "/etc/prescale/prescale.toml"]
