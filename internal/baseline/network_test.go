package baseline

import (
	"context"
	"net"
	"testing"
	"time"

	netprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/network_ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/wasm-callout/wasm-callout/server/envoytest"
)

func startNetwork(t *testing.T) (*NetworkServer, *grpc.ClientConn) {
	t.Helper()
	srv := NewNetworkServer()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	srv.Register(g)
	go g.Serve(lis)
	conn, err := envoytest.Dial(lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		g.Stop()
	})
	return srv, conn
}

// The echo server passes every byte of both directions unchanged, with no
// protocol violation, and counts them.
func TestNetworkEcho(t *testing.T) {
	srv, conn := startNetwork(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i, c := range []*envoytest.Connection{
		{Read: envoytest.Frames(true, "hello ", "world"), Write: envoytest.Frames(true, "ok")},
		{Read: envoytest.Frames(false, "no end"), WriteAfterRead: true, Write: envoytest.Frames(false, "")},
		{Read: envoytest.Frames(true), Write: envoytest.Frames(true)},
	} {
		res, err := envoytest.DoL4(ctx, conn, envoytest.L4Config{}, c)
		if err != nil {
			t.Fatal(err)
		}
		var up, down string
		for _, f := range c.Read {
			up += string(f.Data)
		}
		for _, f := range c.Write {
			down += string(f.Data)
		}
		if string(res.Upstream) != up || string(res.Downstream) != down || res.Close != envoytest.ClosedNormally || len(res.Violations) > 0 {
			t.Errorf("connection %d: upstream %q downstream %q close %v violations %q", i, res.Upstream, res.Downstream, res.Close, res.Violations)
		}
	}
	if c, d, u := srv.Counts(); c != 3 || d != 17 || u != 2 {
		t.Errorf("counts %d connections, %d down, %d up", c, d, u)
	}
}

func TestNetworkMalformed(t *testing.T) {
	_, conn := startNetwork(t)
	for _, req := range []*netprocv3.ProcessingRequest{
		{},
		{ReadData: &netprocv3.Data{}, WriteData: &netprocv3.Data{}},
	} {
		st, err := netprocv3.NewNetworkExternalProcessorClient(conn).Process(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Send(req); err != nil {
			t.Fatal(err)
		}
		if _, err := st.Recv(); status.Code(err) != codes.InvalidArgument {
			t.Errorf("%v: %v", req, err)
		}
	}
}
