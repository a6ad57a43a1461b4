// Package waf benchmarks plugins/waf (Coraza with the OWASP Core Rule Set)
// natively and through wasm-callout's host on the same rules and requests:
// the native side runs plugins/waf/engine in this process, the wasm side
// runs plugins/bin/waf.wasm (make plugins/bin/waf.wasm) through host.Plugin
// with the same configuration. It is its own module so Coraza never enters
// the main module's go.mod; scripts/bench-waf.sh (make bench-waf) runs it.
package waf
