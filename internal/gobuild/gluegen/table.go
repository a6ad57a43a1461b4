// Package gluegen generates the glue that lets stock Go (GOOS=wasip1,
// -buildmode=c-shared) build plugins written against the TinyGo-era
// github.com/tetratelabs/proxy-wasm-go-sdk.
//
// The SDK declares its host functions for TinyGo (//export-style externs in a
// tinygo-tagged file) and its callbacks as plain Go functions marked with
// //export, which the gc toolchain ignores. The glue supplies, for the gc
// toolchain, the //go:wasmimport declarations of the host functions, Go
// wrappers with the SDK's exact signatures, and //go:wasmexport wrappers
// around the SDK's callbacks. Everything is generated from the two tables in
// this file, which are transcribed from the proxy-wasm ABI v0.2.0 (see
// docs/proxy-wasm-host.md §1.2 and §2.1) and the SDK's Go signatures.
package gluegen

// SDKModule is the module path of the SDK the glue is written for.
const SDKModule = "github.com/tetratelabs/proxy-wasm-go-sdk"

// SDKVersion is the only SDK version the glue supports: the glue replaces
// the SDK's host-call declarations and wraps its unexported callbacks, so it
// depends on that version's exact function names and signatures.
const SDKVersion = "v0.24.0"

// ABIMarker is the ABI version marker the SDK exports.
const ABIMarker = "proxy_abi_version_0_2_0"

// HostCall is one host function the plugin imports from module "env".
type HostCall struct {
	// Name is the import name, e.g. "proxy_log".
	Name string
	// Func is the SDK's Go function (package proxywasm/internal) the glue
	// defines for it.
	Func string
	// Params is the SDK's Go parameter list, exactly as in the SDK source.
	Params string
}

// Callback is one function the plugin exports to the host.
type Callback struct {
	// Name is the export name, e.g. "proxy_on_request_headers".
	Name string
	// Func is the SDK's unexported callback (package proxywasm/internal) the
	// generated export calls.
	Func string
	// Params is the SDK callback's Go parameter list.
	Params string
	// Result is the SDK callback's Go result type, or "" for none.
	Result string
}

// HostCalls lists every host function the SDK v0.24.0 declares
// (proxywasm/internal/abi_hostcalls.go), in the SDK's order. Every one of them
// returns the SDK's Status (a wasm i32).
var HostCalls = []HostCall{
	{"proxy_log", "ProxyLog", "logLevel LogLevel, messageData *byte, messageSize int"},
	{"proxy_send_local_response", "ProxySendLocalResponse", "statusCode uint32, statusCodeDetailData *byte, statusCodeDetailsSize int, bodyData *byte, bodySize int, headersData *byte, headersSize int, grpcStatus int32"},
	{"proxy_get_shared_data", "ProxyGetSharedData", "keyData *byte, keySize int, returnValueData **byte, returnValueSize *int, returnCas *uint32"},
	{"proxy_set_shared_data", "ProxySetSharedData", "keyData *byte, keySize int, valueData *byte, valueSize int, cas uint32"},
	{"proxy_register_shared_queue", "ProxyRegisterSharedQueue", "nameData *byte, nameSize int, returnID *uint32"},
	{"proxy_resolve_shared_queue", "ProxyResolveSharedQueue", "vmIDData *byte, vmIDSize int, nameData *byte, nameSize int, returnID *uint32"},
	{"proxy_dequeue_shared_queue", "ProxyDequeueSharedQueue", "queueID uint32, returnValueData **byte, returnValueSize *int"},
	{"proxy_enqueue_shared_queue", "ProxyEnqueueSharedQueue", "queueID uint32, valueData *byte, valueSize int"},
	{"proxy_get_header_map_value", "ProxyGetHeaderMapValue", "mapType MapType, keyData *byte, keySize int, returnValueData **byte, returnValueSize *int"},
	{"proxy_add_header_map_value", "ProxyAddHeaderMapValue", "mapType MapType, keyData *byte, keySize int, valueData *byte, valueSize int"},
	{"proxy_replace_header_map_value", "ProxyReplaceHeaderMapValue", "mapType MapType, keyData *byte, keySize int, valueData *byte, valueSize int"},
	{"proxy_remove_header_map_value", "ProxyRemoveHeaderMapValue", "mapType MapType, keyData *byte, keySize int"},
	{"proxy_get_header_map_pairs", "ProxyGetHeaderMapPairs", "mapType MapType, returnValueData **byte, returnValueSize *int"},
	{"proxy_set_header_map_pairs", "ProxySetHeaderMapPairs", "mapType MapType, mapData *byte, mapSize int"},
	{"proxy_get_buffer_bytes", "ProxyGetBufferBytes", "bufferType BufferType, start int, maxSize int, returnBufferData **byte, returnBufferSize *int"},
	{"proxy_set_buffer_bytes", "ProxySetBufferBytes", "bufferType BufferType, start int, maxSize int, bufferData *byte, bufferSize int"},
	{"proxy_continue_stream", "ProxyContinueStream", "streamType StreamType"},
	{"proxy_close_stream", "ProxyCloseStream", "streamType StreamType"},
	{"proxy_http_call", "ProxyHttpCall", "upstreamData *byte, upstreamSize int, headerData *byte, headerSize int, bodyData *byte, bodySize int, trailersData *byte, trailersSize int, timeout uint32, calloutIDPtr *uint32"},
	{"proxy_call_foreign_function", "ProxyCallForeignFunction", "funcNamePtr *byte, funcNameSize int, paramPtr *byte, paramSize int, returnData **byte, returnSize *int"},
	{"proxy_set_tick_period_milliseconds", "ProxySetTickPeriodMilliseconds", "period uint32"},
	{"proxy_set_effective_context", "ProxySetEffectiveContext", "contextID uint32"},
	{"proxy_done", "ProxyDone", ""},
	{"proxy_define_metric", "ProxyDefineMetric", "metricType MetricType, metricNameData *byte, metricNameSize int, returnMetricIDPtr *uint32"},
	{"proxy_increment_metric", "ProxyIncrementMetric", "metricID uint32, offset int64"},
	{"proxy_record_metric", "ProxyRecordMetric", "metricID uint32, value uint64"},
	{"proxy_get_metric", "ProxyGetMetric", "metricID uint32, returnMetricValue *uint64"},
	{"proxy_get_property", "ProxyGetProperty", "pathData *byte, pathSize int, returnValueData **byte, returnValueSize *int"},
	{"proxy_set_property", "ProxySetProperty", "pathData *byte, pathSize int, valueData *byte, valueSize int"},
}

