package server

import (
	"context"
	"testing"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"

	"github.com/wasm-callout/wasm-callout/host"
	"github.com/wasm-callout/wasm-callout/server/envoytest"
)

// Every stream ends with exactly one outcome, and each message it was
// answered for is timed under its phase.
func TestStreamOutcomes(t *testing.T) {
	get := envoytest.H(":method", "GET", ":path", "/", ":authority", "a", ":scheme", "http")
	tests := []struct {
		name    string
		limits  Limits
		play    func(t *testing.T, h *harness)
		outcome Outcome
		timed   []Phase // phases with one timed answer
	}{
		{name: "ok", outcome: OutcomeOK, timed: []Phase{PhaseRequestHeaders, PhaseResponseHeaders}, play: func(t *testing.T, h *harness) {
			h.do(t, envoytest.Config{}, &envoytest.Request{Headers: get})
		}},
		{name: "local reply", outcome: OutcomeImmediateResponse, timed: []Phase{PhaseRequestHeaders}, play: func(t *testing.T, h *harness) {
			h.do(t, envoytest.Config{}, &envoytest.Request{Headers: append(get, envoytest.H("x-testbed", "local-reply")...)})
		}},
		{name: "plugin failure", outcome: OutcomePluginFailure, timed: []Phase{PhaseRequestHeaders}, play: func(t *testing.T, h *harness) {
			h.do(t, envoytest.Config{}, &envoytest.Request{Headers: append(get, envoytest.H("x-testbed", "trap")...)})
		}},
		{name: "protocol error", outcome: OutcomeProtocolError, play: func(t *testing.T, h *harness) {
			s, err := extprocv3.NewExternalProcessorClient(h.conn).Process(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			s.Send(&extprocv3.ProcessingRequest{}) // no request at all
			if _, err := s.Recv(); err == nil {
				t.Fatal("an empty message was answered")
			}
		}},
		{name: "limit", limits: Limits{MaxStreams: 1}, outcome: OutcomeLimit, timed: []Phase{PhaseRequestHeaders}, play: func(t *testing.T, h *harness) {
			c := extprocv3.NewExternalProcessorClient(h.conn)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			open, err := c.Process(ctx)
			if err != nil {
				t.Fatal(err)
			}
			open.Send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{Headers: hdrs(":path", "/")}}})
			if _, err := open.Recv(); err != nil {
				t.Fatal(err)
			}
			refused, err := c.Process(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if _, err := refused.Recv(); err == nil {
				t.Fatal("a stream past MaxStreams was served")
			}
			waitFor(t, func() bool { return h.srv.Stats().Services[ServiceExtProc].Finished[OutcomeLimit] == 1 })
			cancel() // the open stream ends normally, as a cancelled one does
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := start(t, Options{Plugin: plugin(t, "testbed", host.FailClosed, ""), Limits: tc.limits})
			tc.play(t, h)
			waitFor(t, func() bool { return h.srv.Stats().StreamsActive == 0 })
			st := h.srv.Stats().Services[ServiceExtProc]
			var want [NumOutcomes]int64
			want[tc.outcome] = 1
			if tc.name == "limit" {
				want[OutcomeOK] = 1
			}
			if st.Finished != want {
				t.Errorf("finished %v, want %v (one %s)", st.Finished, want, tc.outcome)
			}
			lat := h.srv.Latency()
			for p := range NumPhases {
				want := uint64(0)
				for _, tp := range tc.timed {
					if tp == p {
						want = 1
					}
				}
				if lat[p].Count != want {
					t.Errorf("%s answers timed: %d, want %d", p, lat[p].Count, want)
				}
			}
			if n := h.srv.Stats().Services[ServiceNetworkExtProc]; n.StreamsStarted != 0 {
				t.Errorf("network_ext_proc streams: %+v", n)
			}
		})
	}
}
