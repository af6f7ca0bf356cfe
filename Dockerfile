# One image for the coordinator and the site clients (they differ by command).
FROM node:20-bookworm-slim
WORKDIR /app
COPY package.json package-lock.json ./
COPY apps/coordinator/package.json apps/coordinator/package.json
COPY apps/site-client/package.json apps/site-client/package.json
COPY libs/fl-core/package.json libs/fl-core/package.json
COPY libs/protocol/package.json libs/protocol/package.json
COPY libs/crypto/package.json libs/crypto/package.json
COPY libs/aggregation/package.json libs/aggregation/package.json
COPY libs/ml/package.json libs/ml/package.json
COPY libs/data/package.json libs/data/package.json
RUN npm ci --no-audit --no-fund
COPY . .
ENTRYPOINT ["npx"]