// MemoryAllocate is the allocator export; it is generated specially (it pins
// what it returns, see the generated glue) and is not in Callbacks.
const MemoryAllocate = "proxy_on_memory_allocate"

// Callbacks lists the SDK v0.24.0 callbacks (proxywasm/internal/abi_callback_*.go)
// other than the allocator and the ABI marker.
var Callbacks = []Callback{
	{"proxy_on_context_create", "proxyOnContextCreate", "contextID uint32, pluginContextID uint32", ""},
	{"proxy_on_vm_start", "proxyOnVMStart", "pluginContextID uint32, vmConfigurationSize int", "types.OnVMStartStatus"},
	{"proxy_on_configure", "proxyOnConfigure", "pluginContextID uint32, pluginConfigurationSize int", "types.OnPluginStartStatus"},
	{"proxy_on_new_connection", "proxyOnNewConnection", "contextID uint32", "types.Action"},
	{"proxy_on_downstream_data", "proxyOnDownstreamData", "contextID uint32, dataSize int, endOfStream bool", "types.Action"},
	{"proxy_on_downstream_connection_close", "proxyOnDownstreamConnectionClose", "contextID uint32, pType types.PeerType", ""},
	{"proxy_on_upstream_data", "proxyOnUpstreamData", "contextID uint32, dataSize int, endOfStream bool", "types.Action"},
	{"proxy_on_upstream_connection_close", "proxyOnUpstreamConnectionClose", "contextID uint32, pType types.PeerType", ""},
	{"proxy_on_request_headers", "proxyOnRequestHeaders", "contextID uint32, numHeaders int, endOfStream bool", "types.Action"},
	{"proxy_on_request_body", "proxyOnRequestBody", "contextID uint32, bodySize int, endOfStream bool", "types.Action"},
	{"proxy_on_request_trailers", "proxyOnRequestTrailers", "contextID uint32, numTrailers int", "types.Action"},
	{"proxy_on_response_headers", "proxyOnResponseHeaders", "contextID uint32, numHeaders int, endOfStream bool", "types.Action"},
	{"proxy_on_response_body", "proxyOnResponseBody", "contextID uint32, bodySize int, endOfStream bool", "types.Action"},
	{"proxy_on_response_trailers", "proxyOnResponseTrailers", "contextID uint32, numTrailers int", "types.Action"},
	{"proxy_on_http_call_response", "proxyOnHttpCallResponse", "pluginContextID uint32, calloutID uint32, numHeaders int, bodySize int, numTrailers int", ""},
	{"proxy_on_queue_ready", "proxyOnQueueReady", "contextID uint32, queueID uint32", ""},
	{"proxy_on_tick", "proxyOnTick", "pluginContextID uint32", ""},
	{"proxy_on_log", "proxyOnLog", "contextID uint32", ""},
	{"proxy_on_done", "proxyOnDone", "contextID uint32", "bool"},
	{"proxy_on_delete", "proxyOnDelete", "contextID uint32", ""},
}
