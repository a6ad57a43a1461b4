package gobuild

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"

	"github.com/wasm-callout/wasm-callout/internal/cliflags"
	"github.com/wasm-callout/wasm-callout/internal/gobuild/gluegen"
)

var pluginsDir = filepath.Join("..", "..", "plugins")

// userModule writes a module outside the repository, like a user's: go.mod
// requiring the SDK (go.sum borrowed from the plugins module), and the basic
// plugin's source in a subdirectory. It returns the plugin directory.
func userModule(t *testing.T, gomodExtra string) string {
	t.Helper()
	root := t.TempDir()
	gomod := "module example.com/user\n\ngo 1.22\n\nrequire " + gluegen.SDKModule + " " + gluegen.SDKVersion + "\n" + gomodExtra
	mustWrite(t, filepath.Join(root, "go.mod"), gomod)
	sum, err := os.ReadFile(filepath.Join(pluginsDir, "go.sum"))
	if err != nil {
		t.Fatal(err)
	}
	mustWrite(t, filepath.Join(root, "go.sum"), string(sum))
	src, err := os.ReadFile(filepath.Join(pluginsDir, "basic", "main.go"))
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "cmd", "myplugin")
	mustWrite(t, filepath.Join(dir, "main.go"), string(src))
	return dir
}

// sdkExample lays out a checkout of the SDK's release as the SDK's own
// examples expect it: a copy of the released SDK in a temporary directory,
// changed by change (if not nil), and the basic plugin as the module
// examples/hello, which requires the SDK at no version and replaces it with
// ../.. (as the SDK's examples' go.mod files do). It returns the plugin
// directory.
func sdkExample(t *testing.T, change func(sdk string)) string {
	t.Helper()
	sdk := t.TempDir()
	copySDK(t, sdk)
	if change != nil {
		change(sdk)
	}
	dir := filepath.Join(sdk, "examples", "hello")
	mustWrite(t, filepath.Join(dir, "go.mod"), "module "+gluegen.SDKModule+"/examples/hello\n\ngo 1.19\n\n"+
		"replace "+gluegen.SDKModule+" => ../..\n\n"+
		"require "+gluegen.SDKModule+" v0.0.0-00010101000000-000000000000\n")
	src, err := os.ReadFile(filepath.Join(pluginsDir, "basic", "main.go"))
	if err != nil {
		t.Fatal(err)
	}
	mustWrite(t, filepath.Join(dir, "main.go"), string(src))
	return dir
}

// taggedModule is userModule with a second file that uses a constant only
// a file behind the build tag mytag defines: it builds only with that tag.
func taggedModule(t *testing.T) string {
	t.Helper()
	dir := userModule(t, "")
	mustWrite(t, filepath.Join(dir, "tagged.go"), "//go:build mytag\n\npackage main\n\nconst tagged = true\n")
	mustWrite(t, filepath.Join(dir, "uses_tag.go"), "package main\n\nvar _ = tagged\n")
	return dir
}

