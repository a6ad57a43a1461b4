package gobuild

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"github.com/wasm-callout/wasm-callout/internal/cliflags"
)

const usage = `usage: wasm-callout build [-o out.wasm] [-tags a,b] [-tinygo] [-v] DIR

Builds the proxy-wasm plugin in DIR, a main package written against
github.com/tetratelabs/proxy-wasm-go-sdk v0.24.0 (the TinyGo-era SDK), into a
.wasm module. By default it uses stock Go (GOOS=wasip1 GOARCH=wasm
-buildmode=c-shared, Go 1.24 or later) with generated glue and leaves the
plugin's module untouched; -tinygo uses TinyGo from PATH instead.

A replace directive for the SDK in the plugin's go.mod (such as the SDK's
examples' "replace ... => ../..") is accepted when it points at the SDK's
v0.24.0 files, unmodified.

Your GOFLAGS (from the environment or go env -w) apply to the go commands
the build runs, except -mod, -modfile, -buildmode, -overlay and -o, which
the build sets itself and which win. As with go build, -tags replaces a
-tags in GOFLAGS.

Flags may come before or after DIR.
`

// Run implements "wasm-callout build": it parses args (without the
// subcommand name) and builds one plugin. Usage errors are returned as
// errors (cliflags.UsageError); stdout is unused unless -v or -h is given.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := cliflags.NewFlagSet("wasm-callout build", stdout, usage+"\nFlags:")
	out := fs.String("o", "", "output `file` (default: DIR's base name + .wasm in the current directory)")
	tinygo := fs.Bool("tinygo", false, "build with TinyGo (tinygo on PATH) instead of stock Go")
	tags := fs.String("tags", "", "comma-separated `list` of build tags, passed to go build (or tinygo)")
	verbose := fs.Bool("v", false, "print the commands run and their output")

	// The standard flag package stops at the first argument that is not a
	// flag; allow "build DIR -o out.wasm" by parsing the rest again.
	var dirs []string
	for {
		if err := cliflags.Parse(fs, args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil
			}
			return err
		}
		if fs.NArg() == 0 {
			break
		}
		dirs = append(dirs, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(dirs) != 1 {
		return cliflags.Usagef("build: want exactly one plugin directory, got %d (see wasm-callout build -h)", len(dirs))
	}
	dir := dirs[0]
	if *out == "" {
		abs, err := filepath.Abs(dir)
		if err != nil {
			return err
		}
		*out = filepath.Base(abs) + ".wasm"
	}
	opts := Options{Dir: dir, Output: *out, TinyGo: *tinygo, Tags: splitTags(*tags)}
	if *verbose {
		opts.Log = stdout
	}
	if err := Build(ctx, opts); err != nil {
		return fmt.Errorf("build %s: %w", dir, err)
	}
	return nil
}

// splitTags splits a -tags value: comma-separated, as go build takes it
// (spaces, which go build still accepts, work too).
func splitTags(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' })
}
