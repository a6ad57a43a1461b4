package host

import (
	"reflect"
	"testing"

	"github.com/wasm-callout/wasm-callout/abi"
)

// The callbacks and host calls of a whole HTTP stream, in Envoy's order.
func TestHTTPLifecycleTrace(t *testing.T) {
	tr := &tracer{}
	p := loadFile(t, "lifecycle", Config{Instances: 1, listeners: tr})
	if got := tr.take(); !reflect.DeepEqual(got, []string{
		"→proxy_on_context_create", "→proxy_on_vm_start", "→proxy_on_configure",
		"proxy_get_buffer_bytes", "proxy_log",
	}) {
		t.Errorf("start-up trace = %q", got)
	}
	tests := []struct {
		name  string
		drive func(s *HTTPStream)
		want  []string
	}{
		{"headers only", func(s *HTTPStream) {
			s.RequestHeaders(kv(":path", "/"), true)
			s.ResponseHeaders(kv(":status", "200"), true)
		}, []string{"→proxy_on_request_headers", "→proxy_on_response_headers"}},
		{"bodies and trailers", func(s *HTTPStream) {
			s.RequestHeaders(kv(":path", "/"), false)
			s.RequestBody([]byte("a"), false)
			s.RequestTrailers(kv("t", "1"))
			s.ResponseHeaders(kv(":status", "200"), false)
			s.ResponseBody([]byte("b"), true)
		}, []string{"→proxy_on_request_headers", "→proxy_on_request_body", "→proxy_on_request_trailers",
			"→proxy_on_response_headers", "→proxy_on_response_body"}},
		{"reset before any header", func(s *HTTPStream) {}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := p.NewHTTPStream(nil)
			if err != nil {
				t.Fatal(err)
			}
			tc.drive(s)
			s.Close()
			s.Close() // idempotent: the end runs exactly once
			want := append([]string{"→proxy_on_context_create"}, tc.want...)
			want = append(want, "→proxy_on_log", "→proxy_on_done", "→proxy_on_delete")
			if got := tr.take(); !reflect.DeepEqual(got, want) {
				t.Errorf("trace = %q\nwant    %q", got, want)
			}
		})
	}
	p.Close(t.Context())
	if got := tr.take(); !reflect.DeepEqual(got, []string{"→proxy_on_done", "→proxy_on_delete"}) {
		t.Errorf("shutdown trace = %q", got)
	}
}

// Context ids are unique per instance and never reused while live.
func TestContextIDs(t *testing.T) {
	p := loadFile(t, "lifecycle", Config{Instances: 1})
	seen := map[uint32]bool{p.pool.slots[0].Load().rootID: true}
	var open []*HTTPStream
	for i := 0; i < 50; i++ {
		s, err := p.NewHTTPStream(nil)
		if err != nil {
			t.Fatal(err)
		}
		if seen[s.ID()] || s.ID() == 0 {
			t.Fatalf("id %d reused while live", s.ID())
		}
		seen[s.ID()] = true
		open = append(open, s)
		if i%3 == 0 {
			s.Close()
		}
	}
	for _, s := range open {
		s.Close()
	}
	// Wrap-around skips ids still in use.
	in := p.pool.slots[0].Load()
	live, _ := p.NewHTTPStream(nil)
	defer live.Close()
	in.mu.Lock()
	in.nextID = ^uint32(0) - 1
	in.contexts[^uint32(0)] = &pluginContext{id: ^uint32(0)}
	in.mu.Unlock()
	s, _ := p.NewHTTPStream(nil)
	defer s.Close()
	if s.ID() == 0 || s.ID() == ^uint32(0) || s.ID() == live.ID() || s.ID() == in.rootID {
		t.Errorf("after wrap-around got id %d", s.ID())
	}
	in.mu.Lock()
	delete(in.contexts, ^uint32(0))
	in.mu.Unlock()
}

// A Pause on body chunks buffers them, the next call sees the total, and a
// Continue releases everything, as Envoy's StopIterationAndBuffer does.
func TestBodyBuffering(t *testing.T) {
	p := loadFile(t, "plugin:testbed", Config{Instances: 1})
	s, _ := p.NewHTTPStream(nil)
	defer s.Close()
	if r := s.RequestHeaders(kv(":path", "/", "x-testbed", "buffer-body"), false); r.Action != abi.ActionContinue {
		t.Fatalf("headers: %+v", r)
	}
	chunk := []byte("hello ")
	if r := s.RequestBody(chunk, false); r.Action != abi.ActionPause || r.Body != nil {
		t.Fatalf("chunk 1: %+v", r)
	}
	if r := s.RequestBody([]byte("world"), true); r.Action != abi.ActionContinue || string(r.Body) != "HELLO WORLD" || !r.BodyModified {
		t.Fatalf("chunk 2: action %v body %q modified %v", r.Action, r.Body, r.BodyModified)
	}
	if string(chunk) != "hello " {
		t.Errorf("the caller's chunk was modified: %q", chunk)
	}
}

// Stream actions inside a callback are deferred until it returns; a local
// response forces a stop whatever the callback returned.
func TestDeferredActions(t *testing.T) {
	p := loadFile(t, "plugin:testbed", Config{Instances: 1})
	tests := []struct {
		actions string
		check   func(t *testing.T, r Result)
	}{
		{"local-reply", func(t *testing.T, r Result) {
			if r.Action != abi.ActionPause || r.LocalResponse == nil || r.LocalResponse.Status != 403 {
				t.Errorf("%+v", r)
			}
		}},
		{"echo-headers", func(t *testing.T, r Result) {
			if r.Action != abi.ActionContinue || r.LocalResponse != nil {
				t.Errorf("%+v", r)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.actions, func(t *testing.T) {
			s, _ := p.NewHTTPStream(nil)
			defer s.Close()
			tc.check(t, s.RequestHeaders(kv(":path", "/", ":method", "GET", "x-testbed", tc.actions), true))
		})
	}
}
