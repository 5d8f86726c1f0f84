# modelarts-proxy: a static-ish release build on a distroless runtime image.
#   docker build -t modelarts-proxy .
#   docker run --rm -p 8080:8080 -e HUAWEICLOUD_SDK_AK -e HUAWEICLOUD_SDK_SK modelarts-proxy \
#     run --upstream https://<id>.apig.<region>.huaweicloudapis.com/v1/infers/<service-id> \
#         --listen 0.0.0.0:8080 --allow-remote
# As a Kubernetes sidecar, keep the default 127.0.0.1 listener: see deploy/kubernetes/.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
# jemalloc's build-time configuration (memory returned after a burst).
COPY .cargo ./.cargo
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin modelarts-proxy

# distroless/cc has glibc and CA certificates, and no shell.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/modelarts-proxy /usr/local/bin/modelarts-proxy
USER nonroot
EXPOSE 8080 9901
ENTRYPOINT ["/usr/local/bin/modelarts-proxy"]
CMD ["run", "-c", "/etc/modelarts-proxy/config.toml"]
