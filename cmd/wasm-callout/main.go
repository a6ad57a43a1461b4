// Command wasm-callout serves proxy-wasm plugins as Envoy ext_proc and
// network_ext_proc callouts.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/wasm-callout/wasm-callout/internal/cliflags"
	"google.golang.org/grpc/grpclog"
)

func main() {
	// Before any gRPC: grpc-go's own log joins the serve command's.
	grpclog.SetLoggerV2(grpcLogTo{})
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP) // reloads the plugin
	if err := runWithReload(ctx, os.Args[1:], os.Stdout, os.Stderr, hup); err != nil {
		// Status 2 for a mistake on the command line, as the flag
		// package's own ExitOnError has it; run's and test's own statuses
		// (exitError); 1 for everything else. An error already logged, or
		// an exit status with nothing more to say, prints nothing.
		var ee *exitError
		if !errors.As(err, new(loggedError)) && !(errors.As(err, &ee) && ee.msg == "") {
			fmt.Fprintln(os.Stderr, "wasm-callout:", err)
		}
		stop()
		os.Exit(cliflags.ExitCode(err))
	}
}
