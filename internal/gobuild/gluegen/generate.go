package gluegen

import (
	"bytes"
	"fmt"
	"go/format"
	"sort"
	"strings"
)

// Generated glue file names, as committed in internal/gobuild/glue (with a
// ".txt" suffix so that the Go tool does not compile them there).
const (
	// HostCallsFile goes into the SDK's proxywasm/internal package and
	// replaces its gc-only mock of the host calls.
	HostCallsFile = "hostcalls.go"
	// ExportsFile goes into the SDK's proxywasm/internal package.
	ExportsFile = "exports.go"
	// ReactorMainFile goes into the plugin's main package.
	ReactorMainFile = "reactor_main.go"
)

// Param is one Go parameter of a table entry.
type Param struct {
	Name string
	Type string
}

// ParseParams splits a Go parameter list such as "a uint32, b *byte" into
// its parameters. Every parameter must be named and typed on its own.
func ParseParams(list string) ([]Param, error) {
	if strings.TrimSpace(list) == "" {
		return nil, nil
	}
	var ps []Param
	for _, f := range strings.Split(list, ",") {
		fields := strings.Fields(f)
		if len(fields) != 2 {
			return nil, fmt.Errorf("parameter %q: want \"name type\"", strings.TrimSpace(f))
		}
		ps = append(ps, Param{Name: fields[0], Type: fields[1]})
	}
	return ps, nil
}

// hostParam describes how a Go parameter type of a host call crosses the
// wasm boundary.
type hostParam struct {
	raw  string // Go type in the //go:wasmimport declaration
	wasm string // wasm value type
	// out parameters the host writes through a 32-bit slot: the wrapper
	// passes a temporary initialised from the current value and copies it
	// back afterwards (Go's **byte and *int are 64-bit on wasm and not
	// allowed in a wasmimport signature).
	in, out string // format strings with %[1]s = param name, %[2]s = temporary
	arg     string // argument expression (format, same verbs)
}

var hostParams = map[string]hostParam{
	// Enums are uint32 in the SDK and i32 in the ABI.
	"LogLevel":   {raw: "uint32", wasm: "i32", arg: "uint32(%[1]s)"},
	"MapType":    {raw: "uint32", wasm: "i32", arg: "uint32(%[1]s)"},
	"BufferType": {raw: "uint32", wasm: "i32", arg: "uint32(%[1]s)"},
	"StreamType": {raw: "uint32", wasm: "i32", arg: "uint32(%[1]s)"},
	"MetricType": {raw: "uint32", wasm: "i32", arg: "uint32(%[1]s)"},
	"uint32":     {raw: "uint32", wasm: "i32", arg: "%[1]s"},
	"int32":      {raw: "int32", wasm: "i32", arg: "%[1]s"},
	"int64":      {raw: "int64", wasm: "i64", arg: "%[1]s"},
	"uint64":     {raw: "uint64", wasm: "i64", arg: "%[1]s"},
	// TinyGo's int is 32 bits on wasm: truncating reproduces what a TinyGo
	// build passes (the SDK passes math.MaxInt32 for "to the end").
	"int":     {raw: "uint32", wasm: "i32", arg: "uint32(%[1]s)"},
	"*byte":   {raw: "unsafe.Pointer", wasm: "i32", arg: "unsafe.Pointer(%[1]s)"},
	"*uint32": {raw: "*uint32", wasm: "i32", arg: "%[1]s"},
	"*uint64": {raw: "*uint64", wasm: "i32", arg: "%[1]s"},
	"**byte": {raw: "unsafe.Pointer", wasm: "i32", arg: "unsafe.Pointer(&%[2]s)",
		in: "%[2]s := addrOf(*%[1]s)", out: "*%[1]s = ptrAt(%[2]s)"},
	"*int": {raw: "unsafe.Pointer", wasm: "i32", arg: "unsafe.Pointer(&%[2]s)",
		in: "%[2]s := uint32(*%[1]s)", out: "*%[1]s = int(%[2]s)"},
}

// exportParam describes how a callback parameter arrives from the host.
type exportParam struct {
	raw  string // Go type of the //go:wasmexport parameter
	wasm string
	conv string // format: converts %s (the raw value) to the SDK's type
}

var exportParams = map[string]exportParam{
	"uint32": {raw: "uint32", wasm: "i32", conv: "%s"},
	// Sizes and counts are unsigned 32-bit in the ABI.
	"int":            {raw: "uint32", wasm: "i32", conv: "int(%s)"},
	"bool":           {raw: "uint32", wasm: "i32", conv: "%s != 0"},
	"types.PeerType": {raw: "uint32", wasm: "i32", conv: "types.PeerType(%s)"},
}

var exportResults = map[string]struct{ wasm, conv string }{
	"types.Action":              {"i32", "uint32(%s)"},
	"types.OnVMStartStatus":     {"i32", "boolToU32(bool(%s))"},
	"types.OnPluginStartStatus": {"i32", "boolToU32(bool(%s))"},
	"bool":                      {"i32", "boolToU32(%s)"},
}

