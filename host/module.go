package host

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"

	"github.com/wasm-callout/wasm-callout/abi"
)

// ImportStatus says how the host answers one import.
type ImportStatus string

const (
	// ImportServed is implemented with real behaviour.
	ImportServed ImportStatus = "served"
	// ImportStub is linked but answers as real hosts do for a feature they
	// do not offer (for example an unknown cluster, or a sandboxed file
	// system). README lists these.
	ImportStub ImportStatus = "stub"
	// ImportUnknown cannot be linked: the plugin will not load.
	ImportUnknown ImportStatus = "unknown"
)

// Import is one function the module imports, with its wasm signature.
type Import struct {
	Module, Name string
	Signature    string // for example "(i32,i32)->i32"
	Status       ImportStatus
}

func (i Import) String() string {
	return fmt.Sprintf("(%s, %s, %s)", i.Module, i.Name, i.Signature)
}

// Info is what inspecting a module tells before anything runs.
type Info struct {
	// ABI is the version of the exported marker, or VersionUnknown.
	ABI abi.Version
	// HeaderArity is the parameter count of the header callbacks: 2 in
	// ABI 0.1.0, 3 (with end_of_stream) since 0.2.0. It is read from the
	// export's type, not guessed from the marker.
	HeaderArity int
	// Allocator is the export the host uses to hand memory to the plugin.
	Allocator string
	// Entry lists the start functions called, in order.
	Entry []string
	// Toolchain is a best guess at what built the module.
	Toolchain string
	// Imports lists every imported function and how it is served.
	Imports []Import
	// Callbacks lists the proxy_on_* callbacks the module exports.
	Callbacks []string
	// Warnings are oddities that do not stop the module from loading.
	Warnings []string
}

// LoadError explains why a module cannot be loaded.
type LoadError struct {
	Problems []string
	Unknown  []Import
}

func (e *LoadError) Error() string {
	var b strings.Builder
	b.WriteString("plugin cannot be loaded: ")
	b.WriteString(strings.Join(e.Problems, "; "))
	if len(e.Unknown) > 0 {
		if len(e.Problems) > 0 {
			b.WriteString("; ")
		}
		b.WriteString("unknown imports (module, name, signature):")
		for _, imp := range e.Unknown {
			b.WriteString(" ")
			b.WriteString(imp.String())
		}
	}
	return b.String()
}

// compiled is a module compiled into a runtime that has the host modules.
type compiled struct {
	runtime wazero.Runtime
	module  wazero.CompiledModule
	info    *Info
}

// Inspect compiles wasm and reports its imports, exports, ABI and toolchain
// without instantiating it. The error, if any, is a *LoadError listing every
// problem, and Info is still returned when the module at least compiled.
func Inspect(ctx context.Context, wasm []byte) (*Info, error) {
	c, err := compile(ctx, wasm, Config{}.withDefaults(), nil)
	if c == nil {
		return nil, err
	}
	defer c.runtime.Close(ctx)
	return c.info, err
}

// compile creates a runtime with the host modules, compiles the guest, and
// validates it. On a validation error the runtime is returned open with the
// info so callers can report, and must be closed by them.
func compile(ctx context.Context, wasm []byte, cfg Config, cache wazero.CompilationCache) (*compiled, error) {
	// Deadlines are checked by the loop budget instrumentLoops compiles in
	// (see loopcheck.go), or, for a module it cannot rewrite, by wazero's
	// exit at every loop header. A module that wazero refuses is compiled
	// again as given, so its error speaks of the user's bytes.
	code, closeOnDone, instrumented := wasm, cfg.CallTimeout > 0, false
	if closeOnDone && !cfg.wazeroLoopChecks {
		if c, err := instrumentLoops(wasm); err == nil {
			code, closeOnDone, instrumented = c, false, true
		} else {
			cfg.Logger.Debug("deadlines use wazero's loop exits", "plugin", cfg.Name, "reason", err)
		}
	}
	if cfg.listeners != nil {
		ctx = experimental.WithFunctionListenerFactory(ctx, cfg.listeners)
	}
	r, mod, err := compileModule(ctx, code, closeOnDone, cfg, cache)
	if err != nil && instrumented {
		r, mod, err = compileModule(ctx, wasm, true, cfg, cache)
	}
	if err != nil {
		return nil, &LoadError{Problems: []string{"invalid wasm: " + err.Error()}}
	}
	if err := instantiateHostModules(ctx, r, mod); err != nil {
		r.Close(ctx)
		return nil, fmt.Errorf("host modules: %w", err)
	}
	info, err := inspect(r, mod)
	return &compiled{runtime: r, module: mod, info: info}, err
}

