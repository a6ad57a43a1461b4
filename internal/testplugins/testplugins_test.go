package testplugins

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestPath(t *testing.T) {
	for _, name := range []string{"basic", "testbed"} {
		p := Path(t, name)
		if !filepath.IsAbs(p) || filepath.Base(p) != name+".wasm" {
			t.Errorf("Path(%s) = %s", name, p)
		}
		if fi, err := os.Stat(p); err != nil || fi.Size() == 0 {
			t.Errorf("Path(%s): %v", name, err)
		}
	}
}

func TestBadNames(t *testing.T) {
	for _, name := range []string{"", "bin", "../basic", ".hidden", "no-such-plugin"} {
		if _, err := path(name); err == nil {
			t.Errorf("path(%q) succeeded", name)
		}
	}
}

func TestIsStale(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "src", "main.go")
	out := filepath.Join(dir, "out.wasm")
	if err := os.MkdirAll(filepath.Dir(in), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{in, out} {
		if err := os.WriteFile(f, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	old := time.Now().Add(-time.Hour)
	inputs := []string{filepath.Dir(in)}

	if err := os.Chtimes(in, old, old); err != nil {
		t.Fatal(err)
	}
	if stale, err := isStale(out, inputs); err != nil || stale {
		t.Errorf("output newer than inputs: stale=%v err=%v", stale, err)
	}
	if err := os.Chtimes(out, old.Add(-time.Hour), old.Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	if stale, err := isStale(out, inputs); err != nil || !stale {
		t.Errorf("output older than an input: stale=%v err=%v", stale, err)
	}
	if stale, err := isStale(filepath.Join(dir, "missing.wasm"), inputs); err != nil || !stale {
		t.Errorf("missing output: stale=%v err=%v", stale, err)
	}
}
