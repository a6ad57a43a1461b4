package server

import (
	"bytes"
	"context"
	"testing"
	"time"

	filterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"

	"github.com/wasm-callout/wasm-callout/host"
)

// What a proxyless gRPC client (grpc-go, gRFC A93) gets for each change:
// the value in value, binary metadata as raw bytes in raw_value, and none of
// the mutations that would fail its RPC.
func TestGRPCClientMutations(t *testing.T) {
	grpc := mutationPolicy{client: ClientGRPC}
	tests := []struct {
		name    string
		op      headerOp
		key     string
		value   string
		dropped bool
		str     string
		raw     []byte
	}{
		{name: "plain", key: "x-wasm-callout", value: "basic", str: "basic"},
		{name: "binary, base64", key: "x-trace-bin", value: "AAEC", raw: []byte{0, 1, 2}},
		{name: "binary, unpadded base64", key: "x-trace-bin", value: "AAE", raw: []byte{0, 1}},
		{name: "binary, not base64", key: "x-trace-bin", value: "%%%", dropped: true},
		{name: "pseudo-header", key: ":path", value: "/x", dropped: true},
		{name: "host", key: "host", value: "a", dropped: true},
		{name: "grpc-*", key: "grpc-timeout", value: "1S", dropped: true},
		{name: "remove grpc-*", op: opRemove, key: "grpc-status", dropped: true},
		{name: "non-printable value", key: "x-a", value: "a\x01b", dropped: true},
		{name: "x-envoy-* is not an Envoy header here", key: "x-envoy-foo", value: "1", str: "1"},
		{name: "remove", op: opRemove, key: "x-a"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			why := grpc.check(kindHeaders, tt.op, tt.key, tt.value)
			if (why != "") != tt.dropped {
				t.Fatalf("check = %q, want dropped %v", why, tt.dropped)
			}
			if tt.dropped || tt.op == opRemove {
				return
			}
			str, raw := grpc.header(tt.key, tt.value)
			if str != tt.str || !bytes.Equal(raw, tt.raw) {
				t.Errorf("header = %q, %v; want %q, %v", str, raw, tt.str, tt.raw)
			}
		})
	}
	if str, raw := (mutationPolicy{client: ClientEnvoy}).header("x-a", "v"); str != "" || string(raw) != "v" {
		t.Errorf("Envoy gets %q, %q; want raw_value only", str, raw)
	}
}

func TestClientOf(t *testing.T) {
	flow := &extprocv3.ProcessingRequest{FlowControlInit: &extprocv3.ProcessingRequest_FlowControlInit{InitialWindowDownstreamToSidestream: 65536}}
	grpcMode := withConfig(reqHeaders(false), filterv3.ProcessingMode_GRPC, none)
	for _, tc := range []struct {
		m    *extprocv3.ProcessingRequest
		want Client
	}{
		{flow, ClientGRPC},
		{grpcMode, ClientGRPC},
		{withConfig(reqHeaders(false), buffered, none), ClientEnvoy},
		{reqHeaders(false), ClientEnvoy},
	} {
		if got := clientOf(tc.m); got != tc.want {
			t.Errorf("clientOf(%v) = %v, want %v", tc.m, got, tc.want)
		}
	}
	for _, s := range []string{"auto", "envoy", "grpc"} {
		if c, err := ParseClient(s); err != nil || c.String() != s {
			t.Errorf("ParseClient(%q) = %v, %v", s, c, err)
		}
	}
	if _, err := ParseClient("istio"); err == nil {
		t.Error("ParseClient accepted an unknown client")
	}
}

// End to end: plugins/basic's response header reaches a stream that looks
// like grpc-go's in value, and an Envoy stream in raw_value; a gRPC stream
// gets no mode_override even for a plugin with body callbacks.
func TestClientEncodingEndToEnd(t *testing.T) {
	flowInit := func(m *extprocv3.ProcessingRequest) *extprocv3.ProcessingRequest {
		m.FlowControlInit = &extprocv3.ProcessingRequest_FlowControlInit{InitialWindowDownstreamToSidestream: 65536}
		return m
	}
	for _, tc := range []struct {
		name   string
		client Client
		first  func(*extprocv3.ProcessingRequest) *extprocv3.ProcessingRequest
		grpc   bool
	}{
		{"envoy", ClientAuto, func(m *extprocv3.ProcessingRequest) *extprocv3.ProcessingRequest { return m }, false},
		{"grpc-go, detected", ClientAuto, flowInit, true},
		{"grpc, forced", ClientGRPC, func(m *extprocv3.ProcessingRequest) *extprocv3.ProcessingRequest { return m }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, name := range []string{"basic", "edge"} {
				h := start(t, Options{Plugin: plugin(t, name, host.FailClosed, ""), Client: tc.client})
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				answers, err := exchange(ctx, h, []*extprocv3.ProcessingRequest{
					tc.first(withConfig(reqHeaders(true, "x-client", "1"), none, none)), respHeadersMsg()})
				if !isEOF(err) || len(answers) != 2 {
					t.Fatalf("%s: %d answers, %v", name, len(answers), err)
				}
				if mo := answers[0].GetModeOverride(); (mo != nil) == tc.grpc && name == "edge" {
					t.Errorf("%s: mode_override %v for a client that is gRPC: %v", name, mo, tc.grpc)
				}
				if name != "basic" {
					continue
				}
				set := answers[1].GetResponseHeaders().GetResponse().GetHeaderMutation().GetSetHeaders()
				if len(set) != 1 {
					t.Fatalf("set headers %v", set)
				}
				hv := set[0].GetHeader()
				if tc.grpc && (hv.GetValue() != "basic" || len(hv.GetRawValue()) != 0) ||
					!tc.grpc && (hv.GetValue() != "" || string(hv.GetRawValue()) != "basic") {
					t.Errorf("header %v for a gRPC client: %v", hv, tc.grpc)
				}
			}
		})
	}
}

// A local reply to a gRPC client carries what Envoy would give a gRPC
// request: the status mapped from the HTTP status unless the plugin set
// one, and the body as the message.
func TestGRPCClientLocalReply(t *testing.T) {
	grpc := mutationPolicy{client: ClientGRPC}
	for _, tc := range []struct {
		lr      host.LocalResponse
		code    uint32
		details string
	}{
		{host.LocalResponse{Status: 403, Body: []byte("denied by testbed\n"), GRPCStatus: -1}, 7, "denied by testbed"},
		{host.LocalResponse{Status: 429, GRPCStatus: -1, Details: "limited"}, 14, "limited"},
		{host.LocalResponse{Status: 500, GRPCStatus: 5}, 5, ""},
		{host.LocalResponse{Status: 418, GRPCStatus: -1}, 2, ""},
	} {
		ir, _ := immediateResponse(&tc.lr, grpc)
		if ir.GetGrpcStatus().GetStatus() != tc.code || ir.GetDetails() != tc.details {
			t.Errorf("%+v: grpc status %d, details %q; want %d, %q", tc.lr, ir.GetGrpcStatus().GetStatus(), ir.GetDetails(), tc.code, tc.details)
		}
	}
	if ir, _ := immediateResponse(&host.LocalResponse{Status: 403, GRPCStatus: -1, Body: []byte("x")}, mutationPolicy{}); ir.GrpcStatus != nil || ir.Details != "" {
		t.Errorf("Envoy gets a gRPC status or details it did not ask for: %v", ir)
	}
}
