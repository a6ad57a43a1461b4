package server

import (
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/wasm-callout/wasm-callout/abi"
	"github.com/wasm-callout/wasm-callout/host"
)

// AttributesKey is the key of ProcessingRequest.attributes under which
// Envoy's ext_proc filter sends the values of its request_attributes and
// response_attributes.
const AttributesKey = "envoy.filters.http.ext_proc"

// attributeSource answers the plugin's properties from what Envoy sent on
// the stream: the attributes Struct of each direction (Envoy sends it only
// on the first message of the direction, so it is kept) and the latest
// metadata_context. It implements host.PropertySource. The stream's
// goroutine writes it while the plugin may read it from its instance's
// goroutine (timers, queues), hence the lock.
type attributeSource struct {
	mu       sync.Mutex
	attrs    [2]*structpb.Struct // by abi.StreamType: request, response
	metadata *corev3.Metadata
	mdBytes  []byte // serialized metadata, computed on first use
}

func (a *attributeSource) setAttributes(dir abi.StreamType, s *structpb.Struct) {
	a.mu.Lock()
	a.attrs[dir] = s
	a.mu.Unlock()
}

func (a *attributeSource) setMetadata(md *corev3.Metadata) {
	a.mu.Lock()
	if a.metadata == nil || !proto.Equal(a.metadata, md) {
		a.metadata, a.mdBytes = md, nil
	}
	a.mu.Unlock()
}

// Property implements host.PropertySource. path is the plugin's path with
// legacy names already mapped to xds.*.
func (a *attributeSource) Property(path []string) ([]byte, bool) {
	if len(path) == 0 {
		return nil, false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if path[0] == "metadata" && a.metadata != nil {
		return a.metadataProperty(path[1:])
	}
	name := strings.Join(path, ".")
	// The response direction's attributes are the fresher ones when the
	// same expression is configured for both.
	for _, s := range []*structpb.Struct{a.attrs[abi.StreamHTTPResponse], a.attrs[abi.StreamHTTPRequest]} {
		if v, ok := s.GetFields()[name]; ok {
			return encodeAttribute(name, v)
		}
	}
	// A map attribute indexed by its last segment, as a CEL expression
	// (request.headers['x-foo']) is sent under its literal text.
	if len(path) >= 3 {
		prefix, key := strings.Join(path[:len(path)-1], "."), path[len(path)-1]
		for _, s := range []*structpb.Struct{a.attrs[abi.StreamHTTPResponse], a.attrs[abi.StreamHTTPRequest]} {
			for _, expr := range []string{prefix + "['" + key + "']", prefix + `["` + key + `"]`} {
				if v, ok := s.GetFields()[expr]; ok {
					return encodeValue(v)
				}
			}
		}
	}
	return nil, false
}

// metadataProperty resolves metadata (the serialized
// envoy.config.core.v3.Metadata, kept) and the paths inside it, such as
// metadata.filter_metadata.NS.KEY, as Envoy walks a message-valued
// attribute (host.MessageProperty). Caller holds mu.
func (a *attributeSource) metadataProperty(rest []string) ([]byte, bool) {
	if len(rest) == 0 {
		if a.mdBytes == nil {
			b, err := proto.MarshalOptions{Deterministic: true}.Marshal(a.metadata)
			if err != nil {
				return nil, false
			}
			a.mdBytes = b
		}
		return a.mdBytes, true
	}
	return host.MessageProperty(a.metadata, rest)
}

// encodeAttribute converts one attribute value, as Envoy's ext_proc sends
// it, to the bytes Envoy would give a plugin for that property: the kind
// comes from Envoy's attribute vocabulary (abi.PropertyKind). Envoy sends
// booleans as bool_value, integers as number_value (a double) and
// everything else printed as string_value: timestamps as RFC 3339, durations
// as "1h2m3.5s". A value that cannot be converted to its kind is reported
// absent.
func encodeAttribute(name string, v *structpb.Value) ([]byte, bool) {
	switch kind := abi.PropertyKind(name); kind {
	case abi.KindString, abi.KindBytes:
		switch k := v.GetKind().(type) {
		case *structpb.Value_StringValue:
			return []byte(k.StringValue), true
		case *structpb.Value_NumberValue:
			return []byte(strconv.FormatFloat(k.NumberValue, 'f', -1, 64)), true
		case *structpb.Value_BoolValue:
			return []byte(strconv.FormatBool(k.BoolValue)), true
		}
	case abi.KindInt64:
		switch k := v.GetKind().(type) {
		case *structpb.Value_NumberValue:
			n := k.NumberValue
			if n == math.Trunc(n) && n >= math.MinInt64 && n < math.MaxInt64 {
				return abi.EncodeInt64(int64(n)), true
			}
		case *structpb.Value_StringValue:
			if n, err := strconv.ParseInt(k.StringValue, 10, 64); err == nil {
				return abi.EncodeInt64(n), true
			}
		}
	case abi.KindUint64:
		switch k := v.GetKind().(type) {
		case *structpb.Value_NumberValue:
			n := k.NumberValue
			if n == math.Trunc(n) && n >= 0 && n < math.MaxUint64 {
				return abi.EncodeUint64(uint64(n)), true
			}
		case *structpb.Value_StringValue:
			if n, err := strconv.ParseUint(k.StringValue, 10, 64); err == nil {
				return abi.EncodeUint64(n), true
			}
		}
	case abi.KindDouble:
		switch k := v.GetKind().(type) {
		case *structpb.Value_NumberValue:
			return abi.EncodeDouble(k.NumberValue), true
		case *structpb.Value_StringValue:
			if f, err := strconv.ParseFloat(k.StringValue, 64); err == nil {
				return abi.EncodeDouble(f), true
			}
		}
	case abi.KindBool:
		switch k := v.GetKind().(type) {
		case *structpb.Value_BoolValue:
			return abi.EncodeBool(k.BoolValue), true
		case *structpb.Value_StringValue:
			if b, err := strconv.ParseBool(k.StringValue); err == nil {
				return abi.EncodeBool(b), true
			}
		}
	case abi.KindTimestamp:
		if s, ok := v.GetKind().(*structpb.Value_StringValue); ok {
			if t, err := time.Parse(time.RFC3339Nano, s.StringValue); err == nil {
				return abi.EncodeTimestamp(t), true
			}
		}
	case abi.KindDuration:
		if s, ok := v.GetKind().(*structpb.Value_StringValue); ok {
			if d, err := time.ParseDuration(s.StringValue); err == nil {
				return abi.EncodeDuration(d), true
			}
		}
	case abi.KindMap, abi.KindList:
		// Envoy prints maps and lists as text that cannot be parsed back;
		// only structured values are usable.
		switch v.GetKind().(type) {
		case *structpb.Value_StructValue, *structpb.Value_ListValue:
			return encodeValue(v)
		}
	case abi.KindProto:
		// Printed protos (xds.node, xds.*_metadata) cannot be re-encoded.
	default:
		// Not in Envoy's vocabulary: encode by the value's own type.
		if n, ok := v.GetKind().(*structpb.Value_NumberValue); ok {
			if f := n.NumberValue; f == math.Trunc(f) && f >= math.MinInt64 && f < math.MaxInt64 {
				return abi.EncodeInt64(int64(f)), true
			}
		}
		return encodeValue(v)
	}
	return nil, false
}

// encodeValue encodes a google.protobuf.Value as Envoy serializes the CEL
// value of a Struct field (host.MessageProperty).
func encodeValue(v *structpb.Value) ([]byte, bool) { return host.MessageProperty(v, nil) }

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
