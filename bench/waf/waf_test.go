package waf

import (
	"context"
	"flag"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wasm-callout/wasm-callout/abi"
	"github.com/wasm-callout/wasm-callout/host"
	"github.com/wasm-callout/wasm-callout/plugins/waf/engine"
)

var (
	wasmPath    = flag.String("wasm", "../../plugins/bin/waf.wasm", "the plugin built by make plugins/bin/waf.wasm")
	configPath  = flag.String("config", "testdata/crs.json", "the plugin configuration")
	cacheDir    = flag.String("cache", "", "compilation cache directory (default: a fresh one per run, warmed before timing)")
	callTimeout = flag.Duration("call-timeout", host.DefaultCallTimeout, "host.Config.CallTimeout; 0 turns deadlines off")
	guestEnv    = flag.String("guest-env", "", "comma-separated NAME=VALUE pairs for the guest's WASI environment (e.g. GOGC=400)")
	instances   = flag.Int("instances", 2, "plugin instances")
)

// request is one benchmark request: headers as Envoy sends them, and a body.
type request struct {
	name    string
	headers [][2]string
	body    string
	blocked bool
}

var requests = []request{
	{name: "clean", headers: hdrs("GET", "/products/42?color=blue&size=m")},
	{name: "clean-post", headers: hdrs("POST", "/form", "content-type", "application/x-www-form-urlencoded"),
		body: "name=alice&comment=this+is+a+perfectly+ordinary+comment&page=3"},
	{name: "xss", headers: hdrs("GET", "/search?q=<script>alert(document.cookie)</script>"), blocked: true},
	{name: "sqli-body", headers: hdrs("POST", "/form", "content-type", "application/x-www-form-urlencoded"),
		body: "id=1%27%20UNION%20SELECT%20password%20FROM%20users--%20", blocked: true},
}

func hdrs(method, path string, extra ...string) [][2]string {
	h := [][2]string{{":authority", "app.example"}, {":path", path}, {":method", method}, {":scheme", "https"},
		{"user-agent", "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"},
		{"accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"},
		{"accept-language", "en-US,en;q=0.5"}, {"accept-encoding", "gzip, deflate, br"},
		{"cookie", "session=3b7c9f0e1d2a4b5c6d7e8f90; theme=dark"}}
	for i := 0; i+1 < len(extra); i += 2 {
		h = append(h, [2]string{extra[i], extra[i+1]})
	}
	return h
}

// response is what the upstream answers to a request that passed.
var response = [][2]string{{":status", "200"}, {"content-type", "text/html; charset=utf-8"}, {"content-length", "120"}}

const responseBody = "<html><head><title>Product 42</title></head><body><p>A blue shirt, size M, in stock.</p></body></html>\n"

