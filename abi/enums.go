package abi

import "strconv"

// Status is proxy_status_t, the result of every host function.
type Status uint32

// Status values. The numbering is shared by the spec and the C++ SDK; the
// Rust SDK lacks InvalidMemoryAccess and Unimplemented and panics if a host
// returns a status it did not expect for a given call.
const (
	StatusOK                   Status = 0
	StatusNotFound             Status = 1
	StatusBadArgument          Status = 2
	StatusSerializationFailure Status = 3
	StatusParseFailure         Status = 4
	StatusBadExpression        Status = 5
	StatusInvalidMemoryAccess  Status = 6
	StatusEmpty                Status = 7
	StatusCASMismatch          Status = 8
	StatusResultMismatch       Status = 9
	StatusInternalFailure      Status = 10
	StatusBrokenConnection     Status = 11
	StatusUnimplemented        Status = 12
)

var statusNames = [...]string{
	"OK", "NOT_FOUND", "BAD_ARGUMENT", "SERIALIZATION_FAILURE", "PARSE_FAILURE",
	"BAD_EXPRESSION", "INVALID_MEMORY_ACCESS", "EMPTY", "CAS_MISMATCH",
	"RESULT_MISMATCH", "INTERNAL_FAILURE", "BROKEN_CONNECTION", "UNIMPLEMENTED",
}

func (s Status) String() string { return enumName(statusNames[:], uint32(s), "Status") }

// LogLevel is proxy_log_level_t.
type LogLevel uint32

// Log levels, from the most verbose.
const (
	LogTrace LogLevel = iota
	LogDebug
	LogInfo
	LogWarn
	LogError
	LogCritical
)

var logLevelNames = [...]string{"trace", "debug", "info", "warn", "error", "critical"}

func (l LogLevel) String() string { return enumName(logLevelNames[:], uint32(l), "LogLevel") }

// Valid reports whether l is one of the defined levels.
func (l LogLevel) Valid() bool { return l <= LogCritical }

// Action is proxy_action_t, returned by stream callbacks in ABI 0.2.x.
//
// ABI 0.1.0 plugins return Envoy's filter status enums instead; Decode*
// functions below fold those into Continue or Pause the way Envoy does.
type Action uint32

// Actions.
const (
	ActionContinue Action = 0
	ActionPause    Action = 1
)

func (a Action) String() string {
	switch a {
	case ActionContinue:
		return "continue"
	case ActionPause:
		return "pause"
	}
	return "Action(" + strconv.FormatUint(uint64(a), 10) + ")"
}

// HeadersAction folds the raw return of proxy_on_*_headers into an Action.
// Envoy reads it as FilterHeadersStatus: 0 and 2 (ContinueAndEndStream)
// continue, every other value stops iteration.
func HeadersAction(raw uint32) Action {
	if raw == 0 || raw == 2 {
		return ActionContinue
	}
	return ActionPause
}

// BodyAction folds the raw return of proxy_on_*_body into an Action: only 0
// continues; 1 (StopIterationAndBuffer) and anything else stop and buffer.
func BodyAction(raw uint32) Action {
	if raw == 0 {
		return ActionContinue
	}
	return ActionPause
}

// BufferType is proxy_buffer_type_t.
type BufferType uint32

// Buffer types.
const (
	BufferHTTPRequestBody      BufferType = 0
	BufferHTTPResponseBody     BufferType = 1
	BufferDownstreamData       BufferType = 2
	BufferUpstreamData         BufferType = 3
	BufferHTTPCallResponseBody BufferType = 4
	BufferGRPCReceive          BufferType = 5
	BufferVMConfiguration      BufferType = 6
	BufferPluginConfiguration  BufferType = 7
	BufferCallData             BufferType = 8
)

var bufferTypeNames = [...]string{
	"http_request_body", "http_response_body", "downstream_data", "upstream_data",
	"http_call_response_body", "grpc_receive_buffer", "vm_configuration",
	"plugin_configuration", "call_data",
}

func (b BufferType) String() string { return enumName(bufferTypeNames[:], uint32(b), "BufferType") }

// Valid reports whether b is a defined buffer type.
func (b BufferType) Valid() bool { return b <= BufferCallData }

// MapType is proxy_map_type_t.
type MapType uint32

// Map types. 0 to 3 belong to the HTTP stream; 4 to 7 are read-only maps of
// outbound calls.
const (
	MapHTTPRequestHeaders          MapType = 0
	MapHTTPRequestTrailers         MapType = 1
	MapHTTPResponseHeaders         MapType = 2
	MapHTTPResponseTrailers        MapType = 3
	MapGRPCReceiveInitialMetadata  MapType = 4
	MapGRPCReceiveTrailingMetadata MapType = 5
	MapHTTPCallResponseHeaders     MapType = 6
	MapHTTPCallResponseTrailers    MapType = 7
)

var mapTypeNames = [...]string{
	"http_request_headers", "http_request_trailers", "http_response_headers",
	"http_response_trailers", "grpc_receive_initial_metadata",
	"grpc_receive_trailing_metadata", "http_call_response_headers",
	"http_call_response_trailers",
}

func (m MapType) String() string { return enumName(mapTypeNames[:], uint32(m), "MapType") }

// Valid reports whether m is a defined map type.
func (m MapType) Valid() bool { return m <= MapHTTPCallResponseTrailers }

// StreamType is proxy_stream_type_t, the argument of proxy_continue_stream
// and proxy_close_stream.
type StreamType uint32

// Stream types.
const (
	StreamHTTPRequest  StreamType = 0
	StreamHTTPResponse StreamType = 1
	StreamDownstream   StreamType = 2
	StreamUpstream     StreamType = 3
)

var streamTypeNames = [...]string{"http_request", "http_response", "downstream", "upstream"}

func (s StreamType) String() string { return enumName(streamTypeNames[:], uint32(s), "StreamType") }

// PeerType is proxy_peer_type_t, passed to the connection close callbacks.
type PeerType uint32

// Peer types.
const (
	PeerUnknown PeerType = 0
	PeerLocal   PeerType = 1
	PeerRemote  PeerType = 2
)

// MetricType is proxy_metric_type_t.
type MetricType uint32

// Metric types.
const (
	MetricCounter   MetricType = 0
	MetricGauge     MetricType = 1
	MetricHistogram MetricType = 2
)

var metricTypeNames = [...]string{"counter", "gauge", "histogram"}

func (m MetricType) String() string { return enumName(metricTypeNames[:], uint32(m), "MetricType") }

// Valid reports whether m is a defined metric type.
func (m MetricType) Valid() bool { return m <= MetricHistogram }

// GRPCStatusNone is what SDKs pass to proxy_send_local_response when the
// reply carries no grpc-status: any value outside 0..16 means none.
const GRPCStatusNone = ^uint32(0)

func enumName(names []string, v uint32, typ string) string {
	if int(v) < len(names) {
		return names[v]
	}
	return typ + "(" + strconv.FormatUint(uint64(v), 10) + ")"
}
