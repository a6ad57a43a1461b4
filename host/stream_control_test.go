package host

import (
	"testing"

	"github.com/wasm-callout/wasm-callout/abi"
)

func TestSendLocalResponse(t *testing.T) {
	h := newHostcall(t, "proxy_send_local_response", Config{})
	s := h.stream()
	d, dl := h.put(argA, []byte("denied by plugin"))
	b, bl := h.put(argB, []byte("nope"))
	hd, hl := h.put(argC, abi.AppendPairs(nil, kv("X-Reason", "policy")))
	if st := h.run(s, phaseRequestHeaders, 403, d, dl, b, bl, hd, hl, 0xffffffff); st != abi.StatusOK {
		t.Fatal(st)
	}
	lr := s.acts.local
	if lr == nil || lr.Status != 403 || lr.Details != "denied_by_plugin" || string(lr.Body) != "nope" ||
		lr.GRPCStatus != -1 || len(lr.Headers) != 1 || lr.Headers[0].Key != "x-reason" {
		t.Fatalf("local response = %+v", lr)
	}
	s.acts = actions{}
	if st := h.run(s, phaseRequestHeaders, 200, d, dl, b, bl, hd, hl, 7); st != abi.StatusOK || s.acts.local.GRPCStatus != 7 {
		t.Errorf("grpc status: %v %+v", st, s.acts.local)
	}
	for _, tc := range []struct {
		name string
		s    *HTTPStream
		args []uint64
		want abi.Status
	}{
		{"root context", nil, []uint64{403, d, dl, b, bl, hd, hl, 0}, abi.StatusBadArgument},
		{"malformed headers", s, []uint64{403, d, dl, b, bl, hd, 3, 0}, abi.StatusBadArgument},
		{"bad body pointer", s, []uint64{403, d, dl, badPtr, 4, hd, hl, 0}, abi.StatusInvalidMemoryAccess},
	} {
		if got := h.run(tc.s, phaseRequestHeaders, tc.args...); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestContinueAndCloseStream(t *testing.T) {
	cont := newHostcall(t, "proxy_continue_stream", Config{})
	cls := newHostcall(t, "proxy_close_stream", Config{})
	req := newHostcall(t, "proxy_continue_request", Config{})
	resp := newHostcall(t, "proxy_continue_response", Config{})
	crc := newHostcall(t, "proxy_clear_route_cache", Config{})
	for _, tc := range []struct {
		name  string
		h     *hostcall
		root  bool
		args  []uint64
		want  abi.Status
		check func(a actions) bool
	}{
		{"continue request", cont, false, []uint64{0}, abi.StatusOK, func(a actions) bool { return a.continued[0] }},
		{"continue response", cont, false, []uint64{1}, abi.StatusOK, func(a actions) bool { return a.continued[1] }},
		{"continue upstream is unimplemented in Envoy", cont, false, []uint64{3}, abi.StatusUnimplemented, nil},
		{"continue downstream on an HTTP stream", cont, false, []uint64{2}, abi.StatusBadArgument, nil},
		{"continue unknown type", cont, false, []uint64{17}, abi.StatusBadArgument, nil},
		{"continue from the root context", cont, true, []uint64{0}, abi.StatusBadArgument, nil},
		{"close", cls, false, []uint64{0}, abi.StatusOK, func(a actions) bool { return a.close }},
		{"close unknown type", cls, false, []uint64{9}, abi.StatusBadArgument, nil},
		{"0.1.0 continue_request", req, false, nil, abi.StatusOK, func(a actions) bool { return a.continued[0] }},
		{"0.1.0 continue_response", resp, false, nil, abi.StatusOK, func(a actions) bool { return a.continued[1] }},
		{"clear route cache", crc, false, nil, abi.StatusOK, func(a actions) bool { return a.clearRouteCache }},
		{"clear route cache from the root", crc, true, nil, abi.StatusBadArgument, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var s *HTTPStream
			if !tc.root {
				s = tc.h.stream()
			}
			if got := tc.h.run(s, phaseRequestHeaders, tc.args...); got != tc.want {
				t.Fatalf("status %v, want %v", got, tc.want)
			}
			if tc.check != nil && !tc.check(s.acts) {
				t.Fatalf("actions = %+v", s.acts)
			}
		})
	}
}

func TestSetEffectiveContextAndDone(t *testing.T) {
	h := newHostcall(t, "proxy_set_effective_context", Config{})
	s := h.stream()
	if st := h.run(nil, phaseNone, uint64(s.id)); st != abi.StatusOK {
		t.Errorf("live stream: %v", st)
	}
	if st := h.run(nil, phaseNone, uint64(h.in.rootID)); st != abi.StatusOK {
		t.Errorf("root: %v", st)
	}
	if st := h.run(nil, phaseNone, 777); st != abi.StatusBadArgument {
		t.Errorf("unknown id: %v", st)
	}
	done := newHostcall(t, "proxy_done", Config{})
	if st := done.run(nil, phaseNone); st != abi.StatusNotFound {
		t.Errorf("done without a pending shutdown: %v", st)
	}
	done.in.rootDonePending = true
	if st := done.run(nil, phaseNone); st != abi.StatusOK || !done.in.rootDone {
		t.Errorf("done: %v", st)
	}
}

func TestGetConfiguration(t *testing.T) {
	h := newHostcall(t, "proxy_get_configuration", Config{VMConfig: []byte("vm"), PluginConfig: []byte("plug")})
	if st := h.run(nil, phaseConfigure, retP, retL); st != abi.StatusOK || string(h.out(retP, retL)) != "plug" {
		t.Errorf("in on_configure: %v %q", st, h.out(retP, retL))
	}
	if st := h.run(nil, phaseVMStart, retP, retL); st != abi.StatusOK || string(h.out(retP, retL)) != "vm" {
		t.Errorf("in on_vm_start: %v %q", st, h.out(retP, retL))
	}
}
