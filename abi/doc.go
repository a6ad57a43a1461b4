// Package abi holds the names, numbers and byte encodings of the proxy-wasm
// application binary interface (versions 0.1.0, 0.2.0 and 0.2.1), as a host
// must speak them to plugins built by every SDK.
//
// It uses only the standard library and has no behaviour beyond encoding and
// decoding: the host that gives these numbers meaning lives in package host.
package abi
