package host

import (
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/wasm-callout/wasm-callout/abi"
)

// plugins/basic, built with stock Go by `make plugins`, through its whole
// lifecycle.
func TestBasicPlugin(t *testing.T) {
	tests := []struct {
		name   string
		config string
		want   []HeaderChange
	}{
		{"default header", "", []HeaderChange{{"x-wasm-callout", []string{"basic"}}}},
		{"configured headers", "# two\nx-a: 1\n\nX-B: two words\n", []HeaderChange{{"x-a", []string{"1"}}, {"x-b", []string{"two words"}}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := NewMetrics()
			p := loadFile(t, "plugin:basic", Config{Instances: 1, PluginConfig: []byte(tc.config), Metrics: m})
			for i := 0; i < 3; i++ {
				s, err := p.NewHTTPStream(nil)
				if err != nil {
					t.Fatal(err)
				}
				if r := s.RequestHeaders(kv(":path", "/", ":method", "GET"), true); r.Action != abi.ActionContinue || r.Failure != nil {
					t.Fatalf("request headers: %+v", r)
				}
				if ch := s.Headers(abi.MapHTTPRequestHeaders).Changes(); ch != nil {
					t.Errorf("request changed: %+v", ch)
				}
				if r := s.ResponseHeaders(kv(":status", "200", "x-a", "0"), false); r.Action != abi.ActionContinue {
					t.Fatalf("response headers: %+v", r)
				}
				got := s.Headers(abi.MapHTTPResponseHeaders).Changes()
				if tc.config != "" {
					// x-a was added next to the upstream's own x-a.
					tc.want[0].Values = []string{"0", "1"}
				}
				if !reflect.DeepEqual(got, tc.want) {
					t.Errorf("response changes = %+v, want %+v", got, tc.want)
				}
				s.Close()
			}
			if snap := m.Snapshot(); len(snap) != 1 || snap[0].Name != "basic_requests_total" || snap[0].Counter != 3 {
				t.Errorf("metrics = %+v", snap)
			}
		})
	}
	_, err := Load(t.Context(), readPlugin(t, "basic"), Config{PluginConfig: []byte("no colon here"), Logger: quietLogger()})
	if err == nil || !strings.Contains(err.Error(), "proxy_on_configure returned false") {
		t.Errorf("bad configuration: %v", err)
	}
}

