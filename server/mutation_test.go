package server

import (
	"slices"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/wasm-callout/wasm-callout/abi"
	"github.com/wasm-callout/wasm-callout/host"
)

// overwrite and appendValue spell out the expected wire encoding by hand,
// independently of headerOption.
func overwrite(k, v string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{
		Header:       &corev3.HeaderValue{Key: k, RawValue: []byte(v)},
		AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
	}
}

func appendValue(k, v string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{
		Header:       &corev3.HeaderValue{Key: k, RawValue: []byte(v)},
		Append:       wrapperspb.Bool(true),
		AppendAction: corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD,
	}
}

func change(k string, vs ...string) host.HeaderChange { return host.HeaderChange{Key: k, Values: vs} }

func TestHeaderMutation(t *testing.T) {
	long := strings.Repeat("v", maxHeaderBytes+1)
	tests := []struct {
		name        string
		changes     []host.HeaderChange
		kind        mapKind
		rules       MutationRules
		skipCL      bool
		want        *extprocv3.HeaderMutation
		wantDropped []string
	}{
		{name: "none", want: nil},
		{
			name:    "overwrite uses raw_value and append_action with append unset",
			changes: []host.HeaderChange{change("x-a", "1")},
			want:    &extprocv3.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{overwrite("x-a", "1")}},
		},
		{
			name:    "first value overwrites, the rest append",
			changes: []host.HeaderChange{change("x-a", "1", "2", "3")},
			want: &extprocv3.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{
				overwrite("x-a", "1"), appendValue("x-a", "2"), appendValue("x-a", "3")}},
		},
		{
			name:    "no values removes",
			changes: []host.HeaderChange{change("x-gone"), change("x-b", "")},
			want: &extprocv3.HeaderMutation{
				RemoveHeaders: []string{"x-gone"},
				SetHeaders:    []*corev3.HeaderValueOption{overwrite("x-b", "")}},
		},
		{
			name: "routing and envoy headers are dropped by default",
			changes: []host.HeaderChange{change("host", "evil"), change(":authority", "evil"), change(":scheme", "https"),
				change(":method", "PUT"), change("x-envoy-foo", "1"), change("x-envoy-bar"), change("x-ok", "1")},
			want:        &extprocv3.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{overwrite("x-ok", "1")}},
			wantDropped: []string{"host", ":authority", ":scheme", ":method", "x-envoy-foo", "x-envoy-bar"},
		},
		{
			name:    "allow_all_routing and allow_envoy let them through",
			changes: []host.HeaderChange{change("host", "h"), change(":method", "PUT"), change("x-envoy-foo", "1"), change("x-envoy-bar")},
			rules:   MutationRules{AllowAllRouting: true, AllowEnvoy: true},
			want: &extprocv3.HeaderMutation{
				RemoveHeaders: []string{"x-envoy-bar"},
				SetHeaders:    []*corev3.HeaderValueOption{overwrite("host", "h"), overwrite(":method", "PUT"), overwrite("x-envoy-foo", "1")}},
		},
		{
			name:        "removing pseudo-headers or host never works",
			changes:     []host.HeaderChange{change(":path"), change("host"), change(":authority")},
			rules:       MutationRules{AllowAllRouting: true},
			want:        nil,
			wantDropped: []string{":path", "host", ":authority"},
		},
		{
			name:        ":path can be set, but not given a second value",
			changes:     []host.HeaderChange{change(":path", "/a", "/b")},
			want:        &extprocv3.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{overwrite(":path", "/a")}},
			wantDropped: []string{":path"},
		},
		{
			name:        "invalid values, names and sizes would fail the response in Envoy",
			changes:     []host.HeaderChange{change("x-crlf", "a\r\nb"), change("x-nul", "a\x00"), change("bad key", "1"), change("x-long", long), change("x-ok", "fine", "bad\n")},
			want:        &extprocv3.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{overwrite("x-ok", "fine")}},
			wantDropped: []string{"x-crlf", "x-nul", "bad key", "x-long", "x-ok"},
		},
		{
			name:        "invalid :status",
			changes:     []host.HeaderChange{change(":status", "99")},
			want:        nil,
			wantDropped: []string{":status"},
		},
		{
			name:    "valid :status",
			changes: []host.HeaderChange{change(":status", "404")},
			want:    &extprocv3.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{overwrite(":status", "404")}},
		},
		{
			name:        "pseudo-headers have no place in trailers",
			changes:     []host.HeaderChange{change(":path", "/x"), change("grpc-status", "0")},
			kind:        kindTrailers,
			want:        &extprocv3.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{overwrite("grpc-status", "0")}},
			wantDropped: []string{":path"},
		},
		{
			name:        "content-length is skipped where Envoy removes it",
			changes:     []host.HeaderChange{change("content-length", "3")},
			skipCL:      true,
			want:        nil,
			wantDropped: []string{"content-length"},
		},
		{
			name:    "content-length is kept otherwise; its removal always goes",
			changes: []host.HeaderChange{change("content-length", "3")},
			want:    &extprocv3.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{overwrite("content-length", "3")}},
		},
		{
			name:    "keys are lower-cased",
			changes: []host.HeaderChange{change("X-Mixed", "1")},
			want:    &extprocv3.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{overwrite("x-mixed", "1")}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, dropped := headerMutation(tt.changes, tt.kind, mutationPolicy{rules: tt.rules}, tt.skipCL)
			if !proto.Equal(got, tt.want) {
				t.Errorf("mutation:\n got %v\nwant %v", prototext.Format(got), prototext.Format(tt.want))
			}
			var keys []string
			for _, d := range dropped {
				if d.Reason == "" {
					t.Errorf("dropped %s without a reason", d.Key)
				}
				keys = append(keys, d.Key)
			}
			if !slices.Equal(keys, tt.wantDropped) {
				t.Errorf("dropped %v, want %v", keys, tt.wantDropped)
			}
		})
	}
}

