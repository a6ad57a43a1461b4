package abi

import (
	"bytes"
	"reflect"
	"testing"
	"time"
)

func TestSplitPath(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"\x00", nil},
		{"plugin_name", []string{"plugin_name"}},
		{"request\x00path", []string{"request", "path"}},
		{"request\x00path\x00", []string{"request", "path"}},
		{"request\x00headers\x00x-a", []string{"request", "headers", "x-a"}},
		{"a\x00\x00b", []string{"a", "", "b"}},
	}
	for _, tc := range tests {
		if got := SplitPath([]byte(tc.in)); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("SplitPath(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	if got := JoinPath("request", "path"); string(got) != "request\x00path" {
		t.Errorf("JoinPath = %q", got)
	}
}

func TestEncodings(t *testing.T) {
	tests := []struct {
		name string
		got  []byte
		want []byte
	}{
		{"int64", EncodeInt64(200), []byte{200, 0, 0, 0, 0, 0, 0, 0}},
		{"negative int64", EncodeInt64(-1), bytes.Repeat([]byte{0xff}, 8)},
		{"uint64", EncodeUint64(1 << 8), []byte{0, 1, 0, 0, 0, 0, 0, 0}},
		{"double", EncodeDouble(1), []byte{0, 0, 0, 0, 0, 0, 0xf0, 0x3f}},
		{"true", EncodeBool(true), []byte{1}},
		{"false", EncodeBool(false), []byte{0}},
		{"timestamp", EncodeTimestamp(time.Unix(1, 5)), EncodeInt64(1_000_000_005)},
		{"duration", EncodeDuration(3 * time.Millisecond), EncodeInt64(3_000_000)},
		{"list", EncodeList([]string{"x"}), []byte{1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 'x', 0, 0}},
		{"map", EncodeMap([]Pair{{"k", "v"}}), AppendPairs(nil, []Pair{{"k", "v"}})},
		{"empty map: a zero count, as Envoy", EncodeMap(nil), []byte{0, 0, 0, 0}},
		{"empty list", EncodeList(nil), []byte{0, 0, 0, 0}},
	}
	for _, tc := range tests {
		if !bytes.Equal(tc.got, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, tc.got, tc.want)
		}
	}
}

func TestPropertyKindAndLegacyNames(t *testing.T) {
	tests := []struct {
		name      string
		canonical string
		kind      Kind
	}{
		{"request.time", "request.time", KindTimestamp},
		{"response.code", "response.code", KindInt64},
		{"connection.mtls", "connection.mtls", KindBool},
		{"cluster_name", "xds.cluster_name", KindString},
		{"listener_direction", "xds.listener_direction", KindInt64},
		{"node.id", "xds.node.id", KindUnknown},
		{"no.such", "no.such", KindUnknown},
	}
	for _, tc := range tests {
		if got := CanonicalProperty(tc.name); got != tc.canonical {
			t.Errorf("CanonicalProperty(%q) = %q, want %q", tc.name, got, tc.canonical)
		}
		if got := PropertyKind(tc.name); got != tc.kind {
			t.Errorf("PropertyKind(%q) = %v, want %v", tc.name, got, tc.kind)
		}
	}
}

func TestEnumStrings(t *testing.T) {
	if StatusCASMismatch.String() != "CAS_MISMATCH" || Status(99).String() != "Status(99)" {
		t.Error("Status.String")
	}
	if HeadersAction(2) != ActionContinue || HeadersAction(4) != ActionPause || BodyAction(3) != ActionPause {
		t.Error("filter status folding")
	}
	if BufferType(9).Valid() || !MapHTTPCallResponseTrailers.Valid() || MapType(8).Valid() {
		t.Error("Valid")
	}
}

func TestCanonicalPath(t *testing.T) {
	tests := []struct{ in, want []string }{
		{nil, nil},
		{[]string{"node"}, []string{"xds", "node"}},
		{[]string{"node", "metadata", "NAME"}, []string{"xds", "node", "metadata", "NAME"}},
		// Segments with dots stay whole.
		{[]string{"listener_metadata", "filter_metadata", "istio.io"}, []string{"xds", "listener_metadata", "filter_metadata", "istio.io"}},
		{[]string{"xds", "node"}, []string{"xds", "node"}},
		{[]string{"request", "path"}, []string{"request", "path"}},
	}
	for _, tc := range tests {
		if got := CanonicalPath(tc.in); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("CanonicalPath(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
