package host

import (
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/wasm-callout/wasm-callout/abi"
)

// Eight goroutines stream through a two-instance pool: calls into an
// instance are serialized, every stream gets its own answers, and the
// plugin's shared metric counts every request. Run it with -race.
func TestHammer(t *testing.T) {
	const goroutines, perG = 8, 60
	m := NewMetrics()
	p := loadFile(t, "plugin:basic", Config{Instances: 2, Metrics: m, PluginConfig: []byte("x-a: 1")})
	before := runtime.NumGoroutine()
	var wg sync.WaitGroup
	errs := make(chan error, goroutines)
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < perG; i++ {
				if err := oneStream(p, fmt.Sprintf("/g%d/%d", g, i)); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if snap := m.Snapshot(); len(snap) != 1 || snap[0].Counter != goroutines*perG {
		t.Errorf("counted %+v, want %d", snap, goroutines*perG)
	}
	st := p.Stats()
	if st.LiveStreams != 0 || st.Failures != 0 || st.Healthy != 2 {
		t.Errorf("stats = %+v", st)
	}
	// wazero's per-call watchers exit once scheduled; a leak would keep
	// the count up.
	waitFor(t, fmt.Sprintf("goroutines to return to %d", before), func() bool {
		return runtime.NumGoroutine() <= before+2
	})
}

func oneStream(p *Plugin, path string) error {
	s, err := p.NewHTTPStream(nil)
	if err != nil {
		return err
	}
	defer s.Close()
	if r := s.RequestHeaders(kv(":path", path, ":method", "POST"), false); r.Action != abi.ActionContinue {
		return fmt.Errorf("%s: request headers %+v", path, r)
	}
	if r := s.RequestBody([]byte(path), true); string(r.Body) != path {
		return fmt.Errorf("%s: body %q", path, r.Body)
	}
	s.ResponseHeaders(kv(":status", "200"), true)
	ch := s.Headers(abi.MapHTTPResponseHeaders).Changes()
	if len(ch) != 1 || ch[0].Key != "x-a" || ch[0].Values[0] != "1" {
		return fmt.Errorf("%s: changes %+v", path, ch)
	}
	return nil
}

// BenchmarkHTTPStream is one stream's full lifecycle in process: create,
// request headers, response headers (the plugin adds a header, which is
// taken as the server takes it), log/done/delete. "basic" is plugins/basic
// (stock Go); "zero" is testdata/zero.wat, which does only the header add,
// so its figures are the host's own cost. guest-calls/op counts entries
// into the guest, allocations re-entering it included.
//
// The "trusted" variants turn call deadlines off, which removes wazero's
// termination checks from the compiled code.
func BenchmarkHTTPStream(b *testing.B) {
	for _, plugin := range []string{"plugin:basic", "zero"} {
		name := strings.TrimPrefix(plugin, "plugin:")
		b.Run(name+"/deadline", func(b *testing.B) { benchStream(b, plugin, Config{Instances: 1}) })
		b.Run(name+"/trusted", func(b *testing.B) { benchStream(b, plugin, Config{Instances: 1, CallTimeout: -1}) })
	}
}

func benchStream(b *testing.B, plugin string, cfg Config) {
	p := loadFile(b, plugin, cfg)
	req := kv(":path", "/bench", ":method", "GET", ":authority", "example.com", ":scheme", "https", "user-agent", "bench", "accept", "*/*")
	resp := kv(":status", "200", "content-type", "text/plain", "content-length", "5")
	calls0 := p.Stats().GuestCalls
	b.ReportAllocs()
	for b.Loop() {
		s, err := p.NewHTTPStream(nil)
		if err != nil {
			b.Fatal(err)
		}
		s.RequestHeaders(req, true)
		s.ResponseHeaders(resp, false)
		if ch := s.TakeHeaderChanges(abi.MapHTTPResponseHeaders); len(ch) != 1 {
			b.Fatal(ch)
		}
		s.Close()
	}
	b.ReportMetric(float64(p.Stats().GuestCalls-calls0)/float64(b.N), "guest-calls/op")
}

// BenchmarkHostCall is a single host call from the guest: the fixture's
// call export straight into proxy_get_header_map_value.
func BenchmarkHostCall(b *testing.B) {
	h := newHostcall(&testing.T{}, "proxy_get_header_map_value", Config{})
	s, _ := h.p.NewHTTPStream(nil)
	defer s.Close()
	s.maps[0] = newHeaderMap(kv(":path", "/", "x-key", "value"))
	k, kl := h.put(argA, []byte("x-missing"))
	b.ReportAllocs()
	for b.Loop() {
		if st := h.run(s, phaseRequestHeaders, 0, k, kl, retP, retL); st != abi.StatusNotFound {
			b.Fatal(st)
		}
	}
}