// Signature is a wasm function type, e.g. params [i32 i32 i32], results [i32].
type Signature struct {
	Params  []string
	Results []string
}

func (s Signature) String() string {
	return "(" + strings.Join(s.Params, ",") + ")->(" + strings.Join(s.Results, ",") + ")"
}

// Imports returns the wasm signature of every host call the glue imports
// from module "env", by name.
func Imports() (map[string]Signature, error) {
	m := map[string]Signature{}
	for _, h := range HostCalls {
		ps, err := ParseParams(h.Params)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", h.Name, err)
		}
		sig := Signature{Results: []string{"i32"}}
		for _, p := range ps {
			hp, ok := hostParams[p.Type]
			if !ok {
				return nil, fmt.Errorf("%s: unsupported parameter type %q", h.Name, p.Type)
			}
			sig.Params = append(sig.Params, hp.wasm)
		}
		m[h.Name] = sig
	}
	return m, nil
}

// Exports returns the wasm signature of every function the glue exports,
// by name (the callbacks, the allocator and the ABI marker).
func Exports() (map[string]Signature, error) {
	m := map[string]Signature{
		ABIMarker:      {},
		MemoryAllocate: {Params: []string{"i32"}, Results: []string{"i32"}},
	}
	for _, c := range Callbacks {
		ps, err := ParseParams(c.Params)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", c.Name, err)
		}
		var sig Signature
		for _, p := range ps {
			ep, ok := exportParams[p.Type]
			if !ok {
				return nil, fmt.Errorf("%s: unsupported parameter type %q", c.Name, p.Type)
			}
			sig.Params = append(sig.Params, ep.wasm)
		}
		if c.Result != "" {
			r, ok := exportResults[c.Result]
			if !ok {
				return nil, fmt.Errorf("%s: unsupported result type %q", c.Name, c.Result)
			}
			sig.Results = []string{r.wasm}
		}
		m[c.Name] = sig
	}
	return m, nil
}

const header = `//go:build wasip1 && !tinygo

// Code generated by internal/gobuild/gen from the tables in
// internal/gobuild/gluegen; DO NOT EDIT.
`

// Generate returns the glue files by name (see HostCallsFile, ExportsFile,
// ReactorMainFile), gofmt-ed.
func Generate() (map[string][]byte, error) {
	out := map[string][]byte{}
	for name, gen := range map[string]func(*bytes.Buffer) error{
		HostCallsFile:   genHostCalls,
		ExportsFile:     genExports,
		ReactorMainFile: genReactorMain,
	} {
		var b bytes.Buffer
		b.WriteString(header)
		if err := gen(&b); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		src, err := format.Source(b.Bytes())
		if err != nil {
			return nil, fmt.Errorf("%s: gofmt: %w", name, err)
		}
		out[name] = src
	}
	return out, nil
}

// Names returns the generated file names in a stable order.
func Names() []string {
	n := []string{HostCallsFile, ExportsFile, ReactorMainFile}
	sort.Strings(n)
	return n
}

