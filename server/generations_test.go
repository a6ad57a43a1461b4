package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wasm-callout/wasm-callout/host"
	"github.com/wasm-callout/wasm-callout/internal/testplugins"
	"github.com/wasm-callout/wasm-callout/server/envoytest"
)

// Hot-swap tests. Plugins swapped into a server belong to it (it closes
// them when they are replaced), so these tests load their own instead of
// the shared ones of harness_test.go.

// swapWasm returns the bytes of a test plugin: "gentag" (testdata, tags
// both directions with its configuration), "refuses" (host/testdata) or a
// Go plugin of plugins/.
func swapWasm(t testing.TB, name string) []byte {
	t.Helper()
	switch name {
	case "gentag":
		return mustRead(t, filepath.Join("testdata", "gentag.wasm"))
	case "refuses":
		return mustRead(t, filepath.Join("..", "host", "testdata", "refuses.wasm"))
	}
	return mustRead(t, testplugins.Path(t, name))
}

// swapConfig is the host configuration of the hot-swap tests' plugins.
func swapConfig(cfg host.Config) host.Config {
	if cfg.Name == "" {
		cfg.Name = "swap"
	}
	if cfg.Instances == 0 {
		cfg.Instances = 2
	}
	cfg.FailStatus = 500
	cfg.CompilationCacheDir = cacheDir
	cfg.Logger = testLogger()
	return cfg
}

