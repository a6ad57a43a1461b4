package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"google.golang.org/grpc/connectivity"

	"github.com/wasm-callout/wasm-callout/server/envoytest"
)

// runWait waits until a gRPC connection to -addr is READY (a successful
// dial), for scripts that start a server and must wait for it.
func runWait(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("extproc-load wait", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "", "server address HOST:PORT (required)")
	timeout := fs.Duration("timeout", 10*time.Second, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *addr == "" || fs.NArg() > 0 {
		return errors.New("wait: usage: extproc-load wait -addr HOST:PORT [-timeout D]")
	}
	if *timeout <= 0 || *timeout > maxDuration {
		return fmt.Errorf("wait: -timeout must be in (0, %v]", maxDuration)
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	conn, err := envoytest.Dial(*addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	for {
		s := conn.GetState()
		switch s {
		case connectivity.Ready:
			fmt.Fprintf(stdout, "%s ready\n", *addr)
			return nil
		case connectivity.Idle:
			conn.Connect()
		case connectivity.TransientFailure:
			// Retry quickly instead of waiting for the backoff.
			conn.ResetConnectBackoff()
		}
		if !conn.WaitForStateChange(ctx, s) {
			return fmt.Errorf("wait: %s not ready after %v (state %v)", *addr, *timeout, s)
		}
	}
}
