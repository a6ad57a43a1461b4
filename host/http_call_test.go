package host

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wasm-callout/wasm-callout/abi"
)

// httpUpstream is a real HTTP server on loopback. /slow waits for the
// request's context, /status/N answers N, anything else 200 with a body.
func httpUpstream(t *testing.T, hits *atomic.Int64) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hits != nil {
			hits.Add(1)
		}
		switch {
		case r.URL.Path == "/slow":
			<-r.Context().Done()
		case strings.HasPrefix(r.URL.Path, "/status/"):
			var code int
			fmt.Sscanf(r.URL.Path, "/status/%d", &code)
			w.WriteHeader(code)
		default:
			w.Header().Set("X-Upstream", r.Host)
			fmt.Fprintf(w, "hello %s", r.URL.Path)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

func upstreams(t *testing.T, list ...Upstream) *Upstreams {
	t.Helper()
	us, err := NewUpstreams(list)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { us.Close() })
	return us
}

// deadPort is a loopback address nobody listens on.
func deadPort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// callThrough runs one testbed http-call stream and returns the response
// headers the plugin added once the call came back.
func callThrough(t *testing.T, p *Plugin, headers ...string) (*HeaderMap, Result) {
	t.Helper()
	s, err := p.NewHTTPStream(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r := s.RequestHeaders(kv(append([]string{":path", "/", ":method", "GET", "x-testbed", "http-call"}, headers...)...), true)
	if r.Action == abi.ActionPause {
		select {
		case <-s.Notify():
		case <-time.After(20 * time.Second):
			t.Fatal("the call never resumed the stream")
		}
		ev := s.TakeEvents()
		if len(ev) != 1 || ev[0].Kind != EventContinue {
			t.Fatalf("events = %+v", ev)
		}
	}
	s.ResponseHeaders(kv(":status", "200"), true)
	return s.Headers(abi.MapHTTPResponseHeaders), r
}

func TestHTTPCall(t *testing.T) {
	up := httpUpstream(t, nil)
	us := upstreams(t,
		Upstream{Name: "web", URL: up.URL},
		Upstream{Name: "prefixed", URL: up.URL + "/base"},
		Upstream{Name: "down", URL: "http://" + deadPort(t), ConnectTimeout: time.Second},
	)
	p := loadFile(t, "plugin:testbed", Config{Instances: 2, Upstreams: us})
	tests := []struct {
		name    string
		headers []string
		status  string
		bodyLen string
	}{
		{"allow", []string{"x-http-call-cluster", "web", "x-http-call-path", "/auth"}, "200", "11"},
		{"upstream status", []string{"x-http-call-cluster", "web", "x-http-call-path", "/status/403"}, "403", "0"},
		{"base path", []string{"x-http-call-cluster", "prefixed", "x-http-call-path", "/x?q=1"}, "200", "13"},
		{"upstream down", []string{"x-http-call-cluster", "down"}, "failed", "0"},
		{"upstream slow", []string{"x-http-call-cluster", "web", "x-http-call-path", "/slow", "x-http-call-timeout", "50"}, "failed", "0"},
		{"unknown cluster", []string{"x-http-call-cluster", "nowhere"}, "dispatch-error", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, _ := callThrough(t, p, tc.headers...)
			if got, _ := h.Get("x-http-call-status"); got != tc.status {
				t.Errorf("status = %q, want %q", got, tc.status)
			}
			if got, _ := h.Get("x-http-call-body-len"); got != tc.bodyLen {
				t.Errorf("body length = %q, want %q", got, tc.bodyLen)
			}
		})
	}
	// Each call is counted by cluster, kind and outcome, with its duration.
	want := map[string][NumCallOutcomes]int64{
		"web/http":      {CallOK: 2, CallTimeout: 1},
		"prefixed/http": {CallOK: 1},
		"down/http":     {CallError: 1},
	}
	for _, s := range us.Stats() {
		w := want[s.Cluster+"/"+s.Kind]
		var n int64
		for _, c := range w {
			n += c
		}
		if s.Calls != w || s.Duration.Count != uint64(n) {
			t.Errorf("%s/%s: calls %v in %d durations, want %v", s.Cluster, s.Kind, s.Calls, s.Duration.Count, w)
		}
	}
	if n := us.UnknownClusterCalls(); n != 1 {
		t.Errorf("unknown cluster calls %d, want 1", n)
	}
}

