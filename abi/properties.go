package abi

import (
	"bytes"
	"encoding/binary"
	"math"
	"strings"
	"time"
)

// SplitPath splits a property path as SDKs send it: segments joined by a
// single NUL. A trailing NUL is tolerated, as Envoy tolerates it. An empty
// path has no segments.
func SplitPath(path []byte) []string {
	path = bytes.TrimSuffix(path, []byte{0})
	if len(path) == 0 {
		return nil
	}
	return strings.Split(string(path), "\x00")
}

// JoinPath joins segments into the wire form SplitPath accepts.
func JoinPath(segments ...string) []byte {
	return []byte(strings.Join(segments, "\x00"))
}

// EncodeInt64 is Envoy's encoding of int64 and uint64 properties: 8 bytes,
// little-endian.
func EncodeInt64(v int64) []byte { return binary.LittleEndian.AppendUint64(nil, uint64(v)) }

// EncodeUint64 is the uint64 form of EncodeInt64.
func EncodeUint64(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }

// EncodeDouble is Envoy's encoding of double properties: IEEE-754, 8 bytes
// little-endian.
func EncodeDouble(v float64) []byte { return EncodeUint64(math.Float64bits(v)) }

// EncodeBool is Envoy's encoding of bool properties: one byte, 0 or 1.
func EncodeBool(v bool) []byte {
	if v {
		return []byte{1}
	}
	return []byte{0}
}

// EncodeTimestamp is Envoy's encoding of timestamps: int64 nanoseconds since
// the Unix epoch.
func EncodeTimestamp(t time.Time) []byte { return EncodeInt64(t.UnixNano()) }

// EncodeDuration is Envoy's encoding of durations: int64 nanoseconds.
func EncodeDuration(d time.Duration) []byte { return EncodeInt64(int64(d)) }

// EncodeMap is Envoy's encoding of map properties: the pair serialization.
// An empty map is the four bytes of a zero count, as Envoy writes it
// (proxy-wasm-cpp-host PairsUtil::pairsSize counts the count word even for
// no pairs), never the empty or one-byte forms.
func EncodeMap(pairs []Pair) []byte {
	if len(pairs) == 0 {
		return make([]byte, 4)
	}
	return AppendPairs(nil, pairs)
}

// EncodeList is Envoy's encoding of list properties: the pair serialization
// with every element as a key and an empty value.
func EncodeList(items []string) []byte {
	pairs := make([]Pair, len(items))
	for i, s := range items {
		pairs[i].Key = s
	}
	return EncodeMap(pairs)
}

// Kind is the CEL type of a property, which decides its byte encoding.
type Kind uint8

// Property kinds.
const (
	KindUnknown Kind = iota
	KindString
	KindBytes
	KindInt64
	KindUint64
	KindDouble
	KindBool
	KindTimestamp
	KindDuration
	KindMap
	KindList
	KindProto // serialized protobuf message
)