// compileModule compiles wasm in a new runtime; on error the runtime is
// closed.
func compileModule(ctx context.Context, wasm []byte, closeOnDone bool, cfg Config, cache wazero.CompilationCache) (wazero.Runtime, wazero.CompiledModule, error) {
	rc := wazero.NewRuntimeConfig().
		WithCloseOnContextDone(closeOnDone).
		WithMemoryLimitPages(cfg.MemoryLimitPages).
		WithCustomSections(true)
	if cache != nil {
		rc = rc.WithCompilationCache(cache)
	}
	r := wazero.NewRuntimeWithConfig(ctx, rc)
	mod, err := r.CompileModule(ctx, wasm)
	if err != nil {
		r.Close(ctx)
		return nil, nil, err
	}
	return r, mod, nil
}

// instantiateHostModules adds env, wasi_snapshot_preview1 and wasi_unstable
// to r. env is built for this guest: where an import has signature variants
// across SDKs, the variant the guest imports is linked.
func instantiateHostModules(ctx context.Context, r wazero.Runtime, guest wazero.CompiledModule) error {
	wanted := map[string]string{}
	for _, f := range guest.ImportedFunctions() {
		if m, n, _ := f.Import(); m == abi.ModuleEnv {
			wanted[n] = signature(f.ParamTypes(), f.ResultTypes())
		}
	}
	env := r.NewHostModuleBuilder(abi.ModuleEnv)
	for _, hf := range selectEnvFuncs(wanted) {
		env.NewFunctionBuilder().
			WithGoModuleFunction(hf.fn, hf.params, hf.results).
			WithParameterNames(hf.paramNames...).
			Export(hf.name)
	}
	if _, err := env.Instantiate(ctx); err != nil {
		return err
	}
	for _, f := range guest.ImportedFunctions() {
		if m, n, _ := f.Import(); m == loopCheckModule && n == loopCheckName {
			_, err := r.NewHostModuleBuilder(loopCheckModule).NewFunctionBuilder().
				WithGoFunction(api.GoFunc(loopCheck), nil, []api.ValueType{api.ValueTypeI32}).
				Export(loopCheckName).Instantiate(ctx)
			if err != nil {
				return err
			}
			break
		}
	}
	if _, err := wasi_snapshot_preview1.Instantiate(ctx, r); err != nil {
		return err
	}
	unstable := r.NewHostModuleBuilder(abi.ModuleWASIUnstable)
	wasi_snapshot_preview1.NewFunctionExporter().ExportFunctions(unstable)
	_, err := unstable.Instantiate(ctx)
	return err
}

