package gobuild

import (
	"embed"
	"fmt"

	"github.com/wasm-callout/wasm-callout/internal/gobuild/gluegen"
)

//go:generate go run ./gen -out glue

// glueFS holds the generated glue (see package gluegen). The files carry a
// .txt suffix so that the Go tool does not compile them here.
//
//go:embed glue/*.go.txt
var glueFS embed.FS

// glueFile returns the generated glue file name (e.g. gluegen.ExportsFile).
func glueFile(name string) ([]byte, error) {
	b, err := glueFS.ReadFile("glue/" + name + ".txt")
	if err != nil {
		return nil, fmt.Errorf("glue %s missing from the binary (run go generate ./internal/gobuild): %w", name, err)
	}
	return b, nil
}

// glueNames are the glue files that go into the SDK's proxywasm/internal
// package; gluegen.ReactorMainFile goes into the plugin's main package.
var glueNames = []string{gluegen.HostCallsFile, gluegen.ExportsFile}
