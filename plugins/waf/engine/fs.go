package engine

import (
	"embed"
	"io/fs"
	"strings"

	coreruleset "github.com/corazawaf/coraza-coreruleset/v4"
)

// rules holds this plugin's own files: demo.conf and crs-setup-demo.conf.
//
//go:embed rules/*.conf
var rules embed.FS

// aliases are the Include names coraza-proxy-wasm configurations use,
// mapped onto files of the embedded filesystems. Names not listed here
// (@owasp_crs/*.conf, @coraza.conf-recommended, @crs-setup.conf.example)
// are the Core Rule Set module's own and resolve unchanged.
var aliases = map[string]string{
	"@recommended-conf":    "@coraza.conf-recommended",
	"@crs-setup-conf":      "@crs-setup.conf.example",
	"@demo-conf":           "rules/demo.conf",
	"@crs-setup-demo-conf": "rules/crs-setup-demo.conf",
}

// RootFS is the filesystem Include directives resolve against: the OWASP
// Core Rule Set (coraza-coreruleset) with coraza-proxy-wasm's aliases.
var RootFS fs.FS = rootFS{}

type rootFS struct{}

// Open implements fs.FS.
func (rootFS) Open(name string) (fs.File, error) {
	if f, ok := ownFile(name); ok {
		return rules.Open(f)
	}
	return coreruleset.FS.Open(crsName(name))
}

// ReadFile implements fs.ReadFileFS.
func (rootFS) ReadFile(name string) ([]byte, error) {
	if f, ok := ownFile(name); ok {
		return rules.ReadFile(f)
	}
	return fs.ReadFile(coreruleset.FS, crsName(name))
}

// crsName resolves an alias and drops any directory before the first '@':
// Coraza prefixes an included file's directory to the Includes inside it.
func crsName(name string) string {
	if i := strings.IndexByte(name, '@'); i > 0 {
		name = name[i:]
	}
	if a, ok := aliases[name]; ok {
		return a
	}
	return name
}

func ownFile(name string) (string, bool) {
	a := crsName(name)
	return a, strings.HasPrefix(a, "rules/")
}
