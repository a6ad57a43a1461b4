// Package testplugins gives tests the repository's example plugins
// (plugins/NAME) as .wasm files, building them on demand.
package testplugins

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/wasm-callout/wasm-callout/internal/gobuild"
)

// rootModule is the repository's module path, used to find its root.
const rootModule = "github.com/wasm-callout/wasm-callout"

// buildTimeout bounds one plugin build (a cold Go build cache compiles the
// runtime for wasip1 first).
const buildTimeout = 5 * time.Minute

var (
	mu    sync.Mutex
	fresh = map[string]bool{} // plugins checked up to date by this process
)

// Path returns the absolute path of plugins/bin/NAME.wasm, first building it
// from plugins/NAME with gobuild if it is missing or older than any of its
// inputs: the plugin's files, plugins/go.mod and go.sum, and the builder with
// its generated glue (internal/gobuild). Builds are serialised across
// processes by a lock on plugins/bin/.lock, so parallel test packages do not
// build the same plugin at once. Any failure is fatal to the test.
func Path(tb testing.TB, name string) string {
	tb.Helper()
	p, err := path(name)
	if err != nil {
		tb.Fatalf("testplugins: plugin %q: %v", name, err)
	}
	return p
}

func path(name string) (string, error) {
	if name == "" || name == "bin" || strings.ContainsAny(name, `/\`) || strings.HasPrefix(name, ".") {
		return "", fmt.Errorf("bad plugin name (want a directory name under plugins/)")
	}
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	src := filepath.Join(root, "plugins", name)
	if fi, err := os.Stat(src); err != nil || !fi.IsDir() {
		return "", fmt.Errorf("no plugin directory %s", src)
	}
	bin := filepath.Join(root, "plugins", "bin")
	out := filepath.Join(bin, name+".wasm")

	mu.Lock()
	defer mu.Unlock()
	if fresh[out] {
		return out, nil
	}
	unlock, err := LockDir(bin)
	if err != nil {
		return "", err
	}
	defer unlock()

	// Checked under the lock: another process may just have built it.
	stale, err := isStale(out, []string{
		src,
		filepath.Join(root, "plugins", "go.mod"),
		filepath.Join(root, "plugins", "go.sum"),
		filepath.Join(root, "internal", "gobuild"),
	})
	if err != nil {
		return "", err
	}
	if stale {
		ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
		defer cancel()
		if err := gobuild.Build(ctx, gobuild.Options{Dir: src, Output: out}); err != nil {
			return "", fmt.Errorf("building (run `make plugins` to see the same error): %w", err)
		}
	}
	fresh[out] = true
	return out, nil
}

// isStale reports whether out is missing or older than any file in inputs
// (files, or directories walked recursively), not counting Go test files.
func isStale(out string, inputs []string) (bool, error) {
	fi, err := os.Stat(out)
	if err != nil {
		return true, nil
	}
	built := fi.ModTime()
	newer := false
	for _, in := range inputs {
		err := filepath.WalkDir(in, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() || strings.HasSuffix(p, "_test.go") {
				return nil
			}
			info, err := d.Info()
			if err != nil {
				return err
			}
			if info.ModTime().After(built) {
				newer = true
				return filepath.SkipAll
			}
			return nil
		})
		if err != nil {
			return false, err
		}
		if newer {
			return true, nil
		}
	}
	return false, nil
}

// LockDir creates dir if needed and takes an exclusive lock on dir/.lock,
// shared by every process: test packages run in parallel must not build
// the same outputs at once. The returned function releases it.
func LockDir(dir string) (unlock func(), err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	lock, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		lock.Close()
		return nil, fmt.Errorf("locking %s: %w", lock.Name(), err)
	}
	return func() {
		syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
		lock.Close()
	}, nil
}

// RepoRoot finds the repository root: the directory, at or above the
// working directory, whose go.mod declares the wasm-callout module.
func RepoRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := wd; ; {
		if data, err := os.ReadFile(filepath.Join(d, "go.mod")); err == nil && declaresModule(string(data), rootModule) {
			return d, nil
		}
		parent := filepath.Dir(d)
		if parent == d {
			return "", fmt.Errorf("no go.mod for module %s at or above %s", rootModule, wd)
		}
		d = parent
	}
}

func declaresModule(gomod, path string) bool {
	for _, line := range strings.Split(gomod, "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "module" && strings.Trim(f[1], `"`) == path {
			return true
		}
	}
	return false
}
