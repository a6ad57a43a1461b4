package gluegen

import (
	"bytes"
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"go/types"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestGlueUpToDate fails when the committed glue differs from what the
// generator produces now: run `go generate ./internal/gobuild`.
func TestGlueUpToDate(t *testing.T) {
	files, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join("..", "glue")
	for _, name := range Names() {
		got, err := os.ReadFile(filepath.Join(dir, name+".txt"))
		if err != nil {
			t.Fatalf("%v (run go generate ./internal/gobuild)", err)
		}
		if !bytes.Equal(got, files[name]) {
			t.Errorf("glue/%s.txt is stale: run go generate ./internal/gobuild", name)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != len(Names()) {
		t.Errorf("glue/ holds %d files, the generator writes %d: remove the extra ones", len(entries), len(Names()))
	}
}

// TestTablesMatchSDK checks the tables against the SDK's own source: every
// host call the SDK declares for TinyGo is in HostCalls with the same
// parameter types, and every //export callback is in Callbacks (or is the
// allocator or the ABI marker) with the same parameter and result types.
func TestTablesMatchSDK(t *testing.T) {
	dir := filepath.Join(sdkDir(t), "proxywasm", "internal")
	fset := token.NewFileSet()
	pkgs, err := parser.ParseDir(fset, dir, func(fi os.FileInfo) bool {
		return !strings.HasSuffix(fi.Name(), "_test.go")
	}, parser.ParseComments)
	if err != nil {
		t.Fatal(err)
	}
	hostDecls := map[string]*ast.FuncDecl{} // from the tinygo-tagged file
	exported := map[string]*ast.FuncDecl{}  // //export NAME -> callback
	for name, f := range pkgs["internal"].Files {
		for _, d := range f.Decls {
			fd, ok := d.(*ast.FuncDecl)
			if !ok || fd.Doc == nil {
				continue
			}
			for _, c := range fd.Doc.List {
				exp, ok := strings.CutPrefix(c.Text, "//export ")
				if !ok {
					continue
				}
				if filepath.Base(name) == "abi_hostcalls.go" {
					hostDecls[exp] = fd
				} else {
					exported[exp] = fd
				}
			}
		}
	}

	if len(hostDecls) != len(HostCalls) {
		t.Errorf("SDK declares %d host calls, HostCalls has %d", len(hostDecls), len(HostCalls))
	}
	for _, h := range HostCalls {
		fd := hostDecls[h.Name]
		if fd == nil {
			t.Errorf("%s: not declared by the SDK", h.Name)
			continue
		}
		if fd.Name.Name != h.Func {
			t.Errorf("%s: SDK function %s, table says %s", h.Name, fd.Name.Name, h.Func)
		}
		if got, want := paramTypes(fd), tableTypes(t, h.Params); got != want {
			t.Errorf("%s: SDK parameters (%s), table (%s)", h.Name, got, want)
		}
		if got := resultType(fd); got != "Status" {
			t.Errorf("%s: SDK result %s, glue assumes Status", h.Name, got)
		}
	}

	want := map[string]bool{ABIMarker: true, MemoryAllocate: true}
	for _, c := range Callbacks {
		want[c.Name] = true
		fd := exported[c.Name]
		if fd == nil {
			t.Errorf("%s: not exported by the SDK", c.Name)
			continue
		}
		if fd.Name.Name != c.Func {
			t.Errorf("%s: SDK function %s, table says %s", c.Name, fd.Name.Name, c.Func)
		}
		if got, want := paramTypes(fd), tableTypes(t, c.Params); got != want {
			t.Errorf("%s: SDK parameters (%s), table (%s)", c.Name, got, want)
		}
		if got := resultType(fd); got != c.Result {
			t.Errorf("%s: SDK result %q, table %q", c.Name, got, c.Result)
		}
	}
	for name := range exported {
		if !want[name] {
			t.Errorf("the SDK exports %s, which the glue does not", name)
		}
	}
	if fd := exported[MemoryAllocate]; fd == nil || fd.Name.Name != "proxyOnMemoryAllocate" || paramTypes(fd) != "uint" || resultType(fd) != "*byte" {
		t.Errorf("%s: the glue calls proxyOnMemoryAllocate(uint) *byte", MemoryAllocate)
	}
	if fd := exported[ABIMarker]; fd == nil || fd.Name.Name != "proxyABIVersion" {
		t.Errorf("%s: the glue calls proxyABIVersion()", ABIMarker)
	}
}

// TestSignatures checks a few signatures against the ABI tables of
// docs/proxy-wasm-host.md (§1.4, §2.1).
func TestSignatures(t *testing.T) {
	imports, err := Imports()
	if err != nil {
		t.Fatal(err)
	}
	exports, err := Exports()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		sigs map[string]Signature
		name string
		want string
	}{
		{imports, "proxy_log", "(i32,i32,i32)->(i32)"},
		{imports, "proxy_get_buffer_bytes", "(i32,i32,i32,i32,i32)->(i32)"},
		{imports, "proxy_increment_metric", "(i32,i64)->(i32)"},
		{imports, "proxy_record_metric", "(i32,i64)->(i32)"},
		{imports, "proxy_done", "()->(i32)"},
		{imports, "proxy_send_local_response", "(i32,i32,i32,i32,i32,i32,i32,i32)->(i32)"},
		{imports, "proxy_http_call", "(i32,i32,i32,i32,i32,i32,i32,i32,i32,i32)->(i32)"},
		{exports, ABIMarker, "()->()"},
		{exports, MemoryAllocate, "(i32)->(i32)"},
		{exports, "proxy_on_context_create", "(i32,i32)->()"},
		{exports, "proxy_on_vm_start", "(i32,i32)->(i32)"},
		{exports, "proxy_on_request_headers", "(i32,i32,i32)->(i32)"},
		{exports, "proxy_on_request_trailers", "(i32,i32)->(i32)"},
		{exports, "proxy_on_http_call_response", "(i32,i32,i32,i32,i32)->()"},
		{exports, "proxy_on_tick", "(i32)->()"},
		{exports, "proxy_on_done", "(i32)->(i32)"},
		{exports, "proxy_on_delete", "(i32)->()"},
	} {
		if got := c.sigs[c.name].String(); got != c.want {
			t.Errorf("%s: %s, want %s", c.name, got, c.want)
		}
	}
}

func paramTypes(fd *ast.FuncDecl) string {
	var ts []string
	for _, f := range fd.Type.Params.List {
		n := len(f.Names)
		if n == 0 {
			n = 1
		}
		for i := 0; i < n; i++ {
			ts = append(ts, types.ExprString(f.Type))
		}
	}
	return strings.Join(ts, ", ")
}

func resultType(fd *ast.FuncDecl) string {
	if fd.Type.Results == nil || len(fd.Type.Results.List) == 0 {
		return ""
	}
	return types.ExprString(fd.Type.Results.List[0].Type)
}

func tableTypes(t *testing.T, params string) string {
	ps, err := ParseParams(params)
	if err != nil {
		t.Fatal(err)
	}
	var ts []string
	for _, p := range ps {
		ts = append(ts, p.Type)
	}
	return strings.Join(ts, ", ")
}

// sdkDir returns the SDK's directory in the module cache, downloading it
// through the plugins module (whose go.sum pins it) if needed.
func sdkDir(t *testing.T) string {
	t.Helper()
	cmd := exec.Command("go", "mod", "download", "-json", SDKModule+"@"+SDKVersion)
	cmd.Dir = filepath.Join("..", "..", "..", "plugins")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go mod download %s@%s: %v\n%s", SDKModule, SDKVersion, err, out)
	}
	var m struct{ Dir, Error string }
	if err := json.Unmarshal(out, &m); err != nil || m.Dir == "" {
		t.Fatalf("go mod download %s@%s: %v %s", SDKModule, SDKVersion, err, m.Error)
	}
	return m.Dir
}