// A stream that goes away cancels its call: the upstream sees the request
// end and no callback runs for it.
func TestHTTPCallCancelledWithStream(t *testing.T) {
	var hits atomic.Int64
	up := httpUpstream(t, &hits)
	p := loadFile(t, "plugin:testbed", Config{Instances: 1, Upstreams: upstreams(t, Upstream{Name: "web", URL: up.URL})})
	s, _ := p.NewHTTPStream(nil)
	r := s.RequestHeaders(kv(":path", "/", ":method", "GET", "x-testbed", "http-call", "x-http-call-cluster", "web", "x-http-call-path", "/slow"), true)
	if r.Action != abi.ActionPause {
		t.Fatalf("%+v", r)
	}
	waitFor(t, "the upstream to see the call", func() bool { return hits.Load() == 1 })
	s.Close()
	in := s.in
	waitFor(t, "the call to be forgotten", func() bool {
		in.mu.Lock()
		defer in.mu.Unlock()
		return len(in.calls) == 0
	})
	select {
	case <-s.Notify():
		t.Fatalf("a cancelled call resumed its stream: %+v", s.TakeEvents())
	case <-time.After(50 * time.Millisecond):
	}
}

// 200 concurrent streams each make a call; every one resumes with its own
// answer, and calls into an instance never overlap (run with -race).
func TestHTTPCallConcurrent(t *testing.T) {
	up := httpUpstream(t, nil)
	p := loadFile(t, "plugin:testbed", Config{Instances: 2, Upstreams: upstreams(t, Upstream{Name: "web", URL: up.URL})})
	var wg sync.WaitGroup
	var failed atomic.Int64
	for i := 0; i < 200; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := p.NewHTTPStream(nil)
			if err != nil {
				failed.Add(1)
				return
			}
			defer s.Close()
			path := fmt.Sprintf("/%d", i)
			if r := s.RequestHeaders(kv(":path", "/", ":method", "GET", "x-testbed", "http-call", "x-http-call-cluster", "web", "x-http-call-path", path), true); r.Action != abi.ActionPause {
				failed.Add(1)
				return
			}
			select {
			case <-s.Notify():
			case <-time.After(30 * time.Second):
				failed.Add(1)
				return
			}
			s.ResponseHeaders(kv(":status", "200"), true)
			if got, _ := s.Headers(abi.MapHTTPResponseHeaders).Get("x-http-call-body-len"); got != fmt.Sprint(len("hello "+path)) {
				failed.Add(1)
			}
		}()
	}
	wg.Wait()
	if n := failed.Load(); n != 0 {
		t.Fatalf("%d of 200 streams failed", n)
	}
}

func TestUpstreamConfig(t *testing.T) {
	for _, tc := range []struct {
		in   []Upstream
		want string
	}{
		{[]Upstream{{Name: "a", URL: "ftp://x"}}, "scheme"},
		{[]Upstream{{Name: "a", URL: "http://"}}, "no host"},
		{[]Upstream{{Name: "a", URL: "http://x"}, {Name: "a", URL: "http://y"}}, "twice"},
		{[]Upstream{{Name: "a", URL: "https://x", CAFile: "/nonexistent"}}, "no such file"},
	} {
		if _, err := NewUpstreams(tc.in); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("NewUpstreams(%+v) = %v, want %q", tc.in, err, tc.want)
		}
	}
	for _, tc := range []struct {
		in   string
		want Upstream
		ok   bool
	}{
		{"auth=http://127.0.0.1:9000", Upstream{Name: "auth", URL: "http://127.0.0.1:9000"}, true},
		{"idp=https://idp:8443/v1,ca=/etc/ca.pem,connect-timeout=2s", Upstream{Name: "idp", URL: "https://idp:8443/v1", CAFile: "/etc/ca.pem", ConnectTimeout: 2 * time.Second}, true},
		{"noequals", Upstream{}, false},
		{"=http://x", Upstream{}, false},
		{"a=http://x,connect-timeout=soon", Upstream{}, false},
		{"a=http://x,colour=blue", Upstream{}, false},
	} {
		u, err := ParseUpstream(tc.in)
		if (err == nil) != tc.ok || u != tc.want {
			t.Errorf("ParseUpstream(%q) = %+v, %v", tc.in, u, err)
		}
	}
}

