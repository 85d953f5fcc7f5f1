# fapi-gateway container image.
#   docker build -t fapi-gateway .
#   docker run -p 8443:8443 -v $PWD/my-gateway.yaml:/etc/fapi-gateway/gateway.yaml:ro \
#              -v $PWD/certs:/etc/fapi-gateway/certs:ro fapi-gateway
# The config's listen.address must be 0.0.0.0:8443 inside a container (admin stays on
# 127.0.0.1:9901 for the health check, or 0.0.0.0:9901 to scrape /metrics from outside).

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# aws-lc-sys builds C code: it needs a C compiler (present) and no cmake with the default build.
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin fapi-gateway
# The bundled configuration, listening on every interface inside the container.
COPY gateway.yaml ./
RUN sed 's/address: 127.0.0.1:8443/address: 0.0.0.0:8443/' gateway.yaml > gateway.container.yaml

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/fapi-gateway /usr/local/bin/fapi-gateway
COPY --from=build /src/gateway.container.yaml /etc/fapi-gateway/gateway.yaml
COPY --chown=nonroot:nonroot certs /etc/fapi-gateway/certs
USER nonroot:nonroot
EXPOSE 8443 9901
# distroless has no shell or curl: the binary checks its own admin listener.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["/usr/local/bin/fapi-gateway", "healthcheck", "--address", "127.0.0.1:9901"]
ENTRYPOINT ["/usr/local/bin/fapi-gateway"]
CMD ["--config", "/etc/fapi-gateway/gateway.yaml"]
