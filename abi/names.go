package abi

// Version is a proxy-wasm ABI version, detected from the marker function a
// plugin exports.
type Version string

// ABI versions. VersionUnknown is a module that exports no marker: Envoy
// refuses it, and this host loads it with a warning when it exports the
// callbacks.
const (
	VersionUnknown Version = ""
	Version010     Version = "0.1.0"
	Version020     Version = "0.2.0"
	Version021     Version = "0.2.1"
)

// VersionMarkers maps each exported marker function to its version.
var VersionMarkers = map[string]Version{
	"proxy_abi_version_0_1_0": Version010,
	"proxy_abi_version_0_2_0": Version020,
	"proxy_abi_version_0_2_1": Version021,
}

// Names of the guest modules and start functions a host must know.
const (
	ModuleEnv          = "env"
	ModuleWASIPreview1 = "wasi_snapshot_preview1"
	ModuleWASIUnstable = "wasi_unstable"

	FuncInitialize = "_initialize" // WASI reactor entry point.
	FuncMain       = "main"        // called after _initialize when exported.
	FuncMainVoid   = "__main_void" // wasi-libc's main without arguments.
	FuncStart      = "_start"      // WASI command entry point.

	FuncMemoryAllocate = "proxy_on_memory_allocate" // preferred allocator.
	FuncMalloc         = "malloc"                   // fallback allocator.
)

// Callback export names, in the order of the spec's "Functions implemented
// in the Wasm module" section.
const (
	OnContextCreate               = "proxy_on_context_create"
	OnVMStart                     = "proxy_on_vm_start"
	OnConfigure                   = "proxy_on_configure"
	OnValidateConfiguration       = "proxy_validate_configuration"
	OnTick                        = "proxy_on_tick"
	OnNewConnection               = "proxy_on_new_connection"
	OnDownstreamData              = "proxy_on_downstream_data"
	OnUpstreamData                = "proxy_on_upstream_data"
	OnDownstreamClose             = "proxy_on_downstream_connection_close"
	OnUpstreamClose               = "proxy_on_upstream_connection_close"
	OnRequestHeaders              = "proxy_on_request_headers"
	OnRequestBody                 = "proxy_on_request_body"
	OnRequestTrailers             = "proxy_on_request_trailers"
	OnRequestMetadata             = "proxy_on_request_metadata"
	OnResponseHeaders             = "proxy_on_response_headers"
	OnResponseBody                = "proxy_on_response_body"
	OnResponseTrailers            = "proxy_on_response_trailers"
	OnResponseMetadata            = "proxy_on_response_metadata"
	OnHTTPCallResponse            = "proxy_on_http_call_response"
	OnGRPCReceiveInitialMetadata  = "proxy_on_grpc_receive_initial_metadata"
	OnGRPCReceive                 = "proxy_on_grpc_receive"
	OnGRPCReceiveTrailingMetadata = "proxy_on_grpc_receive_trailing_metadata"
	OnGRPCTrailingMetadataLegacy  = "proxy_on_grpc_trailing_metadata" // AssemblyScript SDK's name.
	OnGRPCClose                   = "proxy_on_grpc_close"
	OnQueueReady                  = "proxy_on_queue_ready"
	OnForeignFunction             = "proxy_on_foreign_function"
	OnDone                        = "proxy_on_done"
	OnLog                         = "proxy_on_log"
	OnDelete                      = "proxy_on_delete"
)

// Callbacks lists every callback export name a host may call.
var Callbacks = []string{
	OnContextCreate, OnVMStart, OnConfigure, OnValidateConfiguration, OnTick,
	OnNewConnection, OnDownstreamData, OnUpstreamData, OnDownstreamClose, OnUpstreamClose,
	OnRequestHeaders, OnRequestBody, OnRequestTrailers, OnRequestMetadata,
	OnResponseHeaders, OnResponseBody, OnResponseTrailers, OnResponseMetadata,
	OnHTTPCallResponse, OnGRPCReceiveInitialMetadata, OnGRPCReceive,
	OnGRPCReceiveTrailingMetadata, OnGRPCTrailingMetadataLegacy, OnGRPCClose,
	OnQueueReady, OnForeignFunction, OnDone, OnLog, OnDelete,
}

// Token kinds of outbound calls. Envoy numbers tokens so that the low two bits
// tell the kind: HTTP calls 4, 8, 12…; gRPC calls 5, 9…; gRPC streams 6, 10….
const (
	TokenHTTPCall   uint32 = 0
	TokenGRPCCall   uint32 = 1
	TokenGRPCStream uint32 = 2
)
