# Both binaries (postern-gateway, postern-operator) in one small image; the Helm chart and the
# Gateway CRD default to it. The build runs the same cargo command as CI's build step
# (scripts/test.sh: `cargo build --workspace --bins`), in release mode.
# Not built in CI (no Docker engine there); see README.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --workspace --bins \
 && cp target/release/postern-gateway target/release/postern-operator /usr/local/bin/

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/postern --create-home postern
COPY --from=build /usr/local/bin/postern-gateway /usr/local/bin/postern-operator /usr/local/bin/
USER 10001
# SMTP (25; the pod gets NET_BIND_SERVICE) and the admin port (health, metrics, admin API).
EXPOSE 25 8025
ENTRYPOINT ["/usr/local/bin/postern-gateway"]
CMD ["run", "--config", "/etc/postern/config/gateway.yaml"]
