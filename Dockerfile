# modelarts-proxy: a `dist` build (fat LTO) on a distroless runtime image.
#
#   docker build -t modelarts-proxy .          # or: podman build -t modelarts-proxy .
#
# From the environment alone (the default command is `run`):
#   docker run --rm -p 8080:8080 \
#     -e MODELARTS_PROXY_UPSTREAM=https://<id>.apig.<region>.huaweicloudapis.com/v1/infers/<service-id> \
#     -e MODELARTS_PROXY_LISTEN=0.0.0.0:8080 -e MODELARTS_PROXY_ALLOW_REMOTE=true \
#     -e HUAWEICLOUD_SDK_AK -e HUAWEICLOUD_SDK_SK modelarts-proxy
# Or with a config file: -v ./proxy.toml:/etc/modelarts-proxy/config.toml:ro
#   -e MODELARTS_PROXY_CONFIG=/etc/modelarts-proxy/config.toml
# As a Kubernetes sidecar, keep the default 127.0.0.1 listener: see deploy/kubernetes/.

# Fully qualified names: podman and other engines do not assume docker.io.
FROM docker.io/library/rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
# jemalloc's build-time configuration (memory returned after a burst).
COPY .cargo ./.cargo
COPY src ./src
COPY benches ./benches
# The `dist` profile: whole-program LTO, what ships (Cargo.toml says why).
RUN cargo build --profile dist --features jemalloc --locked --bin modelarts-proxy

# distroless/cc has glibc and CA certificates, and no shell.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/dist/modelarts-proxy /usr/local/bin/modelarts-proxy
# Numeric, so Kubernetes can check runAsNonRoot (distroless's nonroot is 65532).
USER 65532:65532
# Without -c, `run` reads MODELARTS_PROXY_UPSTREAM and the credential variables;
# the admin endpoints answer the health check on loopback.
ENV MODELARTS_PROXY_ADMIN_LISTEN=127.0.0.1:9901
EXPOSE 8080 9901
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s \
  CMD ["/usr/local/bin/modelarts-proxy", "probe", "http://127.0.0.1:9901/healthz"]
ENTRYPOINT ["/usr/local/bin/modelarts-proxy"]
CMD ["run"]
