package compat_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	filterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	"google.golang.org/grpc"

	"github.com/wasm-callout/wasm-callout/abi"
	"github.com/wasm-callout/wasm-callout/host"
	"github.com/wasm-callout/wasm-callout/internal/testplugins"
	"github.com/wasm-callout/wasm-callout/internal/testutil"
	"github.com/wasm-callout/wasm-callout/internal/toolchains"
	"github.com/wasm-callout/wasm-callout/server"
	"github.com/wasm-callout/wasm-callout/server/envoytest"
)

const (
	upstreamBody = "upstream says hi"
	goldenDir    = "testdata/golden"
)

var cacheDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "compat-test-cache")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	cacheDir = dir
	code := m.Run()
	servedMu.Lock()
	for _, s := range served {
		s.close()
	}
	servedMu.Unlock()
	os.RemoveAll(dir)
	os.Exit(code)
}

// logBuffer collects a plugin's logs (text handler output).
type logBuffer = testutil.SyncBuffer

// load loads the .wasm at path with cfg (one instance, debug logs into the
// returned buffer).
func load(t *testing.T, path string, cfg host.Config) (*host.Plugin, *logBuffer, error) {
	t.Helper()
	wasm, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	logs := &logBuffer{}
	cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg.Instances = 1
	cfg.FailStatus = 500
	cfg.CompilationCacheDir = cacheDir
	p, err := host.Load(context.Background(), wasm, cfg)
	return p, logs, err
}

// instance is a plugin served by an ext_proc server on a loopback port,
// with an emulated Envoy's connection to it.
type instance struct {
	plugin *host.Plugin
	logs   *logBuffer
	conn   *grpc.ClientConn
	close  func()
}

var (
	servedMu sync.Mutex
	served   = map[string]*instance{}
)

