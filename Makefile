# Build and test entry points. Keep one section per area; add new targets to
# .PHONY and to the help text of their section.

GO ?= go

.PHONY: all plugins test clean-plugins

all: plugins

## Plugins ---------------------------------------------------------------------
# `make plugins` builds every plugins/*/ directory that holds a main package
# into plugins/bin/NAME.wasm with the stock-Go route (`wasm-callout build`).
# A plugin is rebuilt only when its sources, the shared plugins module files
# or the builder (internal/gobuild and its generated glue) change. A plugin
# that needs build tags lists them in plugins/NAME/tags (comma-separated, one
# line), e.g. plugins/waf/tags.

PLUGIN_NAMES := $(sort $(notdir $(patsubst %/,%,$(dir $(shell grep -l '^package main$$' plugins/*/*.go 2>/dev/null)))))
PLUGIN_WASM := $(PLUGIN_NAMES:%=plugins/bin/%.wasm)
PLUGIN_COMMON := plugins/go.mod plugins/go.sum \
	$(filter-out %_test.go,$(wildcard internal/gobuild/*.go internal/gobuild/gluegen/*.go)) \
	$(wildcard internal/gobuild/glue/*.go.txt)

plugins: $(PLUGIN_WASM)

.SECONDEXPANSION:
plugins/bin/%.wasm: $$(wildcard plugins/$$*/*.go plugins/$$*/*/*.go plugins/$$*/*/rules/* plugins/$$*/tags) $(PLUGIN_COMMON)
	$(GO) run ./cmd/wasm-callout build $(if $(wildcard plugins/$*/tags),-tags $(shell cat plugins/$*/tags)) ./plugins/$* -o $@

clean-plugins:
	rm -rf plugins/bin

## Toolchains ------------------------------------------------------------------
# `make toolchains` installs what the compatibility tests (internal/compat)
# build plugins with, skipping what is there: Debian's clang-19, lld-19,
# wasi-libc, rustc with libstd-rust-dev-wasm32 and lld-14 in one apt-get
# install (as root), and AssemblyScript from npm (npm ci in
# testdata/toolchains/assemblyscript). `make compat-plugins` builds every
# compatibility plugin into testdata/toolchains/bin; the tests build them
# too. Without a toolchain its tests skip, or fail when CI is set.

.PHONY: toolchains compat-plugins

toolchains:
	./scripts/install-toolchains.sh

compat-plugins:
	$(MAKE) -C testdata/toolchains all

## Tests -----------------------------------------------------------------------

test: plugins
	$(GO) test ./...

## Benchmarks ------------------------------------------------------------------
# `make bench` compares wasm-callout running plugins/bin/basic.wasm (and, for
# the l4 scenario, plugins/bin/tcp-count.wasm, both rebuilt when stale) with
# the native baseline (internal/baseline) under the same Envoy-shaped load, on
# 127.0.0.1 only, then hot-swaps the plugin under that load (with and without
# a compilation cache; SWAP=0 skips it); see scripts/bench.sh for the knobs
# (ROUNDS, DURATION, SWAP_INTERVAL, ...).

.PHONY: bench faults bench-waf test-waf

bench: plugins/bin/basic.wasm plugins/bin/tcp-count.wasm
	./scripts/bench.sh

# `make faults` measures fault containment under load (scripts/faults.sh):
# for each fault kind of host/testdata/faults.wasm in HTTP and TCP, good
# traffic errors, fault-answer latency, instance recovery and peak RSS.
faults:
	./scripts/faults.sh

# `make bench-waf` runs Coraza with the OWASP CRS (plugins/waf) natively and
# through wasm-callout on the same rules and requests: CPU per request
# (deadlines on and off), start-up from the compilation cache, RSS; see
# scripts/bench-waf.sh for the knobs. `make test-waf` runs the WAF's own
# tests (plugins/waf/engine natively, bench/waf through the host), which
# parse the whole CRS and so stay out of go test ./...
bench-waf:
	./scripts/bench-waf.sh

test-waf: plugins/bin/waf.wasm
	cd plugins && $(GO) test -tags $$(cat waf/tags) ./waf/...
	cd bench/waf && $(GO) test -tags $$(cat ../../plugins/waf/tags) .
