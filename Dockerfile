# One image for the coordinator and the site clients (they differ by command).
#
# `npm ci` runs on the package.json files alone, so that a source change does not reinstall the
# dependencies. Rather than a hand-kept list of workspaces (which once missed libs/secagg), the
# `manifests` stage copies apps/ and libs/ whole and keeps each workspace's package.json only: a new
# workspace under apps/ or libs/ is picked up by itself. `npm test` checks this file against the
# root package.json's "workspaces" (scripts/check-dockerfile.ts).
FROM node:20-bookworm-slim AS manifests
WORKDIR /app
COPY apps apps
COPY libs libs
RUN find apps libs -mindepth 2 -maxdepth 2 ! -name package.json -exec rm -rf {} + \
 && find apps libs -mindepth 1 -maxdepth 1 -type d -empty -delete

FROM node:20-bookworm-slim
WORKDIR /app
COPY package.json package-lock.json ./
COPY --from=manifests /app/apps apps
COPY --from=manifests /app/libs libs
RUN npm ci --no-audit --no-fund
COPY . .
ENTRYPOINT ["npx"]
