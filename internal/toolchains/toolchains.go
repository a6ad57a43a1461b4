// Package toolchains gives tests the compatibility plugins of
// testdata/toolchains, built from source with each non-Go toolchain
// (AssemblyScript, C, Rust) by that directory's Makefile.
//
// A toolchain that is not installed skips the test with the make target
// that installs it, except when the environment variable CI is set: CI
// installs every toolchain (`make toolchains`), so there a missing one
// fails the test.
package toolchains

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wasm-callout/wasm-callout/internal/testplugins"
)

// buildTimeout bounds one toolchain's build (AssemblyScript takes several
// seconds per plugin).
const buildTimeout = 5 * time.Minute

// Toolchain is one non-Go toolchain with its plugins.
type Toolchain struct {
	// Name is the Makefile target and the directory under testdata/toolchains.
	Name string
	// Prefix starts the file names of its plugins: bin/PREFIX_PLUGIN.wasm.
	Prefix string
	// Plugins are the plugins the Makefile builds, by name.
	Plugins []string
	// needs lists what must exist: commands looked up in PATH, or absolute
	// paths, or paths relative to the repository root (with a "/").
	needs []string
}

// All lists the toolchains in the order of the README's compatibility table.
var All = []Toolchain{
	{Name: "assemblyscript", Prefix: "as",
		Plugins: []string{"headers", "body", "local_reply", "config", "grpc"},
		needs:   []string{"node", "testdata/toolchains/assemblyscript/node_modules/.bin/asc"}},
	{Name: "c", Prefix: "c",
		Plugins: []string{"headers", "body", "local_reply", "properties", "tcp"},
		needs:   []string{"clang-19", "wasm-ld-19", "/usr/include/wasm32-wasi/stdlib.h", "/usr/lib/wasm32-wasi/libc.a"}},
	{Name: "rust", Prefix: "rust",
		Plugins: []string{"headers", "body", "local_reply", "properties", "tcp"},
		needs:   []string{"/usr/bin/rustc", "wasm-ld-14", "/usr/lib/rustlib/wasm32-unknown-unknown/lib"}},
}

// Lookup returns the toolchain called name.
func Lookup(name string) (Toolchain, bool) {
	for _, tc := range All {
		if tc.Name == name {
			return tc, true
		}
	}
	return Toolchain{}, false
}

// Missing names what the toolchain lacks on this machine, or "" when it is
// installed.
func (tc Toolchain) Missing() string {
	root, err := testplugins.RepoRoot()
	if err != nil {
		return err.Error()
	}
	var missing []string
	for _, n := range tc.needs {
		switch {
		case !strings.Contains(n, "/"):
			if _, err := exec.LookPath(n); err != nil {
				missing = append(missing, n)
			}
		default:
			p := n
			if !filepath.IsAbs(p) {
				p = filepath.Join(root, p)
			}
			if _, err := os.Stat(p); err != nil {
				missing = append(missing, n)
			}
		}
	}
	return strings.Join(missing, ", ")
}

var (
	mu    sync.Mutex
	built = map[string]error{} // by toolchain, for this process
)

// Require builds the toolchain's plugins if needed and returns the
// directory that holds them. When the toolchain is not installed it skips
// the test, or fails it if CI is set.
func Require(tb testing.TB, name string) string {
	tb.Helper()
	tc, ok := Lookup(name)
	if !ok {
		tb.Fatalf("toolchains: unknown toolchain %q", name)
	}
	if m := tc.Missing(); m != "" {
		msg := fmt.Sprintf("toolchain %s is not installed (missing %s); `make toolchains` installs it", name, m)
		if os.Getenv("CI") != "" {
			tb.Fatal(msg + " (CI is set, so every toolchain is required)")
		}
		tb.Skip(msg)
	}
	dir, err := build(tc)
	if err != nil {
		tb.Fatalf("toolchains: %v", err)
	}
	return dir
}

// Path is Require followed by the path of one plugin's .wasm.
func Path(tb testing.TB, name, plugin string) string {
	tb.Helper()
	dir := Require(tb, name)
	tc, _ := Lookup(name)
	p := filepath.Join(dir, tc.Prefix+"_"+plugin+".wasm")
	if _, err := os.Stat(p); err != nil {
		tb.Fatalf("toolchains: %s has no plugin %q: %v", name, plugin, err)
	}
	return p
}

// build runs `make -C testdata/toolchains NAME` once per process, under a
// lock on bin/.lock so that test packages running in parallel do not build
// the same files at once; make itself skips what is up to date.
func build(tc Toolchain) (string, error) {
	root, err := testplugins.RepoRoot()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(root, "testdata", "toolchains")
	bin := filepath.Join(dir, "bin")
	mu.Lock()
	defer mu.Unlock()
	if err, ok := built[tc.Name]; ok {
		return bin, err
	}
	unlock, err := testplugins.LockDir(bin)
	if err != nil {
		return "", err
	}
	defer unlock()

	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "make", "--no-print-directory", "-C", dir, tc.Name)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		err = fmt.Errorf("make -C testdata/toolchains %s: %v\n%s", tc.Name, err, out.String())
		built[tc.Name] = err
		return bin, err
	}
	built[tc.Name] = nil
	return bin, nil
}
