# The obs binary for docker-compose (production-shaped; this repository's tests run without
# Docker, see scripts/stack).
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release -p obs --bin obs

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl libssl3 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/obs /usr/local/bin/obs
ENTRYPOINT ["obs"]
