package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/grpc"

	"github.com/wasm-callout/wasm-callout/internal/baseline"
)

// startBoth serves the HTTP and the L4 baseline on one port, as
// extproc-baseline and wasm-callout do.
func startBoth(t *testing.T) string {
	t.Helper()
	srv, err := baseline.New("")
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	srv.Register(g)
	baseline.NewNetworkServer().Register(g)
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)
	return lis.Addr().String()
}

func TestLoadL4(t *testing.T) {
	addr := startBoth(t)
	var out, errb bytes.Buffer
	args := []string{"-addr", addr, "-scenario", "l4", "-chunks", "3", "-chunk-bytes", "100", "-requests", "30",
		"-concurrency", "4", "-label", "x", "-server-pid", strconv.Itoa(os.Getpid()), "-message-timeout", "10s"}
	if err := run(context.Background(), args, &out, &errb); err != nil {
		t.Fatalf("run: %v\n%s", err, errb.String())
	}
	rs, err := readResults(&out)
	if err != nil || len(rs) != 1 {
		t.Fatalf("results %v %v", rs, err)
	}
	if r := rs[0]; r.Requests != 30 || r.Errors != 0 || r.Scenario != "l4" || r.BodyBytes != 600 || r.CPUUsPerReq < 0 {
		t.Errorf("result %+v", r)
	}
}

// A server without the L4 service fails every connection, and the reason
// is reported.
func TestLoadL4Errors(t *testing.T) {
	addr := startBaseline(t) // HTTP only
	var out bytes.Buffer
	err := run(context.Background(), []string{"-addr", addr, "-scenario", "l4", "-requests", "3", "-concurrency", "1"}, &out, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	rs, _ := readResults(&out)
	if len(rs) != 1 || rs[0].Errors != 3 || !strings.Contains(rs[0].FirstError, "ext_proc_grpc_error") {
		t.Fatalf("results %+v", rs)
	}
}

func TestL4Flags(t *testing.T) {
	for _, args := range [][]string{
		{"-addr", "a:1", "-scenario", "l4", "-chunks", "0"},
		{"-addr", "a:1", "-scenario", "l4", "-chunk-bytes", "0"},
	} {
		if _, err := parseLoadFlags(args, &bytes.Buffer{}); err == nil {
			t.Errorf("%q accepted", args)
		}
	}
}
