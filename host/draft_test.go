package host

import (
	"testing"

	"github.com/wasm-callout/wasm-callout/abi"
)

func TestDraftNames(t *testing.T) {
	t.Run("argument-less resumes", func(t *testing.T) {
		for name, dir := range map[string]abi.StreamType{"proxy_resume_http_request": 0, "proxy_resume_http_response": 1} {
			h := newHostcall(t, name, Config{})
			s := h.stream()
			if st := h.run(s, phaseRequestHeaders); st != abi.StatusOK || !s.acts.continued[dir] {
				t.Errorf("%s: %v %+v", name, st, s.acts)
			}
		}
		h := newHostcall(t, "proxy_resume_upstream", Config{})
		if st := h.run(h.stream(), phaseRequestHeaders); st != abi.StatusUnimplemented {
			t.Errorf("resume upstream: %v, as Envoy answers continue_stream(upstream)", st)
		}
	})
	t.Run("map values", func(t *testing.T) {
		h := newHostcall(t, "proxy_get_map_values", Config{})
		s := h.stream()
		s.maps[0] = newHeaderMap(kv("a", "1", "b", "2"))
		if st := h.run(s, phaseRequestHeaders, 0, 0, 0, retP, retL); st != abi.StatusOK {
			t.Fatal(st)
		}
		if pairs, _ := abi.DecodePairs(h.out(retP, retL)); len(pairs) != 2 {
			t.Errorf("no key: %+v", pairs)
		}
		k, kl := h.put(argA, []byte("b"))
		if st := h.run(s, phaseRequestHeaders, 0, k, kl, retP, retL); st != abi.StatusOK || string(h.out(retP, retL)) != "2" {
			t.Errorf("one key: %v %q", st, h.out(retP, retL))
		}
	})
	t.Run("stream message without end of stream", func(t *testing.T) {
		h := newHostcall(t, "proxy_send_grpc_stream_message", Config{})
		if st := h.run(nil, phaseNone, 6, argA, 1); st != abi.StatusNotFound {
			t.Errorf("unknown token: %v", st)
		}
	})
	t.Run("draft-only features", func(t *testing.T) {
		h := newHostcall(t, "proxy_create_timer", Config{})
		if st := h.run(nil, phaseNone, 10, 0, retP); st != abi.StatusUnimplemented {
			t.Errorf("create_timer: %v", st)
		}
	})
}