func mustWrite(t *testing.T, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// tree lists the files under dir with their contents, to check that a build
// leaves a user's module untouched.
func tree(t *testing.T, dir string) map[string]string {
	t.Helper()
	m := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		m[p] = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestBuild(t *testing.T) {
	for _, tc := range []struct {
		name      string
		dir       func(t *testing.T) string
		tags      []string
		env       func(t *testing.T) // sets the environment the build sees
		untouched bool               // the build must not change DIR/../..
		wantErr   error              // nil: the build must succeed
		errText   string             // substring of the error
	}{
		{name: "basic", dir: func(*testing.T) string { return filepath.Join(pluginsDir, "basic") }},
		{name: "testbed", dir: func(*testing.T) string { return filepath.Join(pluginsDir, "testbed") }},
		{name: "user module", dir: func(t *testing.T) string { return userModule(t, "") }, untouched: true},
		{
			name:      "SDK example replacing the SDK with its checkout",
			dir:       func(t *testing.T) string { return sdkExample(t, nil) },
			untouched: true,
		},
		{
			name: "SDK replaced by the released module",
			dir: func(t *testing.T) string {
				return userModule(t, "replace "+gluegen.SDKModule+" => "+gluegen.SDKModule+" "+gluegen.SDKVersion+"\n")
			},
		},
		{
			name: "SDK example replacing the SDK with a modified checkout",
			dir: func(t *testing.T) string {
				return sdkExample(t, func(sdk string) {
					appendFile(t, filepath.Join(sdk, "proxywasm", "hostcall.go"), "\n// a local change\n")
				})
			},
			wantErr: ErrUnsupportedSDK,
			errText: "go.mod replaces " + gluegen.SDKModule + " with ../.., which is not v0.24.0 (proxywasm/hostcall.go differs): drop the replace or point it at v0.24.0",
		},
		{
			name: "unsupported SDK version without its go.sum lines",
			dir: func(t *testing.T) string {
				dir := userModule(t, "")
				mustWrite(t, filepath.Join(dir, "..", "..", "go.mod"), "module example.com/user\n\ngo 1.22\n\nrequire "+gluegen.SDKModule+" v0.23.0\n")
				return dir
			},
			wantErr: ErrUnsupportedSDK, errText: "uses " + gluegen.SDKModule + " v0.23.0, but the stock-Go glue is written for v0.24.0 only",
		},
		{name: "build tag", dir: taggedModule, tags: []string{"mytag"}},
		{name: "build tag missing", dir: taggedModule, errText: "go build failed"},
		{
			// The user's tags apply; their -mod=vendor, which would fail
			// (there is no vendor directory), gives way to the build's.
			name: "build tag from GOFLAGS",
			dir:  taggedModule,
			env:  func(t *testing.T) { t.Setenv("GOFLAGS", "-mod=vendor -tags=mytag") },
		},
		{
			name: "build tag from go env -w",
			dir:  taggedModule,
			env: func(t *testing.T) {
				goenv := filepath.Join(t.TempDir(), "env")
				mustWrite(t, goenv, "GOFLAGS=-tags=mytag\n")
				t.Setenv("GOENV", goenv)
				t.Setenv("GOFLAGS", "")
			},
		},
		{
			name:    "-tags replaces GOFLAGS' -tags",
			dir:     taggedModule,
			tags:    []string{"othertag"},
			env:     func(t *testing.T) { t.Setenv("GOFLAGS", "-tags=mytag") },
			errText: "go build failed",
		},
		{
			name: "main package without the SDK",
			dir: func(t *testing.T) string {
				dir := userModule(t, "")
				mustWrite(t, filepath.Join(dir, "main.go"), "package main\n\nfunc main() {}\n")
				return dir
			},
			wantErr: ErrNotPlugin, errText: "does not import github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm",
		},
		{
			name: "library package",
			dir: func(t *testing.T) string {
				dir := userModule(t, "")
				mustWrite(t, filepath.Join(dir, "main.go"), "package lib\n")
				return dir
			},
			wantErr: ErrNotPlugin, errText: "not a main package",
		},
		{
			name:    "no Go files",
			dir:     func(t *testing.T) string { return filepath.Dir(userModule(t, "")) },
			wantErr: ErrNotPlugin, errText: "no Go files",
		},
		{
			name: "no go.mod",
			dir: func(t *testing.T) string {
				dir := t.TempDir()
				mustWrite(t, filepath.Join(dir, "main.go"), "package main\n\nfunc main() {}\n")
				return dir
			},
			wantErr: ErrNotPlugin, errText: "no go.mod",
		},
		{
			name: "replaced SDK",
			dir: func(t *testing.T) string {
				fork := t.TempDir()
				mustWrite(t, filepath.Join(fork, "go.mod"), "module "+gluegen.SDKModule+"\n\ngo 1.19\n")
				mustWrite(t, filepath.Join(fork, "proxywasm", "internal", "internal.go"), "package internal\n")
				mustWrite(t, filepath.Join(fork, "proxywasm", "proxywasm.go"), "package proxywasm\n\nimport _ \""+gluegen.SDKModule+"/proxywasm/internal\"\n")
				dir := userModule(t, "replace "+gluegen.SDKModule+" => "+fork+"\n")
				mustWrite(t, filepath.Join(dir, "main.go"), "package main\n\nimport _ \""+gluegen.SDKModule+"/proxywasm\"\n\nfunc main() {}\n")
				return dir
			},
			wantErr: ErrUnsupportedSDK, errText: "which is not v0.24.0 (",
		},
		{
			name:    "missing directory",
			dir:     func(t *testing.T) string { return filepath.Join(t.TempDir(), "nope") },
			errText: "no such file or directory",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := tc.dir(t)
			if tc.env != nil {
				tc.env(t)
			}
			var before map[string]string
			if tc.untouched {
				before = tree(t, filepath.Dir(filepath.Dir(dir)))
			}
			out := filepath.Join(t.TempDir(), "out", "plugin.wasm")
			var log bytes.Buffer
			err := Build(context.Background(), Options{Dir: dir, Output: out, Log: &log, Tags: tc.tags})
			if tc.wantErr == nil && tc.errText == "" {
				if err != nil {
					t.Fatalf("Build: %v\n%s", err, log.String())
				}
				checkModule(t, out)
				if before != nil {
					if after := tree(t, filepath.Dir(filepath.Dir(dir))); !mapsEqual(before, after) {
						t.Errorf("the build changed the user's module:\nbefore %v\nafter  %v", keys(before), keys(after))
					}
				}
				return
			}
			if err == nil {
				t.Fatalf("Build succeeded, want an error")
			}
			if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Errorf("Build error %q is not %q", err, tc.wantErr)
			}
			if !strings.Contains(err.Error(), tc.errText) {
				t.Errorf("Build error %q does not mention %q", err, tc.errText)
			}
			if errors.Is(err, ErrUnsupportedSDK) && strings.Contains(err.Error(), "\n") {
				t.Errorf("Build error %q is not one line", err)
			}
			if _, statErr := os.Stat(out); statErr == nil {
				t.Errorf("a failed build wrote %s", out)
			}
		})
	}
}

