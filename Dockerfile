# Container image for smtp_exporter.
#
#   docker build -t smtp_exporter --build-arg SMTP_EXPORTER_REVISION=$(git rev-parse --short=12 HEAD) .
#   docker run -d -p 10027:10027 smtp_exporter                  # embedded default config
#   docker run -d -p 10027:10027 -v "$PWD/my.yml:/etc/smtp_exporter/config.yml:ro" \
#       smtp_exporter --config.file=/etc/smtp_exporter/config.yml
#
# Two stages:
#
#   builder  compiles the release binary and gathers everything the runtime needs into /out.
#   runtime  FROM scratch: nothing to pull, nothing but the files listed below.
#
# The binary is a normal glibc build (x86_64-unknown-linux-gnu, or the builder's native
# target), so it is dynamically linked against libc, libm, libgcc_s and the dynamic loader.
# Rather than switching to a musl/static target (another toolchain and a different
# allocator and resolver), the builder copies exactly the shared objects that `ldd` reports
# into /out/rootfs at their original absolute paths, and the runtime stage lays that tree
# over `/`. That is a handful of files (about 3 MB), works on any architecture the rust
# image exists for, and follows the binary if its dependencies ever change.
#
# The contract between the stages, which also lets the builder be replaced by a local
# folder (`podman build --build-context builder=DIR`, see tests/container/run.sh):
#
#   /out/smtp_exporter                    the binary
#   /out/rootfs/...                       its shared libraries at their absolute paths,
#                                         plus etc/nsswitch.conf
#   /etc/ssl/certs/ca-certificates.crt    the Debian CA bundle
#
# Hosts are resolved by glibc. Without /etc/nsswitch.conf glibc asks DNS before
# /etc/hosts, so a one-line nsswitch.conf ("hosts: files dns") is shipped: names in the
# /etc/hosts that the container runtime provides (localhost above all) resolve locally.
#
# The certificates: by default the exporter verifies with the bundled webpki roots; with
# `tls_config.system_roots: true` it reads the OS store, which here is the Debian bundle at
# /etc/ssl/certs/ca-certificates.crt.

# ---------------------------------------------------------------------------------------
FROM docker.io/library/rust:1-bookworm AS builder

WORKDIR /src

# Only what the build needs is in the context (see .dockerignore), so .git is not: the
# revision that --version and smtp_exporter_build_info report comes in as a build argument
# (--build-arg SMTP_EXPORTER_REVISION=$(git rev-parse --short=12 HEAD); else "unknown").
ARG SMTP_EXPORTER_REVISION=unknown
ENV SMTP_EXPORTER_REVISION=$SMTP_EXPORTER_REVISION
COPY . .

# Build; then keep the line tables (for file:line in panic backtraces, as the release
# profile asks) but zlib-compress them, which takes the binary from ~40 MB to ~14 MB.
RUN cargo build --release --locked \
 && mkdir -p /out/rootfs/etc \
 && objcopy --compress-debug-sections=zlib target/release/smtp_exporter /out/smtp_exporter

# Gather the shared objects the binary loads (the absolute paths in `ldd` output, the
# dynamic loader included), dereferencing symlinks, at the same paths under /out/rootfs.
# A static binary has none: `ldd` then fails or lists nothing, and nothing is copied.
# (No pipes: podman, building in OCI format, ignores SHELL, so pipefail cannot be relied on.)
RUN if ldd /out/smtp_exporter > /tmp/ldd.txt; then \
        awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^\//) print $i }' /tmp/ldd.txt > /tmp/libs.txt \
        && xargs -r -a /tmp/libs.txt cp -L --parents -t /out/rootfs; \
    fi \
 && printf 'hosts: files dns\n' > /out/rootfs/etc/nsswitch.conf \
 && find /out -type f -exec ls -l {} +

# ---------------------------------------------------------------------------------------
FROM scratch

LABEL org.opencontainers.image.title="smtp_exporter" \
      org.opencontainers.image.description="Prometheus exporter that probes SMTP servers per port and times every phase of a session" \
      org.opencontainers.image.licenses="Apache-2.0"

COPY --from=builder /out/rootfs/ /
COPY --from=builder /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=builder /out/smtp_exporter /smtp_exporter

# The annotated example, as a starting point. Its submission modules read the SMTP AUTH
# password from the environment variable SMTP_EXPORTER_EXAMPLE_PASSWORD, so running with
# it needs `-e SMTP_EXPORTER_EXAMPLE_PASSWORD=...`; in practice mount your own file here.
COPY config/example.yml /etc/smtp_exporter/config.yml

# nobody:nogroup. Numeric, because a scratch image has no /etc/passwd. The exporter needs
# no privileges (it binds an unprivileged port and makes outgoing connections) and writes
# no files, so the container can also run with --read-only and --cap-drop=ALL.
USER 65534:65534

EXPOSE 10027

# There is no HEALTHCHECK: the image holds no shell or HTTP client to run one. Point the
# orchestrator's HTTP probe at /-/healthy (liveness) and /-/ready (readiness) instead.

ENTRYPOINT ["/smtp_exporter"]
# Default: the embedded configuration (it probes localhost on 25, 465, 587 and 2525, which
# is the container itself unless it runs with --network=host, and needs no files or
# secrets), listening on every interface. Override the whole command to
# use a file, e.g. `--config.file=/etc/smtp_exporter/config.yml`. A SIGHUP (docker kill -s
# HUP) or POST /-/reload re-reads that file.
CMD ["--web.listen-address=:10027"]
