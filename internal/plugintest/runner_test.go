package plugintest

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/wasm-callout/wasm-callout/internal/testplugins"
)

// cacheDir is the compilation cache the package's tests share.
var cacheDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "plugintest-cache")
	if err != nil {
		panic(err)
	}
	cacheDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func runSpec(t *testing.T, plugin, path string, opts Options) []Result {
	t.Helper()
	wasm, err := os.ReadFile(testplugins.Path(t, plugin))
	if err != nil {
		t.Fatal(err)
	}
	spec, err := ReadSpec(path)
	if err != nil {
		t.Fatal(err)
	}
	opts.Wasm, opts.CacheDir = wasm, cacheDir
	if opts.BenchTime == 0 {
		opts.BenchTime = 10 * time.Millisecond
	}
	return RunSpec(context.Background(), spec, opts)
}

// The specs of the repository's plugins pass, run directly and through
// the ext_proc server and Envoy emulator.
func TestSpecsPass(t *testing.T) {
	specs := []struct{ plugin, path string }{
		{"basic", "../../plugins/basic/tests.textpb"},
		{"testbed", "testdata/testbed.textpb"},
		{"testbed", "testdata/testbed.yaml"},
	}
	for _, sp := range specs {
		for _, through := range []bool{false, true} {
			name := filepath.Base(sp.path)
			if through {
				name += "/through-ext-proc"
			}
			t.Run(name, func(t *testing.T) {
				results := runSpec(t, sp.plugin, sp.path, Options{ThroughExtProc: through})
				if len(results) == 0 {
					t.Fatal("no tests ran")
				}
				for _, r := range results {
					if !r.Passed {
						t.Errorf("%s failed:\n%s", r.Name, strings.Join(r.Failures, "\n"))
					}
				}
			})
		}
	}
}

// Wrong expectations fail, each with a message that says what differed.
func TestWrongExpectationsFail(t *testing.T) {
	want := map[string][]string{
		"WrongHeaderValue": {`[request_headers] header "a": want "2", found "1"`},
		"MissingHeader":    {`[request_headers] header "x-nope": want "1", found no such header (headers: :path)`},
		"HeaderNotRemoved": {`[request_headers] header "x-keep": want it absent, found "k"`},
		"WrongBody": {`[request_body] want a body matching exact "HELLO_WORLD", found "HELLO WORLD"; ` +
			`first difference at byte 5: want "_WORLD", got " WORLD"`},
		"ExpectedImmediate":    {`[request_headers] want an immediate reply, the plugin continued`},
		"WrongImmediateStatus": {`[request_headers] immediate reply: want HTTP status 401, got 403`, `[request_headers] immediate reply: want gRPC status 7, got none`},
		"NotRunAfterLocalReply": {`[response_headers] not run: the plugin replied locally (403) in request_headers, ` +
			`so this phase's expectations cannot hold`},
		"MissingLog":    {`[plugin_init] want a log line matching regex "testbed: stopped.*", found "testbed: started (tick_ms=0)"`},
		"UnexpectedLog": {`[plugin_init] want no log line matching regex "testbed: started.*", found "testbed: started (tick_ms=0)"`},
	}
	results := runSpec(t, "testbed", "testdata/wrong.textpb", Options{})
	if len(results) != len(want) {
		t.Fatalf("%d results, want %d", len(results), len(want))
	}
	for _, r := range results {
		if r.Passed {
			t.Errorf("%s passed", r.Name)
			continue
		}
		if got, w := strings.Join(r.Failures, "\n"), strings.Join(want[r.Name], "\n"); got != w {
			t.Errorf("%s failures:\n%s\nwant:\n%s", r.Name, got, w)
		}
	}
	sum := Summarize(results)
	var b strings.Builder
	sum.WriteText(&b)
	if !strings.HasSuffix(b.String(), "0 passed, 9 failed\n") {
		t.Errorf("report does not end with the count:\n%s", b.String())
	}
}