// checkModule compiles (without instantiating) the plugin and checks its
// exports and imports against the glue's ABI tables.
func checkModule(t *testing.T, path string) {
	t.Helper()
	code, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	rt := wazero.NewRuntime(ctx)
	defer rt.Close(ctx)
	cm, err := rt.CompileModule(ctx, code)
	if err != nil {
		t.Fatalf("compiling %s: %v", path, err)
	}
	wantExports, err := gluegen.Exports()
	if err != nil {
		t.Fatal(err)
	}
	wantExports["_initialize"] = gluegen.Signature{}
	exports := cm.ExportedFunctions()
	for name, want := range wantExports {
		f, ok := exports[name]
		if !ok {
			t.Errorf("missing export %s", name)
			continue
		}
		if got := signature(f); got.String() != want.String() {
			t.Errorf("export %s: %s, want %s", name, got, want)
		}
	}
	for name := range exports {
		if _, ok := wantExports[name]; !ok {
			t.Errorf("unexpected export %s", name)
		}
	}
	if _, ok := exports["_start"]; ok {
		t.Errorf("the plugin is a command module (exports _start), want a reactor")
	}

	wantImports, err := gluegen.Imports()
	if err != nil {
		t.Fatal(err)
	}
	envImports := 0
	for _, f := range cm.ImportedFunctions() {
		module, name, _ := f.Import()
		switch module {
		case "env":
			envImports++
			want, ok := wantImports[name]
			if !ok {
				t.Errorf("unexpected import env.%s", name)
			} else if got := signature(f); got.String() != want.String() {
				t.Errorf("import env.%s: %s, want %s", name, got, want)
			}
		case "wasi_snapshot_preview1":
		default:
			t.Errorf("unexpected import %s.%s", module, name)
		}
	}
	if envImports == 0 {
		t.Errorf("no env.proxy_* imports")
	}
}

