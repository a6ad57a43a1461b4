package host

import (
	"context"

	"github.com/tetratelabs/wazero/api"

	"github.com/wasm-callout/wasm-callout/abi"
)

// Names from the unmerged "vNEXT" draft of the ABI (and Envoy's own
// envoy_resolve_dns). No mainstream SDK imports them, but hosts that
// implemented the draft (mosn) have plugins built against it. Where a
// draft function means what a standard one means, it is an alias; where
// only its shape differs, a thin adapter; the draft-only features
// (key-value stores, timers by id, queue and metric deletion, custom
// functions) answer UNIMPLEMENTED, which no SDK that could panic on it
// imports. README lists them.

// resumeFixed returns proxy_resume_downstream() and friends: the draft's
// argument-less resume of one stream type.
func resumeFixed(st abi.StreamType) api.GoModuleFunc {
	return func(ctx context.Context, _ api.Module, stack []uint64) {
		ret(stack, instanceFrom(ctx).continueStream(st))
	}
}

// proxy_send_grpc_stream_message(token, message_ptr, message_size) is the
// draft's proxy_grpc_send without end_of_stream. Statuses: as
// proxy_grpc_send.
func sendGRPCStreamMessage(ctx context.Context, m api.Module, stack []uint64) {
	args := [4]uint64{stack[0], stack[1], stack[2], 0}
	grpcSend(ctx, m, args[:])
	stack[0] = args[0]
}

// proxy_get_map_values(map_type, keys_ptr, keys_size, ret_ptr_ptr,
// ret_size_ptr) is the draft's single call for maps: no key returns every
// pair (as proxy_get_header_map_pairs), one key its first value (as
// proxy_get_header_map_value). Statuses: as those.
func getMapValues(ctx context.Context, m api.Module, stack []uint64) {
	if u32(stack, 2) == 0 {
		args := [3]uint64{stack[0], stack[3], stack[4]}
		getHeaderMapPairs(ctx, m, args[:])
		stack[0] = args[0]
		return
	}
	getHeaderMapValue(ctx, m, stack)
}

// unimplemented answers a draft-only feature this host does not offer.
// Status: UNIMPLEMENTED.
func unimplemented(_ context.Context, _ api.Module, stack []uint64) {
	ret(stack, abi.StatusUnimplemented)
}
