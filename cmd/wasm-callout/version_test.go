package main

import (
	"bytes"
	"context"
	"encoding/json"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
)

func TestVersionFrom(t *testing.T) {
	base := versionInfo{Module: "unknown", Version: "unknown", Go: "go0", Platform: "os/arch", Wazero: "unknown"}
	tests := []struct {
		name string
		bi   debug.BuildInfo
		want string
	}{
		{"go install", debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: "github.com/wasm-callout/wasm-callout", Version: "v1.2.3"},
			Deps: []*debug.Module{{Path: "google.golang.org/grpc", Version: "v1.85.0"}, {Path: wazeroModule, Version: "v1.12.0"}}},
			"wasm-callout v1.2.3 go1.26.8 wazero v1.12.0 os/arch"},
		{"checkout, modified", debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: "m", Version: "(devel)"},
			Deps:     []*debug.Module{{Path: wazeroModule, Version: "v1.12.0"}},
			Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "0123456789abcdef0123"}, {Key: "vcs.modified", Value: "true"}}},
			"wasm-callout (devel) (0123456789ab+modified) go1.26.8 wazero v1.12.0 os/arch"},
		{"replaced wazero", debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: "m", Version: "v0.1.0"},
			Deps: []*debug.Module{{Path: wazeroModule, Version: "v1.12.0", Replace: &debug.Module{Path: "../wazero", Version: ""}}}},
			"wasm-callout v0.1.0 go1.26.8 wazero v1.12.0 => ../wazero os/arch"},
		{"no wazero", debug.BuildInfo{Main: debug.Module{Path: "m", Version: "v0.1.0"}},
			"wasm-callout v0.1.0 go0 wazero unknown os/arch"},
	}
	for _, tc := range tests {
		if got := versionFrom(&tc.bi, base).String(); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}

// The test binary has build info: the Go version is this one, wazero's is
// the module's requirement, and --version, version and version --json agree.
func TestVersionCommand(t *testing.T) {
	var line, flagLine, js bytes.Buffer
	for _, c := range []struct {
		args []string
		out  *bytes.Buffer
	}{{[]string{"version"}, &line}, {[]string{"--version"}, &flagLine}, {[]string{"version", "--json"}, &js}} {
		if err := run(context.Background(), c.args, c.out, &bytes.Buffer{}); err != nil {
			t.Fatalf("%q: %v", c.args, err)
		}
	}
	if line.String() != flagLine.String() || !strings.HasPrefix(line.String(), "wasm-callout ") || strings.Count(line.String(), "\n") != 1 {
		t.Errorf("version %q, --version %q", line.String(), flagLine.String())
	}
	var v versionInfo
	if err := json.Unmarshal(js.Bytes(), &v); err != nil {
		t.Fatal(err)
	}
	if v.Go != runtime.Version() || !strings.HasPrefix(v.Wazero, "v1.") || v.Platform != runtime.GOOS+"/"+runtime.GOARCH {
		t.Errorf("version --json: %+v", v)
	}
	if v.String()+"\n" != line.String() {
		t.Errorf("--json %q and the line %q differ", v.String(), line.String())
	}
}