func signature(f api.FunctionDefinition) gluegen.Signature {
	var s gluegen.Signature
	for _, p := range f.ParamTypes() {
		s.Params = append(s.Params, api.ValueTypeName(p))
	}
	for _, r := range f.ResultTypes() {
		s.Results = append(s.Results, api.ValueTypeName(r))
	}
	return s
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func keys(m map[string]string) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func TestRun(t *testing.T) {
	ctx := context.Background()
	out := filepath.Join(t.TempDir(), "basic.wasm")
	var stdout, stderr bytes.Buffer
	// Flags after the directory, as in `wasm-callout build ./plugins/basic -o x.wasm`.
	if err := Run(ctx, []string{filepath.Join(pluginsDir, "basic"), "-o", out}, &stdout, &stderr); err != nil {
		t.Fatalf("Run: %v\n%s", err, stderr.String())
	}
	if _, err := os.Stat(out); err != nil {
		t.Fatal(err)
	}

	for _, args := range [][]string{nil, {"a", "b"}, {"-nope", "a"}, {"-v=maybe", "a"}} {
		stdout.Reset()
		stderr.Reset()
		err := Run(ctx, args, &stdout, &stderr)
		if err == nil || cliflags.ExitCode(err) != 2 || strings.Contains(err.Error(), "\n") || stdout.Len()+stderr.Len() > 0 {
			t.Errorf("Run(%q) = %v, printed %q %q; want one line, a usage error, nothing printed", args, err, stdout.String(), stderr.String())
		}
	}
	stdout.Reset()
	stderr.Reset()
	if err := Run(ctx, []string{"-h"}, &stdout, &stderr); err != nil || !strings.Contains(stdout.String(), "usage: wasm-callout build") || stderr.Len() > 0 {
		t.Errorf("Run(-h) = %v, printed %q to stdout, %q to stderr", err, stdout.String(), stderr.String())
	}
}

func TestMissingToolchain(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	ctx := context.Background()
	dir := filepath.Join(pluginsDir, "basic")
	out := filepath.Join(t.TempDir(), "x.wasm")
	for _, tc := range []struct {
		tinygo bool
		text   string
	}{
		{false, "go command is not on PATH"},
		{true, "tinygo is not on PATH"},
	} {
		err := Build(ctx, Options{Dir: dir, Output: out, TinyGo: tc.tinygo})
		if !errors.Is(err, ErrNoToolchain) || !strings.Contains(err.Error(), tc.text) {
			t.Errorf("Build(TinyGo: %v) = %v, want %v mentioning %q", tc.tinygo, err, ErrNoToolchain, tc.text)
		}
	}
}

func TestReactorFileName(t *testing.T) {
	for _, tc := range []struct {
		files []string
		want  string
	}{
		{[]string{"main.go"}, "zz_wasm_callout_main.go"},
		{[]string{"main.go", "zz_wasm_callout_main.go"}, "zzz_wasm_callout_main.go"},
		{[]string{"zzzz.go"}, "zzzz_wasm_callout_main.go"},
		{[]string{"zzzzz.go"}, "zzzzz_wasm_callout_main.go"},
	} {
		if got := reactorFileName(&listedPackage{GoFiles: tc.files}); got != tc.want {
			t.Errorf("reactorFileName(%q) = %s, want %s", tc.files, got, tc.want)
		}
	}
}

// A failed build says what went wrong once, wherever it is printed: in the
// error, and with -v in the log of the commands' output.
func TestBuildErrorOnce(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		dir  func(t *testing.T) string
		want string
	}{
		{name: "compile error", dir: taggedModule, want: "undefined: tagged"},
		{
			// go list reports the missing directory for each of the three
			// SDK packages the plugin imports.
			name: "missing replacement",
			dir: func(t *testing.T) string {
				dir := userModule(t, "replace "+gluegen.SDKModule+" => ../nowhere\n")
				mustWrite(t, filepath.Join(dir, "more.go"), "package main\n\nimport (\n"+
					"\t_ \""+gluegen.SDKModule+"/properties\"\n"+
					"\t_ \""+gluegen.SDKModule+"/proxywasm/proxytest\"\n)\n")
				return dir
			},
			want: "replacement directory ../nowhere does not exist",
		},
	} {
		for _, verbose := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s verbose=%v", tc.name, verbose), func(t *testing.T) {
				args := []string{"-o", filepath.Join(t.TempDir(), "x.wasm"), tc.dir(t)}
				if verbose {
					args = append(args, "-v")
				}
				var stdout, stderr bytes.Buffer
				err := Run(ctx, args, &stdout, &stderr)
				if err == nil {
					t.Fatal("Run succeeded, want an error")
				}
				printed := stdout.String() + stderr.String() + err.Error()
				if n := strings.Count(printed, tc.want); n != 1 {
					t.Errorf("%q printed %d times, want once:\n%s", tc.want, n, printed)
				}
			})
		}
	}
}

func TestMergeGoFlags(t *testing.T) {
	for _, tc := range []struct {
		user, want string
		dropped    []string
		err        bool
	}{
		{user: "", want: "-mod=readonly"},
		{user: "-tags=a,b -ldflags=-s", want: "-tags=a,b -ldflags=-s -mod=readonly"},
		{user: "-mod=vendor -tags=a", want: "-tags=a -mod=readonly", dropped: []string{"-mod=vendor"}},
		{user: "--mod=mod -modfile=x.mod -buildmode=pie -overlay=o.json -trimpath -buildvcs=false",
			want:    "-trimpath -buildvcs=false -mod=readonly",
			dropped: []string{"--mod=mod", "-modfile=x.mod", "-buildmode=pie", "-overlay=o.json"}},
		{user: `'-ldflags=-X main.v=1 -s' -tags=a`, want: `'-ldflags=-X main.v=1 -s' -tags=a -mod=readonly`},
		{user: `"-ldflags=-X 'main.v=1'"`, want: `"-ldflags=-X 'main.v=1'" -mod=readonly`},
		{user: "'-ldflags=-s", err: true},
	} {
		got, dropped, err := mergeGoFlags(tc.user)
		if (err != nil) != tc.err || got != tc.want || strings.Join(dropped, " ") != strings.Join(tc.dropped, " ") {
			t.Errorf("mergeGoFlags(%q) = %q, %q, %v; want %q, %q, error %v", tc.user, got, dropped, err, tc.want, tc.dropped, tc.err)
		}
	}
}
