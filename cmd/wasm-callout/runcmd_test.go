package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wasm-callout/wasm-callout/internal/cliflags"
	"github.com/wasm-callout/wasm-callout/internal/testplugins"
)

// toolTestCache is the compilation cache the run and test subcommand tests
// share (the subcommands default to the user's cache directory).
var toolTestCache = filepath.Join(os.TempDir(), "wasm-callout-cmd-test-cache")

// runTool runs a subcommand and returns its output and exit code.
func runTool(t *testing.T, stdin string, args ...string) (string, int) {
	t.Helper()
	var out, errOut bytes.Buffer
	var err error
	rest := append([]string{"--compilation-cache", toolTestCache}, args[1:]...)
	if args[0] == "run" {
		err = runCmd(context.Background(), rest, strings.NewReader(stdin), &out, &errOut)
	} else {
		err = run(context.Background(), append([]string{args[0]}, rest...), &out, &errOut)
	}
	code := cliflags.ExitCode(err)
	if err != nil {
		var ee *exitError
		if !errors.As(err, &ee) && code != 2 {
			t.Fatalf("%v: %v\n%s", args, err, errOut.String())
		}
		if ee == nil || ee.msg != "" {
			out.WriteString(err.Error())
		}
	}
	return out.String() + errOut.String(), code
}

