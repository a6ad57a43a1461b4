package host

import (
	"context"
	"strings"

	"github.com/tetratelabs/wazero/api"

	"github.com/wasm-callout/wasm-callout/abi"
)

// proxy_set_effective_context(context_id) makes later host calls of this
// callback act on context_id: how a root context's timer, queue or call
// callback reaches a stream. It lasts until the callback returns. It
// writes nothing into guest memory. Statuses: OK; BAD_ARGUMENT for an id
// that is not a live context of this instance.
func setEffectiveContext(ctx context.Context, _ api.Module, stack []uint64) {
	in := instanceFrom(ctx)
	id := u32(stack, 0)
	if in.contexts[id] == nil {
		ret(stack, abi.StatusBadArgument)
		return
	}
	in.effective = id
	ret(stack, abi.StatusOK)
}

// proxy_done() tells the host that a root context that deferred its
// shutdown (proxy_on_done returned false) has finished. Statuses: OK;
// NOT_FOUND when no shutdown is pending.
func proxyDone(ctx context.Context, _ api.Module, stack []uint64) {
	in := instanceFrom(ctx)
	if !in.rootDonePending || in.rootDone {
		ret(stack, abi.StatusNotFound)
		return
	}
	in.rootDone = true
	ret(stack, abi.StatusOK)
}

// continueStream records a resume of dir on the effective stream; it is
// delivered when the current callback returns, as Envoy defers it.
func (in *instance) continueStream(dir abi.StreamType) abi.Status {
	s := in.activeStream()
	switch {
	case dir == abi.StreamUpstream:
		return abi.StatusUnimplemented // Envoy cannot resume upstream data either.
	case dir > abi.StreamUpstream, s == nil:
		return abi.StatusBadArgument
	case s.http != nil && dir > abi.StreamHTTPResponse, s.tcp != nil && dir != abi.StreamDownstream:
		return abi.StatusBadArgument // not a direction of this kind of stream
	}
	in.touch(s).continued[dir] = true
	return abi.StatusOK
}

// proxy_continue_stream(stream_type) resumes a paused direction of the
// effective stream after the current callback returns. Statuses: OK;
// BAD_ARGUMENT for an unknown type or no such stream here; UNIMPLEMENTED
// for the upstream direction, as in Envoy.
func continueStreamFn(ctx context.Context, _ api.Module, stack []uint64) {
	ret(stack, instanceFrom(ctx).continueStream(abi.StreamType(u32(stack, 0))))
}

// proxy_close_stream(stream_type) closes the effective stream after the
// current callback returns (Envoy resets an HTTP stream and closes a TCP
// connection after flushing). Statuses: OK; BAD_ARGUMENT for an unknown
// type or no stream here.
func closeStreamFn(ctx context.Context, _ api.Module, stack []uint64) {
	in := instanceFrom(ctx)
	dir := abi.StreamType(u32(stack, 0))
	s := in.activeStream()
	if s == nil || dir > abi.StreamUpstream {
		ret(stack, abi.StatusBadArgument)
		return
	}
	in.touch(s).close = true
	ret(stack, abi.StatusOK)
}

// proxy_continue_request() is ABI 0.1.0's proxy_continue_stream(0).
func continueRequest(ctx context.Context, _ api.Module, stack []uint64) {
	ret(stack, instanceFrom(ctx).continueStream(abi.StreamHTTPRequest))
}

// proxy_continue_response() is ABI 0.1.0's proxy_continue_stream(1).
func continueResponse(ctx context.Context, _ api.Module, stack []uint64) {
	ret(stack, instanceFrom(ctx).continueStream(abi.StreamHTTPResponse))
}

// proxy_clear_route_cache() asks Envoy to choose the route again after a
// header change; it becomes ext_proc's clear_route_cache. Statuses: OK;
// BAD_ARGUMENT outside a stream.
func clearRouteCache(ctx context.Context, _ api.Module, stack []uint64) {
	in := instanceFrom(ctx)
	s := in.activeStream()
	if s == nil || s.http == nil {
		ret(stack, abi.StatusBadArgument)
		return
	}
	in.touch(s).clearRouteCache = true
	ret(stack, abi.StatusOK)
}

// proxy_send_local_response(status_code, details_ptr, details_size,
// body_ptr, body_size, headers_ptr, headers_size, grpc_status) replies to
// the effective stream in place of the upstream, after the current callback
// returns; that callback's own return is then treated as a stop, as in
// Envoy. On a TCP stream it closes the connection abortively.
// grpc_status outside 0..16 means none. Spaces in details become
// underscores, as Envoy requires of response code details. It reads
// details, body and serialized headers from guest memory.
// Statuses: OK; BAD_ARGUMENT outside a stream or for malformed headers;
// INVALID_MEMORY_ACCESS.
func sendLocalResponse(ctx context.Context, _ api.Module, stack []uint64) {
	in := instanceFrom(ctx)
	details, ok1 := in.readString(u32(stack, 1), u32(stack, 2))
	body, ok2 := in.read(u32(stack, 3), u32(stack, 4))
	hdrs, ok3 := in.read(u32(stack, 5), u32(stack, 6))
	if !ok1 || !ok2 || !ok3 {
		ret(stack, abi.StatusInvalidMemoryAccess)
		return
	}
	pairs, err := abi.DecodePairs(hdrs)
	s := in.activeStream()
	if err != nil || s == nil {
		ret(stack, abi.StatusBadArgument)
		return
	}
	grpc := int32(-1)
	if g := u32(stack, 7); g <= 16 {
		grpc = int32(g)
	}
	for i := range pairs {
		pairs[i].Key = lowerKey(pairs[i].Key)
	}
	in.touch(s).local = &LocalResponse{
		Status:     u32(stack, 0),
		Details:    strings.ReplaceAll(details, " ", "_"),
		Body:       append([]byte(nil), body...),
		Headers:    pairs,
		GRPCStatus: grpc,
	}
	ret(stack, abi.StatusOK)
}

// proxy_get_configuration(ret_ptr_ptr, ret_size_ptr) is ABI 0.1.0's way to
// read configuration: the plugin configuration inside proxy_on_configure,
// the VM configuration otherwise, in memory from the plugin's allocator.
// Statuses: OK, INVALID_MEMORY_ACCESS.
func getConfiguration(ctx context.Context, _ api.Module, stack []uint64) {
	in := instanceFrom(ctx)
	cfg := in.plugin.cfg.VMConfig
	if in.phase == phaseConfigure {
		cfg = in.plugin.cfg.PluginConfig
	}
	ret(stack, in.copyOut(cfg, u32(stack, 0), u32(stack, 1)))
}
