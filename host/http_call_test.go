package host

import (
	"testing"

	"github.com/wasm-callout/wasm-callout/abi"
)

// Until upstreams are configurable, every outbound call targets an unknown
// cluster and must get the status Envoy gives, which every SDK handles.
func TestOutboundCallsWithoutUpstreams(t *testing.T) {
	tests := []struct {
		fn   string
		args []uint64
		want abi.Status
	}{
		{"proxy_http_call", []uint64{argA, 7, argB, 0, argC, 0, argC, 0, 1000, retP}, abi.StatusBadArgument},
		{"proxy_dispatch_http_call", []uint64{argA, 7, argB, 0, argC, 0, argC, 0, 1000, retP}, abi.StatusBadArgument},
		{"proxy_http_call", []uint64{badPtr, 7, argB, 0, argC, 0, argC, 0, 1000, retP}, abi.StatusInvalidMemoryAccess},
		{"proxy_grpc_call", []uint64{argA, 7, argA, 1, argA, 1, argA, 0, argA, 0, 1000, retP}, abi.StatusParseFailure},
		{"proxy_grpc_stream", []uint64{argA, 7, argA, 1, argA, 1, argA, 0, retP}, abi.StatusParseFailure},
		{"proxy_grpc_send", []uint64{5, argA, 1, 0}, abi.StatusNotFound},
		{"proxy_grpc_cancel", []uint64{5}, abi.StatusNotFound},
		{"proxy_grpc_close", []uint64{5}, abi.StatusNotFound},
		{"proxy_call_foreign_function", []uint64{argA, 8, argB, 0, retP, retL}, abi.StatusNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.fn, func(t *testing.T) {
			h := newHostcall(t, tc.fn, Config{})
			h.put(argA, []byte("cluster"))
			if got := h.run(h.stream(), phaseRequestHeaders, tc.args...); got != tc.want {
				t.Fatalf("%v, want %v", got, tc.want)
			}
		})
	}
	h := newHostcall(t, "proxy_get_status", Config{})
	if st := h.run(nil, phaseNone, retX, retP, retL); st != abi.StatusOK || h.u32(retX) != 0 || h.out(retP, retL) != nil {
		t.Errorf("get_status: %v code %d", st, h.u32(retX))
	}
}
