// Command extproc-baseline serves the native Go equivalent of the
// plugins/basic proxy-wasm plugin as an Envoy ext_proc server (see
// internal/baseline). It is the baseline wasm-callout is benchmarked
// against.
//
// Usage:
//
//	extproc-baseline [-addr 127.0.0.1:9002] [-config FILE] [-network=false]
//
// -config names a file holding the plugin configuration ("name: value"
// lines); without it the single header "x-wasm-callout: basic" is added to
// every response. The same port also serves the L4 baseline,
// envoy.service.network_ext_proc.v3.NetworkExternalProcessor: the native
// equivalent of the plugins/tcp-count network filter (an echo that counts
// bytes; -network=false turns it off). The server prints "listening on
// ADDR" once it accepts connections and stops on SIGINT or SIGTERM.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	"github.com/wasm-callout/wasm-callout/internal/baseline"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "extproc-baseline:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("extproc-baseline", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:9002", "listen address")
	configPath := fs.String("config", "", "plugin configuration file (\"name: value\" lines)")
	network := fs.Bool("network", true, "also serve network_ext_proc: the native plugins/tcp-count (echo, counting bytes)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	var config []byte
	if *configPath != "" {
		var err error
		if config, err = os.ReadFile(*configPath); err != nil {
			return err
		}
	}
	srv, err := baseline.New(string(config))
	if err != nil {
		return err
	}
	lis, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	g := grpc.NewServer(
		grpc.MaxRecvMsgSize(math.MaxInt32),
		grpc.MaxSendMsgSize(math.MaxInt32),
		grpc.MaxConcurrentStreams(math.MaxUint32),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
	)
	srv.Register(g)
	if *network {
		baseline.NewNetworkServer().Register(g)
	}
	fmt.Fprintf(stdout, "listening on %s\n", lis.Addr())
	errc := make(chan error, 1)
	go func() { errc <- g.Serve(lis) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		g.Stop()
		<-errc
		return nil
	}
}