func writeSpec(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "tests.textpb")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// --limits gcp names what Google's platform would refuse.
func TestLimitsGCP(t *testing.T) {
	spec := writeSpec(t, `test {
  name: "SharedData"
  request_headers { input { header { key: ":path" value: "/" } header { key: "x-testbed" value: "shared-data" } } }
  response_headers { input { header { key: ":status" value: "200" } } }
}`)
	results := runSpec(t, "testbed", spec, Options{Limits: GCP})
	if len(results) != 1 || results[0].Passed {
		t.Fatalf("results %+v, want one failure", results)
	}
	got := strings.Join(results[0].Failures, "\n")
	for _, w := range []string{
		"[limits gcp] module and configuration are ",
		"[limits gcp] uses custom metrics, which the platform does not offer: proxy_define_metric in plugin_init, proxy_increment_metric in request_headers",
		"[limits gcp] uses shared data, which the platform does not offer: proxy_get_shared_data in request_headers, proxy_set_shared_data in request_headers",
		"[limits gcp] uses shared queues, which the platform does not offer: proxy_register_shared_queue in plugin_init",
	} {
		if !strings.Contains(got, w) {
			t.Errorf("failures lack %q:\n%s", w, got)
		}
	}
	// Without limits the same test passes.
	if r := runSpec(t, "testbed", spec, Options{}); !r[0].Passed {
		t.Errorf("without limits: %q", r[0].Failures)
	}
}

// --run picks tests by name; a benchmark reports a time per phase.
func TestRunFilterAndBenchmark(t *testing.T) {
	results := runSpec(t, "basic", "../../plugins/basic/tests.textpb", Options{Run: regexp.MustCompile("^Bench")})
	if len(results) != 1 || results[0].Name != "Benchmark" || !results[0].Passed {
		t.Fatalf("results %+v, want the one benchmark passing", results)
	}
	b := results[0].Bench
	if b == nil || b.Iterations < 1 {
		t.Fatalf("bench %+v", b)
	}
	var phases []string
	for _, p := range b.Phases {
		phases = append(phases, p.Phase)
	}
	if got := strings.Join(phases, ","); got != "stream,request_headers,response_headers" {
		t.Errorf("bench phases %s", got)
	}
	results = runSpec(t, "basic", "../../plugins/basic/tests.textpb", Options{Run: regexp.MustCompile("^Bench"), ThroughExtProc: true})
	if len(results) != 1 || !results[0].Passed || results[0].Bench == nil ||
		strings.Join(results[0].Notes, "") != "the benchmark ran on the host directly, not through ext_proc" {
		t.Errorf("through ext_proc: %+v", results)
	}
}

// A plugin that fails to start fails the test at plugin_init with its logs.
func TestPluginInitFailure(t *testing.T) {
	spec := writeSpec(t, `test { name: "BadConfig" plugin_init { log { regex: "basic: invalid configuration line 1.*" } } }`)
	results := runSpec(t, "basic", spec, Options{PluginConfig: []byte("no colon here"), HasPluginConfig: true})
	if len(results) != 1 || results[0].Passed {
		t.Fatalf("results %+v, want one failure", results)
	}
	if f := results[0].Failures; len(f) != 1 || !strings.HasPrefix(f[0], "[plugin_init] the plugin failed to start: ") ||
		!strings.Contains(f[0], `basic: invalid configuration line 1 "no colon here"`) {
		t.Errorf("failures %q", f)
	}
}

// env.log_path receives each test's plugin lines between markers.
func TestLogPath(t *testing.T) {
	logFile := filepath.Join(t.TempDir(), "plugin.log")
	spec := writeSpec(t, `env { log_level: DEBUG log_path: "`+logFile+`" }
test {
  name: "One"
  request_headers { input { header { key: ":method" value: "GET" } header { key: ":path" value: "/x" } } }
}`)
	if r := runSpec(t, "basic", spec, Options{}); len(r) != 1 || !r[0].Passed {
		t.Fatalf("results %+v", r)
	}
	got, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	want := "--- Starting test: One ---\nbasic: adding 1 response header(s)\nbasic: request GET /x\n--- Finished test: One ---\n"
	if string(got) != want {
		t.Errorf("log file:\n%s\nwant:\n%s", got, want)
	}
}
