# Berth's container image.
#
#   docker build -t berth .                       # from source (the rust builder stage)
#   docker build --target prebuilt --build-arg BERTH_BINARY=berth -t berth .
#                                                 # packages a glibc binary already in the context
#
# Stage order matters: Debian's docker.io builds with the legacy builder, which
# runs every stage before the target, in file order. `prebuilt` therefore comes
# before `builder`, so `--target prebuilt` needs nothing but the Debian image;
# the default (last) stage still passes through `prebuilt`, which then packages
# a stub (deploy/docker/no-binary.sh) that nothing uses.
#
# Runtime: debian:bookworm-slim, not distroless: the binary is glibc-linked (as
# `cargo build` makes it on Debian 12), and the entrypoint and HEALTHCHECK
# (`berth healthcheck` with the served config) are POSIX shell scripts.
# ca-certificates because Berth's S3 and ACME clients trust the system store.

ARG DEBIAN_IMAGE=debian:bookworm-slim
# The toolchain the tree is tested with (Cargo.toml's rust-version is the
# floor). Bookworm like the runtime: a binary linked on a newer glibc would not
# start on bookworm-slim.
ARG RUST_IMAGE=rust:1.95-bookworm

FROM ${DEBIAN_IMAGE} AS runtime-base
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends ca-certificates; \
    apt-get clean; \
    rm -rf /var/lib/apt/lists/*; \
    # 65532: the uid/gid the Helm chart's securityContext assumes.
    groupadd --system --gid 65532 berth; \
    useradd --system --uid 65532 --gid 65532 --no-create-home \
        --home-dir /var/lib/registry --shell /usr/sbin/nologin berth; \
    mkdir -p /var/lib/registry /etc/berth /etc/docker/registry; \
    chown 65532:65532 /var/lib/registry
COPY deploy/docker/config.yml /etc/berth/config.yml
COPY deploy/docker/entrypoint.sh /usr/local/bin/berth-entrypoint
COPY deploy/docker/healthcheck.sh /usr/local/bin/berth-healthcheck
# After the chown: a named volume is initialised from the image's directory,
# ownership included, so the non-root user can write to it.
VOLUME /var/lib/registry
EXPOSE 5000
USER 65532:65532
HEALTHCHECK --interval=30s --timeout=10s --start-period=10s --retries=3 \
    CMD ["berth-healthcheck"]
ENTRYPOINT ["berth-entrypoint"]
# /etc/docker/registry/config.yml, when mounted, is served instead (see the entrypoint).
CMD ["berth", "serve", "/etc/berth/config.yml"]

# A berth binary built elsewhere (glibc, x86_64 or the build platform's arch),
# named by its path in the build context.
FROM runtime-base AS prebuilt
ARG BERTH_BINARY=deploy/docker/no-binary.sh
COPY ${BERTH_BINARY} /usr/local/bin/berth

FROM ${RUST_IMAGE} AS builder
WORKDIR /src
COPY Cargo.toml Cargo.lock askama.toml ./
COPY loadtest loadtest
COPY src src
# Without debug info: the release profile's line tables are 150 of the binary's
# 190 MB. Symbols stay (cargo then strips debuginfo only), so a panic's
# backtrace still names functions.
RUN CARGO_PROFILE_RELEASE_DEBUG=false cargo build --release --locked

# The default: runtime-base plus the binary built from source above.
FROM runtime-base AS runtime
COPY --from=builder /src/target/release/berth /usr/local/bin/berth
