package main

import (
	"context"
	"io"
	"os"

	"github.com/wasm-callout/wasm-callout/internal/gobuild"
)

// run dispatches subcommands. It is main without the process: tests call it
// with their own arguments and writers.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return runWithReload(ctx, args, stdout, stderr, nil)
}

// runWithReload is run with a channel on which every value asks the serve
// command to reload its plugin: main relays SIGHUP there, tests send their
// own values.
func runWithReload(ctx context.Context, args []string, stdout, stderr io.Writer, reload <-chan os.Signal) error {
	if len(args) > 0 {
		switch args[0] {
		case "build":
			return gobuild.Run(ctx, args[1:], stdout, stderr)
		case "inspect":
			return inspect(ctx, args[1:], stdout, stderr)
		case "version":
			return version(args[1:], stdout)
		case "help":
			// "help CMD" is "CMD -h"; "help" alone is the serve usage,
			// which lists the commands.
			if len(args) > 1 && args[1] != "serve" {
				return runWithReload(ctx, []string{args[1], "-h"}, stdout, stderr, reload)
			}
			return serve(ctx, []string{"-h"}, stdout, stderr, reload)
		case "test":
			return testCmd(ctx, args[1:], stdout, stderr)
		case "run":
			return runCmd(ctx, args[1:], os.Stdin, stdout, stderr)
		}
	}
	return serve(ctx, args, stdout, stderr, reload)
}
