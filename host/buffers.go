package host

import (
	"context"

	"github.com/tetratelabs/wazero/api"

	"github.com/wasm-callout/wasm-callout/abi"
)

// buffer returns the bytes of buffer type bt as the effective context sees
// them now, and whether it exists. The body buffers exist (possibly empty)
// for the whole life of an HTTP stream, and the data buffers for a TCP
// stream's, as in Envoy; the plugin
// configuration only during proxy_on_configure; the VM configuration
// always; a call's response body while its callback runs. Foreign-function
// arguments never exist: no foreign function is registered. Caller has
// checked bt.Valid().
func (in *instance) buffer(bt abi.BufferType) (*body, []byte, bool) {
	switch bt {
	case abi.BufferHTTPRequestBody, abi.BufferHTTPResponseBody:
		s := in.activeHTTP()
		if s == nil {
			return nil, nil, false
		}
		b := &s.bodies[bt]
		return b, b.buf, true
	case abi.BufferDownstreamData, abi.BufferUpstreamData:
		s := in.activeStream()
		if s == nil || s.tcp == nil {
			return nil, nil, false
		}
		b := &s.tcp.data[bt-abi.BufferDownstreamData]
		return b, b.buf, true
	case abi.BufferHTTPCallResponseBody, abi.BufferGRPCReceive:
		r := in.callResp
		if r == nil || r.grpc != (bt == abi.BufferGRPCReceive) {
			return nil, nil, false
		}
		return nil, r.body, true
	case abi.BufferVMConfiguration:
		return nil, in.plugin.cfg.VMConfig, true
	case abi.BufferPluginConfiguration:
		if in.phase != phaseConfigure {
			return nil, nil, false
		}
		return nil, in.plugin.cfg.PluginConfig, true
	}
	return nil, nil, false
}

// readableBuffer resolves the buffer_type argument (stack slot 0) of the
// reading buffer functions: BAD_ARGUMENT for an unknown type, NOT_FOUND for
// a buffer that does not exist now.
func (in *instance) readableBuffer(stack []uint64) ([]byte, abi.Status) {
	bt := abi.BufferType(u32(stack, 0))
	if !bt.Valid() {
		return nil, abi.StatusBadArgument
	}
	_, data, ok := in.buffer(bt)
	if !ok {
		return nil, abi.StatusNotFound
	}
	return data, abi.StatusOK
}

// proxy_get_buffer_bytes(buffer_type, start, max_size, ret_ptr_ptr,
// ret_size_ptr) copies up to max_size bytes from offset start of the buffer
// into memory from the plugin's allocator and writes their address and
// length to the out pointers; the range is clamped to the buffer, and an
// empty range writes 0 and 0. SDKs read whole buffers as (0, MaxInt32), so
// the arithmetic is 64-bit.
// Statuses: OK; NOT_FOUND when the buffer does not exist now; BAD_ARGUMENT
// for an unknown type; INVALID_MEMORY_ACCESS.
func getBufferBytes(ctx context.Context, _ api.Module, stack []uint64) {
	in := instanceFrom(ctx)
	data, st := in.readableBuffer(stack)
	if st != abi.StatusOK {
		ret(stack, st)
		return
	}
	start, size := uint64(u32(stack, 1)), uint64(u32(stack, 2))
	end := min(start+size, uint64(len(data)))
	if start >= end {
		data = nil
	} else {
		data = data[start:end]
	}
	ret(stack, in.copyOut(data, u32(stack, 3), u32(stack, 4)))
}

// proxy_get_buffer_status(buffer_type, ret_length_ptr, ret_flags_ptr)
// writes the buffer's length and its flags (always 0, as Envoy writes) as
// u32s. Statuses: OK, NOT_FOUND, BAD_ARGUMENT, INVALID_MEMORY_ACCESS, as
// proxy_get_buffer_bytes.
func getBufferStatus(ctx context.Context, _ api.Module, stack []uint64) {
	in := instanceFrom(ctx)
	data, st := in.readableBuffer(stack)
	if st != abi.StatusOK {
		ret(stack, st)
		return
	}
	if !in.writeU32(u32(stack, 1), uint32(len(data))) || !in.writeU32(u32(stack, 2), 0) {
		ret(stack, abi.StatusInvalidMemoryAccess)
		return
	}
	ret(stack, abi.StatusOK)
}

// proxy_set_buffer_bytes(buffer_type, start, size, data_ptr, data_size)
// changes a body buffer with Envoy's three supported forms: (0, 0)
// prepends, (0, size >= length) replaces everything, and start >= length
// appends. It reads data from guest memory and writes nothing back.
// Statuses: OK; NOT_FOUND when the buffer does not exist now or holds no
// body being processed; BAD_ARGUMENT for an unknown or read-only type, or a
// range Envoy does not support (a splice in the middle);
// INVALID_MEMORY_ACCESS.
func setBufferBytes(ctx context.Context, _ api.Module, stack []uint64) {
	in := instanceFrom(ctx)
	bt := abi.BufferType(u32(stack, 0))
	if !bt.Valid() {
		ret(stack, abi.StatusBadArgument)
		return
	}
	data, ok := in.read(u32(stack, 3), u32(stack, 4))
	if !ok {
		ret(stack, abi.StatusInvalidMemoryAccess)
		return
	}
	b, cur, ok := in.buffer(bt)
	switch {
	case !ok:
		ret(stack, abi.StatusNotFound)
		return
	case b == nil:
		ret(stack, abi.StatusBadArgument) // configuration and call responses are read-only
		return
	case !b.active:
		ret(stack, abi.StatusNotFound)
		return
	}
	start, size, n := uint64(u32(stack, 1)), uint64(u32(stack, 2)), uint64(len(cur))
	var out []byte
	switch {
	case start == 0 && size == 0:
		out = make([]byte, 0, len(data)+len(cur))
		out = append(append(out, data...), cur...)
	case start == 0 && size >= n:
		out = append([]byte(nil), data...)
	case start >= n:
		out = make([]byte, 0, len(cur)+len(data))
		out = append(append(out, cur...), data...)
	default:
		ret(stack, abi.StatusBadArgument)
		return
	}
	b.buf, b.modified = out, true
	ret(stack, abi.StatusOK)
}