// propertyKinds is Envoy's attribute vocabulary (attributes.rst) with the
// type of each attribute.
var propertyKinds = map[string]Kind{
	"request.path": KindString, "request.url_path": KindString, "request.host": KindString,
	"request.scheme": KindString, "request.method": KindString, "request.headers": KindMap,
	"request.referer": KindString, "request.useragent": KindString, "request.time": KindTimestamp,
	"request.id": KindString, "request.protocol": KindString, "request.query": KindString,
	"request.duration": KindDuration, "request.size": KindInt64, "request.total_size": KindInt64,
	"request.headers_bytes": KindInt64,

	"response.code": KindInt64, "response.code_details": KindString, "response.flags": KindInt64,
	"response.grpc_status": KindInt64, "response.headers": KindMap, "response.trailers": KindMap,
	"response.size": KindInt64, "response.total_size": KindInt64, "response.headers_bytes": KindInt64,
	"response.backend_latency": KindDuration, "response.trailers_bytes": KindInt64,

	"source.address": KindString, "source.port": KindInt64,
	"destination.address": KindString, "destination.port": KindInt64,

	"connection.id": KindUint64, "connection.mtls": KindBool,
	"connection.requested_server_name": KindString, "connection.tls_version": KindString,
	"connection.subject_local_certificate": KindString, "connection.subject_peer_certificate": KindString,
	"connection.dns_san_local_certificate": KindString, "connection.dns_san_peer_certificate": KindString,
	"connection.uri_san_local_certificate": KindString, "connection.uri_san_peer_certificate": KindString,
	"connection.sha256_peer_certificate_digest": KindString, "connection.transport_failure_reason": KindString,
	"connection.termination_details": KindString, "connection.peer_certificate": KindString,
	"connection_id": KindUint64,

	"upstream.address": KindString, "upstream.port": KindInt64, "upstream.tls_version": KindString,
	"upstream.subject_local_certificate": KindString, "upstream.subject_peer_certificate": KindString,
	"upstream.dns_san_local_certificate": KindString, "upstream.dns_san_peer_certificate": KindString,
	"upstream.uri_san_local_certificate": KindString, "upstream.uri_san_peer_certificate": KindString,
	"upstream.sha256_peer_certificate_digest": KindString, "upstream.local_address": KindString,
	"upstream.transport_failure_reason": KindString, "upstream.request_attempt_count": KindUint64,
	"upstream.cx_pool_ready_duration": KindDuration, "upstream.num_endpoints": KindUint64,

	"xds.cluster_name": KindString, "xds.route_name": KindString, "xds.virtual_host_name": KindString,
	"xds.filter_chain_name": KindString, "xds.listener_direction": KindInt64,
	"xds.node": KindProto, "xds.cluster_metadata": KindProto, "xds.listener_metadata": KindProto,
	"xds.route_metadata": KindProto, "xds.virtual_host_metadata": KindProto,
	"xds.upstream_host_metadata": KindProto, "xds.upstream_host_locality_metadata": KindProto,

	"metadata": KindProto, "filter_state": KindMap, "upstream_filter_state": KindMap,

	"plugin_name": KindString, "plugin_root_id": KindString, "plugin_vm_id": KindString,
}

// PropertyKind returns the type Envoy gives the attribute with this dotted
// name (for example "request.time"), or KindUnknown.
func PropertyKind(name string) Kind { return propertyKinds[CanonicalProperty(name)] }

// legacyProperties are the top-level names Envoy used before it moved them
// under xds (envoyproxy/envoy#36619). SDKs still ask for them.
var legacyProperties = map[string]string{
	"cluster_name": "xds.cluster_name", "route_name": "xds.route_name",
	"listener_direction": "xds.listener_direction", "node": "xds.node",
	"cluster_metadata": "xds.cluster_metadata", "listener_metadata": "xds.listener_metadata",
	"route_metadata": "xds.route_metadata", "upstream_host_metadata": "xds.upstream_host_metadata",
}

// CanonicalPath maps a path whose first segment is a legacy top-level name
// to its xds.* form ("node", "id" becomes "xds", "node", "id"). Other
// segments are kept whole, dots and all (metadata namespaces and label
// names contain dots). Other paths are returned unchanged.
func CanonicalPath(path []string) []string {
	if len(path) == 0 {
		return path
	}
	xds, ok := legacyProperties[path[0]]
	if !ok {
		return path
	}
	_, name, _ := strings.Cut(xds, ".")
	return append([]string{"xds", name}, path[1:]...)
}

// CanonicalProperty maps a legacy top-level attribute name (and anything
// below it, such as "node.id") to its xds.* name. Other names are returned
// unchanged.
func CanonicalProperty(name string) string {
	head, rest, dotted := strings.Cut(name, ".")
	if xds, ok := legacyProperties[head]; ok {
		if dotted {
			return xds + "." + rest
		}
		return xds
	}
	return name
}
