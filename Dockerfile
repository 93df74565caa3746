# The worker image: engine workers and host agents run the same image with a different --role.
FROM node:20.20.2-bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends qemu-utils \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json ./
COPY src ./src
# Prometheus metrics when LIVE_MERGE_METRICS_ADDRESS (or --metrics-address) is set, e.g. 0.0.0.0:9464.
EXPOSE 9464
ENTRYPOINT ["npx", "tsx", "src/worker.ts"]
