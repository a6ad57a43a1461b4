package host

import (
	"context"
	"strings"

	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"

	"github.com/wasm-callout/wasm-callout/abi"
)

// TraceCall is one crossing between host and plugin, reported to
// Config.Trace as it starts.
type TraceCall struct {
	// Name is the ABI name: a host function the plugin called
	// ("proxy_log", "proxy_get_header_map_value", …) or, when Callback is
	// set, the plugin export the host called ("proxy_on_request_headers").
	Name string
	// Callback is set for calls from the host into the plugin.
	Callback bool
	// Params are the raw wasm arguments (pointers, sizes, enums), as the
	// ABI passes them; i32 arguments are zero-extended.
	Params []uint64
}

// traceFactory reports, through fn, the calls of the env host module's
// functions and of the plugin's proxy_on_* exports (not allocations, which
// are the host's bookkeeping).
type traceFactory func(TraceCall)

func (f traceFactory) NewFunctionListener(def api.FunctionDefinition) experimental.FunctionListener {
	if _, _, isImport := def.Import(); isImport {
		return nil // traced where it is defined
	}
	names := def.ExportNames()
	if len(names) == 0 {
		return nil
	}
	switch n := names[0]; {
	case def.ModuleName() == abi.ModuleEnv:
		return callTracer{f: f, name: n, types: def.ParamTypes()}
	case strings.HasPrefix(n, "proxy_on_") && n != abi.FuncMemoryAllocate:
		return callTracer{f: f, name: n, callback: true, types: def.ParamTypes()}
	}
	return nil
}

type callTracer struct {
	f        traceFactory
	name     string
	callback bool
	types    []api.ValueType
}

func (l callTracer) Before(_ context.Context, _ api.Module, _ api.FunctionDefinition, params []uint64, _ experimental.StackIterator) {
	ps := make([]uint64, len(params))
	for i, p := range params {
		if i < len(l.types) && l.types[i] == api.ValueTypeI32 {
			p = uint64(uint32(p)) // the upper half of an i32 slot is not defined
		}
		ps[i] = p
	}
	l.f(TraceCall{Name: l.name, Callback: l.callback, Params: ps})
}

func (callTracer) After(context.Context, api.Module, api.FunctionDefinition, []uint64) {}

func (callTracer) Abort(context.Context, api.Module, api.FunctionDefinition, error) {}
