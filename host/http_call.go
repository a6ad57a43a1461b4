package host

import (
	"context"

	"github.com/tetratelabs/wazero/api"

	"github.com/wasm-callout/wasm-callout/abi"
)

// Outbound calls. No upstream is configured yet, so every cluster is
// unknown and these answer exactly as Envoy does for an unknown cluster,
// with statuses every SDK handles. README lists them as not yet
// implemented.

// proxy_http_call(upstream_ptr, upstream_size, headers_ptr, headers_size,
// body_ptr, body_size, trailers_ptr, trailers_size, timeout_ms,
// ret_token_ptr) would dispatch an HTTP request to a named cluster.
// Statuses: BAD_ARGUMENT (unknown cluster, as Envoy answers), logged;
// INVALID_MEMORY_ACCESS for bad pointers. Also registered as
// proxy_dispatch_http_call.
func httpCall(ctx context.Context, _ api.Module, stack []uint64) {
	in := instanceFrom(ctx)
	upstream, ok := in.readString(u32(stack, 0), u32(stack, 1))
	for i := 2; ok && i < 8; i += 2 {
		_, ok = in.read(u32(stack, i), u32(stack, i+1))
	}
	if !ok || !in.writable(u32(stack, 9), 4) {
		ret(stack, abi.StatusInvalidMemoryAccess)
		return
	}
	in.plugin.cfg.Logger.Warn("plugin called an unknown cluster; outbound calls need an upstream mapping",
		"plugin", in.plugin.cfg.Name, "cluster", upstream)
	ret(stack, abi.StatusBadArgument)
}

// proxy_grpc_call(service_ptr, service_size, service_name_ptr,
// service_name_size, method_ptr, method_size, initial_metadata_ptr,
// initial_metadata_size, message_ptr, message_size, timeout_ms,
// ret_token_ptr) would start a unary gRPC call. Status: PARSE_FAILURE, what
// Envoy returns for an unknown cluster.
func grpcCall(ctx context.Context, _ api.Module, stack []uint64) {
	ret(stack, abi.StatusParseFailure)
}

// proxy_grpc_stream(service_ptr, service_size, service_name_ptr,
// service_name_size, method_ptr, method_size, initial_metadata_ptr,
// initial_metadata_size, ret_token_ptr) would open a gRPC stream. Status:
// PARSE_FAILURE, as proxy_grpc_call.
func grpcStream(ctx context.Context, _ api.Module, stack []uint64) {
	ret(stack, abi.StatusParseFailure)
}

// proxy_grpc_send(token, message_ptr, message_size, end_of_stream),
// proxy_grpc_cancel(token) and proxy_grpc_close(token) act on a call or
// stream. Status: NOT_FOUND, since no token can exist yet.
func grpcByToken(ctx context.Context, _ api.Module, stack []uint64) {
	ret(stack, abi.StatusNotFound)
}

// proxy_get_status(ret_code_ptr, ret_message_ptr_ptr, ret_message_size_ptr)
// writes the status of the last outbound call as a u32 code and a message
// in memory from the plugin's allocator; with no call made, code 0 and an
// empty message. Statuses: OK, INVALID_MEMORY_ACCESS.
func getStatus(ctx context.Context, _ api.Module, stack []uint64) {
	in := instanceFrom(ctx)
	if !in.writeU32(u32(stack, 0), 0) {
		ret(stack, abi.StatusInvalidMemoryAccess)
		return
	}
	ret(stack, in.copyOut(nil, u32(stack, 1), u32(stack, 2)))
}

// proxy_call_foreign_function(name_ptr, name_size, args_ptr, args_size,
// ret_results_ptr_ptr, ret_results_size_ptr) calls a host extension by
// name. This host registers none: Envoy's built-ins act on Envoy's own
// state. Statuses: NOT_FOUND (unknown function), INVALID_MEMORY_ACCESS.
func callForeignFunction(ctx context.Context, _ api.Module, stack []uint64) {
	in := instanceFrom(ctx)
	name, ok1 := in.readString(u32(stack, 0), u32(stack, 1))
	_, ok2 := in.read(u32(stack, 2), u32(stack, 3))
	if !ok1 || !ok2 {
		ret(stack, abi.StatusInvalidMemoryAccess)
		return
	}
	in.plugin.cfg.Logger.Debug("plugin called an unknown foreign function", "plugin", in.plugin.cfg.Name, "function", name)
	ret(stack, abi.StatusNotFound)
}
