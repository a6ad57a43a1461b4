package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"text/tabwriter"

	"github.com/wasm-callout/wasm-callout/host"
	"github.com/wasm-callout/wasm-callout/internal/cliflags"
)

// inspect prints what the host learns about a plugin before running it:
// the toolchain it guesses, the ABI, the allocator and entry points, every
// import and how it is served, and every callback. It fails, after
// printing, when the plugin would not load.
func inspect(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := cliflags.NewFlagSet("wasm-callout inspect", stdout, "Usage: wasm-callout inspect [--json] PLUGIN.wasm\n\n"+
		"Prints what the host learns about a plugin before running it: toolchain, ABI, allocator, entry points,\n"+
		"every import and how it is served, every callback. Exits 1 when the plugin would not load.\n\nFlags:")
	asJSON := fs.Bool("json", false, "print one JSON object (with \"error\" when the plugin would not load)")
	if err := cliflags.Parse(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() != 1 {
		return cliflags.Usagef("inspect takes one .wasm file (see wasm-callout inspect -h)")
	}
	wasm, err := os.ReadFile(fs.Arg(0))
	if err != nil {
		return err
	}
	info, err := host.Inspect(ctx, wasm)
	if info == nil {
		return err
	}
	if *asJSON {
		if jerr := printInfoJSON(stdout, fs.Arg(0), info, err); jerr != nil {
			return jerr
		}
	} else {
		printInfo(stdout, fs.Arg(0), info)
	}
	return err
}

// inspectJSON is inspect --json's output. Its field names are a contract
// for scripts: add fields, never rename them.
type inspectJSON struct {
	Plugin      string       `json:"plugin"`
	Toolchain   string       `json:"toolchain"`
	ABI         string       `json:"abi"` // "" for a pre-0.1.0 plugin without a marker
	HeaderArity int          `json:"header_arity"`
	Allocator   string       `json:"allocator"`
	Entry       []string     `json:"entry"`
	Warnings    []string     `json:"warnings"`
	Imports     []importJSON `json:"imports"`
	Callbacks   []string     `json:"callbacks"`
	Loadable    bool         `json:"loadable"`
	Error       string       `json:"error,omitempty"`
	Unknown     []importJSON `json:"unknown_imports,omitempty"`
}

type importJSON struct {
	Module    string `json:"module"`
	Name      string `json:"name"`
	Signature string `json:"signature"`
	Status    string `json:"status"` // served, stub or unknown
}

func printInfoJSON(w io.Writer, name string, info *host.Info, loadErr error) error {
	out := inspectJSON{Plugin: name, Toolchain: info.Toolchain, ABI: string(info.ABI), HeaderArity: info.HeaderArity,
		Allocator: info.Allocator, Entry: nonNil(info.Entry), Warnings: nonNil(info.Warnings),
		Callbacks: nonNil(info.Callbacks), Imports: []importJSON{}, Loadable: loadErr == nil}
	for _, imp := range info.Imports {
		out.Imports = append(out.Imports, importJSON{imp.Module, imp.Name, imp.Signature, string(imp.Status)})
	}
	if loadErr != nil {
		out.Error = loadErr.Error()
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(out)
}

// nonNil makes an empty list encode as [] rather than null.
func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
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
