// Package compat holds only tests: the proof that proxy-wasm plugins built
// with each toolchain run unchanged in wasm-callout.
//
// For every toolchain (stock Go with the Go SDK, AssemblyScript with
// solo-io's proxy-runtime, C with clang and wasi-libc, Rust for
// wasm32-unknown-unknown) the tests build real plugins from source
// (plugins/ and testdata/toolchains/), load each into an ext_proc server on
// a loopback port and drive requests through the Envoy emulator
// (server/envoytest), checking what Envoy would forward upstream and send
// downstream. Fixtures of older ABI eras (host/testdata/*.wat) go through
// the same path. The README's compatibility table names these tests.
//
// Run them with `go test ./internal/compat`; `make toolchains` installs
// the non-Go toolchains (a missing one is skipped, or fails when CI is
// set). Golden transcripts live in testdata/golden; rewrite them with
// -update after an intended change.
package compat
