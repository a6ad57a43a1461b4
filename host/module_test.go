package host

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/wasm-callout/wasm-callout/abi"
)

func readFixture(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name+".wasm"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Each shape of module real toolchains produce loads and runs.
func TestLoadShapes(t *testing.T) {
	tests := []struct {
		name      string
		cfg       Config
		abi       abi.Version
		arity     int
		allocator string
		entry     []string
		toolchain string
		run       func(t *testing.T, p *Plugin)
	}{
		{name: "no_entry", abi: abi.Version021, arity: 3, allocator: "malloc", toolchain: "unknown",
			run: func(t *testing.T, p *Plugin) {
				s, _ := p.NewHTTPStream(nil)
				defer s.Close()
				if r := s.RequestHeaders(kv(":path", "/"), true); r.Action != abi.ActionContinue || r.Failure != nil {
					t.Errorf("%+v", r)
				}
			}},
		{name: "malloc_only", abi: abi.Version021, arity: 3, allocator: "malloc", entry: []string{"_initialize"}, toolchain: "C++ (Emscripten)",
			run: func(t *testing.T, p *Plugin) {
				s, _ := p.NewHTTPStream(nil)
				defer s.Close()
				s.ResponseHeaders(kv(":status", "200"), true)
				if v, _ := s.Headers(abi.MapHTTPResponseHeaders).Get("x-allocate"); v != "dvia-malloc" {
					t.Errorf("header = %q", v)
				}
			}},
		{name: "start_only", abi: abi.Version020, arity: 3, allocator: "proxy_on_memory_allocate", entry: []string{"_start"}, toolchain: "TinyGo",
			run: func(t *testing.T, p *Plugin) {
				s, _ := p.NewHTTPStream(nil)
				defer s.Close()
				if r := s.RequestHeaders(kv("x-in", "copied"), false); r.Action != abi.ActionContinue {
					t.Errorf("malloc was used although proxy_on_memory_allocate is exported: %+v", r)
				}
				s.ResponseHeaders(kv(":status", "200"), true)
				if v, _ := s.Headers(abi.MapHTTPResponseHeaders).Get("x-out"); v != "copied" {
					t.Errorf("x-out = %q", v)
				}
			}},
		{name: "abi_010", cfg: Config{PluginConfig: []byte("v010")}, abi: abi.Version010, arity: 2, allocator: "malloc", toolchain: "unknown",
			run: func(t *testing.T, p *Plugin) {
				s, _ := p.NewHTTPStream(nil)
				defer s.Close()
				r := s.RequestHeaders(kv(":path", "/"), false)
				if r.Action != abi.ActionPause || !r.ClearRouteCache {
					t.Errorf("headers: %+v", r)
				}
				// proxy_continue_request inside the body callback resumes
				// the request once the callback returns.
				if r := s.RequestBody([]byte("x"), true); r.Action != abi.ActionContinue || string(r.Body) != "x" {
					t.Errorf("body: %+v", r)
				}
				ev := s.TakeEvents()
				if r := s.ResponseHeaders(kv(":status", "200"), false); r.Action != abi.ActionContinue {
					t.Errorf("response headers: %+v (events %+v)", r, ev)
				}
			}},
		{name: "wasi_unstable", abi: abi.Version020, arity: 3, allocator: "proxy_on_memory_allocate", toolchain: "unknown"},
		{name: "lifecycle", abi: abi.Version021, arity: 3, allocator: "proxy_on_memory_allocate", entry: []string{"_initialize"}, toolchain: "unknown"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{level: slog.LevelInfo}
			tc.cfg.Logger = slog.New(rec)
			tc.cfg.Instances = 1
			p := loadFile(t, tc.name, tc.cfg)
			info := p.Info()
			if info.ABI != tc.abi || info.HeaderArity != tc.arity || info.Allocator != tc.allocator ||
				!reflect.DeepEqual(info.Entry, tc.entry) || info.Toolchain != tc.toolchain {
				t.Errorf("info = ABI %s arity %d allocator %s entry %v toolchain %q", info.ABI, info.HeaderArity, info.Allocator, info.Entry, info.Toolchain)
			}
			if tc.run != nil {
				tc.run(t, p)
			}
			if tc.name == "wasi_unstable" {
				got := strings.Join(rec.messages(), "|")
				if !strings.Contains(got, "INFO hello from wasi_unstable") || !strings.Contains(got, "ERROR oops") {
					t.Errorf("fd_write did not reach the plugin log: %q", got)
				}
			}
		})
	}
}

