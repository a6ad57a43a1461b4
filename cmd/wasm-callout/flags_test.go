package main

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"strings"
	"testing"
	"time"

	"github.com/wasm-callout/wasm-callout/internal/cliflags"
	"github.com/wasm-callout/wasm-callout/internal/gctune"
)

// A bad value of every kind of flag gets one line naming the flag, the
// value and what is wanted, exit status 2, and no usage dump.
func TestBadFlagValues(t *testing.T) {
	tests := []struct {
		kind string
		args []string
		want string
	}{
		{"duration", []string{"--call-timeout", "5"}, `--call-timeout "5": want a duration such as 500ms, 2s or 1m30s`},
		{"duration", []string{"--stream-idle-timeout=soon"}, `--stream-idle-timeout "soon": want a duration such as 500ms`},
		{"int", []string{"--instances", "four"}, `--instances "four": want an integer such as 16 or -1`},
		{"int", []string{"--max-streams", "1e3"}, `--max-streams "1e3": want an integer`},
		{"uint", []string{"--failure-status", "-1"}, `--failure-status "-1": want a non-negative integer such as 16`},
		{"uint", []string{"--memory-limit-pages", "lots"}, `--memory-limit-pages "lots": want a non-negative integer`},
		{"bool", []string{"--mode-override=maybe"}, `--mode-override "maybe": want true or false`},
		{"byte size", []string{"--max-stream-buffer", "16MB"}, `--max-stream-buffer "16MB": want a byte count such as 1048576 or 16Mi`},
		{"byte size", []string{"--max-buffer-total", "1Ti"}, `--max-buffer-total "1Ti": want a byte count`},
		{"byte size", []string{"--gc-headroom", "lots"}, `--gc-headroom "lots": want a byte count`},
		{"enum", []string{"--failure-policy", "maybe"}, `--failure-policy "maybe": want fail-closed or fail-open`},
		{"enum", []string{"--log-format", "xml"}, `--log-format "xml": want text or json`},
		{"enum", []string{"--log-level", "loud"}, `--log-level "loud": want trace, debug, info, warn or error`},
		{"enum", []string{"--client", "istio"}, `--client "istio": want auto, envoy or grpc`},
		{"enum", []string{"--listener-direction", "up"}, `--listener-direction "up": want inbound, outbound or unspecified`},
		{"func", []string{"--upstream", "web"}, `--upstream "web": `},
		{"unknown", []string{"--no-such-flag"}, "unknown flag --no-such-flag (see wasm-callout -h)"},
		{"missing value", []string{"--plugin", "x.wasm", "--call-timeout"}, "flag --call-timeout needs a value (see wasm-callout -h)"},
		{"argument", []string{"--plugin", "x.wasm", "extra"}, `unexpected argument "extra"`},
		{"range", []string{"--plugin", "x.wasm", "--failure-status", "42"}, "--failure-status 42: want an HTTP status from 200 to 599"},
		{"required", []string{}, "--plugin is required"},
		{"inspect unknown", []string{"inspect", "--yaml", "x.wasm"}, "unknown flag --yaml (see wasm-callout inspect -h)"},
		{"inspect arguments", []string{"inspect"}, "inspect takes one .wasm file"},
		{"version bool", []string{"version", "--json=yes"}, `--json "yes": want true or false`},
		{"version argument", []string{"version", "now"}, `version: unexpected argument "now"`},
		{"build unknown", []string{"build", "--nope", "dir"}, "unknown flag --nope (see wasm-callout build -h)"},
		{"build arguments", []string{"build"}, "build: want exactly one plugin directory, got 0"},
	}
	for _, tc := range tests {
		t.Run(tc.kind+" "+strings.Join(tc.args, " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), tc.args, &stdout, &stderr)
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.HasPrefix(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q, want one line starting %q", err, tc.want)
			}
			if code := cliflags.ExitCode(err); code != 2 {
				t.Errorf("exit status %d, want 2", code)
			}
			if stdout.Len()+stderr.Len() > 0 {
				t.Errorf("printed besides the error: stdout %q, stderr %q", stdout.String(), stderr.String())
			}
		})
	}
}

// Errors that are not about the command line keep exit status 1.
func TestExitCodes(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing.wasm")
	err := run(context.Background(), []string{"inspect", missing}, &bytes.Buffer{}, &bytes.Buffer{})
	if !errors.Is(err, os.ErrNotExist) || cliflags.ExitCode(err) != 1 {
		t.Errorf("inspect of a missing file: %v, status %d; want not-exist and 1", err, cliflags.ExitCode(err))
	}
	if cliflags.ExitCode(nil) != 0 {
		t.Error("cliflags.ExitCode(nil) != 0")
	}
}

// Asking for help succeeds and prints the usage to stdout, nothing to
// stderr.
func TestHelp(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-h"}, "Usage: wasm-callout [serve]"},
		{[]string{"--help"}, "-call-timeout duration"},
		{[]string{"help"}, "wasm-callout inspect [--json] PLUGIN.wasm"},
		{[]string{"serve", "-h"}, "-failure-policy"},
		{[]string{"help", "serve"}, "-log-format"},
		{[]string{"inspect", "-h"}, "Usage: wasm-callout inspect [--json] PLUGIN.wasm"},
		{[]string{"help", "inspect"}, "-json"},
		{[]string{"version", "-h"}, "Usage: wasm-callout version [--json]"},
		{[]string{"help", "version"}, "-json"},
		{[]string{"build", "-h"}, "usage: wasm-callout build"},
		{[]string{"help", "build"}, "-tinygo"},
	} {
		var stdout, stderr bytes.Buffer
		if err := run(context.Background(), tc.args, &stdout, &stderr); err != nil {
			t.Errorf("%q: %v", tc.args, err)
		}
		if !strings.Contains(stdout.String(), tc.want) || stderr.Len() > 0 {
			t.Errorf("%q: stdout %q lacks %q, or stderr %q is not empty", tc.args, stdout.String(), tc.want, stderr.String())
		}
	}
}

// The usage shows every flag's default as before the values were wrapped
// for parsing (the wrapping is undone after the parse).
func TestUsageDefaults(t *testing.T) {
	var stdout bytes.Buffer
	if err := run(context.Background(), []string{"-h"}, &stdout, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"(default fail-closed)", "(default 500)", "(default true)", "(default info)", "(default text)"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("usage lacks %q", want)
		}
	}
	if strings.Contains(stdout.String(), "panic") {
		t.Errorf("usage has a panic:\n%s", stdout.String())
	}
}

// --gc-headroom raises GOGC while the live heap is small, and puts it back
// when the server stops; GOGC in the environment turns it off.
func TestGCHeadroom(t *testing.T) {
	if _, ok := os.LookupEnv("GOGC"); ok {
		t.Skip("GOGC is set")
	}
	gogc := func() uint64 {
		s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
		metrics.Read(s)
		return s[0].Value.Uint64()
	}
	before := gogc()
	ctx, cancel := context.WithCancel(context.Background())
	c := &serveConfig{gcHeadroom: 1 << 40} // more than any test's live heap
	c.tuneGC(ctx, slog.New(slog.DiscardHandler))
	deadline := time.Now().Add(20 * time.Second)
	for gogc() != gctune.MaxPercent {
		if time.Now().After(deadline) {
			t.Fatalf("GOGC = %d, want %d", gogc(), gctune.MaxPercent)
		}
		runtime.GC()
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	for gogc() != before {
		if time.Now().After(deadline) {
			t.Fatalf("GOGC = %d after the server stopped, want %d", gogc(), before)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
