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
# cmake and g++: aws-lc-sys (TLS for the S3 client) and libheif (HEIC/AVIF input, vendored by
# libheif-sys) build with them, the latter against Debian's libde265 and dav1d; nasm: rav1e's
# assembly (AVIF output).
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake g++ make nasm pkg-config libde265-dev libdav1d-dev \
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
# The shared libraries libheif (HEIC/AVIF input) decodes with; the C++ runtime is in the base image.
COPY --from=build /out/lib/ /usr/local/lib/
COPY --from=build --chown=65532:65532 /out/data /data
# Listen on all interfaces (each binary keeps its own default PORT: 8080 API, 8081 operator).
ENV DATA_DIR=/data \
    HOST=0.0.0.0 \
    LD_LIBRARY_PATH=/usr/local/lib
WORKDIR /data
USER 65532:65532
EXPOSE 8080 8081
CMD ["thumbnail-api"]