// An empty configuration reads back as OK with nothing in it (the fixture's
// on_configure checks); a non-empty one makes it refuse.
func TestEmptyConfiguration(t *testing.T) {
	loadFile(t, "lifecycle", Config{Instances: 1})
	_, err := Load(context.Background(), readFixture(t, "lifecycle"), Config{Instances: 1, PluginConfig: []byte("x"), Logger: quietLogger()})
	if err == nil || !strings.Contains(err.Error(), "proxy_on_configure returned false") {
		t.Fatalf("err = %v", err)
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name string
		wasm []byte
		cfg  Config
		want []string
	}{
		{name: "not wasm", wasm: []byte("\x00asm garbage"), want: []string{"invalid wasm"}},
		{name: "bad_imports", want: []string{
			"unknown imports (module, name, signature):",
			"(env, proxy_inject_encoded_data_to_filter_chain, (i32,i32)->i32)",
			"(env, proxy_log, (i32,i32)->i32)",
			"(env, memory, memory)",
			"missing allocator",
		}},
		{name: "not_proxy_wasm", want: []string{"missing ABI marker", "missing allocator"}},
		{name: "go_command", want: []string{"Go program built in command mode", "-buildmode=c-shared"}},
		{name: "exits_in_start", want: []string{"_start: the module exited with code 0 during start-up"}},
		{name: "refuses", cfg: Config{VMConfig: []byte("no")}, want: []string{"proxy_on_vm_start returned false"}},
		{name: "refuses", cfg: Config{PluginConfig: []byte("no")}, want: []string{"proxy_on_configure returned false"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			wasm := tc.wasm
			if wasm == nil {
				wasm = readFixture(t, tc.name)
			}
			tc.cfg.Logger = quietLogger()
			tc.cfg.Instances = 2
			p, err := Load(context.Background(), wasm, tc.cfg)
			if err == nil {
				p.Close(context.Background())
				t.Fatal("loaded")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\ndoes not mention %q", err, w)
				}
			}
		})
	}
}

func TestInspect(t *testing.T) {
	info, err := Inspect(context.Background(), readFixture(t, "bad_imports"))
	var lerr *LoadError
	if !errors.As(err, &lerr) || len(lerr.Unknown) != 3 || info == nil {
		t.Fatalf("err = %v, info = %v", err, info)
	}
	info, err = Inspect(context.Background(), readFixture(t, "wasi_unstable"))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]ImportStatus{"fd_write": ImportServed, "clock_time_get": ImportServed, "random_get": ImportServed}
	for _, imp := range info.Imports {
		if imp.Module != abi.ModuleWASIUnstable || want[imp.Name] != imp.Status {
			t.Errorf("import %v: %s", imp, imp.Status)
		}
	}
	info, _ = Inspect(context.Background(), readFixture(t, "hostcalls/proxy_call_foreign_function"))
	if len(info.Imports) != 1 || info.Imports[0].Status != ImportStub {
		t.Errorf("no foreign function is registered, so the import is a stub: %+v", info.Imports)
	}
	if !reflect.DeepEqual(info.Callbacks, []string{abi.OnContextCreate}) {
		t.Errorf("callbacks = %v", info.Callbacks)
	}
}

