# Build: a static binary (CGO_ENABLED=0), the same build `make build` does.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/workerscale ./cmd/workerscale

# Run: distroless static, as the non-root user it ships (65532).
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/workerscale /workerscale
USER 65532:65532
ENTRYPOINT ["/workerscale"]
CMD ["run", "--rules", "/etc/workerscale/rules.yaml"]