func TestRunCommand(t *testing.T) {
	basic := testplugins.Path(t, "basic")
	testbed := testplugins.Path(t, "testbed")
	tcp := testplugins.Path(t, "tcp-count")
	raw := filepath.Join(t.TempDir(), "req.http")
	if err := os.WriteFile(raw, []byte("POST /up HTTP/1.1\r\nHost: a.example\r\nx-testbed: buffer-body\r\n\r\nhello world"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		stdin string
		args  []string
		code  int
		want  []string
	}{
		{name: "basic adds its header", args: []string{"run", "--plugin", basic, "-H", "x-a: 1", "http://example.com/hi"}, want: []string{
			"== plugin_init", "log info  basic: adding 1 response header(s)",
			"== request_headers", "     :path: /hi", "     x-a: 1", "log debug basic: request GET /hi", "metric counter basic_requests_total +1",
			"== response_headers", "   changed:\n     + x-wasm-callout: basic",
			"result: the request went upstream and the response back to the client (exit 0)",
		}},
		{name: "configured headers", args: []string{"run", "--plugin", basic, "--plugin-config", "x-one: 1\nx-two: 2", "--response-header", "x-one: 0"},
			want: []string{"~ x-one: 0, 1 (was 0)", "+ x-two: 2", "basic: adding 2 response header(s)"}},
		{name: "host calls with -v", args: []string{"run", "--plugin", basic, "-v"},
			want: []string{"call → proxy_on_request_headers(2, 4, 1)", "call proxy_add_header_map_value(2, "}},
		{name: "local reply exits 1", args: []string{"run", "--plugin", testbed, "-H", "x-testbed: local-reply"}, code: 1,
			want: []string{"local reply 403", "x-testbed-reply: local", `body: "denied by testbed\n"`, "result: the plugin answered locally in request_headers (exit 1)"}},
		{name: "raw request, body in chunks", args: []string{"run", "--plugin", testbed, "--raw", raw, "--chunk-size", "4"},
			want: []string{"== request_body", `received 11 bytes in 3 chunk(s): "hello world"`, `body changed to 11 bytes: "HELLO WORLD"`,
				`first difference at byte 0: was "hello world", now "HELLO WORLD"`}},
		{name: "body from stdin, headers mode", stdin: "abc", args: []string{"run", "--plugin", testbed, "--body", "-", "--mode", "headers", "-H", "x-testbed: buffer-body"},
			want: []string{"     :method: POST", "     content-length: 3", "== response_headers"}},
		{name: "properties", args: []string{"run", "--plugin", testbed, "-H", "x-testbed: props", "--property", "source.address=10.0.0.1:99"},
			want: []string{"+ x-prop-source-address: 10.0.0.1:99"}},
		{name: "tcp", args: []string{"run", "--plugin", tcp, "--tcp", "--read", "hello", "--write", "pong"},
			want: []string{"== downstream_data", `received 5 bytes in 1 chunk(s): "hello"`, "metric counter tcp_count_upstream_bytes_total +4",
				"result: the data went through in both directions (exit 0)"}},
		{name: "plugin fails to start exits 2", args: []string{"run", "--plugin", basic, "--plugin-config", "bad line"}, code: 2,
			want: []string{`log error basic: invalid configuration line 1 "bad line"`, "result: the plugin failed: plugin_init: "}},
		{name: "removed header", args: []string{"run", "--plugin", testbed, "-H", "x-testbed: del-req", "-H", "x-del: x-gone", "-H", "x-gone: bye"},
			want: []string{"   changed:\n     - x-gone (was bye)"}},
		{name: "paused for good exits 1", args: []string{"run", "--plugin", testbed, "-H", "x-testbed: pause-headers", "--wait", "50ms"}, code: 1,
			want: []string{"== request_headers", "→ pause", "result: the plugin paused request_headers and did not resume it (exit 1)"}},
		{name: "resumed by a tick", args: []string{"run", "--plugin", testbed, "--plugin-config", "tick_ms: 10", "-H", "x-testbed: pause-headers"},
			want: []string{"+ x-testbed-resumed: tick", "result: the request went upstream"}},
		{name: "no plugin", args: []string{"run"}, code: 2, want: []string{"--plugin is required"}},
		{name: "bad mode", args: []string{"run", "--plugin", basic, "--mode", "fast"}, code: 2, want: []string{"--mode: want headers"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, code := runTool(t, tc.stdin, tc.args...)
			if code != tc.code {
				t.Errorf("exit %d, want %d\n%s", code, tc.code, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
		})
	}
}

func TestRunCommandJSON(t *testing.T) {
	out, code := runTool(t, "", "run", "--plugin", testplugins.Path(t, "basic"), "--json", "http://example.com/")
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, out)
	}
	var rep struct {
		Phases []struct {
			Phase string `json:"phase"`
			Edits []struct {
				Op, Key string
				After   []string
			} `json:"header_edits"`
		} `json:"phases"`
		Outcome struct {
			Kind string `json:"kind"`
			Code int    `json:"exit_code"`
		} `json:"outcome"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if rep.Outcome.Kind != "upstream" || len(rep.Phases) != 5 {
		t.Fatalf("report %+v", rep)
	}
	e := rep.Phases[3].Edits
	if rep.Phases[3].Phase != "response_headers" || len(e) != 1 || e[0].Op != "added" || e[0].Key != "x-wasm-callout" || e[0].After[0] != "basic" {
		t.Errorf("response_headers %+v", rep.Phases[3])
	}
}

func TestTestCommand(t *testing.T) {
	basic := testplugins.Path(t, "basic")
	out, code := runTool(t, "", "test", "--plugin", basic, "--bench-time", "10ms", "../../plugins/basic/tests.textpb")
	if code != 0 || !strings.HasSuffix(out, "4 passed, 0 failed\n") {
		t.Errorf("exit %d\n%s", code, out)
	}
	bad := filepath.Join(t.TempDir(), "bad.textpb")
	if err := os.WriteFile(bad, []byte(`test {
  name: "Wrong"
  response_headers {
    input { header { key: ":status" value: "200" } }
    result { has_header { key: "x-wasm-callout" value: "basics" } }
  }
}
test { name: "Right" }`), 0o644); err != nil {
		t.Fatal(err)
	}
	out, code = runTool(t, "", "test", "--plugin", basic, bad)
	if code != 1 || !strings.Contains(out, `[response_headers] header "x-wasm-callout": want "basics", found "basic"`) ||
		!strings.HasSuffix(out, "1 passed, 1 failed\n") {
		t.Errorf("exit %d\n%s", code, out)
	}
	out, code = runTool(t, "", "test", "--plugin", basic, "--run", "Right", "--json", bad)
	var sum struct{ Passed, Failed int }
	if err := json.Unmarshal([]byte(out), &sum); err != nil || code != 0 || sum.Passed != 1 || sum.Failed != 0 {
		t.Errorf("exit %d, %v\n%s", code, err, out)
	}
	out, code = runTool(t, "", "test", "--plugin", basic, "missing.textpb")
	if code != 1 || !strings.Contains(out, "missing.textpb") || !strings.HasSuffix(out, "0 passed, 1 failed\n") {
		t.Errorf("missing spec: exit %d\n%s", code, out)
	}
}