// Without upstreams every call names an unknown cluster and gets the
// status Envoy gives, which every SDK handles.
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

// The http call's pseudo-headers are required, as in Envoy.
func TestHTTPCallNeedsPseudoHeaders(t *testing.T) {
	up := httpUpstream(t, nil)
	h := newHostcall(t, "proxy_http_call", Config{Upstreams: upstreams(t, Upstream{Name: "web", URL: up.URL})})
	s := h.stream()
	c, cl := h.put(argA, []byte("web"))
	for _, tc := range []struct {
		headers []abi.Pair
		want    abi.Status
	}{
		{kv(":method", "GET", ":path", "/", ":authority", "web"), abi.StatusOK},
		{kv(":method", "GET", ":path", "/", ":authority", ""), abi.StatusOK}, // present, empty: the Go SDK's multiple_dispatches
		{kv(":method", "GET", ":path", "/"), abi.StatusBadArgument},
		{kv(":path", "/", ":authority", "web"), abi.StatusBadArgument},
		{kv(":method", "GET", ":authority", "web"), abi.StatusBadArgument},
	} {
		hp, hl := h.put(argB, abi.AppendPairs(nil, tc.headers))
		if got := h.run(s, phaseRequestHeaders, c, cl, hp, hl, argC, 0, argC, 0, 1000, retP); got != tc.want {
			t.Errorf("%+v: %v, want %v", tc.headers, got, tc.want)
		}
		if tc.want == abi.StatusOK && h.u32(retP)&3 != 0 {
			t.Errorf("http call token %d does not have Envoy's low bits 00", h.u32(retP))
		}
	}
}

// A call with an empty :authority reaches the upstream, with the
// upstream's own host, as Envoy sends it.
func TestHTTPCallEmptyAuthority(t *testing.T) {
	var got atomic.Value
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.Store(r.Host)
		w.Write([]byte("ok"))
	}))
	t.Cleanup(up.Close)
	us := upstreams(t, Upstream{Name: "web", URL: up.URL})
	u, ok := us.byName["web"]
	if !ok {
		t.Fatal("no upstream web")
	}
	req, err := u.httpRequest(kv(":method", "GET", ":path", "/x", ":authority", ""), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if want := strings.TrimPrefix(up.URL, "http://"); got.Load() != want {
		t.Errorf("upstream saw Host %q, want the upstream's own %q", got.Load(), want)
	}
}

// Calls issued from proxy_on_tick (the SDK's dispatch_call_on_tick
// pattern) and from a shared-queue consumer, while streams enqueue work on
// both instances: every call is answered, and no instance is ever entered
// from two goroutines at once (run with -race).
func TestCallsFromTimersAndQueues(t *testing.T) {
	var hits atomic.Int64
	up := httpUpstream(t, &hits)
	p := loadFile(t, "plugin:tick-call", Config{Instances: 2, VMID: "tick-call",
		PluginConfig: []byte("cluster: web\ntick_ms: 5"), Upstreams: upstreams(t, Upstream{Name: "web", URL: up.URL})})
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 25; i++ {
				s, err := p.NewHTTPStream(nil)
				if err != nil {
					t.Error(err)
					return
				}
				s.RequestHeaders(kv(":path", fmt.Sprintf("/item/%d/%d", g, i), ":method", "GET"), true)
				s.Close()
			}
		}()
	}
	wg.Wait()
	counter := func(name string) uint64 {
		for _, m := range p.Metrics().Snapshot() {
			if m.Name == name {
				return m.Counter
			}
		}
		return 0
	}
	// 100 queue items plus at least a few ticks' calls.
	waitFor(t, "queued and ticked calls to be answered", func() bool { return counter("tick_call_responses_total") >= 110 })
	if f, d := counter("tick_call_failures_total"), counter("tick_call_dispatch_errors_total"); f != 0 || d != 0 {
		t.Errorf("failures %d, dispatch errors %d", f, d)
	}
}