// inspect fills Info from the compiled guest and the host modules in r.
func inspect(r wazero.Runtime, mod wazero.CompiledModule) (*Info, error) {
	info := &Info{}
	lerr := &LoadError{}
	exports := mod.ExportedFunctions()

	// Imports.
	for _, f := range mod.ImportedFunctions() {
		m, n, _ := f.Import()
		if m == loopCheckModule {
			continue // the host's own, added by instrumentLoops
		}
		imp := Import{Module: m, Name: n, Signature: signature(f.ParamTypes(), f.ResultTypes()), Status: ImportUnknown}
		if hm := r.Module(m); hm != nil {
			if def, ok := hm.ExportedFunctionDefinitions()[n]; ok && signature(def.ParamTypes(), def.ResultTypes()) == imp.Signature {
				imp.Status = importStatus(m, n)
			}
		}
		info.Imports = append(info.Imports, imp)
		if imp.Status == ImportUnknown {
			lerr.Unknown = append(lerr.Unknown, imp)
		}
	}
	for _, m := range mod.ImportedMemories() {
		mn, n, _ := m.Import()
		imp := Import{Module: mn, Name: n, Signature: "memory", Status: ImportUnknown}
		info.Imports = append(info.Imports, imp)
		lerr.Unknown = append(lerr.Unknown, imp)
	}

	// ABI marker.
	for name, v := range abi.VersionMarkers {
		if _, ok := exports[name]; ok {
			if info.ABI != abi.VersionUnknown && info.ABI != v {
				info.Warnings = append(info.Warnings, fmt.Sprintf("several ABI markers exported; using %s", max(info.ABI, v)))
			}
			info.ABI = max(info.ABI, v)
		}
	}

	// Callbacks, and the header arity from the export's real type.
	for _, cb := range abi.Callbacks {
		if _, ok := exports[cb]; ok {
			info.Callbacks = append(info.Callbacks, cb)
		}
	}
	info.HeaderArity = 3
	if def, ok := exports[abi.OnRequestHeaders]; ok {
		info.HeaderArity = len(def.ParamTypes())
	} else if def, ok := exports[abi.OnResponseHeaders]; ok {
		info.HeaderArity = len(def.ParamTypes())
	} else if info.ABI == abi.Version010 {
		info.HeaderArity = 2
	}
	if info.HeaderArity != 2 && info.HeaderArity != 3 {
		lerr.Problems = append(lerr.Problems, fmt.Sprintf("%s takes %d parameters; want 2 (ABI 0.1.0) or 3", abi.OnRequestHeaders, info.HeaderArity))
	}
	if info.ABI == abi.VersionUnknown {
		if len(info.Callbacks) == 0 {
			lerr.Problems = append(lerr.Problems, "missing ABI marker: the module exports no proxy_abi_version_* function and no proxy_on_* callbacks, so it is not a proxy-wasm plugin")
		} else {
			info.Warnings = append(info.Warnings, "no ABI marker exported (pre-0.1.0 plugin); Envoy would refuse it, loading it by its callback signatures")
		}
	}
	if _, ok := exports[abi.OnContextCreate]; !ok && len(info.Callbacks) > 0 {
		lerr.Problems = append(lerr.Problems, "missing export "+abi.OnContextCreate)
	}

	// Allocator.
	for _, name := range []string{abi.FuncMemoryAllocate, abi.FuncMalloc} {
		if def, ok := exports[name]; ok && signature(def.ParamTypes(), def.ResultTypes()) == "(i32)->i32" {
			info.Allocator = name
			break
		}
	}
	if info.Allocator == "" {
		lerr.Problems = append(lerr.Problems, "missing allocator: export proxy_on_memory_allocate or malloc with signature (i32)->i32")
	}
	if len(mod.ExportedMemories()) == 0 {
		lerr.Problems = append(lerr.Problems, "the module exports no memory")
	}

	// Entry points and toolchain.
	_, hasInit := exports[abi.FuncInitialize]
	_, hasStart := exports[abi.FuncStart]
	goModule := hasCustomSection(mod, "go:buildid")
	switch {
	case hasInit:
		info.Entry = []string{abi.FuncInitialize}
		if def, ok := exports[abi.FuncMain]; ok && len(def.ResultTypes()) <= 1 {
			info.Entry = append(info.Entry, abi.FuncMain)
		} else if _, ok := exports[abi.FuncMainVoid]; ok {
			info.Entry = append(info.Entry, abi.FuncMainVoid)
		}
	case hasStart && goModule:
		lerr.Problems = append(lerr.Problems, "this is a Go program built in command mode: it exits after main, so it cannot serve callbacks; rebuild it with GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared (or `wasm-callout build`)")
	case hasStart:
		info.Entry = []string{abi.FuncStart}
	}
	info.Toolchain = guessToolchain(mod, exports, goModule)

	if len(lerr.Problems) > 0 || len(lerr.Unknown) > 0 {
		return info, lerr
	}
	return info, nil
}

