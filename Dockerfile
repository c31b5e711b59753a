# syntax=docker/dockerfile:1
# The `handoff` binary (package handoff-app) in a small Debian image.
#
#   docker build -t handoff .
#   docker run -p 3000:3000 -v handoff-data:/var/lib/handoff --env-file handoff.env handoff
#
# Configuration comes from the environment (see README and docs/operations.md); no .env file is
# copied into the image.

# ---- build -----------------------------------------------------------------------------------
FROM rust:1-bookworm AS builder
WORKDIR /src
# The whole workspace: every member's manifest is needed to resolve it, and the SQL migrations
# are embedded into the binary at compile time.
COPY . .
# Cache mounts keep the registry and the target directory between builds (BuildKit); the binary
# is copied out of the cached target directory in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p handoff-app \
    && install -m 0755 target/release/handoff /usr/local/bin/handoff

# ---- runtime ---------------------------------------------------------------------------------
FROM debian:bookworm-slim
# ca-certificates for any TLS the environment adds (the binary itself ships its own root
# certificates for Genesys); nothing else is needed: SQLite is linked in.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 handoff \
    && useradd --system --uid 10001 --gid handoff --home-dir /var/lib/handoff --shell /usr/sbin/nologin handoff \
    && mkdir -p /var/lib/handoff \
    && chown handoff:handoff /var/lib/handoff
COPY --from=builder /usr/local/bin/handoff /usr/local/bin/handoff

USER 10001:10001
WORKDIR /var/lib/handoff
# The SQLite ledger lives on the volume; set DATABASE_URL=postgres://… for several instances.
ENV DATABASE_URL=sqlite:///var/lib/handoff/handoff.db \
    PORT=3000 \
    BIND_ADDR=0.0.0.0 \
    LOG_FORMAT=json
VOLUME ["/var/lib/handoff"]
EXPOSE 3000
ENTRYPOINT ["handoff"]
CMD ["serve"]
