package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/wasm-callout/wasm-callout/internal/testutil"
	"github.com/wasm-callout/wasm-callout/server/envoytest"
)

// serveFor runs the command with args and returns its address and a stop
// function that checks it ended cleanly.
func serveFor(t *testing.T, args ...string) (addr string, stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var out testutil.SyncBuffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, append([]string{"-addr", "127.0.0.1:0"}, args...), &out, &out) }()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if a, ok := strings.CutPrefix(strings.TrimSpace(out.String()), "listening on "); ok {
			return a, func() {
				cancel()
				if err := <-done; err != nil {
					t.Errorf("run: %v", err)
				}
			}
		}
	}
	cancel()
	t.Fatalf("no listening line: %q (%v)", out.String(), <-done)
	return "", nil
}

// The L4 echo is served on the same port unless -network=false.
func TestServeNetwork(t *testing.T) {
	for _, tc := range []struct {
		args  []string
		serve bool
	}{{nil, true}, {[]string{"-network=false"}, false}} {
		addr, stop := serveFor(t, tc.args...)
		conn, err := envoytest.Dial(addr)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		res, err := envoytest.DoL4(ctx, conn, envoytest.L4Config{MessageTimeout: 5 * time.Second},
			&envoytest.Connection{Read: envoytest.Frames(true, "ping"), Write: envoytest.Frames(true, "pong")})
		cancel()
		conn.Close()
		if err != nil {
			t.Fatal(err)
		}
		served := string(res.Upstream) == "ping" && string(res.Downstream) == "pong" && res.Close == envoytest.ClosedNormally
		// Without the service, Envoy sees Unimplemented and closes the
		// connection (failure_mode_allow is off).
		if served != tc.serve || (!tc.serve && res.CloseReason != "ext_proc_grpc_error") {
			t.Errorf("%q: %+v", tc.args, res)
		}
		stop()
	}
}
