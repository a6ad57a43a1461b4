package waf

import (
	"context"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/wasm-callout/wasm-callout/host"
	"github.com/wasm-callout/wasm-callout/internal/testutil"
)

// The end-to-end tests run plugins/bin/waf.wasm (make plugins/bin/waf.wasm)
// in the host with one instance: loading it parses the whole CRS in wasm,
// which takes seconds, so the main module's go test ./... does not run
// them; make test-waf does.

var (
	e2eOnce   sync.Once
	e2ePlugin *host.Plugin
	e2eLogs   *testutil.SyncBuffer
	e2eErr    error
)

// e2e loads the plugin once for every end-to-end test.
func e2e(t *testing.T) (*host.Plugin, *testutil.SyncBuffer) {
	t.Helper()
	e2eOnce.Do(func() {
		wasmBytes, err := os.ReadFile(*wasmPath)
		if err != nil {
			e2eErr = err
			return
		}
		cfg := hostConfig(t)
		cfg.Instances = 1
		e2eLogs = &testutil.SyncBuffer{}
		cfg.Logger = slog.New(slog.NewTextHandler(e2eLogs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		e2ePlugin, e2eErr = host.Load(context.Background(), wasmBytes, cfg)
	})
	if e2eErr != nil {
		t.Fatalf("loading the plugin (make plugins/bin/waf.wasm): %v", e2eErr)
	}
	return e2ePlugin, e2eLogs
}

// TestWAF sends real requests, with their responses, through the plugin
// and checks each answer, the log line of each block and its metric.
func TestWAF(t *testing.T) {
	p, logs := e2e(t)
	tests := []struct {
		name         string
		headers      [][2]string
		body         string
		respType     string
		respBody     string
		wantStatus   uint32 // 0: passes
		wantRule     string // in the block's log line
		wantMetric   string
		wantInResult string
	}{
		{name: "clean GET", headers: hdrs("GET", "/products/42?color=blue")},
		{name: "clean POST", headers: hdrs("POST", "/form", "content-type", "application/x-www-form-urlencoded"), body: "name=alice&comment=hello+there"},
		{name: "XSS in the query", headers: hdrs("GET", "/search?q=<script>alert(1)</script>"), wantStatus: 403,
			wantRule: "941100", wantMetric: "waf_requests_blocked.rule_id=949111.phase=http_request_headers"},
		{name: "SQL injection in the query", headers: hdrs("GET", "/item?id=1%27%20OR%20%271%27=%271"), wantStatus: 403,
			wantRule: "942100", wantMetric: "waf_requests_blocked.rule_id=949111.phase=http_request_headers"},
		{name: "SQL injection in the body", headers: hdrs("POST", "/form", "content-type", "application/x-www-form-urlencoded"),
			body: "id=1%27%20UNION%20SELECT%20password%20FROM%20users--%20", wantStatus: 403,
			wantRule: "942100", wantMetric: "waf_requests_blocked.rule_id=949110.phase=http_request_body"},
		{name: "SQL error leaking in the response", headers: hdrs("GET", "/report"), respType: "text/html",
			respBody:   "<p>You have an error in your SQL syntax; check the manual that corresponds to your MySQL server version</p>",
			wantStatus: 403, wantRule: "951230", wantMetric: "waf_requests_blocked.rule_id=959100.phase=http_response_body"},
		{name: "per-authority set", headers: withAuthority(hdrs("GET", "/admin"), "custom.example"), wantStatus: 401,
			wantRule: "101", wantMetric: "waf_requests_blocked.rule_id=101.phase=http_request_headers"},
		{name: "per-authority set, host with port", headers: withAuthority(hdrs("GET", "/admin"), "custom.example:8443"), wantStatus: 401,
			wantRule: "101"},
		{name: "per-authority set has no CRS", headers: withAuthority(hdrs("GET", "/search?q=<script>alert(1)</script>"), "custom.example")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := metric(p, tc.wantMetric)
			status, body := exchange(t, p, tc.headers, tc.body, tc.respType, tc.respBody)
			if status != tc.wantStatus {
				t.Fatalf("answered %d, want %d (0: passed); log:\n%s", status, tc.wantStatus, tail(logs.String()))
			}
			if tc.wantStatus == 0 {
				return
			}
			if !strings.Contains(body, "blocked by the web application firewall") {
				t.Errorf("body %q", body)
			}
			found := false
			for _, line := range strings.Split(logs.String(), "\n") {
				found = found || strings.Contains(line, "waf: blocked") && strings.Contains(line, tc.wantRule)
			}
			if !found {
				t.Errorf("no block logged naming rule %s; log:\n%s", tc.wantRule, tail(logs.String()))
			}
			if tc.wantMetric != "" {
				if after := metric(p, tc.wantMetric); after != before+1 {
					t.Errorf("metric %q went from %d to %d, want +1", tc.wantMetric, before, after)
				}
			}
		})
	}
}

func withAuthority(h [][2]string, authority string) [][2]string {
	h[0] = [2]string{":authority", authority}
	return h
}

// exchange sends a request and, if it passes, a response; it returns the
// local response's status and body, or 0 when everything passed.
func exchange(t *testing.T, p *host.Plugin, headers [][2]string, reqBody, respType, respBody string) (uint32, string) {
	s, err := p.NewHTTPStream(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	check := func(r host.Result) (uint32, string, bool) {
		if r.Failure != nil {
			t.Fatalf("plugin failure: %v", r.Failure)
		}
		if r.LocalResponse != nil {
			return r.LocalResponse.Status, string(r.LocalResponse.Body), true
		}
		return 0, "", false
	}
	if st, b, done := check(s.RequestHeaders(pairs(headers), reqBody == "")); done {
		return st, b
	}
	if reqBody != "" {
		if st, b, done := check(s.RequestBody([]byte(reqBody), true)); done {
			return st, b
		}
	}
	if respType == "" {
		respType, respBody = "text/html; charset=utf-8", responseBody
	}
	if st, b, done := check(s.ResponseHeaders(pairs([][2]string{{":status", "200"}, {"content-type", respType}}), false)); done {
		return st, b
	}
	st, b, _ := check(s.ResponseBody([]byte(respBody), true))
	return st, b
}

// metric returns the value of the counter whose name contains part.
func metric(p *host.Plugin, part string) uint64 {
	if part == "" {
		return 0
	}
	var v uint64
	for _, m := range p.Metrics().Snapshot() {
		if strings.Contains(m.Name, part) {
			v += m.Counter
		}
	}
	return v
}

func tail(s string) string {
	if len(s) > 3000 {
		return "…" + s[len(s)-3000:]
	}
	return s
}

// TestBadConfig checks that a configuration the plugin cannot use fails
// its start, with the reason in the log.
func TestBadConfig(t *testing.T) {
	wasmBytes, err := os.ReadFile(*wasmPath)
	if err != nil {
		t.Skipf("no plugin: %v", err)
	}
	tests := []struct{ name, config, wantLog string }{
		{"not JSON", `{"directives_map":`, "configuration is not valid JSON"},
		{"unknown default set", `{"directives_map":{"a":[]},"default_directives":"b"}`, `default_directives: no directive set \"b\"`},
		{"bad directive", `{"directives_map":{"a":["SecRuleEngine On","SecNoSuchThing 1"]},"default_directives":"a"}`, `directive set \"a\"`},
		{"missing include", `{"directives_map":{"a":["Include @no-such-conf"]},"default_directives":"a"}`, `directive set \"a\"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			logs := &testutil.SyncBuffer{}
			cfg := hostConfig(t)
			cfg.Instances = 1
			cfg.PluginConfig = []byte(tc.config)
			cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
			p, err := host.Load(context.Background(), wasmBytes, cfg)
			if err == nil {
				p.Close(context.Background())
				t.Fatal("plugin started")
			}
			if !strings.Contains(logs.String(), tc.wantLog) {
				t.Errorf("load error %v; log does not name %q:\n%s", err, tc.wantLog, logs.String())
			}
		})
	}
}