func readConfig(tb testing.TB) []byte {
	b, err := os.ReadFile(*configPath)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// native runs one request and its response through the engine the way the
// plugin does, and reports whether it was blocked.
func native(w *engine.WAFs, r request) bool {
	tx := engine.Begin(w.For("app.example"))
	defer tx.Done()
	if it := tx.RequestHeaders(r.headers, "HTTP/1.1", "10.0.0.1:40000", "10.0.0.2:443"); it != nil {
		return true
	}
	var body []byte
	if r.body != "" {
		body = []byte(r.body)
	}
	if it, _ := tx.RequestBody(body); it != nil {
		return true
	}
	if it := tx.ResponseHeaders(response, "HTTP/1.1"); it != nil {
		return true
	}
	it, _ := tx.ResponseBody([]byte(responseBody))
	return it != nil
}

// wasm runs one request and its response through the plugin, as the
// server does with a BUFFERED Envoy, and reports whether it was blocked.
func wasm(tb testing.TB, p *host.Plugin, r request) bool {
	s, err := p.NewHTTPStream(nil)
	if err != nil {
		tb.Fatal(err)
	}
	defer s.Close()
	res := s.RequestHeaders(pairs(r.headers), r.body == "")
	if res.Failure != nil {
		tb.Fatal(res.Failure)
	}
	if res.LocalResponse != nil {
		return true
	}
	if r.body != "" {
		if res = s.RequestBody([]byte(r.body), true); res.LocalResponse != nil {
			return true
		}
	}
	if res = s.ResponseHeaders(pairs(response), false); res.LocalResponse != nil {
		return true
	}
	res = s.ResponseBody([]byte(responseBody), true)
	if res.Failure != nil {
		tb.Fatal(res.Failure)
	}
	return res.LocalResponse != nil
}

func pairs(h [][2]string) []abi.Pair {
	out := make([]abi.Pair, len(h))
	for i, kv := range h {
		out[i] = abi.Pair{Key: kv[0], Value: kv[1]}
	}
	return out
}

func hostConfig(tb testing.TB) host.Config {
	cfg := host.Config{
		Name:         "waf",
		PluginConfig: readConfig(tb),
		Instances:    *instances,
		CallTimeout:  *callTimeout,
		Logger:       slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	if *callTimeout == 0 {
		cfg.CallTimeout = -1
	}
	if *guestEnv != "" {
		cfg.Env = map[string]string{}
		for _, kv := range strings.Split(*guestEnv, ",") {
			k, v, _ := strings.Cut(kv, "=")
			cfg.Env[k] = v
		}
	}
	cfg.CompilationCacheDir = *cacheDir
	if cfg.CompilationCacheDir == "" {
		cfg.CompilationCacheDir = filepath.Join(os.TempDir(), "wasm-callout-bench-waf-cache")
	}
	return cfg
}

func load(tb testing.TB) *host.Plugin {
	wasmBytes, err := os.ReadFile(*wasmPath)
	if err != nil {
		tb.Skipf("no plugin (make plugins/bin/waf.wasm): %v", err)
	}
	p, err := host.Load(context.Background(), wasmBytes, hostConfig(tb))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { p.Close(context.Background()) })
	return p
}

// TestSameVerdicts checks that the plugin and the engine agree on every
// benchmark request, so the benchmark compares equal work.
func TestSameVerdicts(t *testing.T) {
	w := buildNative(t)
	p := load(t)
	for _, r := range requests {
		if got := native(w, r); got != r.blocked {
			t.Errorf("%s: native blocked=%v, want %v", r.name, got, r.blocked)
		}
		if got := wasm(t, p, r); got != r.blocked {
			t.Errorf("%s: wasm blocked=%v, want %v", r.name, got, r.blocked)
		}
	}
}

func buildNative(tb testing.TB) *engine.WAFs {
	c, err := engine.ParseConfig(readConfig(tb))
	if err != nil {
		tb.Fatal(err)
	}
	w, err := engine.Build(c, engine.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	return w
}

// BenchmarkRequest runs every request natively and through the plugin,
// interleaved per request kind, and reports CPU time per request
// (cpu-ns/op: user+system time of the whole process, so the host's own
// goroutines count) besides wall time.
func BenchmarkRequest(b *testing.B) {
	w := buildNative(b)
	p := load(b)
	for _, r := range requests {
		b.Run(r.name+"/native", func(b *testing.B) {
			measure(b, func() { native(w, r) })
		})
		b.Run(r.name+"/wasm", func(b *testing.B) {
			measure(b, func() { wasm(b, p, r) })
		})
	}
}

func measure(b *testing.B, fn func()) {
	fn() // warm
	b.ResetTimer()
	start := cpuTime()
	for b.Loop() {
		fn()
	}
	b.ReportMetric(float64(cpuTime()-start)/float64(b.N), "cpu-ns/op")
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkStart measures a plugin start with its instances from a warm
// compilation cache (the first load warms it), and, natively, building
// the same WAFs once.
func BenchmarkStart(b *testing.B) {
	wasmBytes, err := os.ReadFile(*wasmPath)
	if err != nil {
		b.Skipf("no plugin: %v", err)
	}
	cfg := hostConfig(b)
	b.Run("native", func(b *testing.B) {
		for b.Loop() {
			buildNative(b)
		}
	})
	b.Run("wasm", func(b *testing.B) {
		warm, err := host.Load(context.Background(), wasmBytes, cfg)
		if err != nil {
			b.Fatal(err)
		}
		warm.Close(context.Background())
		b.ResetTimer()
		for b.Loop() {
			p, err := host.Load(context.Background(), wasmBytes, cfg)
			if err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			p.Close(context.Background())
			b.StartTimer()
		}
	})
}
