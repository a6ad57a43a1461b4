package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"time"

	"github.com/wasm-callout/wasm-callout/internal/cliflags"
	"github.com/wasm-callout/wasm-callout/internal/plugintest"
)

// errTestsFailed makes the test subcommand exit 1 after it has printed
// its report.
var errTestsFailed = &exitError{code: 1}

// testCmd runs declarative plugin tests (wasm-callout test).
func testCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := cliflags.NewFlagSet("wasm-callout test", stdout, "Usage: wasm-callout test [--plugin p.wasm] [--plugin-config @file] [flags] tests.textpb|tests.yaml ...\n"+
		"Runs the plugin tests of each spec (Google's plugin tester format) and ends with \"N passed, M failed\".\n\nFlags:")
	plugin := fs.String("plugin", "", "the plugin .wasm; default: each spec's env.wasm_path")
	pluginConfig := fs.String("plugin-config", "", "plugin configuration, inline or @FILE; replaces each spec's env.config_path")
	runRE := fs.String("run", "", "run only the tests whose name matches this regular expression")
	asJSON := fs.Bool("json", false, "print the results as one JSON object")
	through := fs.Bool("through-ext-proc", false, "play each test through the ext_proc gRPC server and the Envoy emulator")
	limits := fs.String("limits", "", "fail tests that break a managed platform's limits: gcp")
	benchTime := fs.Duration("bench-time", time.Second, "how long each benchmark test runs")
	cache := fs.String("compilation-cache", defaultCacheDir(), "directory caching compiled plugin code; empty: a temporary one")
	if err := cliflags.Parse(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() == 0 {
		return cliflags.Usagef("test: no spec files (see wasm-callout test -h)")
	}
	opts := plugintest.Options{BenchTime: *benchTime, ThroughExtProc: *through}
	if *plugin != "" {
		wasm, err := os.ReadFile(*plugin)
		if err != nil {
			return fmt.Errorf("--plugin: %w", err)
		}
		opts.Wasm = wasm
	}
	if flagSet(fs, "plugin-config") {
		b, err := stringOrFile("--plugin-config", *pluginConfig)
		if err != nil {
			return err
		}
		opts.PluginConfig, opts.HasPluginConfig = b, true
	}
	if *runRE != "" {
		re, err := regexp.Compile(*runRE)
		if err != nil {
			return fmt.Errorf("--run: %w", err)
		}
		opts.Run = re
	}
	if *limits != "" {
		l, err := plugintest.LimitsByName(*limits)
		if err != nil {
			return fmt.Errorf("--limits: %w", err)
		}
		opts.Limits = l
	}
	dir, cleanup, err := toolCache(*cache)
	if err != nil {
		return err
	}
	defer cleanup()
	opts.CacheDir = dir

	var results []plugintest.Result
	for _, path := range fs.Args() {
		spec, err := plugintest.ReadSpec(path)
		if err != nil {
			results = append(results, plugintest.Result{Spec: path, Name: "(spec)", Failures: []string{err.Error()}})
			continue
		}
		results = append(results, plugintest.RunSpec(ctx, spec, opts)...)
	}
	sum := plugintest.Summarize(results)
	if *asJSON {
		if err := sum.WriteJSON(stdout); err != nil {
			return err
		}
	} else {
		sum.WriteText(stdout)
	}
	if sum.Failed > 0 {
		return errTestsFailed
	}
	return nil
}

// toolCache returns dir if it can be created, or else a temporary
// directory that cleanup removes.
func toolCache(dir string) (string, func(), error) {
	if dir != "" && os.MkdirAll(dir, 0o755) == nil {
		return dir, func() {}, nil
	}
	tmp, err := os.MkdirTemp("", "wasm-callout-cache")
	if err != nil {
		return "", nil, err
	}
	return tmp, func() { os.RemoveAll(tmp) }, nil
}
