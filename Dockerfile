# syntax=docker/dockerfile:1
#
# Images of the operator and of the mesh components it installs, from one
# build stage. Build one with its target, e.g.
#   docker build --target ztunnel --build-arg VERSION=0.1.0 -t ghcr.io/ambientmesh/ztunnel:0.1.0 .
# (`make docker-build` builds the operator, `make images` every target.)
# Without --target, the last stage (the operator) is built.
#
# test/deploy checks that every path COPY'd here exists and covers every
# package the binaries import, that every stage named by --from exists, that
# each component has a target, and runs the `go build` below with the same
# flags.

ARG GO_VERSION=1.26

# ---------------------------------------------------------------------------
# build: every binary, static (CGO_ENABLED=0) and stamped with the version.
FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
ARG TARGETOS=linux
ARG TARGETARCH=amd64
ARG VERSION=dev
ARG GIT_COMMIT=unknown
ARG MODULE=github.com/ambientmesh/ambient-operator
ARG BINARIES="./cmd/operator ./cmd/controlplane ./cmd/ztunnel ./cmd/cni-agent ./cmd/cni-plugin ./cmd/waypoint"
WORKDIR /src
# Dependencies first, so that a source change does not download them again.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY api/ api/
COPY cmd/ cmd/
COPY controllers/ controllers/
COPY controlplane/ controlplane/
COPY dataplane/ dataplane/
COPY internal/ internal/
COPY webhook/ webhook/
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=${TARGETOS} GOARCH=${TARGETARCH} go build -trimpath \
      -ldflags "-s -w -X ${MODULE}/internal/version.Version=${VERSION} -X ${MODULE}/internal/version.GitCommit=${GIT_COMMIT}" \
      -o /out/ ${BINARIES}

# ---------------------------------------------------------------------------
# controlplane: xDS and the certificate service. Needs no privilege.
FROM gcr.io/distroless/static:nonroot AS controlplane
COPY --from=build /out/controlplane /controlplane
USER 65532:65532
ENTRYPOINT ["/controlplane"]

# ---------------------------------------------------------------------------
# ztunnel: the node proxy. It enters pod network namespaces (setns needs
# CAP_SYS_ADMIN, marks need CAP_NET_ADMIN), which a non-root user cannot use
# from a file without ambient capabilities: it runs as root, and the
# DaemonSet grants only NET_ADMIN, SYS_ADMIN and NET_RAW.
FROM gcr.io/distroless/static:latest AS ztunnel
COPY --from=build /out/ztunnel /ztunnel
USER 0:0
ENTRYPOINT ["/ztunnel"]

# ---------------------------------------------------------------------------
# waypoint: the L7 proxy, one Deployment per Waypoint. It only listens and
# dials in its own pod's network: no privilege.
FROM gcr.io/distroless/static:nonroot AS waypoint
COPY --from=build /out/waypoint /waypoint
USER 65532:65532
ENTRYPOINT ["/waypoint"]

# ---------------------------------------------------------------------------
# cni-agent: the node agent, carrying the chained CNI plugin next to its own
# binary (the agent's default --plugin-binary), which it copies into the
# host's CNI bin dir. Privileged on the host network, so root.
FROM gcr.io/distroless/static:latest AS cni-agent
COPY --from=build /out/cni-agent /cni-agent
COPY --from=build /out/cni-plugin /ambient-cni
USER 0:0
ENTRYPOINT ["/cni-agent"]

# ---------------------------------------------------------------------------
# operator (default target): the manager and its admission webhooks.
FROM gcr.io/distroless/static:nonroot AS operator
COPY --from=build /out/operator /operator
USER 65532:65532
ENTRYPOINT ["/operator"]
