package server

import (
	"bytes"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/wasm-callout/wasm-callout/abi"
)

func TestEncodeAttribute(t *testing.T) {
	ts := time.Date(2020, 12, 22, 1, 50, 34, 0, time.UTC)
	str, num, boolean := structpb.NewStringValue, structpb.NewNumberValue, structpb.NewBoolValue
	headers, _ := structpb.NewStruct(map[string]any{"x-a": "1"})
	tests := []struct {
		name string
		v    *structpb.Value
		want []byte // nil: absent
	}{
		// string
		{"request.path", str("/a?b"), []byte("/a?b")},
		{"request.path", num(5), []byte("5")},
		{"connection.mtls", str("yes"), nil},
		// int64: Envoy sends integers as doubles
		{"response.code", num(200), abi.EncodeInt64(200)},
		{"source.port", num(-1), abi.EncodeInt64(-1)},
		{"response.code", str("404"), abi.EncodeInt64(404)},
		{"response.code", num(1.5), nil},
		{"response.code", str("abc"), nil},
		{"response.code", boolean(true), nil},
		// uint64
		{"connection.id", num(7), abi.EncodeUint64(7)},
		{"connection_id", num(8), abi.EncodeUint64(8)},
		{"connection.id", num(-1), nil},
		// bool
		{"connection.mtls", boolean(true), abi.EncodeBool(true)},
		{"connection.mtls", str("false"), abi.EncodeBool(false)},
		// timestamp: CEL prints absl time as RFC 3339
		{"request.time", str("2020-12-22T01:50:34+00:00"), abi.EncodeTimestamp(ts)},
		{"request.time", str("2020-12-22T01:50:34.5Z"), abi.EncodeTimestamp(ts.Add(500 * time.Millisecond))},
		{"request.time", str("yesterday"), nil},
		{"request.time", num(1), nil},
		// duration: CEL prints absl durations like Go
		{"request.duration", str("1m"), abi.EncodeDuration(time.Minute)},
		{"response.backend_latency", str("1.5ms"), abi.EncodeDuration(1500 * time.Microsecond)},
		{"request.duration", str("inf"), nil},
		// maps and protos printed as text cannot be converted back
		{"request.headers", str("{x-a: 1}"), nil},
		{"request.headers", structpb.NewStructValue(headers), abi.EncodeMap([]abi.Pair{{Key: "x-a", Value: "1"}})},
		{"xds.node", str(`id: "n"`), nil},
		{"cluster_metadata", str("filter_metadata {}"), nil},
		// unknown attributes follow the value's own type
		{"my.attr", str("v"), []byte("v")},
		{"my.attr", num(3), abi.EncodeInt64(3)},
		{"my.attr", num(2.5), abi.EncodeDouble(2.5)},
		{"my.attr", boolean(false), abi.EncodeBool(false)},
		{"my.attr", structpb.NewNullValue(), nil},
	}
	for _, tt := range tests {
		got, ok := encodeAttribute(tt.name, tt.v)
		if ok != (tt.want != nil) || !bytes.Equal(got, tt.want) {
			t.Errorf("encodeAttribute(%s, %v) = %x, %v; want %x", tt.name, tt.v, got, ok, tt.want)
		}
	}
}

func TestAttributeSource(t *testing.T) {
	var a attributeSource
	req, _ := structpb.NewStruct(map[string]any{
		"request.path": "/from-request", "source.address": "10.0.0.1:5555",
		"request.headers['x-foo']": "bar",
	})
	resp, _ := structpb.NewStruct(map[string]any{"request.path": "/from-response", "response.code": 503})
	a.setAttributes(abi.StreamHTTPRequest, req)
	a.setAttributes(abi.StreamHTTPResponse, resp)
	md := &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{}}
	md.FilterMetadata["ns"], _ = structpb.NewStruct(map[string]any{
		"s": "x", "n": 2, "nested": map[string]any{"b": true}, "list": []any{"p", "q"},
	})
	a.setMetadata(md)
	mdBytes, _ := proto.MarshalOptions{Deterministic: true}.Marshal(md)

	tests := []struct {
		path []string
		want []byte
	}{
		{[]string{"source", "address"}, []byte("10.0.0.1:5555")},
		{[]string{"request", "path"}, []byte("/from-response")},
		{[]string{"response", "code"}, abi.EncodeInt64(503)},
		{[]string{"request", "headers", "x-foo"}, []byte("bar")},
		{[]string{"request", "headers", "x-bar"}, nil},
		{[]string{"destination", "address"}, nil},
		{[]string{"metadata"}, mdBytes},
		{[]string{"metadata", "filter_metadata", "ns", "s"}, []byte("x")},
		{[]string{"metadata", "filter_metadata", "ns", "n"}, abi.EncodeDouble(2)},
		{[]string{"metadata", "filter_metadata", "ns", "nested", "b"}, abi.EncodeBool(true)},
		{[]string{"metadata", "filter_metadata", "ns", "list", "1"}, []byte("q")},
		{[]string{"metadata", "filter_metadata", "ns", "list", "2"}, nil},
		{[]string{"metadata", "filter_metadata", "ns", "missing"}, nil},
		{[]string{"metadata", "filter_metadata", "other"}, nil},
		{[]string{"metadata", "typed_filter_metadata"}, abi.EncodeMap(nil)}, // an empty map field is an empty map, as CEL reads it
		{[]string{"metadata", "no_such_field"}, nil},
		{[]string{"metadata", "filter_metadata", "ns", "nested"}, abi.EncodeMap([]abi.Pair{{Key: "b", Value: "\x01"}})},
		{nil, nil},
	}
	for _, tt := range tests {
		got, ok := a.Property(tt.path)
		if ok != (tt.want != nil) || !bytes.Equal(got, tt.want) {
			t.Errorf("Property(%q) = %q, %v; want %q", tt.path, got, ok, tt.want)
		}
	}

	// Without metadata_context, "metadata" is simply absent.
	var empty attributeSource
	if _, ok := empty.Property([]string{"metadata"}); ok {
		t.Error("metadata found without metadata_context")
	}
}
