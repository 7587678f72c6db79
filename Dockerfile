# registry-edge: a small static image that runs as non-root on a read-only root filesystem.
#   docker build -t registry-edge .
#   docker run --read-only -p 5000:5000 -v edge-data:/var/lib/registry-edge registry-edge
# The store lives in the volume at /var/lib/registry-edge (the only writable path it needs);
# a config file can be mounted at /etc/registry-edge/config.yaml and selected with
#   docker run ... registry-edge serve --config /etc/registry-edge/config.yaml --storage /var/lib/registry-edge
# (arguments replace the whole CMD: keep --storage, or set storage.root: /var/lib/registry-edge in the file,
# since the example's relative "data" would resolve to /data on the read-only root).
# prefetch.windows are local times: the image has no /etc/localtime, so set TZ (docker run -e TZ=Europe/Berlin)
# or they are UTC; the binary carries the time zone database.
FROM golang:1.26 AS build
ARG VERSION=devel
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w -X github.com/registry-edge/registry-edge/internal/version.Version=${VERSION}" \
      -o /out/registry-edge ./cmd/registry-edge && \
    CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w -X github.com/registry-edge/registry-edge/internal/version.Version=${VERSION}" \
      -o /out/deltactl ./cmd/deltactl && \
    mkdir -p /out/var/lib/registry-edge

FROM scratch
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/registry-edge /out/deltactl /usr/local/bin/
COPY --from=build --chown=65532:65532 /out/var/lib/registry-edge /var/lib/registry-edge
USER 65532:65532
VOLUME /var/lib/registry-edge
EXPOSE 5000
ENTRYPOINT ["/usr/local/bin/registry-edge"]
CMD ["serve", "--listen", ":5000", "--storage", "/var/lib/registry-edge"]