func loadOwned(t testing.TB, name string, cfg host.Config) *host.Plugin {
	t.Helper()
	p, err := host.Load(context.Background(), swapWasm(t, name), swapConfig(cfg))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// swapHarness is a server on loopback that owns its plugins: stopping it
// closes the current plugin too, so that tests can count what is left.
type swapHarness struct {
	*harness
	closePlugin sync.Once
}

func startSwap(t *testing.T, opts Options) *swapHarness {
	t.Helper()
	opts.Logger = testLogger()
	h := &swapHarness{harness: start(t, opts)}
	t.Cleanup(h.stop)
	return h
}

// stop tears everything down, the current plugin included.
func (h *swapHarness) stop() {
	h.harness.stop()
	h.closePlugin.Do(func() { h.srv.Plugin().Close(context.Background()) })
}

func swapGet(headers ...string) *envoytest.Request {
	return &envoytest.Request{
		Headers:  append(envoytest.H(":method", "GET", ":path", "/", ":authority", "swap", ":scheme", "http"), envoytest.H(headers...)...),
		Response: &envoytest.Response{Headers: envoytest.H(":status", "200")},
	}
}

// oneValue returns the only value of key, or an error saying what is there.
func oneValue(h envoytest.Headers, key string) (string, error) {
	vs := h.Values(key)
	if len(vs) != 1 {
		return "", fmt.Errorf("%s: want one value, got %q", key, vs)
	}
	return vs[0], nil
}

// settled waits until the process's goroutines are back to at most want,
// and reports the count it saw last. Goroutines of closed connections and
// plugins end asynchronously, shortly after the close returns.
func settled(want int) int {
	deadline := time.Now().Add(10 * time.Second)
	for {
		n := runtime.NumGoroutine()
		if n <= want || time.Now().After(deadline) {
			return n
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// TestHotSwapHammer swaps the plugin 100 times while 16 clients stream
// through the Envoy emulator. Generations alternate between two builds:
// odd ones are plugins/basic (Go) configured to add x-gen: gN to the
// response, even ones testdata/gentag (WAT), which tags the request with
// x-gen-req: gN and the response with x-gen: gN. Every request must
// succeed with exactly one tag, from a generation that was current while
// it ran, and a gentag stream must carry the same tag in both directions:
// a stream that changed generation half-way would show two. Afterwards
// nothing may be left: no plugin instance but the current ones, no extra
// goroutine, no retained heap.
func TestHotSwapHammer(t *testing.T) {
	if testing.Short() {
		t.Skip("loads 50 Go plugin pools")
	}
	const swaps, clients = 100, 16
	basic, gentag := swapWasm(t, "basic"), swapWasm(t, "gentag")
	metrics := host.NewMetrics()
	loader := func(gen uint64) func(context.Context) (*host.Plugin, error) {
		tag := "g" + strconv.FormatUint(gen, 10)
		wasm, config := gentag, tag
		if gen%2 == 1 {
			wasm, config = basic, "x-gen: "+tag
		}
		return func(ctx context.Context) (*host.Plugin, error) {
			return host.Load(ctx, wasm, swapConfig(host.Config{Name: "hammer", VMID: "hammer", PluginConfig: []byte(config), Metrics: metrics}))
		}
	}
	// Compile both modules into the cache before measuring anything.
	for _, gen := range []uint64{1, 2} {
		p, err := loader(gen)(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		p.Close(context.Background())
	}
	goroutines0, instances0, heap0 := runtime.NumGoroutine(), host.LiveInstances(), heapInUse()

	first, err := loader(1)(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	h := startSwap(t, Options{Plugin: first})
	cfg := envoytest.Config{NoTranscript: true, MessageTimeout: 10 * time.Second}

	var (
		requests, straddled atomic.Int64
		failMu              sync.Mutex
		failures            []string
	)
	fail := func(format string, args ...any) {
		failMu.Lock()
		defer failMu.Unlock()
		if len(failures) < 10 {
			failures = append(failures, fmt.Sprintf(format, args...))
		}
	}
	check := func(res *envoytest.Result, err error, from, to uint64) {
		if err != nil {
			fail("request failed: %v", err)
			return
		}
		if res.LocalReply != nil {
			fail("local reply %d %s", res.LocalReply.Status, res.LocalReply.Details)
			return
		}
		tag, err := oneValue(res.Response.Headers, "x-gen")
		if err != nil {
			fail("response %v", err)
			return
		}
		gen, err := strconv.ParseUint(strings.TrimPrefix(tag, "g"), 10, 64)
		if err != nil || gen < from || gen > to {
			fail("response tag %q: want a generation current while the request ran, g%d to g%d", tag, from, to)
			return
		}
		reqTags := res.Request.Headers.Values("x-gen-req")
		if gen%2 == 0 && (len(reqTags) != 1 || reqTags[0] != tag) {
			fail("stream mixed generations: request tagged %q, response %q", reqTags, tag)
		}
		if gen%2 == 1 && len(reqTags) != 0 {
			fail("stream mixed generations: request tagged %q by gentag, response %q by basic", reqTags, tag)
		}
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			emu, err := envoytest.New(h.conn, cfg)
			if err != nil {
				fail("emulator: %v", err)
				return
			}
			req := swapGet()
			for {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				from := h.srv.Generation().ID
				res, err := emu.Do(ctx, req)
				to := h.srv.Generation().ID
				cancel()
				requests.Add(1)
				if from != to {
					straddled.Add(1)
				}
				check(res, err, from, to)
			}
		}()
	}

	start := time.Now()
	for gen := uint64(2); gen <= swaps+1; gen++ {
		got, err := h.srv.Reload(context.Background(), loader(gen))
		if err != nil || got != gen {
			t.Errorf("Reload to generation %d: got %d, %v", gen, got, err)
			break
		}
	}
	took := time.Since(start)
	close(stop)
	wg.Wait()
	st := h.srv.Stats()
	t.Logf("%d swaps in %v (%v each) under load; %d requests, %d of them across a swap; %d generations still draining",
		swaps, took.Round(time.Millisecond), (took / swaps).Round(time.Millisecond), requests.Load(), straddled.Load(), st.DrainingGenerations)

	for _, f := range failures {
		t.Error(f)
	}
	if requests.Load() == 0 || straddled.Load() == 0 {
		t.Errorf("the load did not overlap the swaps: %d requests, %d across a swap", requests.Load(), straddled.Load())
	}
	if st.Swaps != swaps || st.ReloadFailures != 0 || st.Generation != swaps+1 || st.PluginFailures != 0 || st.DrainExpired != 0 {
		t.Errorf("stats after the swaps: %+v", st)
	}
	if n := counter(h.srv.Plugin(), "basic_requests_total"); n == 0 {
		t.Error("basic_requests_total is zero: metrics did not survive the swaps")
	}

	h.stop()
	if n := host.LiveInstances(); n != instances0 {
		t.Errorf("live plugin instances after closing: %d, want %d as before the test", n, instances0)
	}
	if n := settled(goroutines0); n > goroutines0 {
		buf := make([]byte, 1<<20)
		t.Errorf("goroutines: %d after the test, %d before\n%s", n, goroutines0, buf[:runtime.Stack(buf, true)])
	}
	// A leaked generation keeps two instances' memory (megabytes each for
	// a Go plugin), so 100 swaps leaking would retain hundreds of MiB.
	heap := heapInUse()
	t.Logf("after closing: %d goroutines (%d before), %d live instances (%d before), heap in use %d MiB (%d before)",
		runtime.NumGoroutine(), goroutines0, host.LiveInstances(), instances0, heap>>20, heap0>>20)
	if heap > heap0+64<<20 {
		t.Errorf("heap in use grew from %d to %d MiB over %d swaps", heap0>>20, heap>>20, swaps)
	}
}

// heldUpstream is an HTTP upstream that holds every request until release
// is closed, announcing each arrival on arrived.
type heldUpstream struct {
	us      *host.Upstreams
	arrived chan struct{}
	release chan struct{}
	once    sync.Once
}

func newHeldUpstream(t *testing.T) *heldUpstream {
	t.Helper()
	u := &heldUpstream{arrived: make(chan struct{}, 16), release: make(chan struct{})}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.arrived <- struct{}{}
		select {
		case <-u.release:
		case <-r.Context().Done():
		}
	}))
	up, err := host.ParseUpstream("testbed_upstream=" + srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if u.us, err = host.NewUpstreams([]host.Upstream{up}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		u.open()
		srv.Close()
		u.us.Close()
	})
	return u
}

func (u *heldUpstream) open() { u.once.Do(func() { close(u.release) }) }

func (u *heldUpstream) wait(t *testing.T) {
	t.Helper()
	select {
	case <-u.arrived:
	case <-time.After(10 * time.Second):
		t.Fatal("the plugin's call never reached the upstream")
	}
}

// pausedRequest starts a request that plugins/testbed pauses on an
// outbound call to u, and returns its outcome when it ends.
func pausedRequest(h *swapHarness) <-chan *envoytest.Result {
	out := make(chan *envoytest.Result, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		res, err := envoytest.Do(ctx, h.conn, envoytest.Config{MessageTimeout: 20 * time.Second}, swapGet(testbedHdr, "http-call"))
		if err != nil {
			res = &envoytest.Result{LocalReply: &envoytest.LocalReply{Details: err.Error()}}
		}
		out <- res
	}()
	return out
}

// TestSwapLetsInFlightStreamsFinish: a stream paused on its plugin's
// outbound call when the plugin is swapped finishes on the generation it
// started on, which stays open until then; new streams get the new one.
func TestSwapLetsInFlightStreamsFinish(t *testing.T) {
	instances0 := host.LiveInstances()
	up := newHeldUpstream(t)
	old := loadOwned(t, "testbed", host.Config{Upstreams: up.us})
	h := startSwap(t, Options{Plugin: old})
	done := pausedRequest(h)
	up.wait(t)

	gen, err := h.srv.Swap(loadOwned(t, "gentag", host.Config{PluginConfig: []byte("g2")}))
	if err != nil || gen != 2 {
		t.Fatalf("Swap: %d, %v", gen, err)
	}
	if st := h.srv.Stats(); st.DrainingGenerations != 1 || st.Generation != 2 {
		t.Errorf("after the swap: %d generations draining, current %d; want 1 and 2", st.DrainingGenerations, st.Generation)
	}
	if s := old.Stats(); s.Healthy != 2 || s.LiveStreams != 1 {
		t.Errorf("the replaced plugin while its stream runs: %+v", s)
	}
	res := h.do(t, envoytest.Config{}, swapGet())
	if tag, err := oneValue(res.Response.Headers, "x-gen"); err != nil || tag != "g2" {
		t.Errorf("a stream started after the swap: x-gen %q, %v; want g2", tag, err)
	}

	up.open()
	res = <-done
	if res.LocalReply != nil {
		t.Fatalf("the in-flight stream: local reply %+v", res.LocalReply)
	}
	if v, _ := res.Response.Headers.Get("x-http-call-status"); v != "200" || res.Response.Headers.Has("x-gen") {
		t.Errorf("the in-flight stream did not finish on its own generation: response headers %v", res.Response.Headers)
	}
	waitFor(t, func() bool { return h.srv.Stats().DrainingGenerations == 0 })
	if n := host.LiveInstances(); n != instances0+2 {
		t.Errorf("live instances: %d, want the new generation's 2", n-instances0)
	}
	if st := h.srv.Stats(); st.DrainExpired != 0 || st.PluginFailures != 0 {
		t.Errorf("stats: %+v", st)
	}
}

// TestDrainTimeout: a stream still on a replaced generation when the drain
// timeout runs out gets the failure policy and ends cleanly, and the
// generation closes without waiting for it.
func TestDrainTimeout(t *testing.T) {
	for _, tt := range []struct {
		policy host.FailurePolicy
		check  func(t *testing.T, res *envoytest.Result)
	}{
		{host.FailClosed, func(t *testing.T, res *envoytest.Result) {
			if lr := res.LocalReply; lr == nil || lr.Status != 500 || lr.Details != detailsFailStream || !lr.Immediate {
				t.Errorf("want the fail status as an immediate response; got %+v", lr)
			}
			if res.Request.Sent {
				t.Error("the request went upstream")
			}
		}},
		{host.FailOpen, func(t *testing.T, res *envoytest.Result) {
			if res.LocalReply != nil || !res.Request.Sent || !res.Response.Complete {
				t.Errorf("want the request to continue without the plugin; got local reply %+v, request sent %v",
					res.LocalReply, res.Request.Sent)
			}
			if res.Response.Headers.Has("x-http-call-status") || res.Response.Headers.Has("x-gen") {
				t.Errorf("a plugin ran on the response after the drain timeout: %v", res.Response.Headers)
			}
		}},
	} {
		t.Run(tt.policy.String(), func(t *testing.T) {
			instances0 := host.LiveInstances()
			up := newHeldUpstream(t)
			old := loadOwned(t, "testbed", host.Config{Upstreams: up.us, FailurePolicy: tt.policy})
			h := startSwap(t, Options{Plugin: old, DrainTimeout: 100 * time.Millisecond})
			done := pausedRequest(h)
			up.wait(t)
			if _, err := h.srv.Swap(loadOwned(t, "gentag", host.Config{PluginConfig: []byte("g2")})); err != nil {
				t.Fatal(err)
			}
			res := <-done
			tt.check(t, res)
			waitFor(t, func() bool { return h.srv.Stats().DrainingGenerations == 0 })
			if n := host.LiveInstances(); n != instances0+2 {
				t.Errorf("live instances: %d, want the new generation's 2", n-instances0)
			}
			if st := h.srv.Stats(); st.DrainExpired != 1 || st.PluginFailures != 1 {
				t.Errorf("stats: %d expired, %d plugin failures; want 1 and 1", st.DrainExpired, st.PluginFailures)
			}
			res = h.do(t, envoytest.Config{}, swapGet())
			if tag, _ := res.Response.Headers.Get("x-gen"); tag != "g2" {
				t.Errorf("after the drain: x-gen %q, want g2", tag)
			}
		})
	}
}

// TestReloadRejectsBrokenPlugin: a new generation that cannot be prepared
// is refused with the reason, counted, and the current one keeps serving
// the traffic that flows meanwhile; nothing of the broken one is left.
func TestReloadRejectsBrokenPlugin(t *testing.T) {
	h := startSwap(t, Options{Plugin: loadOwned(t, "gentag", host.Config{PluginConfig: []byte("g1")})})
	stop := make(chan struct{})
	var served, failed atomic.Int64
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				res, err := envoytest.Do(ctx, h.conn, envoytest.Config{NoTranscript: true}, swapGet())
				cancel()
				if tag, _ := res.Response.Headers.Get("x-gen"); err != nil || tag != "g1" {
					failed.Add(1)
				}
				served.Add(1)
			}
		}()
	}
	defer func() {
		close(stop)
		wg.Wait()
		if served.Load() == 0 || failed.Load() != 0 {
			t.Errorf("traffic during the reloads: %d requests, %d not served by generation 1", served.Load(), failed.Load())
		}
	}()

	instances0 := host.LiveInstances()
	for i, tt := range []struct {
		name, plugin string
		wasm         []byte
		cfg          host.Config
		want         string
	}{
		{name: "not wasm", wasm: []byte("this is not a wasm module"), want: "invalid magic number"},
		{name: "empty file", wasm: []byte{}, want: "invalid magic number"},
		{name: "on_vm_start false", plugin: "refuses", cfg: host.Config{VMConfig: []byte("no")}, want: "proxy_on_vm_start returned false"},
		{name: "on_configure false", plugin: "refuses", cfg: host.Config{PluginConfig: []byte("no")}, want: "proxy_on_configure returned false"},
		{name: "Go plugin refuses its VM config", plugin: "testbed", cfg: host.Config{VMConfig: []byte("fail")}, want: "proxy_on_vm_start returned false"},
		{name: "trap in on_configure", plugin: "gentag", cfg: host.Config{PluginConfig: []byte("trap")}, want: "unreachable"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			wasm := tt.wasm
			if tt.plugin != "" {
				wasm = swapWasm(t, tt.plugin)
			}
			_, err := h.srv.Reload(context.Background(), func(ctx context.Context) (*host.Plugin, error) {
				return host.Load(ctx, wasm, swapConfig(tt.cfg))
			})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Reload: %v; want an error containing %q", err, tt.want)
			}
			st := h.srv.Stats()
			if st.Generation != 1 || st.Swaps != 0 || st.ReloadFailures != int64(i+1) {
				t.Errorf("stats: generation %d, %d swaps, %d reload failures; want 1, 0, %d", st.Generation, st.Swaps, st.ReloadFailures, i+1)
			}
			if at, last := h.srv.LastReloadError(); last == nil || last.Error() != err.Error() || time.Since(at) > time.Minute {
				t.Errorf("LastReloadError: %v at %v", last, at)
			}
			if n := host.LiveInstances(); n != instances0 {
				t.Errorf("the refused plugin left %d instances running", n-instances0)
			}
		})
	}
}

