package host

import (
	"reflect"
	"testing"

	"github.com/wasm-callout/wasm-callout/abi"
)

func TestTCPStream(t *testing.T) {
	tr := &tracer{}
	p := loadFile(t, "tcp", Config{Instances: 1, listeners: tr})
	tr.take()

	type frame struct {
		down       bool
		data       string
		eos        bool
		wantAction abi.Action
		wantData   string
		wantClose  bool
		wantReset  bool
	}
	tests := []struct {
		name   string
		frames []frame
	}{
		{"lines are held until complete", []frame{
			{down: true, data: "hel", wantAction: abi.ActionPause},
			{down: true, data: "lo\n", wantAction: abi.ActionContinue, wantData: ">hello\n"},
			{down: false, data: "ok", wantAction: abi.ActionContinue, wantData: "ok<"},
		}},
		{"end of stream flushes a partial line", []frame{
			{down: true, data: "tail", eos: true, wantAction: abi.ActionContinue, wantData: ">tail"},
		}},
		{"deny closes", []frame{{down: true, data: "DENY me", wantAction: abi.ActionPause, wantClose: true}}},
		{"local response resets", []frame{{down: true, data: "RESET", wantAction: abi.ActionPause, wantClose: true, wantReset: true}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := p.NewTCPStream(nil)
			if err != nil {
				t.Fatal(err)
			}
			if r := s.NewConnection(); r.Action != abi.ActionContinue {
				t.Fatalf("new connection: %+v", r)
			}
			for i, f := range tc.frames {
				var r Result
				if f.down {
					r = s.DownstreamData([]byte(f.data), f.eos)
				} else {
					r = s.UpstreamData([]byte(f.data), f.eos)
				}
				if r.Action != f.wantAction || string(r.Body) != f.wantData || r.Close != f.wantClose || r.Reset != f.wantReset || r.Failure != nil {
					t.Fatalf("frame %d: %+v (body %q)", i, r, r.Body)
				}
			}
			s.DownstreamClose(abi.PeerRemote)
			s.UpstreamClose(abi.PeerLocal)
			s.Close()
			s.Close()
		})
	}
	got := tr.take()
	tail := got[len(got)-6:]
	if want := []string{
		"→proxy_on_downstream_connection_close", "→proxy_on_upstream_connection_close",
		"→proxy_on_done", "→proxy_on_log", "→proxy_on_delete", // Envoy's TCP order
	}; !reflect.DeepEqual(tail[1:], want) {
		t.Errorf("end of trace = %q", tail)
	}
	in := p.pool.slots[0].Load()
	if d, _ := in.mem.ReadUint32Le(300); d != uint32(abi.PeerRemote) {
		t.Errorf("downstream close peer = %d", d)
	}
	if u, _ := in.mem.ReadUint32Le(304); u != uint32(abi.PeerLocal) {
		t.Errorf("upstream close peer = %d", u)
	}
}

func TestTCPHostcalls(t *testing.T) {
	cont := newHostcall(t, "proxy_continue_stream", Config{})
	s, _ := cont.p.NewTCPStream(nil)
	defer s.Close()
	for _, tc := range []struct {
		dir  uint64
		want abi.Status
	}{{2, abi.StatusOK}, {3, abi.StatusUnimplemented}, {0, abi.StatusBadArgument}, {1, abi.StatusBadArgument}} {
		if got := cont.run(s, phaseDownstreamData, tc.dir); got != tc.want {
			t.Errorf("continue_stream(%d) on TCP: %v, want %v", tc.dir, got, tc.want)
		}
	}
	get := newHostcall(t, "proxy_get_buffer_bytes", Config{})
	ts, _ := get.p.NewTCPStream(nil)
	defer ts.Close()
	ts.data[1] = body{buf: []byte("up"), active: true}
	if st := get.run(ts, phaseUpstreamData, 3, 0, 10, retP, retL); st != abi.StatusOK || string(get.out(retP, retL)) != "up" {
		t.Errorf("upstream data: %v %q", st, get.out(retP, retL))
	}
	if st := get.run(ts, phaseUpstreamData, 0, 0, 10, retP, retL); st != abi.StatusNotFound {
		t.Errorf("HTTP body on a TCP stream: %v", st)
	}
	hs := get.stream()
	if st := get.run(hs, phaseRequestBody, 2, 0, 10, retP, retL); st != abi.StatusNotFound {
		t.Errorf("TCP data on an HTTP stream: %v", st)
	}
}

// A TCP stream whose plugin traps is closed (fail-closed) or passed through
// (fail-open).
func TestTCPFailurePolicy(t *testing.T) {
	for _, policy := range []FailurePolicy{FailClosed, FailOpen} {
		p := loadFile(t, "faults", Config{Instances: 1, FailurePolicy: policy})
		s, _ := p.NewTCPStream(nil)
		in := s.in
		in.mu.Lock()
		in.fail(errTestFault)
		in.mu.Unlock()
		r := s.DownstreamData([]byte("x"), false)
		switch policy {
		case FailClosed:
			if !r.Close || r.Failure == nil {
				t.Errorf("fail-closed: %+v", r)
			}
		case FailOpen:
			if r.Action != abi.ActionContinue || string(r.Body) != "x" {
				t.Errorf("fail-open: %+v", r)
			}
		}
		s.Close()
	}
}
