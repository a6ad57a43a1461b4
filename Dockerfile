# wasm-callout container images.
#
#   docker build --target wasm-callout -t wasm-callout .   # the server alone
#   docker build -t wasm-callout:basic .                   # + plugins/basic (default target)
#   docker run --rm -p 8080:8080 -p 8000:8000 wasm-callout:basic
#
# The only network the build needs is the Go module proxy (--build-arg
# GOPROXY=... to use another one). deploy/dockerfile_test.go runs the
# exec-form RUN steps of the build and plugins stages with the ENV below,
# so keep them in exec form (["go", ...]) and keep their paths under /src
# and /out.

ARG GO_IMAGE=golang:1.26
ARG BASE_IMAGE=gcr.io/distroless/static-debian12:nonroot

FROM ${GO_IMAGE} AS build
ARG GOPROXY=https://proxy.golang.org
# Static binary (no libc: the base has none), no toolchain download (the
# image's Go must satisfy go.mod), only the module proxy as network.
ENV CGO_ENABLED=0 GOTOOLCHAIN=local GOPROXY=${GOPROXY} GOFLAGS=-mod=readonly
WORKDIR /src
COPY go.mod go.sum ./
RUN ["go", "mod", "download"]
COPY . .
RUN ["go", "build", "-trimpath", "-ldflags=-s -w", "-o", "/out/wasm-callout", "./cmd/wasm-callout"]

# plugins/basic, built with stock Go by the binary itself (it runs go build).
FROM build AS plugins
WORKDIR /src/plugins
RUN ["go", "mod", "download"]
WORKDIR /src
RUN ["/out/wasm-callout", "build", "./plugins/basic", "-o", "/out/plugins/basic.wasm"]

# The server alone: mount or bake a plugin and pass --plugin.
FROM ${BASE_IMAGE} AS wasm-callout
COPY --from=build /out/wasm-callout /usr/local/bin/wasm-callout
# distroless's nonroot user (65532:65532), numeric so that Kubernetes'
# runAsNonRoot can check it without reading /etc/passwd.
USER 65532:65532
# gRPC (plaintext h2c), gRPC over TLS (with --cert/--key), health (/healthz,
# /readyz, /). The admin listener (127.0.0.1:9901) is loopback only.
EXPOSE 8080 8443 8000
ENTRYPOINT ["/usr/local/bin/wasm-callout"]
CMD ["--help"]

# The server with plugins/basic: docker run serves something.
FROM wasm-callout AS basic
COPY --from=plugins /out/plugins/basic.wasm /plugins/basic.wasm
CMD ["--plugin", "/plugins/basic.wasm"]
