# preflight: one static-ish binary on a slim Debian base, run as a non-root user.
#   docker build -t preflight .
#   docker run -p 50051:50051 -p 8080:8080 -v preflight-data:/data preflight
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto proto
COPY src src
COPY benches benches
COPY docs docs
RUN cargo build --release --locked --bin preflight

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /data preflight \
 && mkdir -p /data /etc/preflight \
 && chown preflight /data
COPY --from=build /src/target/release/preflight /usr/local/bin/preflight
USER 10001
VOLUME /data
EXPOSE 50051 8080
ENV PREFLIGHT_DATA_DIR=/data \
    PREFLIGHT_LISTEN=0.0.0.0:50051 \
    PREFLIGHT_HTTP_LISTEN=0.0.0.0:8080
ENTRYPOINT ["preflight"]
CMD ["serve", "--log-format", "json"]
