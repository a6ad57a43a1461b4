package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wasm-callout/wasm-callout/internal/testplugins"
	"github.com/wasm-callout/wasm-callout/internal/toolchains"
)

// inspectOne runs `wasm-callout inspect path` and checks the report: every
// plugin gets one, with the toolchain guess want ("" for any), and only
// the fixtures that are meant not to load make it fail.
func inspectOne(t *testing.T, path, want string, wantErr bool) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"inspect", path}, &out, &errOut)
	if (err != nil) != wantErr {
		t.Errorf("%s: err = %v, want error %v\n%s", path, err, wantErr, out.String())
	}
	if err != nil && !strings.Contains(err.Error(), "cannot be loaded") && !strings.Contains(err.Error(), "invalid wasm") {
		t.Errorf("%s: error is not a load report: %v", path, err)
	}
	text := out.String()
	for _, line := range []string{"plugin:     " + path, "toolchain:  ", "abi:        ", "allocator:  ", "imports (", "callbacks ("} {
		if !strings.Contains(text, line) {
			t.Errorf("%s: report lacks %q:\n%s", path, line, text)
		}
	}
	if want != "" && !strings.Contains(text, "toolchain:  "+want+"\n") {
		t.Errorf("%s: want toolchain %q:\n%s", path, want, text)
	}
}

// TestInspectEveryPlugin runs inspect over every fixture, every Go plugin
// and every plugin of every toolchain in the repository.
func TestInspectEveryPlugin(t *testing.T) {
	t.Run("fixtures", func(t *testing.T) {
		// Fixtures that are meant not to load.
		bad := map[string]bool{"bad_imports": true, "not_proxy_wasm": true, "go_command": true, "toolchain_tinygo_js": true}
		fixtures, _ := filepath.Glob("../../host/testdata/*.wasm")
		hostcalls, _ := filepath.Glob("../../host/testdata/hostcalls/*.wasm")
		if len(fixtures) < 10 || len(hostcalls) < 40 {
			t.Fatalf("found %d fixtures and %d hostcall fixtures", len(fixtures), len(hostcalls))
		}
		for _, f := range append(fixtures, hostcalls...) {
			inspectOne(t, f, "", bad[strings.TrimSuffix(filepath.Base(f), ".wasm")])
		}
	})
	t.Run("go", func(t *testing.T) {
		for _, name := range []string{"basic", "testbed"} {
			inspectOne(t, testplugins.Path(t, name), "Go (gc, wasip1 c-shared)", false)
		}
	})
	guess := map[string]string{"assemblyscript": "AssemblyScript", "c": "C/C++ (clang)", "rust": "Rust"}
	for _, tc := range toolchains.All {
		t.Run(tc.Name, func(t *testing.T) {
			for _, p := range tc.Plugins {
				inspectOne(t, toolchains.Path(t, tc.Name, p), guess[tc.Name], false)
			}
		})
	}
}