// testbed actions through the real SDK: header mutations, bodies, local
// replies, properties, shared data across instances, and queues.
func TestTestbedPlugin(t *testing.T) {
	shared := NewSharedState()
	p := loadFile(t, "plugin:testbed", Config{Instances: 2, Name: "tb", RootID: "r", VMID: "v", Shared: shared})
	tests := []struct {
		name  string
		req   []abi.Pair
		props props
		check func(t *testing.T, s *HTTPStream, r Result)
	}{
		{"set, add and delete request headers",
			kv(":path", "/", ":method", "GET", "x-testbed", "set-req,add-req,del-req", "x-set", "a=1;b=2", "x-add", "c=3", "x-del", "x-gone", "x-gone", "bye", "c", "0"),
			nil, func(t *testing.T, s *HTTPStream, r Result) {
				want := []HeaderChange{{"a", []string{"1"}}, {"b", []string{"2"}}, {"c", []string{"0", "3"}}, {"x-gone", nil}}
				if got := s.Headers(abi.MapHTTPRequestHeaders).Changes(); !reflect.DeepEqual(got, want) {
					t.Errorf("changes = %+v", got)
				}
			}},
		{"local reply", kv(":path", "/", ":method", "GET", "x-testbed", "local-reply"), nil,
			func(t *testing.T, s *HTTPStream, r Result) {
				lr := r.LocalResponse
				if lr == nil || lr.Status != 403 || string(lr.Body) != "denied by testbed\n" || lr.GRPCStatus != -1 ||
					!reflect.DeepEqual(lr.Headers, kv("x-testbed-reply", "local")) {
					t.Errorf("local response = %+v", lr)
				}
			}},
		{"properties", kv(":path", "/p?q", ":method", "PUT", "x-testbed", "props"),
			props{"source.address": []byte("1.2.3.4:5"), "xds.cluster_name": []byte("up")},
			func(t *testing.T, s *HTTPStream, r Result) {
				s.ResponseHeaders(kv(":status", "200"), true)
				h := s.Headers(abi.MapHTTPResponseHeaders)
				for k, want := range map[string]string{
					"x-prop-request-path": "/p?q", "x-prop-request-method": "PUT", "x-prop-source-address": "1.2.3.4:5",
					"x-prop-plugin-name": "tb", "x-prop-plugin-root-id": "r", "x-prop-plugin-vm-id": "v",
					"x-prop-xds-cluster-name": "up", "x-prop-cluster-name": "up",
				} {
					if got, _ := h.Get(k); got != want {
						t.Errorf("%s = %q, want %q", k, got, want)
					}
				}
			}},
		{"unknown property", kv(":path", "/", ":method", "GET", "x-testbed", "props"), props{},
			func(t *testing.T, s *HTTPStream, r Result) {
				s.ResponseHeaders(kv(":status", "200"), true)
				if got, _ := s.Headers(abi.MapHTTPResponseHeaders).Get("x-prop-source-address"); got != "NOT_FOUND" {
					t.Errorf("absent property = %q", got)
				}
			}},
		{"response body replaced", kv(":path", "/", ":method", "GET", "x-testbed", "replace-resp-body"), nil,
			func(t *testing.T, s *HTTPStream, r Result) {
				s.ResponseHeaders(kv(":status", "200", "content-length", "5"), false)
				if ch := s.Headers(abi.MapHTTPResponseHeaders).Changes(); len(ch) != 1 || ch[0].Key != "content-length" || ch[0].Values != nil {
					t.Errorf("content-length not removed: %+v", ch)
				}
				if r := s.ResponseBody([]byte("ab"), false); r.Action != abi.ActionPause {
					t.Errorf("first chunk: %+v", r)
				}
				if r := s.ResponseBody([]byte("cde"), true); string(r.Body) != "replaced by testbed\n" || !r.BodyModified {
					t.Errorf("last chunk: %+v", r)
				}
			}},
		{"prepend and append", kv(":path", "/", ":method", "POST", "x-testbed", "prepend-body,append-body"), nil,
			func(t *testing.T, s *HTTPStream, r Result) {
				a := s.RequestBody([]byte("mid1"), false)
				b := s.RequestBody([]byte("mid2"), true)
				if string(a.Body) != "prepended+mid1" || string(b.Body) != "mid2+appended" {
					t.Errorf("bodies %q %q", a.Body, b.Body)
				}
			}},
		{"trailers", kv(":path", "/", ":method", "POST", "x-testbed", "trailers"), nil,
			func(t *testing.T, s *HTTPStream, r Result) {
				s.RequestTrailers(kv("t1", "a", "t2", "b"))
				s.ResponseHeaders(kv(":status", "200"), false)
				s.ResponseTrailers(kv("grpc-status", "0"))
				if v, _ := s.Headers(abi.MapHTTPRequestTrailers).Get("x-testbed-trailer"); v != "req" {
					t.Errorf("request trailer = %q", v)
				}
				if v, _ := s.Headers(abi.MapHTTPResponseTrailers).Get("x-testbed-req-trailers"); v != "2" {
					t.Errorf("response trailer = %q", v)
				}
			}},
		{"unknown action", kv(":path", "/", ":method", "GET", "x-testbed", "nope"), nil,
			func(t *testing.T, s *HTTPStream, r Result) {
				if r.LocalResponse == nil || r.LocalResponse.Status != 400 {
					t.Errorf("%+v", r)
				}
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var src PropertySource
			if tc.props != nil {
				src = tc.props
			}
			s, err := p.NewHTTPStream(src)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			r := s.RequestHeaders(tc.req, false)
			if r.Failure != nil {
				t.Fatal(r.Failure)
			}
			tc.check(t, s, r)
		})
	}

	queueItems := func(p *Plugin) uint64 {
		for _, m := range p.Metrics().Snapshot() {
			if m.Name == "testbed_queue_items_total" {
				return m.Counter
			}
		}
		return 0
	}
	// Queue items enqueued from any instance reach the owner's
	// OnQueueReady.
	for i := 0; i < 6; i++ {
		s, _ := p.NewHTTPStream(nil)
		s.RequestHeaders(kv(":path", "/q", ":method", "GET", "x-testbed", "queue"), true)
		s.Close()
	}
	waitFor(t, "six dequeued items", func() bool { return queueItems(p) == 6 })

	// Shared data is one store for every instance (and every plugin with
	// this vm_id), updated with CAS from concurrent streams. The first
	// write goes alone: a missing key has no CAS token, so, as in Envoy,
	// two instances that both find it missing would both write "1".
	increment := func() {
		s, _ := p.NewHTTPStream(nil)
		defer s.Close()
		s.RequestHeaders(kv(":path", "/", ":method", "GET", "x-testbed", "shared-data"), true)
	}
	increment()
	var wg sync.WaitGroup
	for i := 0; i < 19; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			increment()
		}()
	}
	wg.Wait()
	peer := loadFile(t, "plugin:testbed", Config{Instances: 1, VMID: "v", Shared: shared})
	s, _ := peer.NewHTTPStream(nil)
	defer s.Close()
	s.RequestHeaders(kv(":path", "/", ":method", "GET", "x-testbed", "shared-data"), true)
	s.ResponseHeaders(kv(":status", "200"), true)
	if v, _ := s.Headers(abi.MapHTTPResponseHeaders).Get("x-shared-counter"); v != "21" {
		t.Errorf("shared counter = %q, want 21", v)
	}

	// The peer re-registered the queue when it started: as in Envoy, the
	// last registrant owns it and gets the notifications.
	s2, _ := p.NewHTTPStream(nil)
	s2.RequestHeaders(kv(":path", "/q", ":method", "GET", "x-testbed", "queue"), true)
	s2.Close()
	waitFor(t, "the new owner's notification", func() bool { return queueItems(peer) == 1 })
	if queueItems(p) != 6 {
		t.Errorf("the old owner still got notified")
	}
}

func readPlugin(t *testing.T, name string) []byte {
	t.Helper()
	return mustRead(t, pluginPath(t, name))
}
