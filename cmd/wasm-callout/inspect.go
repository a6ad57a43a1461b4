package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"text/tabwriter"

	"github.com/wasm-callout/wasm-callout/host"
)

// inspect prints what the host learns about a plugin before running it:
// the toolchain it guesses, the ABI, the allocator and entry points, every
// import and how it is served, and every callback. It fails, after
// printing, when the plugin would not load.
func inspect(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("inspect", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: wasm-callout inspect plugin.wasm")
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return errors.New("inspect takes one .wasm file")
	}
	wasm, err := os.ReadFile(fs.Arg(0))
	if err != nil {
		return err
	}
	info, err := host.Inspect(ctx, wasm)
	if info == nil {
		return err
	}
	printInfo(stdout, fs.Arg(0), info)
	if err != nil {
		return err
	}
	return nil
}

func printInfo(w io.Writer, name string, info *host.Info) {
	abiVersion := string(info.ABI)
	if abiVersion == "" {
		abiVersion = "none (pre-0.1.0)"
	}
	entry := "none (the host starts the root context directly)"
	if len(info.Entry) > 0 {
		entry = fmt.Sprint(info.Entry)
	}
	fmt.Fprintf(w, "plugin:     %s\n", name)
	fmt.Fprintf(w, "toolchain:  %s\n", info.Toolchain)
	fmt.Fprintf(w, "abi:        %s (header callbacks take %d arguments)\n", abiVersion, info.HeaderArity)
	fmt.Fprintf(w, "allocator:  %s\n", orNone(info.Allocator))
	fmt.Fprintf(w, "entry:      %s\n", entry)
	for _, warn := range info.Warnings {
		fmt.Fprintf(w, "warning:    %s\n", warn)
	}
	fmt.Fprintf(w, "\nimports (%d):\n", len(info.Imports))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, imp := range info.Imports {
		fmt.Fprintf(tw, "  %s\t%s.%s\t%s\n", imp.Status, imp.Module, imp.Name, imp.Signature)
	}
	tw.Flush()
	fmt.Fprintf(w, "\ncallbacks (%d):\n", len(info.Callbacks))
	for _, cb := range info.Callbacks {
		fmt.Fprintf(w, "  %s\n", cb)
	}
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
