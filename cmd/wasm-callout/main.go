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
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP) // reloads the plugin
	if err := runWithReload(ctx, os.Args[1:], os.Stdout, os.Stderr, hup); err != nil {
		var ee *exitError
		if errors.As(err, &ee) {
			if ee.msg != "" {
				fmt.Fprintln(os.Stderr, "wasm-callout:", ee.msg)
			}
			os.Exit(ee.code)
		}
		fmt.Fprintln(os.Stderr, "wasm-callout:", err)
		os.Exit(1)
	}
}
