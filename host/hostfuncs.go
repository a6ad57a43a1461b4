package host

import (
	"github.com/tetratelabs/wazero/api"

	"github.com/wasm-callout/wasm-callout/abi"
)

// hostFunc is one function of the env module.
type hostFunc struct {
	name       string
	params     []api.ValueType
	results    []api.ValueType
	paramNames []string
	fn         api.GoModuleFunc
}

const (
	i32 = api.ValueTypeI32
	i64 = api.ValueTypeI64
	f64 = api.ValueTypeF64
)

// fn declares a host function whose parameters are all i32 except where
// the name list marks "name:i64", and whose result is types (none or one).
func fn(name string, f api.GoModuleFunc, results []api.ValueType, params ...string) hostFunc {
	hf := hostFunc{name: name, fn: f, results: results}
	for _, p := range params {
		t := i32
		if n := len(p); n > 4 && p[n-4:] == ":i64" {
			t, p = i64, p[:n-4]
		}
		hf.params = append(hf.params, t)
		hf.paramNames = append(hf.paramNames, p)
	}
	return hf
}

var (
	status = []api.ValueType{i32}
	none   = []api.ValueType{}
)

// envFuncs is every function of the env module: a superset of ABI 0.1.0,
// 0.2.0 and 0.2.1 whatever marker the plugin exports (toolchains import
// names from several versions), in the order of the spec's "Functions
// implemented in the host environment", then 0.1.0-only names, aliases and
// toolchain glue. Each function's doc comment gives its statuses.
var envFuncs = []hostFunc{
	// Logging.
	fn("proxy_log", proxyLog, status, "level", "message_ptr", "message_size"),
	fn("proxy_get_log_level", getLogLevel, status, "ret_level_ptr"),
	// Clocks and timers.
	fn("proxy_get_current_time_nanoseconds", getCurrentTimeNanoseconds, status, "ret_time_ptr"),
	fn("proxy_set_tick_period_milliseconds", setTickPeriodMilliseconds, status, "period"),
	// Context.
	fn("proxy_set_effective_context", setEffectiveContext, status, "context_id"),
	fn("proxy_done", proxyDone, status),
	// Buffers.
	fn("proxy_get_buffer_bytes", getBufferBytes, status, "buffer_type", "start", "max_size", "ret_ptr_ptr", "ret_size_ptr"),
	fn("proxy_get_buffer_status", getBufferStatus, status, "buffer_type", "ret_length_ptr", "ret_flags_ptr"),
	fn("proxy_set_buffer_bytes", setBufferBytes, status, "buffer_type", "start", "size", "data_ptr", "data_size"),
	// HTTP fields.
	fn("proxy_get_header_map_pairs", getHeaderMapPairs, status, "map_type", "ret_ptr_ptr", "ret_size_ptr"),
	fn("proxy_get_header_map_value", getHeaderMapValue, status, "map_type", "key_ptr", "key_size", "ret_ptr_ptr", "ret_size_ptr"),
	fn("proxy_add_header_map_value", addHeaderMapValue, status, "map_type", "key_ptr", "key_size", "value_ptr", "value_size"),
	fn("proxy_replace_header_map_value", replaceHeaderMapValue, status, "map_type", "key_ptr", "key_size", "value_ptr", "value_size"),
	fn("proxy_remove_header_map_value", removeHeaderMapValue, status, "map_type", "key_ptr", "key_size"),
	fn("proxy_set_header_map_pairs", setHeaderMapPairs, status, "map_type", "pairs_ptr", "pairs_size"),
	fn("proxy_get_header_map_size", getHeaderMapSize, status, "map_type", "ret_size_ptr"),
	// Common HTTP and TCP stream operations.
	fn("proxy_continue_stream", continueStreamFn, status, "stream_type"),
	fn("proxy_close_stream", closeStreamFn, status, "stream_type"),
	// HTTP.
	fn("proxy_send_local_response", sendLocalResponse, status, "status_code", "details_ptr", "details_size", "body_ptr", "body_size", "headers_ptr", "headers_size", "grpc_status"),
	// HTTP callouts.
	fn("proxy_http_call", httpCall, status, "upstream_ptr", "upstream_size", "headers_ptr", "headers_size", "body_ptr", "body_size", "trailers_ptr", "trailers_size", "timeout_ms", "ret_token_ptr"),
	// gRPC callouts.
	fn("proxy_grpc_call", grpcCall, status, "service_ptr", "service_size", "service_name_ptr", "service_name_size", "method_ptr", "method_size", "initial_metadata_ptr", "initial_metadata_size", "message_ptr", "message_size", "timeout_ms", "ret_token_ptr"),
	fn("proxy_grpc_stream", grpcStreamFn, status, "service_ptr", "service_size", "service_name_ptr", "service_name_size", "method_ptr", "method_size", "initial_metadata_ptr", "initial_metadata_size", "ret_token_ptr"),
	fn("proxy_grpc_send", grpcSend, status, "token", "message_ptr", "message_size", "end_of_stream"),
	fn("proxy_grpc_cancel", grpcCancel, status, "token"),
	fn("proxy_grpc_close", grpcClose, status, "token"),
	fn("proxy_get_status", getStatus, status, "ret_code_ptr", "ret_message_ptr_ptr", "ret_message_size_ptr"),
	// Shared key-value store.
	fn("proxy_get_shared_data", getSharedData, status, "key_ptr", "key_size", "ret_value_ptr_ptr", "ret_value_size_ptr", "ret_cas_ptr"),
	fn("proxy_set_shared_data", setSharedData, status, "key_ptr", "key_size", "value_ptr", "value_size", "cas"),
	// Shared queues.
	fn("proxy_register_shared_queue", registerSharedQueue, status, "name_ptr", "name_size", "ret_queue_id_ptr"),
	fn("proxy_resolve_shared_queue", resolveSharedQueue, status, "vm_id_ptr", "vm_id_size", "name_ptr", "name_size", "ret_queue_id_ptr"),
	fn("proxy_enqueue_shared_queue", enqueueSharedQueue, status, "queue_id", "value_ptr", "value_size"),
	fn("proxy_dequeue_shared_queue", dequeueSharedQueue, status, "queue_id", "ret_value_ptr_ptr", "ret_value_size_ptr"),
	// Metrics.
	fn("proxy_define_metric", defineMetric, status, "metric_type", "name_ptr", "name_size", "ret_metric_id_ptr"),
	fn("proxy_get_metric", getMetric, status, "metric_id", "ret_value_ptr"),
	fn("proxy_record_metric", recordMetric, status, "metric_id", "value:i64"),
	fn("proxy_increment_metric", incrementMetric, status, "metric_id", "offset:i64"),
	// Properties.
	fn("proxy_get_property", getProperty, status, "path_ptr", "path_size", "ret_value_ptr_ptr", "ret_value_size_ptr"),
	fn("proxy_set_property", setProperty, status, "path_ptr", "path_size", "value_ptr", "value_size"),
	// Foreign functions.
	fn("proxy_call_foreign_function", callForeignFunction, status, "name_ptr", "name_size", "args_ptr", "args_size", "ret_results_ptr_ptr", "ret_results_size_ptr"),

	// ABI 0.1.0 only (Envoy links them for 0.1.0 plugins; the C++ and
	// AssemblyScript SDKs import some next to a 0.2.x marker).
	fn("proxy_get_configuration", getConfiguration, status, "ret_ptr_ptr", "ret_size_ptr"),
	fn("proxy_continue_request", continueRequest, status),
	fn("proxy_continue_response", continueResponse, status),
	fn("proxy_clear_route_cache", clearRouteCache, status),

	// Aliases seen in real binaries.
	fn("proxy_dispatch_http_call", httpCall, status, "upstream_ptr", "upstream_size", "headers_ptr", "headers_size", "body_ptr", "body_size", "trailers_ptr", "trailers_size", "timeout_ms", "ret_token_ptr"),

	// Signature variants (grpc_variants.go): the AssemblyScript SDK's gRPC
	// imports without the initial metadata pair.
	fn("proxy_grpc_call", withoutMetadata("proxy_grpc_call"), status, "service_ptr", "service_size", "service_name_ptr", "service_name_size", "method_ptr", "method_size", "message_ptr", "message_size", "timeout_ms", "ret_token_ptr"),
	fn("proxy_grpc_stream", withoutMetadata("proxy_grpc_stream"), status, "service_ptr", "service_size", "service_name_ptr", "service_name_size", "method_ptr", "method_size", "ret_token_ptr"),

	// Names of the unmerged vNEXT draft, and Envoy's DNS call (draft.go).
	fn("proxy_get_buffer", getBufferBytes, status, "buffer_type", "start", "max_size", "ret_ptr_ptr", "ret_size_ptr"),
	fn("proxy_set_buffer", setBufferBytes, status, "buffer_type", "start", "size", "data_ptr", "data_size"),
	fn("proxy_get_map_values", getMapValues, status, "map_type", "keys_ptr", "keys_size", "ret_ptr_ptr", "ret_size_ptr"),
	fn("proxy_set_map_values", unimplemented, status, "map_type", "remove_keys_ptr", "remove_keys_size", "map_ptr", "map_size"),
	fn("proxy_resume_stream", continueStreamFn, status, "stream_type"),
	fn("proxy_resume_http_stream", continueStreamFn, status, "stream_type"),
	fn("proxy_close_http_stream", closeStreamFn, status, "stream_type"),
	fn("proxy_resume_downstream", resumeFixed(abi.StreamDownstream), status),
	fn("proxy_resume_upstream", resumeFixed(abi.StreamUpstream), status),
	fn("proxy_resume_http_request", resumeFixed(abi.StreamHTTPRequest), status),
	fn("proxy_resume_http_response", resumeFixed(abi.StreamHTTPResponse), status),
	fn("proxy_send_http_response", sendLocalResponse, status, "status_code", "details_ptr", "details_size", "body_ptr", "body_size", "headers_ptr", "headers_size", "grpc_status"),
	fn("proxy_context_finalize", proxyDone, status),
	fn("proxy_open_shared_kvstore", unimplemented, status, "name_ptr", "name_size", "create", "ret_kvstore_id_ptr"),
	fn("proxy_get_shared_kvstore_key_values", unimplemented, status, "kvstore_id", "key_ptr", "key_size", "ret_ptr_ptr", "ret_size_ptr", "ret_cas_ptr"),
	fn("proxy_set_shared_kvstore_key_values", unimplemented, status, "kvstore_id", "key_ptr", "key_size", "value_ptr", "value_size", "cas"),
	fn("proxy_add_shared_kvstore_key_values", unimplemented, status, "kvstore_id", "key_ptr", "key_size", "value_ptr", "value_size", "cas"),
	fn("proxy_remove_shared_kvstore_key", unimplemented, status, "kvstore_id", "key_ptr", "key_size", "cas"),
	fn("proxy_delete_shared_kvstore", unimplemented, status, "kvstore_id"),
	fn("proxy_open_shared_queue", unimplemented, status, "name_ptr", "name_size", "create", "ret_queue_id_ptr"),
	fn("proxy_dequeue_shared_queue_item", dequeueSharedQueue, status, "queue_id", "ret_value_ptr_ptr", "ret_value_size_ptr"),
	fn("proxy_enqueue_shared_queue_item", enqueueSharedQueue, status, "queue_id", "value_ptr", "value_size"),
	fn("proxy_delete_shared_queue", unimplemented, status, "queue_id"),
	fn("proxy_create_timer", unimplemented, status, "period", "one_time", "ret_timer_id_ptr"),
	fn("proxy_delete_timer", unimplemented, status, "timer_id"),
	fn("proxy_create_metric", defineMetric, status, "metric_type", "name_ptr", "name_size", "ret_metric_id_ptr"),
	fn("proxy_get_metric_value", getMetric, status, "metric_id", "ret_value_ptr"),
	fn("proxy_set_metric_value", recordMetric, status, "metric_id", "value:i64"),
	fn("proxy_increment_metric_value", incrementMetric, status, "metric_id", "offset:i64"),
	fn("proxy_delete_metric", unimplemented, status, "metric_id"),
	fn("proxy_remove_metric", unimplemented, status, "metric_id"),
	fn("proxy_dispatch_grpc_call", grpcCall, status, "service_ptr", "service_size", "service_name_ptr", "service_name_size", "method_ptr", "method_size", "initial_metadata_ptr", "initial_metadata_size", "message_ptr", "message_size", "timeout_ms", "ret_token_ptr"),
	fn("proxy_open_grpc_stream", grpcStreamFn, status, "service_ptr", "service_size", "service_name_ptr", "service_name_size", "method_ptr", "method_size", "initial_metadata_ptr", "initial_metadata_size", "ret_token_ptr"),
	fn("proxy_send_grpc_stream_message", sendGRPCStreamMessage, status, "token", "message_ptr", "message_size"),
	fn("proxy_cancel_grpc_call", grpcCancel, status, "token"),
	fn("proxy_close_grpc_call", grpcClose, status, "token"),
	fn("proxy_call_custom_function", unimplemented, status, "function_id", "args_ptr", "args_size", "ret_results_ptr_ptr", "ret_results_size_ptr"),
	// Envoy's own DNS resolution (answered through envoy_on_resolve_dns).
	fn("envoy_resolve_dns", unimplemented, status, "address_ptr", "address_size", "ret_token_ptr"),

	// Toolchain glue.
	fn("emscripten_notify_memory_growth", emscriptenNotifyMemoryGrowth, none, "memory_index"),
	fn("pthread_equal", pthreadEqual, status, "a", "b"),
	fn("abort", asAbort, none, "message_ptr", "file_ptr", "line", "column"),
	fn("seed", asSeed, []api.ValueType{f64}),
}

