package host

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
)

// TestInstrumentLoopsFixtures rewrites every fixture module and checks that
// wazero accepts the result, that the input is left untouched, and that the
// imports, exports and function names are those of the original plus the
// check.
func TestInstrumentLoopsFixtures(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.wasm")
	more, _ := filepath.Glob("testdata/*/*.wasm")
	files = append(files, more...)
	if len(files) == 0 {
		t.Fatal("no fixtures")
	}
	ctx := context.Background()
	r := wazero.NewRuntime(ctx)
	defer r.Close(ctx)
	for _, f := range files {
		wasm, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		orig := bytes.Clone(wasm)
		out, err := instrumentLoops(wasm)
		if !bytes.Equal(wasm, orig) {
			t.Fatalf("%s: the input was modified", f)
		}
		if errors.Is(err, errNotInstrumentable) {
			t.Logf("%s: %v", f, err)
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		before, err := r.CompileModule(ctx, wasm)
		if err != nil {
			continue // a fixture that is invalid on purpose
		}
		after, err := r.CompileModule(ctx, out)
		if err != nil {
			t.Errorf("%s: instrumented module does not compile: %v", f, err)
			continue
		}
		if got, want := len(after.ImportedFunctions()), len(before.ImportedFunctions())+1; got != want {
			t.Errorf("%s: %d imported functions, want %d", f, got, want)
		}
		for name, def := range before.ExportedFunctions() {
			got, ok := after.ExportedFunctions()[name]
			if !ok || got.Name() != def.Name() || got.Index() != def.Index()+boolIndex(def.Index() >= uint32(len(before.ImportedFunctions()))) {
				t.Errorf("%s: export %s moved: %v", f, name, got)
			}
		}
	}
}

func boolIndex(b bool) uint32 {
	if b {
		return 1
	}
	return 0
}

// loopModule is a hand-assembled module: spin(n) loops n times and returns n; forever()
// never returns.
var loopModule = []byte{
	0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
	// type: 0 (i32)->i32, 1 ()->()
	0x01, 0x09, 0x02, 0x60, 0x01, 0x7f, 0x01, 0x7f, 0x60, 0x00, 0x00,
	// function: spin:0, forever:1
	0x03, 0x03, 0x02, 0x00, 0x01,
	// export "spin" 0, "forever" 1
	0x07, 0x12, 0x02, 0x04, 's', 'p', 'i', 'n', 0x00, 0x00, 0x07, 'f', 'o', 'r', 'e', 'v', 'e', 'r', 0x00, 0x01,
	// code
	0x0a, 0x1f, 0x02,
	// spin: (local i32) loop: local.get 1, i32.const 1, i32.add, local.tee 1, local.get 0, i32.lt_u, br_if 0, end, local.get 1
	0x15, 0x01, 0x01, 0x7f, 0x03, 0x40, 0x20, 0x01, 0x41, 0x01, 0x6a, 0x22, 0x01, 0x20, 0x00, 0x49, 0x0d, 0x00, 0x0b, 0x20, 0x01, 0x0b,
	// forever: loop br 0 end
	0x07, 0x00, 0x03, 0x40, 0x0c, 0x00, 0x0b, 0x0b,
}

// TestLoopCheck runs an instrumented loop to completion across many budget
// refills, and stops an endless one by cancelling its context.
func TestLoopCheck(t *testing.T) {
	out, err := instrumentLoops(loopModule)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	r := wazero.NewRuntime(ctx)
	defer r.Close(ctx)
	_, err = r.NewHostModuleBuilder(loopCheckModule).NewFunctionBuilder().
		WithGoFunction(api.GoFunc(loopCheck), nil, []api.ValueType{api.ValueTypeI32}).
		Export(loopCheckName).Instantiate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	mod, err := r.Instantiate(ctx, out)
	if err != nil {
		t.Fatal(err)
	}
	const n = 5*loopBudget + 3
	res, err := mod.ExportedFunction("spin").Call(ctx, n)
	if err != nil || res[0] != n {
		t.Fatalf("spin(%d) = %v, %v", n, res, err)
	}
	cctx, cancel := context.WithCancelCause(ctx)
	go cancel(ErrCallTimeout)
	_, err = mod.ExportedFunction("forever").Call(cctx)
	if !errors.Is(err, ErrCallTimeout) {
		t.Fatalf("forever: %v, want %v", err, ErrCallTimeout)
	}
}

func FuzzInstrumentLoops(f *testing.F) {
	f.Add(loopModule)
	f.Fuzz(func(t *testing.T, wasm []byte) {
		orig := bytes.Clone(wasm)
		instrumentLoops(wasm) // must not panic
		if !bytes.Equal(wasm, orig) {
			t.Fatal("input modified")
		}
	})
}
