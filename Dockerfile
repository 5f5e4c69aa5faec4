# syntax=docker/dockerfile:1
#
# One image with both binaries:
#   thumbnail-api                 the REST API (`thumbnail-api migrate` applies DB migrations)
#   thumbnail-operator            the ThumbnailJob operator (`thumbnail-operator render ...` in render Jobs)
#
#   docker build -t thumbnail:dev .
#   docker run --rm -p 8080:8080 thumbnail:dev          # embedded mode: SQLite + local objects in /data
#
# The Helm chart sets the command of each container; with no command the image runs the API.

ARG RUST_VERSION=1.95

FROM docker.io/library/rust:${RUST_VERSION}-slim-bookworm AS build
# cmake: some builds of aws-lc-sys (TLS for the S3 client) need it; everything else is pure Rust or cc.
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p thumbnail-api -p thumbnail-operator \
 && mkdir -p /out/bin /out/data \
 && cp target/release/thumbnail-api target/release/thumbnail-operator /out/bin/

# glibc, libgcc and CA certificates, no shell, user nonroot (65532).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/bin/ /usr/local/bin/
COPY --from=build --chown=65532:65532 /out/data /data
# Listen on all interfaces (each binary keeps its own default PORT: 8080 API, 8081 operator).
ENV DATA_DIR=/data \
    HOST=0.0.0.0
WORKDIR /data
USER 65532:65532
EXPOSE 8080 8081
CMD ["thumbnail-api"]
