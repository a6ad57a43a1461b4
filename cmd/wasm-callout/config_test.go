package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wasm-callout/wasm-callout/internal/testplugins"
	"github.com/wasm-callout/wasm-callout/server"
	"github.com/wasm-callout/wasm-callout/server/envoytest"
)

// issueConfig is the configuration of issue 17, which must keep working,
// plus a second chain.
const issueConfig = `plugins:
  - name: tag
    file: %s
    config: "x-first: 1"
  - name: tag2
    file: %s
    config: "x-second: %s"
chains:
  default: [%s]
  second-only: [tag2]
`

// chainHeaders plays one request through the named chain ("" for the
// default) and returns the response's x-first and x-second.
func (s *serving) chainHeaders(t *testing.T, chain string) (first, second string) {
	t.Helper()
	var md map[string]string
	if chain != "" {
		md = map[string]string{server.ChainMetadataKey: chain}
	}
	conn, err := envoytest.Dial(s.grpc)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := envoytest.Do(ctx, conn, envoytest.Config{NoTranscript: true, InitialMetadata: md},
		&envoytest.Request{Headers: envoytest.H(":method", "GET", ":path", "/", ":authority", "a", ":scheme", "http")})
	if err != nil {
		t.Fatal(err)
	}
	if res.LocalReply != nil {
		t.Fatalf("local reply %+v", res.LocalReply)
	}
	first, _ = res.Response.Headers.Get("x-first")
	second, _ = res.Response.Headers.Get("x-second")
	return first, second
}

// configStatus is the --config part of GET /plugin.
type configStatus struct {
	Chains       map[string][]string `json:"chains"`
	DefaultChain string              `json:"default_chain"`
	Plugins      []struct {
		Name       string `json:"name"`
		Generation uint64 `json:"generation"`
	} `json:"plugins"`
}

func (s *serving) configStatus(t *testing.T, method, path string) (int, configStatus) {
	t.Helper()
	req, _ := http.NewRequest(method, "http://"+s.adminAddr+path, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var st configStatus
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, b)
	}
	return resp.StatusCode, st
}

func (st configStatus) generations() string {
	var out []string
	for _, p := range st.Plugins {
		out = append(out, fmt.Sprintf("%s=%d", p.Name, p.Generation))
	}
	return strings.Join(out, " ")
}

