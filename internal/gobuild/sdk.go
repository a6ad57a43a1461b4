package gobuild

import (
	"bytes"
	"crypto/sha256"
	_ "embed"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/wasm-callout/wasm-callout/internal/gobuild/gluegen"
)

// sdkManifest lists the SHA-256 of every file of the released SDK that a
// build uses (see sdkFiles), as `sha256sum` prints them: "HASH  PATH" lines
// sorted by path. `cd SDK && sha256sum -c` checks a checkout against it;
// TestSDKManifest checks it against the module cache and rewrites it with
// -update.
//
// A replace directive may point the SDK at a local directory (the SDK's own
// examples use `replace … => ../..`). Its go.mod carries no version, and a
// checkout of the release tag has no other version marker, so the build
// decides by content: the replacement is the supported SDK exactly when
// its files match this manifest. The manifest is embedded rather than
// compared with the module cache at build time so that a checkout builds
// without the released version ever having been downloaded.
//
//go:embed sdk.sha256
var sdkManifest []byte

// sdkFiles returns the files of the SDK module in root that a build copies
// (slash-separated, relative to root, sorted): go.mod and the non-test Go
// sources, outside the directories the go command ignores (".x", "_x",
// testdata), nested modules, and the examples and doc directories.
func sdkFiles(root string) ([]string, error) {
	var files []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			if rel == "." {
				return nil
			}
			if strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") ||
				name == "testdata" || name == "examples" || name == "doc" {
				return filepath.SkipDir
			}
			if _, err := os.Stat(filepath.Join(path, "go.mod")); err == nil {
				return filepath.SkipDir // a nested module
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		if rel == "go.mod" || (strings.HasSuffix(name, ".go") && !strings.HasSuffix(name, "_test.go")) {
			files = append(files, filepath.ToSlash(rel))
		}
		return nil
	})
	sort.Strings(files)
	return files, err
}

// manifestOf returns the manifest (in sdkManifest's format) of the SDK
// module in root.
func manifestOf(root string) ([]byte, error) {
	files, err := sdkFiles(root)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	for _, f := range files {
		data, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(f)))
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(&b, "%x  %s\n", sha256.Sum256(data), f)
	}
	return b.Bytes(), nil
}

// parseManifest maps each path of a manifest to its hash.
func parseManifest(m []byte) map[string]string {
	files := map[string]string{}
	for _, line := range strings.Split(string(m), "\n") {
		if hash, path, ok := strings.Cut(line, "  "); ok {
			files[path] = hash
		}
	}
	return files
}

// sdkDiff compares the SDK module in root with the released SDK and
// describes how it differs in a few words ("" if it does not).
func sdkDiff(root string) (string, error) {
	m, err := manifestOf(root)
	if err != nil {
		return "", err
	}
	if bytes.Equal(m, sdkManifest) {
		return "", nil
	}
	want, got := parseManifest(sdkManifest), parseManifest(m)
	var changed, missing, extra []string
	for path, hash := range want {
		switch h, ok := got[path]; {
		case !ok:
			missing = append(missing, path)
		case h != hash:
			changed = append(changed, path)
		}
	}
	for path := range got {
		if _, ok := want[path]; !ok {
			extra = append(extra, path)
		}
	}
	var parts []string
	for _, d := range []struct {
		paths     []string
		one, many string
	}{
		{changed, "differs", "differ"},
		{missing, "is missing", "are missing"},
		{extra, "is not in " + gluegen.SDKVersion, "are not in " + gluegen.SDKVersion},
	} {
		sort.Strings(d.paths)
		switch n := len(d.paths); {
		case n == 1:
			parts = append(parts, d.paths[0]+" "+d.one)
		case n > 1:
			parts = append(parts, fmt.Sprintf("%s and %d more %s", d.paths[0], n-1, d.many))
		}
	}
	return strings.Join(parts, ", "), nil
}
