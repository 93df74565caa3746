# The worker image: engine workers and host agents run the same image with a different --role.
# It runs the package as a user installs it (test/integration/package.test.ts does the same from a
# scratch project): the build stage packs it (prepack compiles src/ into lib/), the final stage
# installs the tarball and runs its bin, live-merge-worker. No TypeScript, tsx or sources at run time.
FROM node:20.20.2-bookworm-slim AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm pack --pack-destination /pack

FROM node:20.20.2-bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends qemu-utils \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY --from=build /pack/ /pack/
RUN echo '{"private": true}' > package.json \
 && npm install --omit=dev --no-audit --no-fund /pack/live-merge-*.tgz \
 && rm -rf /pack /root/.npm
ENV PATH=/app/node_modules/.bin:$PATH
# Prometheus metrics when LIVE_MERGE_METRICS_ADDRESS (or --metrics-address) is set, e.g. 0.0.0.0:9464.
EXPOSE 9464
ENTRYPOINT ["live-merge-worker"]
