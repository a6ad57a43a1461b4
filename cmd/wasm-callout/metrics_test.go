package main

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/wasm-callout/wasm-callout/internal/testplugins"
	"github.com/wasm-callout/wasm-callout/server/envoytest"
)

// scrape GETs /metrics from the admin address and parses the text format.
func scrape(t *testing.T, admin string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET /metrics: %d", resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("GET /metrics: Content-Type %q, want the text format", ct)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parsing /metrics: %v", err)
	}
	return fams
}

// sample returns the value of the series of family name whose labels
// include want (counter, gauge, or a histogram's count), and whether the
// family and series exist.
func sample(fams map[string]*dto.MetricFamily, name string, want ...string) (float64, bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.Metric {
		for i := 0; i+1 < len(want); i += 2 {
			found := false
			for _, l := range m.Label {
				if l.GetName() == want[i] && l.GetValue() == want[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		case m.Untyped != nil:
			return m.Untyped.GetValue(), true
		}
	}
	return 0, false
}

// Serving plugins/basic under traffic, the admin listener's /metrics has
// every family the server, the host and the plugin keep, with values that
// follow the traffic, and the plugin's own counter named as Envoy names
// it; the plugin's counter survives a reload.
func TestMetricsEndToEnd(t *testing.T) {
	basic := testplugins.Path(t, "basic")
	addrs, _ := started(t, []string{"grpc", "health", "admin"}, "serve", "--plugin", basic, "--addr", "127.0.0.1:0", "--tls-addr", "",
		"--health-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--log-level", "error", "--instances", "2",
		"--upstream", "authz=http://127.0.0.1:9")

	conn, err := envoytest.Dial(addrs["grpc"])
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	emu, err := envoytest.New(conn, envoytest.Config{NoTranscript: true})
	if err != nil {
		t.Fatal(err)
	}
	const n = 5
	for range n {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		res, err := emu.Do(ctx, &envoytest.Request{Headers: envoytest.H(":method", "GET", ":path", "/", ":authority", "a", ":scheme", "http")})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if v, _ := res.Response.Headers.Get("x-wasm-callout"); v != "basic" {
			t.Fatalf("response not through plugins/basic: %+v", res)
		}
	}

	// The emulator has its answers before each stream's handler returns:
	// scrape until the last stream has ended.
	var fams map[string]*dto.MetricFamily
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		fams = scrape(t, addrs["admin"])
		if v, _ := sample(fams, "wasm_callout_streams_active", "service", "ext_proc"); v == 0 || time.Now().After(deadline) {
			break
		}
	}
	atLeast := func(min float64, name string, labels ...string) {
		t.Helper()
		v, ok := sample(fams, name, labels...)
		if !ok {
			t.Errorf("%s%v: missing", name, labels)
		} else if v < min {
			t.Errorf("%s%v = %v, want at least %v", name, labels, v, min)
		}
	}
	equal := func(want float64, name string, labels ...string) {
		t.Helper()
		if v, ok := sample(fams, name, labels...); !ok || v != want {
			t.Errorf("%s%v = %v (present %v), want %v", name, labels, v, ok, want)
		}
	}
	// Per service.
	atLeast(n, "wasm_callout_streams_started_total", "service", "ext_proc")
	equal(0, "wasm_callout_streams_started_total", "service", "network_ext_proc")
	atLeast(n, "wasm_callout_streams_finished_total", "service", "ext_proc", "outcome", "ok")
	for _, o := range []string{"immediate_response", "plugin_failure", "protocol_error", "limit", "error"} {
		equal(0, "wasm_callout_streams_finished_total", "service", "ext_proc", "outcome", o)
	}
	equal(0, "wasm_callout_streams_active", "service", "ext_proc")
	equal(0, "wasm_callout_streams_active", "service", "network_ext_proc")
	for _, ph := range []string{"request_headers", "response_headers"} {
		atLeast(n, "wasm_callout_messages_total", "service", "ext_proc", "phase", ph)
		atLeast(n, "wasm_callout_message_duration_seconds", "service", "ext_proc", "phase", ph)
	}
	equal(0, "wasm_callout_messages_total", "service", "network_ext_proc", "phase", "read")
	equal(0, "wasm_callout_message_duration_seconds", "service", "network_ext_proc", "phase", "write")
	equal(0, "wasm_callout_message_timeout_overrides_total", "service", "ext_proc")
	for _, r := range []string{"rejected", "ignored", "late"} {
		equal(0, "wasm_callout_header_mutations_dropped_total", "reason", r)
	}
	for _, name := range []string{"wasm_callout_limit_refusals_total", "wasm_callout_streams_shed_total", "wasm_callout_buffered_bytes",
		"wasm_callout_lost_body_bytes_total", "wasm_callout_immediate_responses_total"} {
		equal(0, name)
	}
	// Per plugin.
	equal(2, "wasm_callout_plugin_instances", "plugin", "basic")
	equal(2, "wasm_callout_plugin_instances_healthy", "plugin", "basic")
	equal(0, "wasm_callout_plugin_instances_stalled", "plugin", "basic")
	for _, c := range []string{"trap", "deadline", "memory", "exit"} {
		equal(0, "wasm_callout_plugin_instance_failures_total", "plugin", "basic", "cause", c)
	}
	equal(0, "wasm_callout_plugin_instance_replacements_total", "plugin", "basic")
	atLeast(1<<16, "wasm_callout_plugin_instance_memory_bytes", "plugin", "basic", "instance", "0")
	atLeast(1<<16, "wasm_callout_plugin_instance_memory_bytes", "plugin", "basic", "instance", "1")
	atLeast(n, "wasm_callout_plugin_callback_duration_seconds", "plugin", "basic", "callback", "proxy_on_request_headers")
	atLeast(2, "wasm_callout_plugin_callback_duration_seconds", "plugin", "basic", "callback", "proxy_on_configure")
	equal(1, "wasm_callout_plugin_generation", "plugin", "basic")
	equal(0, "wasm_callout_plugin_reloads_total", "plugin", "basic")
	equal(0, "wasm_callout_plugin_reload_failures_total")
	equal(0, "wasm_callout_plugin_draining_generations")
	equal(0, "wasm_callout_plugin_streams", "plugin", "basic")
	if v, _ := sample(fams, "wasm_callout_plugin_compile_seconds", "plugin", "basic"); v <= 0 {
		t.Errorf("wasm_callout_plugin_compile_seconds = %v, want > 0", v)
	}
	if c, l := fams["wasm_callout_plugin_compile_seconds"], fams["wasm_callout_plugin_load_seconds"]; c == nil || l == nil ||
		l.Metric[0].Gauge.GetValue() < c.Metric[0].Gauge.GetValue() {
		t.Errorf("load time less than compile time: %v %v", c, l)
	}
	// Outbound calls: plugins/basic makes none; the configured cluster's
	// series are there, at zero.
	for _, kind := range []string{"http", "grpc"} {
		for _, o := range []string{"ok", "error", "timeout", "cancelled"} {
			equal(0, "wasm_callout_outbound_calls_total", "cluster", "authz", "kind", kind, "outcome", o)
		}
		equal(0, "wasm_callout_outbound_call_duration_seconds", "cluster", "authz", "kind", kind)
	}
	equal(0, "wasm_callout_outbound_calls_in_flight", "plugin", "basic")
	equal(0, "wasm_callout_outbound_calls_unknown_cluster_total")
	// The plugin's own counter, as Envoy exports wasmcustom.basic_requests_total.
	equal(n, "basic_requests_total")
	if f := fams["basic_requests_total"]; f == nil || f.GetType() != dto.MetricType_COUNTER {
		t.Errorf("basic_requests_total: %v, want a counter", f)
	}
	// Go runtime and process.
	atLeast(1, "go_goroutines")
	atLeast(1, "go_memstats_alloc_bytes")
	atLeast(0, "process_cpu_seconds_total")
	atLeast(1, "process_resident_memory_bytes")

	// A reload keeps the plugin's counter and counts itself.
	req, _ := http.NewRequest("POST", "http://"+addrs["admin"]+"/reload", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("POST /reload on the admin listener: %d", resp.StatusCode)
	}
	fams = scrape(t, addrs["admin"])
	equal(2, "wasm_callout_plugin_generation", "plugin", "basic")
	equal(1, "wasm_callout_plugin_reloads_total", "plugin", "basic")
	equal(n, "basic_requests_total")
	atLeast(n, "wasm_callout_plugin_callback_duration_seconds", "plugin", "basic", "callback", "proxy_on_request_headers")
}

// The health listener serves the probes only, and answers / as /readyz;
// the admin endpoints are on the admin listener.
func TestHealthAndAdminRoutes(t *testing.T) {
	addrs, _ := started(t, []string{"grpc", "health", "admin"}, "serve", "--plugin", edgePlugin, "--addr", "127.0.0.1:0", "--tls-addr", "",
		"--health-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--log-level", "error", "--instances", "1")
	health, admin := "http://"+addrs["health"], "http://"+addrs["admin"]
	for _, tc := range []struct {
		url  string
		want int
	}{
		{health + "/", 200},
		{health + "/healthz", 200},
		{health + "/readyz", 200},
		{health + "/metrics", 404},
		{health + "/plugin", 404},
		{health + "/other", 404},
		{admin + "/metrics", 200},
		{admin + "/plugin", 200},
		{admin + "/debug/pprof/", 404}, // only with --admin-pprof
	} {
		if got := httpStatus(t, tc.url); got != tc.want {
			t.Errorf("GET %s: %d, want %d", tc.url, got, tc.want)
		}
	}
	resp, err := http.Post(health+"/reload", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 && resp.StatusCode != 405 {
		t.Errorf("POST /reload on the health listener: %d, want it not served", resp.StatusCode)
	}
}

// An admin listener beyond loopback needs a token file; with one, every
// admin request must carry the token, which is re-read when the file
// changes.
func TestAdminToken(t *testing.T) {
	dir := t.TempDir()
	for _, addr := range []string{":0", "0.0.0.0:0", "[::]:0", "example.com:9901"} {
		err := run(context.Background(), []string{"--plugin", edgePlugin, "--addr", "127.0.0.1:0", "--health-addr", "", "--admin-addr", addr},
			io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "--admin-token-file") {
			t.Errorf("--admin-addr %s without a token: %v, want a refusal naming --admin-token-file", addr, err)
		}
	}
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, []byte("\n"), 0o600)
	err := run(context.Background(), []string{"--plugin", edgePlugin, "--addr", "127.0.0.1:0", "--health-addr", "",
		"--admin-addr", "127.0.0.1:0", "--admin-token-file", empty}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "empty") {
		t.Errorf("empty token file: %v", err)
	}

	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addrs, _ := started(t, []string{"grpc", "admin"}, "serve", "--plugin", edgePlugin, "--addr", "127.0.0.1:0", "--tls-addr", "",
		"--health-addr", "", "--admin-addr", "127.0.0.1:0", "--admin-token-file", tokenFile, "--admin-pprof",
		"--log-level", "error", "--instances", "1")
	get := func(path, auth string) int {
		t.Helper()
		req, _ := http.NewRequest("GET", "http://"+addrs["admin"]+path, nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, tc := range []struct {
		path, auth string
		want       int
	}{
		{"/metrics", "", 401},
		{"/metrics", "Bearer wrong", 401},
		{"/metrics", "Basic s3cret", 401},
		{"/metrics", "Bearer s3cret", 200},
		{"/metrics", "bearer s3cret", 200},
		{"/plugin", "", 401},
		{"/plugin", "Bearer s3cret", 200},
		{"/debug/pprof/", "", 401},
		{"/debug/pprof/", "Bearer s3cret", 200},
	} {
		if got := get(tc.path, tc.auth); got != tc.want {
			t.Errorf("GET %s with %q: %d, want %d", tc.path, tc.auth, got, tc.want)
		}
	}
	// Rotation: the new token works once the file changes (checked at most
	// once a second), and the old one stops working.
	if err := os.WriteFile(tokenFile, []byte("rotated-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for get("/metrics", "Bearer rotated-token") != 200 {
		if time.Now().After(deadline) {
			t.Fatal("the rotated token was never accepted")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got := get("/metrics", "Bearer s3cret"); got != 401 {
		t.Errorf("old token after rotation: %d, want 401", got)
	}
}

type io_discard struct{}

func (io_discard) Write(p []byte) (int, error) { return len(p), nil }