func TestImmediateResponse(t *testing.T) {
	lr := &host.LocalResponse{
		Status: 403, Details: "denied_by_plugin", Body: []byte("no\n"), GRPCStatus: -1,
		Headers: []abi.Pair{{Key: "Content-Type", Value: "text/plain"}, {Key: "x-a", Value: "1"}, {Key: "x-a", Value: "2"},
			{Key: ":status", Value: "500"}, {Key: "host", Value: "h"}, {Key: "x-bad", Value: "a\nb"}},
	}
	got, dropped := immediateResponse(lr, mutationPolicy{})
	want := &extprocv3.ImmediateResponse{
		Status:  &typev3.HttpStatus{Code: typev3.StatusCode_Forbidden},
		Body:    []byte("no\n"),
		Details: "denied_by_plugin",
		Headers: &extprocv3.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{
			overwrite("content-type", "text/plain"), overwrite("x-a", "1"), appendValue("x-a", "2")}},
	}
	if !proto.Equal(got, want) {
		t.Errorf("got %v\nwant %v", prototext.Format(got), prototext.Format(want))
	}
	if len(dropped) != 3 {
		t.Errorf("dropped %v, want :status, host and x-bad", dropped)
	}

	lr = &host.LocalResponse{Status: 503, Details: "wasm_fail_stream", GRPCStatus: 14}
	got, _ = immediateResponse(lr, mutationPolicy{})
	if got.GetGrpcStatus().GetStatus() != 14 || got.GetStatus().GetCode() != 503 || got.GetHeaders() != nil {
		t.Errorf("failure response: %v", prototext.Format(got))
	}
}

func TestBodyMutation(t *testing.T) {
	if m := bodyMutation(nil); !m.GetClearBody() {
		t.Errorf("empty output: %v, want clear_body", m)
	}
	if m := bodyMutation([]byte("x")); string(m.GetBody()) != "x" || m.GetClearBody() {
		t.Errorf("output x: %v", m)
	}
	m := streamedBody([]byte("y"), true)
	if sr := m.GetStreamedResponse(); string(sr.GetBody()) != "y" || !sr.GetEndOfStream() {
		t.Errorf("streamed: %v", m)
	}
}

func TestPairsFromProto(t *testing.T) {
	got := pairsFromProto(&corev3.HeaderMap{Headers: []*corev3.HeaderValue{
		{Key: ":path", RawValue: []byte("/raw")},
		{Key: "X-Value", Value: "v"},
		{Key: "x-both", Value: "ignored", RawValue: []byte("raw")},
	}})
	want := []abi.Pair{{Key: ":path", Value: "/raw"}, {Key: "x-value", Value: "v"}, {Key: "x-both", Value: "raw"}}
	if !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}

func TestPropertyMetadata(t *testing.T) {
	sent := map[string]string{}
	md, skipped := propertyMetadata("ns", map[string][]byte{"note": []byte("hello"), "bin": {0xff}}, sent)
	want := &structpb.Struct{Fields: map[string]*structpb.Value{
		"ns": structpb.NewStructValue(&structpb.Struct{Fields: map[string]*structpb.Value{"note": structpb.NewStringValue("hello")}}),
	}}
	if !proto.Equal(md, want) {
		t.Errorf("first: got %v, want %v", md, want)
	}
	if !slices.Equal(skipped, []string{"bin"}) {
		t.Errorf("skipped %v, want [bin]", skipped)
	}
	if md, _ := propertyMetadata("ns", map[string][]byte{"note": []byte("hello"), "bin": {0xff}}, sent); md != nil {
		t.Errorf("unchanged writes sent again: %v", md)
	}
	md, _ = propertyMetadata("ns", map[string][]byte{"note": []byte("bye"), "bin": {0xff}, "new": []byte("1")}, sent)
	fields := md.GetFields()["ns"].GetStructValue().GetFields()
	if len(fields) != 2 || fields["note"].GetStringValue() != "bye" || fields["new"].GetStringValue() != "1" {
		t.Errorf("changed writes: %v", md)
	}
}
