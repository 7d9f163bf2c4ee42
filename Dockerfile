# syntax=docker/dockerfile:1
#
# Cardinal's container image: a static binary on distroless, running as the
# unprivileged user 65532 ("nonroot").
#
#   docker build --build-arg VERSION=$(git describe --tags --always) -t cardinal .
#   docker run --rm -p 9091:9091 -v $PWD/cardinal.yml:/etc/cardinal/cardinal.yml:ro cardinal
#
# `make static-build` runs the same go build outside Docker and checks that the
# result is statically linked and stamped with its version.

ARG GO_VERSION=1.26

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
# Set by BuildKit from --platform; the build cross-compiles instead of emulating.
ARG TARGETOS
ARG TARGETARCH
ARG VERSION=devel
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=${TARGETOS:-linux} GOARCH=${TARGETARCH} \
    go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/cardinal ./cmd/cardinal

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/cardinal /usr/local/bin/cardinal
# A default config so that the image starts on its own; the Helm chart mounts
# its rendered config over /etc/cardinal.
COPY deploy/examples/cardinal.yml /etc/cardinal/cardinal.yml
USER 65532:65532
EXPOSE 9091
ENTRYPOINT ["/usr/local/bin/cardinal"]
CMD ["serve", "--config.file=/etc/cardinal/cardinal.yml"]