// serve loads the plugin at path with cfg and serves it; the same path and
// configuration are served once per test binary.
func serve(t *testing.T, path string, cfg host.Config) *instance {
	t.Helper()
	key := fmt.Sprintf("%s|%s|%s|%q", path, cfg.Name, cfg.RootID, cfg.PluginConfig)
	servedMu.Lock()
	defer servedMu.Unlock()
	if s := served[key]; s != nil {
		return s
	}
	p, logs, err := load(t, path, cfg)
	if err != nil {
		t.Fatalf("loading %s: %v", path, err)
	}
	srv, err := server.New(server.Options{Plugin: p, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	addr, stop := testutil.Serve(t, srv)
	conn, err := envoytest.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	s := &instance{plugin: p, logs: logs, conn: conn, close: func() {
		conn.Close()
		stop()
		p.Close(context.Background())
	}}
	served[key] = s
	return s
}

// do plays one exchange through the emulated Envoy and fails the test on
// anything Envoy would count as an ext_proc error.
func (s *instance) do(t *testing.T, cfg envoytest.Config, req *envoytest.Request) *envoytest.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if cfg.MessageTimeout == 0 {
		// Envoy's 200 ms default would make a slow shared CI machine, not
		// the plugin, fail these tests.
		cfg.MessageTimeout = 5 * time.Second
	}
	res, err := envoytest.Do(ctx, s.conn, cfg, req)
	if err != nil {
		t.Fatalf("envoytest.Do: %v", err)
	}
	st := res.Stats
	if st.SpuriousMessages+st.MessageTimeouts+st.RejectedHeaderMutations+st.StreamsFailed > 0 {
		t.Errorf("Envoy saw errors: %+v", st)
	}
	if lr := res.LocalReply; lr != nil && !lr.Immediate {
		t.Errorf("Envoy generated a local reply (the plugin did not): %+v\nplugin logs:\n%s", lr, s.logs)
	}
	return res
}

// counter returns the value of a counter metric of the plugin (0 if absent).
func (s *instance) counter(name string) uint64 {
	for _, m := range s.plugin.Metrics().Snapshot() {
		if m.Name == name && m.Type == abi.MetricCounter {
			return m.Counter
		}
	}
	return 0
}

// request builds a request to path with headers kv, a body of chunks, and
// the upstream's 200 response.
func request(method, path string, body []string, kv ...string) *envoytest.Request {
	h := envoytest.H(":method", method, ":path", path, ":authority", "compat.example", ":scheme", "http")
	h = append(h, envoytest.H(kv...)...)
	r := &envoytest.Request{Headers: h, Response: &envoytest.Response{
		Headers: envoytest.H(":status", "200", "content-type", "text/plain"),
		Body:    [][]byte{[]byte("upstream "), []byte("says hi")},
	}}
	for _, c := range body {
		r.Body = append(r.Body, []byte(c))
	}
	return r
}

func header(t *testing.T, where string, h envoytest.Headers, key, want string) {
	t.Helper()
	if got, ok := h.Get(key); !ok || got != want {
		t.Errorf("%s header %s = %q (present %v), want %q\n%s", where, key, got, ok, want, h)
	}
}

func noHeader(t *testing.T, where string, h envoytest.Headers, key string) {
	t.Helper()
	if h.Has(key) {
		t.Errorf("%s header %s present, want it removed\n%s", where, key, h)
	}
}

func golden(t *testing.T, res *envoytest.Result) {
	t.Helper()
	name := strings.ReplaceAll(t.Name(), "/", "__")
	envoytest.CompareGolden(t, filepath.Join(goldenDir, name+".txt"), res.Transcript)
}

var bufferedBodies = envoytest.Config{ProcessingMode: &filterv3.ProcessingMode{
	RequestBodyMode:  filterv3.ProcessingMode_BUFFERED,
	ResponseBodyMode: filterv3.ProcessingMode_BUFFERED,
}}

// toolchain is how one toolchain's plugins are found and configured, and
// the outputs that differ between toolchains. Every plugin of the headers
// kind adds x-compat-toolchain: NAME, replaces x-compat-replace with NAME
// and removes x-compat-remove on the request, and adds x-compat-response:
// NAME on the response; body plugins upper-case the request body.
type toolchain struct {
	name string
	// plugin returns the .wasm for a plugin kind (headers, body,
	// local_reply, or a toolchain's own) and the configuration it needs.
	plugin func(t *testing.T, kind string) (string, host.Config)
	// actions are request headers that select the behaviour of a
	// multi-purpose plugin (the Go testbed); nil for the others.
	actions func(kind string) []string
	// respBody is the client's body after the plugin rewrote the
	// upstream's "upstream says hi".
	respBody string
	// Local reply: the header it carries, its body and details.
	deniedHeader, deniedValue, deniedBody, deniedDetails string
	// extras are toolchain-specific subtests.
	extras map[string]func(t *testing.T, tc toolchain)
}

// nativePlugin finds bin/PREFIX_KIND.wasm of a testdata/toolchains
// toolchain. AssemblyScript plugins register their root context as
// "compat" and need a non-empty configuration (see testdata/toolchains).
func nativePlugin(name string) func(t *testing.T, kind string) (string, host.Config) {
	return func(t *testing.T, kind string) (string, host.Config) {
		cfg := host.Config{Name: name + "_" + kind, VMID: "vm_" + name}
		if name == "assemblyscript" {
			cfg.RootID, cfg.PluginConfig = "compat", []byte("compat-config-"+name)
		}
		if kind == "properties" {
			cfg.PluginConfig = []byte("compat-config-" + name)
		}
		return toolchains.Path(t, name, kind), cfg
	}
}

var toolchainTable = []toolchain{
	{
		name: "go",
		plugin: func(t *testing.T, kind string) (string, host.Config) {
			return testplugins.Path(t, "testbed"), host.Config{Name: "go_testbed", RootID: "", VMID: "vm_go"}
		},
		actions: func(kind string) []string {
			switch kind {
			case "headers":
				return []string{"x-testbed", "add-req,set-req,del-req,add-resp",
					"x-add", "x-compat-toolchain=go", "x-set", "x-compat-replace=go", "x-del", "x-compat-remove",
					"x-add-resp", "x-compat-response=go"}
			case "body":
				return []string{"x-testbed", "buffer-body,replace-resp-body"}
			case "deny":
				return []string{"x-testbed", "local-reply"}
			case "properties":
				return []string{"x-testbed", "props,metrics,log-levels"}
			}
			return nil
		},
		respBody:     "replaced by testbed\n",
		deniedHeader: "x-testbed-reply", deniedValue: "local", deniedBody: "denied by testbed\n",
		deniedDetails: "", // SDK v0.24.0 always sends empty details
		extras: map[string]func(t *testing.T, tc toolchain){
			"properties": func(t *testing.T, tc toolchain) {
				path, cfg := tc.plugin(t, "properties")
				s := serve(t, path, cfg)
				before := s.counter("testbed_requests_total")
				res := s.do(t, envoytest.Config{}, request("GET", "/props?x=1", nil, tc.actions("properties")...))
				header(t, "response", res.Response.Headers, "x-prop-request-path", "/props?x=1")
				header(t, "response", res.Response.Headers, "x-prop-plugin-name", cfg.Name)
				header(t, "response", res.Response.Headers, "x-prop-plugin-vm-id", cfg.VMID)
				if got := s.counter("testbed_requests_total"); got != before+1 {
					t.Errorf("testbed_requests_total = %d, want %d", got, before+1)
				}
				if !strings.Contains(s.logs.String(), "testbed: log info") {
					t.Errorf("no info log from the plugin:\n%s", s.logs)
				}
			},
		},
	},
	{
		name: "assemblyscript", plugin: nativePlugin("assemblyscript"),
		respBody:     "[assemblyscript] " + upstreamBody,
		deniedHeader: "x-compat-denied", deniedValue: "assemblyscript", deniedBody: "denied by assemblyscript\n",
		deniedDetails: "compat_denied",
		extras: map[string]func(t *testing.T, tc toolchain){
			"config":       asConfig,
			"root_id":      asRootID,
			"empty_config": asEmptyConfig,
			"grpc":         asGRPC,
		},
	},
	{
		name: "c", plugin: nativePlugin("c"),
		respBody:     "[c] " + upstreamBody,
		deniedHeader: "x-compat-denied", deniedValue: "c", deniedBody: "denied by c\n", deniedDetails: "compat_denied",
		extras: map[string]func(t *testing.T, tc toolchain){"properties": nativeProperties, "tcp": nativeTCP},
	},
	{
		name: "rust", plugin: nativePlugin("rust"),
		respBody:     "[rust] " + upstreamBody,
		deniedHeader: "x-compat-denied", deniedValue: "rust", deniedBody: "denied by rust\n", deniedDetails: "compat_denied",
		extras: map[string]func(t *testing.T, tc toolchain){"properties": nativeProperties, "tcp": nativeTCP},
	},
}

// TestCompat builds each toolchain's plugins from source and drives them
// through the server and the Envoy emulator. The README's compatibility
// table cites its subtests (TestCompat/TOOLCHAIN/CASE).
func TestCompat(t *testing.T) {
	for _, tc := range toolchainTable {
		t.Run(tc.name, func(t *testing.T) {
			t.Run("headers", func(t *testing.T) { compatHeaders(t, tc) })
			t.Run("body", func(t *testing.T) { compatBody(t, tc) })
			t.Run("local_reply", func(t *testing.T) { compatLocalReply(t, tc) })
			names := make([]string, 0, len(tc.extras))
			for n := range tc.extras {
				names = append(names, n)
			}
			sort.Strings(names)
			for _, n := range names {
				t.Run(n, func(t *testing.T) { tc.extras[n](t, tc) })
			}
		})
	}
}

func (tc toolchain) kindActions(kind string) []string {
	if tc.actions == nil {
		return nil
	}
	return tc.actions(kind)
}

// compatHeaders: add, replace and remove on the request, add on the
// response.
func compatHeaders(t *testing.T, tc toolchain) {
	path, cfg := tc.plugin(t, "headers")
	s := serve(t, path, cfg)
	kv := append([]string{"x-compat-replace", "original", "x-compat-remove", "gone", "x-compat-keep", "kept"}, tc.kindActions("headers")...)
	res := s.do(t, envoytest.Config{}, request("GET", "/headers", nil, kv...))
	header(t, "upstream request", res.Request.Headers, "x-compat-toolchain", tc.name)
	header(t, "upstream request", res.Request.Headers, "x-compat-replace", tc.name)
	header(t, "upstream request", res.Request.Headers, "x-compat-keep", "kept")
	noHeader(t, "upstream request", res.Request.Headers, "x-compat-remove")
	header(t, "client response", res.Response.Headers, "x-compat-response", tc.name)
	header(t, "client response", res.Response.Headers, ":status", "200")
	if string(res.Response.Body) != upstreamBody {
		t.Errorf("client body = %q, want the upstream's", res.Response.Body)
	}
	golden(t, res)
}

// compatBody: both bodies buffered to the end and rewritten.
func compatBody(t *testing.T, tc toolchain) {
	path, cfg := tc.plugin(t, "body")
	s := serve(t, path, cfg)
	res := s.do(t, bufferedBodies, request("POST", "/body", []string{"hello ", "compat"},
		append([]string{"content-type", "text/plain"}, tc.kindActions("body")...)...))
	if got := string(res.Request.Body); got != "HELLO COMPAT" {
		t.Errorf("upstream got body %q, want %q", got, "HELLO COMPAT")
	}
	if got := string(res.Response.Body); got != tc.respBody {
		t.Errorf("client got body %q, want %q", got, tc.respBody)
	}
	if !res.Request.Complete || !res.Response.Complete {
		t.Errorf("request complete %v, response complete %v", res.Request.Complete, res.Response.Complete)
	}
	golden(t, res)
}

// compatLocalReply: a 403 with the plugin's header and body for /deny, and
// nothing in the way of other requests.
func compatLocalReply(t *testing.T, tc toolchain) {
	path, cfg := tc.plugin(t, "local_reply")
	s := serve(t, path, cfg)
	res := s.do(t, envoytest.Config{}, request("GET", "/deny/me", nil, tc.kindActions("deny")...))
	lr := res.LocalReply
	if lr == nil || lr.Status != 403 || string(lr.Body) != tc.deniedBody || lr.Details != tc.deniedDetails {
		t.Fatalf("local reply = %+v, want 403 %q with details %q", lr, tc.deniedBody, tc.deniedDetails)
	}
	header(t, "local reply", res.Response.Headers, tc.deniedHeader, tc.deniedValue)
	if res.Request.Sent {
		t.Error("the denied request was forwarded upstream")
	}
	golden(t, res)

	res = s.do(t, envoytest.Config{}, request("GET", "/allowed", nil))
	if res.LocalReply != nil || !res.Request.Sent || string(res.Response.Body) != upstreamBody {
		t.Errorf("allowed request: local reply %+v, forwarded %v, body %q", res.LocalReply, res.Request.Sent, res.Response.Body)
	}
}

// nativeProperties (C, Rust): configuration, properties, logging and a
// counter.
func nativeProperties(t *testing.T, tc toolchain) {
	path, cfg := tc.plugin(t, "properties")
	s := serve(t, path, cfg)
	metric := "compat_" + tc.name + "_requests"
	before := s.counter(metric)
	res := s.do(t, envoytest.Config{}, request("GET", "/props?x=1", nil))
	header(t, "upstream request", res.Request.Headers, "x-compat-config", string(cfg.PluginConfig))
	header(t, "upstream request", res.Request.Headers, "x-compat-path", "/props?x=1")
	header(t, "upstream request", res.Request.Headers, "x-compat-plugin-name", cfg.Name)
	if got := s.counter(metric); got != before+1 {
		t.Errorf("%s = %d, want %d", metric, got, before+1)
	}
	want := fmt.Sprintf("%s properties: configured with %s", tc.name, cfg.PluginConfig)
	if logs := s.logs.String(); !strings.Contains(logs, want) || !strings.Contains(logs, "level=INFO") {
		t.Errorf("plugin logs lack %q at info:\n%s", want, logs)
	}
}

// nativeTCP (C, Rust): a network filter through host.TCPStream (the
// server speaks HTTP ext_proc only, so this runs in process).
func nativeTCP(t *testing.T, tc toolchain) {
	path, cfg := tc.plugin(t, "tcp")
	p, logs, err := load(t, path, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(context.Background())
	s, err := p.NewTCPStream(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if r := s.NewConnection(); r.Action != abi.ActionContinue || r.Failure != nil {
		t.Fatalf("new connection: %+v", r)
	}
	if r := s.DownstreamData([]byte("hello tcp"), false); string(r.Body) != "HELLO TCP" || !r.BodyModified {
		t.Errorf("downstream data = %q (modified %v), want %q\n%s", r.Body, r.BodyModified, "HELLO TCP", logs)
	}
	want := "[" + tc.name + "] pong"
	if r := s.UpstreamData([]byte("pong"), false); string(r.Body) != want {
		t.Errorf("upstream data = %q, want %q", r.Body, want)
	}
}

// asConfig: proxy-runtime reads the configuration itself (after looking
// up plugin_root_id); the plugin logs through proxy_log and counts in a
// counter. This one imports env.abort.
func asConfig(t *testing.T, tc toolchain) {
	path, cfg := tc.plugin(t, "config")
	s := serve(t, path, cfg)
	imports := map[string]bool{}
	for _, imp := range s.plugin.Info().Imports {
		imports[imp.Module+"."+imp.Name] = true
	}
	if !imports["env.abort"] || imports["wasi_unstable.proc_exit"] {
		t.Errorf("config should import env.abort and not wasi_unstable.proc_exit: %v", s.plugin.Info().Imports)
	}
	before := s.counter("compat_assemblyscript_requests")
	res := s.do(t, envoytest.Config{}, request("GET", "/config", nil))
	header(t, "upstream request", res.Request.Headers, "x-compat-config", string(cfg.PluginConfig))
	if got := s.counter("compat_assemblyscript_requests"); got != before+1 {
		t.Errorf("compat_assemblyscript_requests = %d, want %d", got, before+1)
	}
	want := "assemblyscript config: request with configuration " + string(cfg.PluginConfig)
	if !strings.Contains(s.logs.String(), want) {
		t.Errorf("plugin logs lack %q:\n%s", want, s.logs)
	}
}

// asRootID: proxy-runtime creates the root context registered under the
// plugin_root_id property, and refuses to start without a match.
func asRootID(t *testing.T, tc toolchain) {
	path, cfg := tc.plugin(t, "headers")
	cfg.RootID = "not-registered"
	p, logs, err := load(t, path, cfg)
	if err == nil {
		p.Close(context.Background())
		t.Fatal("loaded with a root id the plugin did not register")
	}
	if !strings.Contains(logs.String(), "Missing root context factory for root id: not-registered") {
		t.Errorf("load error %v; the plugin's own complaint is not in the logs:\n%s", err, logs)
	}
	info := res0(t, path)
	if !contains(info.Imports, "wasi_unstable.proc_exit") || !contains(info.Imports, "env.proxy_get_property") {
		t.Errorf("imports: %v", info.Imports)
	}
}

// asEmptyConfig: proxy-runtime 0.1.8 cannot read an empty configuration
// (its onConfigure decodes a null buffer: out of bounds memory access), so
// such a plugin must be given one; the failure is a load error naming the
// callback, not a crash.
func asEmptyConfig(t *testing.T, tc toolchain) {
	path, cfg := tc.plugin(t, "headers")
	cfg.PluginConfig = nil
	p, _, err := load(t, path, cfg)
	if err == nil {
		p.Close(context.Background())
		t.Fatal("proxy-runtime 0.1.8 loaded with an empty configuration; update the README note if it now works")
	}
	if !strings.Contains(err.Error(), "proxy_on_configure") {
		t.Errorf("error does not name the failing callback: %v", err)
	}
}

// asGRPC: the SDK's 10- and 7-parameter gRPC imports link (signature
// variants) and answer as the full ones do for an unknown cluster.
func asGRPC(t *testing.T, tc toolchain) {
	path, cfg := tc.plugin(t, "grpc")
	info := res0(t, path)
	for _, imp := range info.Imports {
		switch imp.Name {
		case "proxy_grpc_call", "proxy_grpc_stream":
			if imp.Status != host.ImportServed && imp.Status != host.ImportStub {
				t.Errorf("%s %s is %s", imp.Name, imp.Signature, imp.Status)
			}
		}
	}
	s := serve(t, path, cfg)
	res := s.do(t, envoytest.Config{}, request("GET", "/grpc", nil))
	parseFailure := fmt.Sprint(uint32(abi.StatusParseFailure))
	header(t, "upstream request", res.Request.Headers, "x-compat-grpc-call", parseFailure)
	header(t, "upstream request", res.Request.Headers, "x-compat-grpc-stream", parseFailure)
}

func res0(t *testing.T, path string) *host.Info {
	t.Helper()
	wasm, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	info, err := host.Inspect(context.Background(), wasm)
	if err != nil {
		t.Fatalf("inspect %s: %v", path, err)
	}
	return info
}

func contains(imports []host.Import, name string) bool {
	for _, imp := range imports {
		if imp.Module+"."+imp.Name == name {
			return true
		}
	}
	return false
}

// TestCompatEras drives the fixtures of older ABI eras and toolchain
// shapes (host/testdata) through the server and the emulator.
func TestCompatEras(t *testing.T) {
	fixture := func(name string) string { return filepath.Join("..", "..", "host", "testdata", name+".wasm") }
	t.Run("abi_010", func(t *testing.T) {
		s := serve(t, fixture("abi_010_headers"), host.Config{Name: "abi_010", PluginConfig: []byte("v010")})
		if a := s.plugin.Info(); a.ABI != abi.Version010 || a.HeaderArity != 2 {
			t.Errorf("ABI %s, header arity %d", a.ABI, a.HeaderArity)
		}
		res := s.do(t, envoytest.Config{}, request("GET", "/v010", nil))
		header(t, "upstream request", res.Request.Headers, "x-abi-010", "v010")
		header(t, "client response", res.Response.Headers, "x-abi-010-response", "yes")
		if res.Stats.ClearRouteCache != 1 {
			t.Errorf("route cache cleared %d times, want 1 (proxy_clear_route_cache)", res.Stats.ClearRouteCache)
		}
	})
	// abi_010.wat holds its request headers until its body callback calls
	// proxy_continue_request. Envoy's Wasm filter turns that Pause into
	// StopAllIteration, which delivers no body to the filter, and ext_proc
	// does the same: the server withholds the headers answer and Envoy's
	// message timeout ends the request. Pinned so that a change is noticed.
	t.Run("abi_010_pause_until_body", func(t *testing.T) {
		s := serve(t, fixture("abi_010"), host.Config{Name: "abi_010", PluginConfig: []byte("v010")})
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		res, err := envoytest.Do(ctx, s.conn, bufferedBodies, request("POST", "/v010", []string{"x"}))
		if err != nil {
			t.Fatal(err)
		}
		if res.Request.Sent || res.LocalReply == nil || res.Stats.MessageTimeouts != 1 {
			t.Errorf("forwarded %v, local reply %+v, timeouts %d", res.Request.Sent, res.LocalReply, res.Stats.MessageTimeouts)
		}
	})
	t.Run("no_abi_marker", func(t *testing.T) {
		s := serve(t, fixture("no_abi_marker"), host.Config{Name: "no_abi_marker", PluginConfig: []byte("pre")})
		if !strings.Contains(s.logs.String(), "no ABI marker exported") || !strings.Contains(s.logs.String(), "level=WARN") {
			t.Errorf("no load warning:\n%s", s.logs)
		}
		res := s.do(t, envoytest.Config{}, request("GET", "/pre", nil))
		header(t, "upstream request", res.Request.Headers, "x-pre-abi", "yes")
	})
	t.Run("start_only", func(t *testing.T) {
		s := serve(t, fixture("start_only"), host.Config{Name: "start_only"})
		res := s.do(t, envoytest.Config{}, request("GET", "/start", nil, "x-in", "copied"))
		header(t, "client response", res.Response.Headers, "x-out", "copied")
	})
	t.Run("malloc_only", func(t *testing.T) {
		s := serve(t, fixture("malloc_only"), host.Config{Name: "malloc_only"})
		res := s.do(t, envoytest.Config{}, request("GET", "/malloc", nil))
		header(t, "client response", res.Response.Headers, "x-allocate", "dvia-malloc")
	})
}
