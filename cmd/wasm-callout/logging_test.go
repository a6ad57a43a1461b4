package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wasm-callout/wasm-callout/host"
	"github.com/wasm-callout/wasm-callout/internal/cliflags"
	"github.com/wasm-callout/wasm-callout/internal/testplugins"
	"github.com/wasm-callout/wasm-callout/internal/testutil"
	"github.com/wasm-callout/wasm-callout/server/envoytest"
)

// jsonLines parses every line of out as one JSON object.
func jsonLines(t *testing.T, name, out string) []map[string]any {
	t.Helper()
	var recs []map[string]any
	for _, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		if line == "" && out == "" {
			break
		}
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Errorf("%s: a line that is not a JSON object: %q", name, line)
			continue
		}
		recs = append(recs, rec)
	}
	return recs
}

// With --log-format json, stdout and stderr carry nothing but JSON objects
// from start to shutdown, a plugin panic included, which is one record;
// durations are strings and enums names.
func TestJSONLogsOnly(t *testing.T) {
	plugin := testplugins.Path(t, "testbed")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout testutil.SyncBuffer
	pr, pw := io.Pipe()
	var stderr strings.Builder
	var mu sync.Mutex
	grpcAddr := make(chan string, 1)
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(pr)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			mu.Lock()
			stderr.WriteString(sc.Text() + "\n")
			mu.Unlock()
			var rec struct{ Msg, Kind, Addr string }
			if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Msg == "listening" && rec.Kind == "grpc" {
				grpcAddr <- rec.Addr
			}
		}
	}()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--plugin", plugin, "--log-format", "json", "--log-level", "debug", "--compilation-cache", t.TempDir(),
			"--addr", "127.0.0.1:0", "--health-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--instances", "1", "--shutdown-timeout", "5s"}, &stdout, pw)
		pw.Close()
	}()
	var addr string
	select {
	case addr = <-grpcAddr:
	case err := <-done:
		t.Fatalf("serve ended: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("no listening record")
	}

	conn, err := envoytest.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rctx, rcancel := context.WithTimeout(ctx, 20*time.Second)
	defer rcancel()
	res, err := envoytest.Do(rctx, conn, envoytest.Config{}, &envoytest.Request{Headers: envoytest.H(":method", "GET", ":path", "/", "x-testbed", "trap")})
	if err != nil {
		t.Fatal(err)
	}
	if res.LocalReply == nil || res.LocalReply.Status != 500 {
		t.Errorf("a panicking plugin, fail-closed: %+v", res.LocalReply)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	<-scanned

	if stdout.String() != "" {
		t.Errorf("stdout with JSON logs: %q", stdout.String())
	}
	recs := jsonLines(t, "stderr", stderr.String())
	var panics int
	seen := map[string]map[string]any{}
	for _, rec := range recs {
		msg, _ := rec["msg"].(string)
		seen[msg] = rec
		if strings.HasPrefix(msg, "panic: ") {
			panics++
			stack, _ := rec["stack"].(string)
			if msg != "panic: testbed: trap requested" || !strings.Contains(stack, "goroutine 1 [running]:") || rec["plugin"] != "testbed" {
				t.Errorf("panic record: %v", rec)
			}
		}
		if strings.HasPrefix(msg, "goroutine ") || strings.HasPrefix(msg, "\t") {
			t.Errorf("a panic line logged as its own record: %v", rec)
		}
	}
	if panics != 1 {
		t.Errorf("%d panic records, want 1:\n%s", panics, stderr.String())
	}
	// Durations as strings, enums by name.
	for _, c := range []struct{ msg, key, want string }{
		{"plugin loaded", "failure_policy", "fail-closed"},
		{"shutting down", "timeout", "5s"},
		{"listening", "security", "plaintext"},
	} {
		if got := seen[c.msg][c.key]; got != c.want {
			t.Errorf("%q record: %s = %#v, want %q", c.msg, c.key, got, c.want)
		}
	}
	if took, ok := seen["plugin generation loaded"]["took"].(string); !ok || !strings.HasSuffix(took, "s") {
		t.Errorf("took = %#v, want a duration string", seen["plugin generation loaded"]["took"])
	}
}

// An error that ends the command after the logger exists is a JSON record,
// and main is told not to print it again; usage mistakes keep status 2.
func TestJSONLogsExitError(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	for _, tc := range []struct {
		args   []string
		status int
	}{
		{[]string{"--addr", taken.Addr().String()}, 1},
		{[]string{"--failure-status", "42"}, 2},
	} {
		var stdout, stderr bytes.Buffer
		args := append([]string{"--plugin", edgePlugin, "--log-format", "json", "--health-addr", ""}, tc.args...)
		err := run(context.Background(), withoutAdmin(args), &stdout, &stderr)
		if err == nil || !errors.As(err, new(loggedError)) || cliflags.ExitCode(err) != tc.status {
			t.Errorf("%q: %v (logged %v), status %d; want a logged error, status %d", tc.args, err, errors.As(err, new(loggedError)), cliflags.ExitCode(err), tc.status)
		}
		recs := jsonLines(t, "stderr", stderr.String())
		if len(recs) == 0 || recs[len(recs)-1]["msg"] != "exiting" || recs[len(recs)-1]["err"] != err.Error() {
			t.Errorf("%q: last record %v, want exiting with %q", tc.args, recs, err)
		}
		if stdout.Len() > 0 {
			t.Errorf("%q: stdout %q", tc.args, stdout.String())
		}
	}
}

// readableAttr: durations as strings, Stringers by name, marshalers and
// errors as they say, the plugin levels named.
func TestReadableAttr(t *testing.T) {
	var buf bytes.Buffer
	l := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug - 4, ReplaceAttr: readableAttr}))
	l.Log(context.Background(), host.LogLevelToSlog(5), "m", "d", 1500*time.Millisecond, "policy", host.FailOpen,
		"when", time.Unix(0, 0).UTC(), "err", errors.New("e"), "n", 3, slog.Group("g", "d", time.Second))
	l.Log(context.Background(), slog.LevelDebug-4, "trace")
	var rec map[string]any
	dec := json.NewDecoder(&buf)
	if err := dec.Decode(&rec); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"level": "CRITICAL", "d": "1.5s", "policy": "fail-open", "when": "1970-01-01T00:00:00Z", "err": "e", "n": 3.0,
		"g": map[string]any{"d": "1s"}}
	for k, v := range want {
		if g, _ := json.Marshal(rec[k]); string(g) != mustJSON(v) {
			t.Errorf("%s = %s, want %s", k, g, mustJSON(v))
		}
	}
	if err := dec.Decode(&rec); err != nil || rec["level"] != "TRACE" {
		t.Errorf("trace level: %v %v", rec["level"], err)
	}
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