// TestSwapKeepsSharedStateAndMetrics: shared data is keyed by vm_id and
// metrics live in a registry given to every generation, so a new
// generation with the same vm_id continues where the old one was.
func TestSwapKeepsSharedStateAndMetrics(t *testing.T) {
	metrics := host.NewMetrics()
	cfg := host.Config{VMID: "swap-shared-" + t.Name(), Metrics: metrics, Shared: host.NewSharedState()}
	h := startSwap(t, Options{Plugin: loadOwned(t, "testbed", cfg)})
	req := swapGet(testbedHdr, "shared-data,metrics")
	for i, want := range []string{"1", "2", "3"} {
		if i > 0 {
			cfg.PluginConfig = []byte("# generation " + strconv.Itoa(i+1))
			if _, err := h.srv.Swap(loadOwned(t, "testbed", cfg)); err != nil {
				t.Fatal(err)
			}
		}
		res := h.do(t, envoytest.Config{}, req)
		shared, _ := res.Response.Headers.Get("x-shared-counter")
		metric, _ := res.Response.Headers.Get("x-metric-counter")
		if shared != want || metric != want {
			t.Errorf("generation %d: shared counter %q, metric %q; want %s for both", i+1, shared, metric, want)
		}
	}
	if n := counter(h.srv.Plugin(), "testbed_requests_total"); n != 3 {
		t.Errorf("testbed_requests_total after two swaps: %d, want 3", n)
	}
}

