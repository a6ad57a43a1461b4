// Package proxyless holds end-to-end tests of wasm-callout's ext_proc server
// with a real proxyless gRPC client: grpc-go's xDS ext_proc filter (gRFC A93),
// configured by an in-process xDS management server. It has no code of its
// own; everything is in its tests.
//
// # How the tests work
//
// The parent test process runs four things on 127.0.0.1:
//
//   - a backend, grpc.testing.TestService (UnaryCall and FullDuplexCall),
//     that records what it receives under the request header x-call-id;
//   - a wasm-callout server (server.New with a plugin from plugins/);
//   - an xDS management server (go-control-plane's pkg/server/v3 over a
//     snapshot cache) serving one listener, route, cluster and endpoint set:
//     the listener is an API listener whose HttpConnectionManager runs the
//     HTTP filter envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor,
//     whose google_grpc target is the wasm-callout server, then the router;
//     the route sends everything to the cluster, whose only endpoint is the
//     backend;
//   - the client, in a child process: the test binary itself, re-executed
//     with WASM_CALLOUT_PROXYLESS_CHILD=1, because grpc-go reads
//     GRPC_EXPERIMENTAL_XDS_EXT_PROC_ON_CLIENT (which registers the filter)
//     at init. The child gets its xDS bootstrap in GRPC_XDS_BOOTSTRAP_CONFIG
//     (the management server, untrusted, and the wasm-callout address in
//     allowed_grpc_services, as gRFC A102 requires), dials xds:///backend,
//     reads one call to make per stdin line (JSON), makes each on its own
//     goroutine (so calls written together run concurrently) and prints one
//     result per stdout line (JSON) as each ends: status, headers, trailers
//     and digests of the messages received.
package proxyless
