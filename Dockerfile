# One image with every Chaos Negotiator binary; docker-compose picks the command per service.
#   docker build -t chaos-negotiator:local .
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bins

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --home-dir /data cn \
 && mkdir -p /data /creds /governance-secret /governance-public \
 && chown cn:cn /data /creds /governance-secret /governance-public
COPY --from=build /src/target/release/cnctl \
                  /src/target/release/deploy-agent \
                  /src/target/release/issue-detector \
                  /src/target/release/risk-negotiator \
                  /src/target/release/rl-optimizer \
                  /src/target/release/governance-gate \
                  /src/target/release/executor \
                  /src/target/release/simulator \
                  /src/target/release/cn-console \
                  /usr/local/bin/
COPY deploy/policy.toml deploy/policy.demo.toml /etc/chaos-negotiator/
USER cn
WORKDIR /data
ENV CN_DATA_DIR=/data CN_LOG_FORMAT=json
STOPSIGNAL SIGTERM