// TestSwapErrors: what Swap and Reload refuse, and that the caller keeps
// what was refused.
func TestSwapErrors(t *testing.T) {
	h := startSwap(t, Options{Plugin: loadOwned(t, "gentag", host.Config{PluginConfig: []byte("g1")})})
	if _, err := h.srv.Swap(nil); err == nil {
		t.Error("Swap(nil) succeeded")
	}
	if _, err := h.srv.Swap(h.srv.Plugin()); err == nil {
		t.Error("Swap with the current plugin succeeded")
	}
	if _, err := h.srv.Reload(context.Background(), func(context.Context) (*host.Plugin, error) { return nil, nil }); err == nil {
		t.Error("Reload with a loader returning nothing succeeded")
	}
	h.srv.Close()
	p := loadOwned(t, "gentag", host.Config{PluginConfig: []byte("g2")})
	defer p.Close(context.Background())
	if _, err := h.srv.Swap(p); !errors.Is(err, ErrClosed) {
		t.Errorf("Swap after Close: %v, want ErrClosed", err)
	}
	if s := p.Stats(); s.Healthy != 2 {
		t.Errorf("the refused plugin was touched: %+v", s)
	}
	_, err := h.srv.Reload(context.Background(), func(context.Context) (*host.Plugin, error) {
		t.Error("Reload after Close loaded a plugin")
		return nil, errors.New("unreachable")
	})
	if !errors.Is(err, ErrClosed) {
		t.Errorf("Reload after Close: %v, want ErrClosed", err)
	}
	if st := h.srv.Stats(); st.Generation != 1 || st.Swaps != 0 || st.ReloadFailures != 1 {
		t.Errorf("stats: %+v; want generation 1, no swap, the one failure of the empty loader", st)
	}
}

// TestGentagFixtureInSync checks that testdata/gentag.wasm is what wat2wasm
// makes of testdata/gentag.wat.
func TestGentagFixtureInSync(t *testing.T) {
	if _, err := exec.LookPath("wat2wasm"); err != nil {
		t.Skip("wat2wasm not installed")
	}
	out := filepath.Join(t.TempDir(), "gentag.wasm")
	if b, err := exec.Command("wat2wasm", filepath.Join("testdata", "gentag.wat"), "-o", out).CombinedOutput(); err != nil {
		t.Fatalf("wat2wasm: %v\n%s", err, b)
	}
	if !bytes.Equal(mustRead(t, out), mustRead(t, filepath.Join("testdata", "gentag.wasm"))) {
		t.Error("testdata/gentag.wasm is stale: run wat2wasm testdata/gentag.wat -o testdata/gentag.wasm")
	}
}