// stubEnvFuncs are linked but answer as hosts do for a feature they do not
// offer. README lists them.
var stubEnvFuncs = map[string]bool{
	"proxy_call_foreign_function": true,
	// Draft-only features (draft.go).
	"proxy_set_map_values": true, "proxy_open_shared_kvstore": true,
	"proxy_get_shared_kvstore_key_values": true, "proxy_set_shared_kvstore_key_values": true,
	"proxy_add_shared_kvstore_key_values": true, "proxy_remove_shared_kvstore_key": true,
	"proxy_delete_shared_kvstore": true, "proxy_open_shared_queue": true, "proxy_delete_shared_queue": true,
	"proxy_create_timer": true, "proxy_delete_timer": true, "proxy_delete_metric": true,
	"proxy_remove_metric": true, "proxy_call_custom_function": true, "envoy_resolve_dns": true,
}

// selectEnvFuncs returns envFuncs with, for each name the guest imports,
// the variant whose signature it imports. The first entry of a name is its
// full signature, linked when the guest does not import the name or
// imports a signature no entry has; later entries are variants.
func selectEnvFuncs(wanted map[string]string) []hostFunc {
	seen := map[string]bool{}
	var out []hostFunc
	for _, hf := range envFuncs {
		if seen[hf.name] {
			continue
		}
		if sig, ok := wanted[hf.name]; ok && sig != signature(hf.params, hf.results) && hasVariant(hf.name, sig) {
			continue
		}
		seen[hf.name] = true
		out = append(out, hf)
	}
	return out
}

func hasVariant(name, sig string) bool {
	for _, hf := range envFuncs {
		if hf.name == name && signature(hf.params, hf.results) == sig {
			return true
		}
	}
	return false
}