// Every import name of the reference notes' §1.2 and §1.3 resolves with
// its signature: a module importing them all links.
func TestEveryReferenceImportResolves(t *testing.T) {
	names := map[string]bool{}
	for _, hf := range envFuncs {
		names[hf.name] = true
	}
	for _, n := range []string{
		"proxy_log", "proxy_get_log_level", "proxy_get_current_time_nanoseconds", "proxy_set_tick_period_milliseconds",
		"proxy_set_effective_context", "proxy_done", "proxy_get_configuration",
		"proxy_get_buffer_bytes", "proxy_set_buffer_bytes", "proxy_get_buffer_status",
		"proxy_get_header_map_pairs", "proxy_set_header_map_pairs", "proxy_get_header_map_value",
		"proxy_add_header_map_value", "proxy_replace_header_map_value", "proxy_remove_header_map_value", "proxy_get_header_map_size",
		"proxy_continue_stream", "proxy_close_stream", "proxy_continue_request", "proxy_continue_response", "proxy_clear_route_cache",
		"proxy_send_local_response", "proxy_get_status",
		"proxy_http_call", "proxy_grpc_call", "proxy_grpc_stream", "proxy_grpc_send", "proxy_grpc_cancel", "proxy_grpc_close",
		"proxy_get_shared_data", "proxy_set_shared_data", "proxy_register_shared_queue", "proxy_resolve_shared_queue",
		"proxy_enqueue_shared_queue", "proxy_dequeue_shared_queue",
		"proxy_define_metric", "proxy_increment_metric", "proxy_record_metric", "proxy_get_metric",
		"proxy_get_property", "proxy_set_property", "proxy_call_foreign_function",
		"proxy_dispatch_http_call", "emscripten_notify_memory_growth", "pthread_equal", "abort", "seed",
		// §1.3: the vNEXT draft's names and Envoy's own DNS call.
		"proxy_get_buffer", "proxy_set_buffer", "proxy_resume_stream", "proxy_resume_http_stream",
		"proxy_close_http_stream", "proxy_send_http_response", "proxy_resume_downstream", "proxy_resume_upstream",
		"proxy_resume_http_request", "proxy_resume_http_response", "proxy_context_finalize",
		"proxy_open_shared_kvstore", "proxy_create_timer", "proxy_create_metric", "proxy_dispatch_grpc_call",
		"proxy_open_grpc_stream", "proxy_send_grpc_stream_message", "proxy_cancel_grpc_call",
		"proxy_close_grpc_call", "proxy_call_custom_function", "proxy_get_map_values", "proxy_set_map_values",
		"proxy_remove_metric", "envoy_resolve_dns",
	} {
		if !names[n] {
			t.Errorf("env.%s is not registered", n)
		}
	}
	// The per-function fixtures import each with the signature real SDKs
	// use (§1.4) and all load.
	for _, hf := range envFuncs {
		if _, err := Inspect(context.Background(), readFixture(t, "hostcalls/"+hf.name)); err != nil {
			t.Errorf("%s: %v", hf.name, err)
		}
	}
}

// guessToolchain tells TinyGo from C and C++ when the producers section
// does not (old TinyGo names only clang there) by the exports and imports
// each leaves, and keeps C and C++ shapes that resemble TinyGo's as C/C++.
// Each fixture's .wat says what it stands for.
func TestToolchainShapes(t *testing.T) {
	for _, tc := range []struct {
		fixture, want string
	}{
		{"toolchain_tinygo_clang", "TinyGo"},
		{"toolchain_tinygo_scheduler", "TinyGo"},
		{"toolchain_tinygo_js", "TinyGo"},
		{"start_only", "TinyGo"},
		{"toolchain_cpp_emscripten", "C++ (Emscripten)"},
		{"malloc_only", "C++ (Emscripten)"},
		{"toolchain_c_reactor", "C/C++ (clang)"},
		{"toolchain_c_command", "C/C++ (clang)"},
		{"toolchain_cpp_command", "C/C++ (clang)"},
	} {
		t.Run(tc.fixture, func(t *testing.T) {
			info, _ := Inspect(context.Background(), readFixture(t, tc.fixture))
			if info == nil {
				t.Fatal("the fixture does not compile")
			}
			if info.Toolchain != tc.want {
				t.Errorf("toolchain %q, want %q", info.Toolchain, tc.want)
			}
		})
	}
}
