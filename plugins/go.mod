module github.com/wasm-callout/wasm-callout/plugins

go 1.22

require github.com/tetratelabs/proxy-wasm-go-sdk v0.24.0
