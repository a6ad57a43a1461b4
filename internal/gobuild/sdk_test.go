package gobuild

import (
	"bytes"
	"encoding/json"
	"flag"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wasm-callout/wasm-callout/internal/gobuild/gluegen"
)

var update = flag.Bool("update", false, "rewrite sdk.sha256 from the module cache's copy of the SDK")

// sdkModuleDir returns the released SDK's directory in the module cache,
// downloading it through the plugins module (whose go.sum pins it) if
// needed.
func sdkModuleDir(t *testing.T) string {
	t.Helper()
	cmd := exec.Command("go", "mod", "download", "-json", gluegen.SDKModule+"@"+gluegen.SDKVersion)
	cmd.Dir = pluginsDir
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go mod download %s@%s: %v\n%s", gluegen.SDKModule, gluegen.SDKVersion, err, out)
	}
	var m struct{ Dir, Error string }
	if err := json.Unmarshal(out, &m); err != nil || m.Dir == "" {
		t.Fatalf("go mod download %s@%s: %v %s", gluegen.SDKModule, gluegen.SDKVersion, err, m.Error)
	}
	return m.Dir
}

// copySDK copies the released SDK from the module cache to dst, as a
// checkout of its release tag would have it, with writable files.
func copySDK(t *testing.T, dst string) {
	t.Helper()
	src := sdkModuleDir(t)
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		return copyFile(path, filepath.Join(dst, rel))
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestSDKManifest keeps sdk.sha256 in step with the released SDK.
func TestSDKManifest(t *testing.T) {
	got, err := manifestOf(sdkModuleDir(t))
	if err != nil {
		t.Fatal(err)
	}
	if *update {
		if err := os.WriteFile("sdk.sha256", got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	if !bytes.Equal(got, sdkManifest) {
		t.Errorf("sdk.sha256 does not match %s %s in the module cache; run go test ./internal/gobuild -run TestSDKManifest -update", gluegen.SDKModule, gluegen.SDKVersion)
	}
	for _, want := range []string{"  go.mod\n", "  proxywasm/internal/abi_hostcalls_mock.go\n", "  proxywasm/hostcall.go\n"} {
		if !bytes.Contains(sdkManifest, []byte(want)) {
			t.Errorf("sdk.sha256 does not list %s", strings.TrimSpace(want))
		}
	}
}

// sdkDiff names what differs from the release, in a few words.
func TestSDKDiff(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(t *testing.T, dir string)
		want   string
	}{
		{name: "release", change: func(*testing.T, string) {}},
		{
			name: "checkout with examples and tooling",
			change: func(t *testing.T, dir string) {
				mustWrite(t, filepath.Join(dir, "examples", "helloworld", "go.mod"), "module x\n")
				mustWrite(t, filepath.Join(dir, "examples", "helloworld", "main.go"), "package main\n")
				mustWrite(t, filepath.Join(dir, ".github", "x.go"), "package x\n")
				mustWrite(t, filepath.Join(dir, "e2e", "nested", "go.mod"), "module y\n")
				mustWrite(t, filepath.Join(dir, "e2e", "nested", "y.go"), "package y\n")
				mustWrite(t, filepath.Join(dir, "proxywasm", "extra_test.go"), "package proxywasm\n")
				mustWrite(t, filepath.Join(dir, "Makefile.local"), "x:\n")
			},
		},
		{
			name: "one file changed",
			change: func(t *testing.T, dir string) {
				appendFile(t, filepath.Join(dir, "proxywasm", "hostcall.go"), "// local change\n")
			},
			want: "proxywasm/hostcall.go differs",
		},
		{
			name: "files changed, missing and added",
			change: func(t *testing.T, dir string) {
				appendFile(t, filepath.Join(dir, "proxywasm", "hostcall.go"), "// local change\n")
				appendFile(t, filepath.Join(dir, "go.mod"), "// local change\n")
				if err := os.Remove(filepath.Join(dir, "proxywasm", "types", "types.go")); err != nil {
					t.Fatal(err)
				}
				mustWrite(t, filepath.Join(dir, "proxywasm", "new.go"), "package proxywasm\n")
			},
			want: "go.mod and 1 more differ, proxywasm/types/types.go is missing, proxywasm/new.go is not in " + gluegen.SDKVersion,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			copySDK(t, dir)
			tc.change(t, dir)
			got, err := sdkDiff(dir)
			if err != nil || got != tc.want {
				t.Errorf("sdkDiff = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func appendFile(t *testing.T, path, data string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(data); err != nil {
		t.Fatal(err)
	}
}