// TestConfigFile serves the issue's configuration, selects a chain per
// stream, and reloads the file: a chain edit applies to new streams
// without reloading any plugin; a plugin edit reloads that plugin only.
func TestConfigFile(t *testing.T) {
	basic := testplugins.Path(t, "basic")
	path := filepath.Join(t.TempDir(), "wasm-callout.yaml")
	write(t, path, fmt.Sprintf(issueConfig, basic, basic, "2", "tag, tag2"))
	s := startServing(t, "--config", path, "--compilation-cache", filepath.Join(t.TempDir(), "cache"))

	if f, sec := s.chainHeaders(t, ""); f != "1" || sec != "2" {
		t.Errorf("default chain: x-first %q x-second %q, want 1 and 2", f, sec)
	}
	if f, sec := s.chainHeaders(t, "second-only"); f != "" || sec != "2" {
		t.Errorf("second-only: x-first %q x-second %q, want none and 2", f, sec)
	}

	// A chain edit: no plugin reloads.
	write(t, path, fmt.Sprintf(issueConfig, basic, basic, "2", "tag"))
	code, st := s.configStatus(t, "POST", "/reload")
	if code != http.StatusOK || st.generations() != "tag=1 tag2=1" || len(st.Chains["default"]) != 1 {
		t.Fatalf("reload after a chain edit: %d %+v", code, st)
	}
	if f, sec := s.chainHeaders(t, ""); f != "1" || sec != "" {
		t.Errorf("edited default chain: x-first %q x-second %q, want 1 and none", f, sec)
	}

	// A plugin edit: that plugin alone gets a new generation.
	write(t, path, fmt.Sprintf(issueConfig, basic, basic, "3", "tag, tag2"))
	code, st = s.configStatus(t, "POST", "/reload")
	if code != http.StatusOK || st.generations() != "tag=1 tag2=2" {
		t.Fatalf("reload after a plugin edit: %d %+v", code, st)
	}
	if f, sec := s.chainHeaders(t, ""); f != "1" || sec != "3" {
		t.Errorf("after the plugin edit: x-first %q x-second %q, want 1 and 3", f, sec)
	}

	// A broken file keeps what serves.
	write(t, path, "plugins: [{name: x, file: nowhere.wasm, colour: blue}]\n")
	if code, _ := s.configStatus(t, "POST", "/reload"); code != http.StatusUnprocessableEntity {
		t.Errorf("reload of a broken file: %d, want 422", code)
	}
	if f, sec := s.chainHeaders(t, ""); f != "1" || sec != "3" {
		t.Errorf("after a failed reload: x-first %q x-second %q, want 1 and 3", f, sec)
	}

	// Metrics tell the plugins apart: the host's families by their plugin
	// label, and the plugin-defined ones too once there are several.
	fams := scrape(t, s.adminAddr)
	for _, name := range []string{"tag", "tag2"} {
		if v, ok := sample(fams, "basic_requests_total", "plugin", name); !ok || v == 0 {
			t.Errorf("basic_requests_total{plugin=%q} = %v (present %v), want requests counted", name, v, ok)
		}
		if v, ok := sample(fams, "wasm_callout_plugin_instances_healthy", "plugin", name); !ok || v == 0 {
			t.Errorf("wasm_callout_plugin_instances_healthy{plugin=%q} = %v (present %v)", name, v, ok)
		}
	}
	for _, chain := range []string{"default", "second-only"} {
		if v, ok := sample(fams, "wasm_callout_chain_streams_total", "chain", chain); !ok || v == 0 {
			t.Errorf("wasm_callout_chain_streams_total{chain=%q} = %v (present %v), want streams counted", chain, v, ok)
		}
	}
	if v, _ := sample(fams, "wasm_callout_plugin_generation", "plugin", "tag2"); v != 2 {
		t.Errorf("wasm_callout_plugin_generation{plugin=tag2} = %v, want 2", v)
	}
	if v, _ := sample(fams, "wasm_callout_plugin_reloads_total", "plugin", "tag"); v != 0 {
		t.Errorf("wasm_callout_plugin_reloads_total{plugin=tag} = %v, want 0 (only tag2 reloaded)", v)
	}
}

func TestConfigFileErrors(t *testing.T) {
	dir := t.TempDir()
	file := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	wasm := "../../server/testdata/gentag.wasm"
	abs, _ := filepath.Abs(wasm)
	tests := []struct {
		name, content, want string
	}{
		{"unknown_field", "plugins:\n  - name: a\n    file: " + abs + "\n    colour: blue\n", "field colour not found"},
		{"unknown_top", "plugins: []\nchain: {}\n", "field chain not found"},
		{"no_plugins", "chains: {default: [a]}\n", "no plugins"},
		{"no_name", "plugins: [{file: x.wasm}]\n", "plugins[0]: no name"},
		{"duplicate", "plugins: [{name: a, file: x.wasm}, {name: a, file: y.wasm}]\n", `two plugins named "a"`},
		{"unknown_member", "plugins: [{name: a, file: x.wasm}]\nchains: {default: [a, b]}\n", `chain "default": no plugin named "b"`},
		{"no_default", "plugins: [{name: a, file: x.wasm}]\nchains: {main: [a]}\n", `no chain named "default"`},
		{"several_no_chains", "plugins: [{name: a, file: x.wasm}, {name: b, file: x.wasm}]\n", "no chains"},
		{"bad_policy", "plugins: [{name: a, file: x.wasm, failure_policy: maybe}]\n", "failure_policy"},
		{"bad_duration", "plugins: [{name: a, file: x.wasm, call_timeout: soon}]\n", "line 1: cannot unmarshal !!str `soon` into time.Duration"},
		{"missing_file", "plugins: [{name: a, file: missing.wasm}]\n", "missing.wasm"},
		{"bad_status", "plugins: [{name: a, file: " + abs + ", config: x, failure_status: 42}]\n", "failure_status 42"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := []string{"--config", file(tt.name+".yaml", tt.content), "--addr", "127.0.0.1:0", "--health-addr", ""}
			err := run(context.Background(), withoutAdmin(args), io.Discard, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want one mentioning %q", err, tt.want)
			}
		})
	}
	err := run(context.Background(), []string{"--config", "x.yaml", "--plugin", wasm}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "--plugin and --config") {
		t.Errorf("--plugin with --config: %v", err)
	}
}
