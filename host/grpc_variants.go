package host

import (
	"context"

	"github.com/tetratelabs/wazero/api"

	"github.com/wasm-callout/wasm-callout/abi"
)

// Signature variants. The AssemblyScript SDK (solo-io/proxy-runtime 0.1.x)
// declares proxy_grpc_call with 10 parameters and proxy_grpc_stream with 7:
// both lack the initial_metadata_ptr and initial_metadata_size pair that
// every other SDK and Envoy pass after the method name. Envoy links one
// signature per name, so such a plugin does not load there; this host
// registers both shapes (envFuncs) and selectEnvFuncs links the one the
// guest imports.

// metadataAt is the parameter index of initial_metadata_ptr in the full
// proxy_grpc_call and proxy_grpc_stream.
const metadataAt = 6

// canonicalFuncs maps each env name to the first, full-signature entry of
// envFuncs. It is filled by init, not by an initializer, because envFuncs
// itself refers to withoutMetadata.
var canonicalFuncs = map[string]api.GoModuleFunc{}

func init() {
	for _, hf := range envFuncs {
		if _, ok := canonicalFuncs[hf.name]; !ok {
			canonicalFuncs[hf.name] = hf.fn
		}
	}
}

// withoutMetadata serves an import declared without the initial metadata
// pair: it moves the guest's arguments into the full layout with an empty
// metadata map (pointer 0, size 0) and calls the full-signature function
// of the same name, so both variants always answer alike.
func withoutMetadata(name string) api.GoModuleFunc {
	return func(ctx context.Context, m api.Module, stack []uint64) {
		full := canonicalFuncs[name]
		if len(stack) < metadataAt {
			return // no room for a result: not a signature envFuncs declares
		}
		if full == nil {
			ret(stack, abi.StatusInternalFailure)
			return
		}
		args := make([]uint64, len(stack)+2)
		copy(args, stack[:metadataAt])
		copy(args[metadataAt+2:], stack[metadataAt:])
		full(ctx, m, args)
		stack[0] = args[0]
	}
}
