# syntax=docker/dockerfile:1
# lark-bridge: one image with the three services (ingress, relay, responder).
#
#   docker build -t lark-bridge:0.1.0 .
#   docker run --rm lark-bridge:0.1.0 ingress --help
#
# The image has no default command: run it as `ingress`, `relay` or `responder`
# (with `--config FILE` or LARK_BRIDGE_CONFIG), as deploy/k8s does.

# ---- builder --------------------------------------------------------------
FROM rust:1.95-bookworm AS builder
WORKDIR /src

# Dependencies first: the manifests, the lock file and empty sources of every
# workspace member, so this (slow) layer is rebuilt only when they change.
COPY Cargo.toml Cargo.lock ./
COPY common/Cargo.toml common/
COPY ingress/Cargo.toml ingress/
COPY relay/Cargo.toml relay/
COPY responder/Cargo.toml responder/
COPY tests/Cargo.toml tests/
# Every target a manifest names by `path = "..."` gets a stub too.
RUN for c in common ingress relay responder tests; do mkdir -p $c/src; touch $c/src/lib.rs; done \
 && for c in ingress relay responder; do echo 'fn main() {}' > $c/src/main.rs; done \
 && for m in */Cargo.toml; do \
      sed -n 's/^path *= *"\(.*\)"/\1/p' "$m" | while read -r p; do \
        f="${m%/Cargo.toml}/$p"; [ -e "$f" ] || { mkdir -p "${f%/*}"; echo 'fn main() {}' > "$f"; }; \
      done; \
    done \
 && cargo build --release --locked -p ingress -p relay -p responder \
 && cargo build --release --locked -p lark-bridge-tests --bin sandbox \
 && rm -rf common/src ingress/src relay/src responder/src tests/src

# Then the real sources. `touch` makes them newer than the stubs' build, so
# cargo rebuilds the workspace crates (and only them).
COPY common common
COPY ingress ingress
COPY relay relay
COPY responder responder
COPY tests tests
RUN find common ingress relay responder -name '*.rs' -exec touch {} + \
 && find tests -name '*.rs' -exec touch {} + \
 && cargo build --release --locked -p ingress -p relay -p responder \
 && cargo build --release --locked -p lark-bridge-tests --bin sandbox \
 && mkdir -p /out /sandbox \
 && cp target/release/ingress target/release/relay target/release/responder /out/ \
 && cp target/release/sandbox /sandbox/

# ---- sandbox --------------------------------------------------------------
# The fake Lark and the fake FastGPT (`sandbox serve`), for compose.yaml's
# `sandbox` profile; never in the services' image. `docker build --target
# sandbox`.
FROM gcr.io/distroless/cc-debian12:nonroot AS sandbox
COPY --from=builder /sandbox/ /usr/local/bin/
USER 65532:65532
EXPOSE 18080 18090
CMD ["sandbox", "serve", "--lark", "0.0.0.0:18080", "--fastgpt", "0.0.0.0:18090"]

# ---- runtime --------------------------------------------------------------
# glibc, libgcc and CA certificates, no shell; runs as uid 65532 (nonroot).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /out/ /usr/local/bin/
USER 65532:65532
EXPOSE 8080 8081 8082
CMD ["ingress"]