func hasCustomSection(mod wazero.CompiledModule, name string) bool {
	for _, s := range mod.CustomSections() {
		if s.Name() == name {
			return true
		}
	}
	return false
}

// guessToolchain names the likely producer of a module from its custom
// sections, exports and imports. It is a diagnostic, never a decision.
//
// The producers section settles it when it names a toolchain, but old
// TinyGo (before it named itself there, 2020-2022) writes only clang, as C
// and C++ do, or nothing at all once stripped. Those modules are told apart
// by what TinyGo's runtime and the TinyGo-era Go SDK put in every module
// (see tinyGoShape), after the marks of Emscripten, which clang-only C++
// modules (proxy-wasm-cpp-sdk) carry.
func guessToolchain(mod wazero.CompiledModule, exports map[string]api.FunctionDefinition, goModule bool) string {
	has := func(name string) bool { _, ok := exports[name]; return ok }
	imports := map[string]bool{}
	for _, f := range mod.ImportedFunctions() {
		m, n, _ := f.Import()
		if m == loopCheckModule {
			continue // the host's own, added by instrumentLoops
		}
		imports[m] = true
		imports[m+"."+n] = true
	}
	var producers string
	for _, s := range mod.CustomSections() {
		if s.Name() == "producers" {
			producers = string(s.Data())
		}
	}
	switch {
	case goModule && !has("_initialize"):
		return "Go (gc, wasip1 command)"
	case goModule:
		return "Go (gc, wasip1 c-shared)"
	case strings.Contains(producers, "TinyGo"):
		return "TinyGo"
	case strings.Contains(producers, "rustc"):
		return "Rust"
	case emscriptenShape(mod, exports, imports, producers):
		return "C++ (Emscripten)"
	case imports["env.abort"] && has("malloc") && !has("_initialize") && !has("_start"),
		// Its runtime's exports: 0.10-0.17 (__alloc, __retain) and 0.18+
		// (__new, __pin). Plugins built with --use abort=abort_proc_exit,
		// as proxy-runtime recommends, import no env.abort.
		has("__alloc") && has("__retain"), has("__new") && has("__pin"):
		return "AssemblyScript"
	case tinyGoShape(exports, imports):
		return "TinyGo"
	case strings.Contains(producers, "clang"):
		return "C/C++ (clang)"
	}
	return "unknown"
}

// emscriptenShape reports the marks Emscripten leaves: its memory-growth
// import, its metadata section, its name in the producers section, or the
// stack helpers it exports (stackSave and kin before 3.1.50,
// emscripten_stack_* and _emscripten_stack_* after).
func emscriptenShape(mod wazero.CompiledModule, exports map[string]api.FunctionDefinition, imports map[string]bool, producers string) bool {
	if imports["env.emscripten_notify_memory_growth"] || strings.Contains(producers, "Emscripten") ||
		hasCustomSection(mod, "emscripten_metadata") {
		return true
	}
	if _, ok := exports["stackSave"]; ok {
		if _, ok := exports["stackRestore"]; ok {
			return true
		}
	}
	for name := range exports {
		if strings.HasPrefix(name, "emscripten_stack_") || strings.HasPrefix(name, "_emscripten_stack_") {
			return true
		}
	}
	return false
}

