# syntax=docker/dockerfile:1
# The image the install runs (deploy/overlays/*: `images:`). Multi-arch with buildx:
#   docker buildx build --platform linux/amd64,linux/arm64 -t REGISTRY/workerscale:TAG --push .
# The build stage runs on the builder's own platform and cross-compiles for each target
# (pure Go, no emulation); the run stage is the target's.

# Build: a static binary (CGO_ENABLED=0), the same build `make build` does.
FROM --platform=$BUILDPLATFORM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
# go.mod replaces a module by this directory (third_party/go-conntrack/conntrack.go says why).
COPY third_party/ third_party/
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG VERSION=dev
# Set by buildx for each --platform; empty with the classic builder (the builder's own).
ARG TARGETOS TARGETARCH
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/workerscale ./cmd/workerscale

# Run: distroless static, as the non-root user it ships (65532).
FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=dev
LABEL org.opencontainers.image.title="workerscale" \
      org.opencontainers.image.description="Kubernetes autoscaler for queue workers: replicas, resources and concurrency" \
      org.opencontainers.image.source="https://github.com/workerscale/workerscale" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=build /out/workerscale /workerscale
USER 65532:65532
ENTRYPOINT ["/workerscale"]
CMD ["run", "--rules", "/etc/workerscale/rules.yaml"]
