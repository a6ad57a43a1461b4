// Command gen writes the stock-Go glue for TinyGo-era proxy-wasm-go-sdk
// plugins into internal/gobuild/glue (run via go generate in
// internal/gobuild). The glue is generated from the tables in
// internal/gobuild/gluegen; see that package for what it contains.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/wasm-callout/wasm-callout/internal/gobuild/gluegen"
)

func main() {
	out := flag.String("out", "glue", "directory to write the glue files (NAME.go.txt) into")
	flag.Parse()
	if err := run(*out); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}

func run(dir string) error {
	files, err := gluegen.Generate()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, name := range gluegen.Names() {
		if err := os.WriteFile(filepath.Join(dir, name+".txt"), files[name], 0o644); err != nil {
			return err
		}
	}
	return nil
}
