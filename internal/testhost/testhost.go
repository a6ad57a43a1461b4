// Package testhost loads plugins for tests that drive wasm-callout's server:
// each configuration once per test binary, compiled through a compilation
// cache of the binary's own, and every one closed when the binary ends.
package testhost

import (
	"context"
	"io"
	"log/slog"
	"os"
	"sync"
	"testing"

	"github.com/wasm-callout/wasm-callout/host"
)

// Loader keeps the plugins a test binary loaded. Make it in TestMain with
// NewLoader and Close it after m.Run.
type Loader struct {
	// Dir is the compilation cache every load uses, for tests that load
	// plugins themselves.
	Dir string

	mu      sync.Mutex
	plugins map[string]*host.Plugin
}

// NewLoader makes a Loader with a fresh compilation cache directory.
func NewLoader(name string) (*Loader, error) {
	dir, err := os.MkdirTemp("", name+"-test-cache")
	if err != nil {
		return nil, err
	}
	return &Loader{Dir: dir, plugins: map[string]*host.Plugin{}}, nil
}

// Load returns the plugin loaded from the .wasm at path with cfg under key,
// loading it the first time. cfg gets the Loader's compilation cache and,
// if it has none, Logger().
func (l *Loader) Load(t testing.TB, key, path string, cfg host.Config) *host.Plugin {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	if p := l.plugins[key]; p != nil {
		return p
	}
	wasm, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg.CompilationCacheDir = l.Dir
	if cfg.Logger == nil {
		cfg.Logger = Logger()
	}
	p, err := host.Load(context.Background(), wasm, cfg)
	if err != nil {
		t.Fatal(err)
	}
	l.plugins[key] = p
	return p
}

// Close closes every plugin loaded and removes the cache.
func (l *Loader) Close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, p := range l.plugins {
		p.Close(context.Background())
	}
	os.RemoveAll(l.Dir)
}

// Logger discards logs unless WASM_CALLOUT_TEST_LOG is set, when it writes
// them to stderr at debug.
func Logger() *slog.Logger {
	if os.Getenv("WASM_CALLOUT_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}
