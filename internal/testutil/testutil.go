// Package testutil holds what the tests of several packages share: serving
// wasm-callout's services on loopback, and a buffer for output written
// from other goroutines.
package testutil

import (
	"bytes"
	"net"
	"sync"
	"testing"

	"google.golang.org/grpc"

	"github.com/wasm-callout/wasm-callout/server"
)

// Serve serves srv's services (ext_proc, network_ext_proc, health,
// reflection) on a loopback listener with the server's gRPC options, as
// cmd/wasm-callout does. It returns the address and a stop function that
// stops the gRPC server and closes srv (not its plugin); stop is idempotent,
// and the caller decides when it runs (a server may outlive the subtest
// that starts it).
func Serve(t testing.TB, srv *server.Server) (addr string, stop func()) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(server.GRPCServerOptions(server.Limits{})...)
	srv.Register(g)
	go g.Serve(lis)
	var once sync.Once
	stop = func() {
		once.Do(func() {
			g.Stop()
			srv.Close()
		})
	}
	return lis.Addr().String(), stop
}

// SyncBuffer is a bytes.Buffer that several goroutines may write while a
// test reads it: a server's log, a child process's output.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
