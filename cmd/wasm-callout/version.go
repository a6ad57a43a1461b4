package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/wasm-callout/wasm-callout/internal/cliflags"
)

// wazeroModule is the module whose version the build info reports as the
// Wasm runtime's.
const wazeroModule = "github.com/tetratelabs/wazero"

// versionInfo is what `wasm-callout version` prints: everything needed to
// tell two builds apart, read from the binary's build info.
type versionInfo struct {
	// Module is the main module's path and Version its version: a tag for
	// `go install …@v1.2.3`, a pseudo-version for `@latest` between tags,
	// "(devel)" for a build from a checkout.
	Module  string `json:"module"`
	Version string `json:"version"`
	// Revision is the VCS commit a checkout build came from, Time its
	// commit time and Modified whether the tree had uncommitted changes;
	// empty for `go install` builds, which have no VCS information.
	Revision string `json:"vcs_revision,omitempty"`
	Time     string `json:"vcs_time,omitempty"`
	Modified bool   `json:"vcs_modified,omitempty"`
	// Go is the toolchain that built the binary, Platform its GOOS/GOARCH.
	Go       string `json:"go"`
	Platform string `json:"platform"`
	// Wazero is the version of the Wasm runtime compiled in.
	Wazero string `json:"wazero"`
}

// readVersion reads the build info of the running binary. A binary built
// without module support (never the case for go build or go install since
// Go 1.18) reports "unknown" rather than nothing.
func readVersion() versionInfo {
	v := versionInfo{Module: "unknown", Version: "unknown", Go: runtime.Version(),
		Platform: runtime.GOOS + "/" + runtime.GOARCH, Wazero: "unknown"}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return v
	}
	return versionFrom(bi, v)
}

// versionFrom fills v from bi.
func versionFrom(bi *debug.BuildInfo, v versionInfo) versionInfo {
	if bi.Main.Path != "" {
		v.Module, v.Version = bi.Main.Path, bi.Main.Version
	}
	if bi.GoVersion != "" {
		v.Go = bi.GoVersion
	}
	for _, d := range bi.Deps {
		if d.Path != wazeroModule {
			continue
		}
		v.Wazero = d.Version
		if d.Replace != nil {
			v.Wazero = strings.TrimSpace(d.Version + " => " + d.Replace.Path + " " + d.Replace.Version)
		}
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			v.Revision = s.Value
		case "vcs.time":
			v.Time = s.Value
		case "vcs.modified":
			v.Modified = s.Value == "true"
		}
	}
	return v
}

// String is the one-line form: wasm-callout VERSION (REV[+modified]) go
// VERSION wazero VERSION PLATFORM.
func (v versionInfo) String() string {
	s := "wasm-callout " + v.Version
	if v.Revision != "" {
		rev := v.Revision
		if len(rev) > 12 {
			rev = rev[:12]
		}
		if v.Modified {
			rev += "+modified"
		}
		s += " (" + rev + ")"
	}
	return s + " " + v.Go + " wazero " + v.Wazero + " " + v.Platform
}

// version prints the build's version: one line, or with --json an object.
func version(args []string, stdout io.Writer) error {
	fs := cliflags.NewFlagSet("wasm-callout version", stdout, "Usage: wasm-callout version [--json]\n\n"+
		"Prints the module version, VCS revision, Go and wazero versions of this binary.\n\nFlags:")
	asJSON := fs.Bool("json", false, "print a JSON object instead of one line")
	if err := cliflags.Parse(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return cliflags.Usagef("version: unexpected argument %q", fs.Arg(0))
	}
	return printVersion(stdout, *asJSON)
}

func printVersion(w io.Writer, asJSON bool) error {
	v := readVersion()
	if !asJSON {
		_, err := fmt.Fprintln(w, v)
		return err
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}
