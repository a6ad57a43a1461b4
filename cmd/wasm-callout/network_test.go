package main

import (
	"context"
	"testing"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/wasm-callout/wasm-callout/server"
	"github.com/wasm-callout/wasm-callout/server/envoytest"
)

// tcpEdgePlugin is the server package's WAT TCP filter (see its .wat): data
// starting with C closes the connection, with T traps; other data passes.
const tcpEdgePlugin = "../../server/testdata/tcpedge.wasm"

// The serve command's gRPC port serves network_ext_proc too, with the
// failure policy of the flags.
func TestRunServesNetworkExtProc(t *testing.T) {
	for _, tc := range []struct {
		policy string
		frames []string
		up     string
		close  envoytest.ConnClose
	}{
		{"fail-closed", []string{"hello ", "world"}, "hello world", envoytest.ClosedNormally},
		{"fail-closed", []string{"ok ", "Close"}, "ok ", envoytest.ClosedFlushWrite},
		{"fail-closed", []string{"ok ", "Trap"}, "ok ", envoytest.ClosedFlushWrite},
		{"fail-open", []string{"ok ", "Trap"}, "ok Trap", envoytest.ClosedNormally},
	} {
		addrs, stop := started(t, []string{"grpc"}, "--plugin", tcpEdgePlugin, "--addr", "127.0.0.1:0", "--tls-addr", "",
			"--health-addr", "", "--admin-addr", "", "--log-level", "error", "--failure-policy", tc.policy)
		conn, err := envoytest.Dial(addrs["grpc"])
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		hr, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: server.NetworkServiceName})
		if err != nil || hr.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("gRPC health of %s: %v, %v", server.NetworkServiceName, hr, err)
		}
		res, err := envoytest.DoL4(ctx, conn, envoytest.L4Config{MessageTimeout: 5 * time.Second},
			&envoytest.Connection{Read: envoytest.Frames(false, tc.frames...)})
		cancel()
		conn.Close()
		if err != nil {
			t.Fatal(err)
		}
		if string(res.Upstream) != tc.up || res.Close != tc.close || len(res.Violations) > 0 {
			t.Errorf("%s %q: upstream %q, close %v %s, violations %q", tc.policy, tc.frames, res.Upstream, res.Close, res.CloseReason, res.Violations)
		}
		if err := stop(); err != nil {
			t.Fatalf("run: %v", err)
		}
	}
}