func genHostCalls(b *bytes.Buffer) error {
	b.WriteString(`
// This file replaces the SDK's gc-only mock host (abi_hostcalls_mock.go) in
// stock-Go wasip1 builds: it imports the proxy-wasm host functions with
// wasm-sized parameters and wraps them in the Go signatures that the SDK
// declares for TinyGo in abi_hostcalls.go.
//
// Go's **byte and *int are 64-bit on wasm and not allowed in a wasmimport
// signature, so out-parameters go through 32-bit temporaries that are copied
// back. Pointers passed to a //go:wasmimport function escape, so those
// temporaries (and the SDK's input buffers) live on the heap, which does not
// move: that matters because the host calls proxy_on_memory_allocate while a
// host call is in progress, and Go code running then may grow (and so move)
// the goroutine's stack.

package internal

import "unsafe"

// pinned keeps alive the memory that proxy_on_memory_allocate handed to the
// host until the host call that asked for it has returned and its result has
// been stored in a Go pointer the garbage collector can see. It is emptied
// after every host call with out-parameters and at the start of every
// callback, so it never holds more than one host call's allocations.
var pinned []*byte

// releasePinned drops the references held by pinned.
func releasePinned() {
	for i := range pinned {
		pinned[i] = nil
	}
	pinned = pinned[:0]
}

// addrOf returns the wasm32 address of p.
func addrOf(p *byte) uint32 { return uint32(uintptr(unsafe.Pointer(p))) }

// ptrAt converts a wasm32 address written by the host into a Go pointer.
// Go's heap does not move, and the memory is reachable through pinned.
func ptrAt(addr uint32) *byte { return (*byte)(unsafe.Pointer(uintptr(addr))) }
`)
	for _, h := range HostCalls {
		ps, err := ParseParams(h.Params)
		if err != nil {
			return fmt.Errorf("%s: %w", h.Name, err)
		}
		raw := "wasmImport" + strings.TrimPrefix(h.Func, "Proxy")
		var rawParams, args, ins, outs []string
		for _, p := range ps {
			hp, ok := hostParams[p.Type]
			if !ok {
				return fmt.Errorf("%s: unsupported parameter type %q", h.Name, p.Type)
			}
			tmp := p.Name + "Slot"
			rawParams = append(rawParams, p.Name+" "+hp.raw)
			args = append(args, fmt.Sprintf(hp.arg, p.Name, tmp))
			if hp.in != "" {
				ins = append(ins, fmt.Sprintf(hp.in, p.Name, tmp))
				outs = append(outs, fmt.Sprintf(hp.out, p.Name, tmp))
			}
		}
		fmt.Fprintf(b, "\n//go:wasmimport env %s\n", h.Name)
		fmt.Fprintf(b, "func %s(%s) uint32\n", raw, strings.Join(rawParams, ", "))
		fmt.Fprintf(b, "\n// %s calls the host function %s.\n", h.Func, h.Name)
		fmt.Fprintf(b, "func %s(%s) Status {\n", h.Func, h.Params)
		call := fmt.Sprintf("%s(%s)", raw, strings.Join(args, ", "))
		if len(outs) == 0 {
			fmt.Fprintf(b, "\treturn Status(%s)\n}\n", call)
			continue
		}
		for _, s := range ins {
			fmt.Fprintf(b, "\t%s\n", s)
		}
		fmt.Fprintf(b, "\tst := Status(%s)\n", call)
		for _, s := range outs {
			fmt.Fprintf(b, "\t%s\n", s)
		}
		b.WriteString("\treleasePinned()\n\treturn st\n}\n")
	}
	return nil
}

func genExports(b *bytes.Buffer) error {
	b.WriteString(`
// This file exports the SDK's callbacks (marked //export for TinyGo, which
// the gc toolchain ignores) with the wasm signatures of the proxy-wasm ABI.

package internal

import (
	"unsafe"

	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/types"
)

func boolToU32(b bool) uint32 {
	if b {
		return 1
	}
	return 0
}

//go:wasmexport ` + ABIMarker + `
func wasmExportABIVersion() { proxyABIVersion() }

// wasmExportMemoryAllocate hands the host n bytes of Go memory. The memory is
// pinned (see pinned) until the host call it is for returns; from then on the
// SDK's own pointer keeps it alive. A zero-byte request gets one byte, so the
// result is never 0 (which means failure).
//
//go:wasmexport ` + MemoryAllocate + `
func wasmExportMemoryAllocate(size uint32) uint32 {
	if size == 0 {
		size = 1
	}
	p := proxyOnMemoryAllocate(uint(size))
	pinned = append(pinned, p)
	return uint32(uintptr(unsafe.Pointer(p)))
}
`)
	for _, c := range Callbacks {
		ps, err := ParseParams(c.Params)
		if err != nil {
			return fmt.Errorf("%s: %w", c.Name, err)
		}
		var rawParams, args []string
		for _, p := range ps {
			ep, ok := exportParams[p.Type]
			if !ok {
				return fmt.Errorf("%s: unsupported parameter type %q", c.Name, p.Type)
			}
			rawParams = append(rawParams, p.Name+" "+ep.raw)
			args = append(args, fmt.Sprintf(ep.conv, p.Name))
		}
		fn := "wasmExport" + strings.TrimPrefix(c.Func, "proxy")
		call := fmt.Sprintf("%s(%s)", c.Func, strings.Join(args, ", "))
		fmt.Fprintf(b, "\n//go:wasmexport %s\n", c.Name)
		if c.Result == "" {
			fmt.Fprintf(b, "func %s(%s) {\n\treleasePinned()\n\t%s\n}\n", fn, strings.Join(rawParams, ", "), call)
			continue
		}
		r, ok := exportResults[c.Result]
		if !ok {
			return fmt.Errorf("%s: unsupported result type %q", c.Name, c.Result)
		}
		fmt.Fprintf(b, "func %s(%s) uint32 {\n\treleasePinned()\n\treturn %s\n}\n",
			fn, strings.Join(rawParams, ", "), fmt.Sprintf(r.conv, call))
	}
	return nil
}

func genReactorMain(b *bytes.Buffer) error {
	b.WriteString(`
// This file is added to the plugin's main package. A c-shared (reactor)
// module runs package initialisation in _initialize but never runs main,
// while TinyGo-era plugins call proxywasm.SetVMContext from main. The file is
// named so that it sorts after the plugin's own files, so this init runs after
// theirs, just before the host's first callback could arrive.

package main

func init() { main() }
`)
	return nil
}