// tinyGoShape reports a module TinyGo built, by its exports and imports
// alone:
//
//   - go_scheduler is the export of TinyGo's scheduler (wasi builds without
//     -scheduler=none, and the js target);
//   - env.io_get_stdout and env.resource_write are imports of old TinyGo's
//     js target, runtime.ticks and runtime.sleepTicks (from env or gojs) of
//     later ones;
//   - otherwise it must be a command module (_start: TinyGo's wasi builds
//     were commands until -buildmode=c-shared in 2024) that keeps serving
//     after _start, exporting the Go SDK's allocator proxy_on_memory_allocate
//     or all four libc allocators TinyGo's runtime exports (malloc, free,
//     calloc, realloc), and that writes through WASI's fd_write as TinyGo's
//     runtime prints (panics included) or exports malloc and free.
//
// C and C++ proxy-wasm plugins are normally reactors (_initialize: the C++ SDK
// links with --no-entry, wasi-sdk plugins with -mexec-model=reactor) and do
// not export calloc and realloc unless asked to, nor does the C++ SDK export
// proxy_on_memory_allocate. A command module with C++'s marks
// (Itanium-mangled exports, or __wasm_call_ctors and __cxa_* from exporting
// everything) is never taken for TinyGo.
func tinyGoShape(exports map[string]api.FunctionDefinition, imports map[string]bool) bool {
	has := func(name string) bool { _, ok := exports[name]; return ok }
	if has("go_scheduler") || imports["env.io_get_stdout"] || imports["env.resource_write"] {
		return true
	}
	for _, m := range []string{"env", "gojs"} {
		if imports[m+".runtime.ticks"] || imports[m+".runtime.sleepTicks"] {
			return true
		}
	}
	if !has(abi.FuncStart) || has(abi.FuncInitialize) {
		return false
	}
	for name := range exports {
		if strings.HasPrefix(name, "_Z") || strings.HasPrefix(name, "__cxa_") || name == "__wasm_call_ctors" {
			return false
		}
	}
	libcAllocators := has("malloc") && has("free") && has("calloc") && has("realloc")
	writes := imports[abi.ModuleWASIPreview1+".fd_write"] || imports[abi.ModuleWASIUnstable+".fd_write"]
	return (has(abi.FuncMemoryAllocate) || libcAllocators) && (writes || has("malloc") && has("free"))
}

// signature renders a wasm function type as "(i32,i64)->i32".
func signature(params, results []api.ValueType) string {
	var b strings.Builder
	b.WriteByte('(')
	for i, p := range params {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(api.ValueTypeName(p))
	}
	b.WriteString(")->")
	switch len(results) {
	case 0:
		b.WriteString("()")
	case 1:
		b.WriteString(api.ValueTypeName(results[0]))
	default:
		b.WriteByte('(')
		for i, r := range results {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(api.ValueTypeName(r))
		}
		b.WriteByte(')')
	}
	return b.String()
}

// importStatus classifies a linked import as served or stub.
func importStatus(module, name string) ImportStatus {
	switch module {
	case abi.ModuleEnv:
		if stubEnvFuncs[name] {
			return ImportStub
		}
		return ImportServed
	case abi.ModuleWASIPreview1, abi.ModuleWASIUnstable:
		if servedWASI[name] {
			return ImportServed
		}
		return ImportStub
	}
	return ImportServed
}

// servedWASI are the WASI functions with real behaviour. The rest are linked
// but sandboxed: there is no file system, socket or preopened directory, so
// they answer the errors a WASI host without those gives (EBADF, ENOTSUP…).
var servedWASI = map[string]bool{
	"args_get": true, "args_sizes_get": true, "environ_get": true, "environ_sizes_get": true,
	"clock_res_get": true, "clock_time_get": true, "fd_write": true, "fd_fdstat_get": true,
	"fd_prestat_get": true, "poll_oneoff": true, "proc_exit": true, "random_get": true,
	"sched_yield": true,
}

var errClosed = errors.New("plugin closed")
