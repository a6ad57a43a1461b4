package host

import (
	"github.com/wasm-callout/wasm-callout/abi"
)

// Guest memory access. Every pointer and length a plugin passes is checked
// against the memory's current size; a bad one yields
// INVALID_MEMORY_ACCESS, never a panic. Views returned by read alias guest
// memory and are valid only until the guest runs again (an allocation may
// grow and move memory), so callers copy what they keep.

// maxLogBytes bounds what one proxy_log or fd_write line may log.
const maxLogBytes = 64 << 10

// read returns a view of size bytes at ptr.
func (in *instance) read(ptr, size uint32) ([]byte, bool) {
	if size == 0 {
		return nil, true
	}
	return in.mem.Read(ptr, size)
}

// readString copies size bytes at ptr into a string.
func (in *instance) readString(ptr, size uint32) (string, bool) {
	b, ok := in.read(ptr, size)
	return string(b), ok
}

func (in *instance) writeU32(ptr, v uint32) bool { return in.mem.WriteUint32Le(ptr, v) }

func (in *instance) writeU64(ptr uint32, v uint64) bool { return in.mem.WriteUint64Le(ptr, v) }

// writable reports whether size bytes at ptr are inside memory.
func (in *instance) writable(ptr, size uint32) bool {
	return uint64(ptr)+uint64(size) <= uint64(in.mem.Size())
}

// copyOut hands data to the plugin: it allocates len(data) bytes with the
// plugin's allocator, copies data there, and writes the address and length
// to retPtr and retLen. Empty data writes 0 and 0 without allocating. The
// plugin owns (and frees) the copy.
func (in *instance) copyOut(data []byte, retPtr, retLen uint32) abi.Status {
	ptr, st := in.reserveOut(len(data), retPtr, retLen)
	if ptr != 0 && !in.mem.Write(ptr, data) {
		return abi.StatusInvalidMemoryAccess
	}
	return st
}

// copyOutString is copyOut for a string, which it copies without
// converting.
func (in *instance) copyOutString(data string, retPtr, retLen uint32) abi.Status {
	ptr, st := in.reserveOut(len(data), retPtr, retLen)
	if ptr != 0 && !in.mem.WriteString(ptr, data) {
		return abi.StatusInvalidMemoryAccess
	}
	return st
}

// reserveOut allocates n bytes in the plugin for copyOut and writes their
// address and length to retPtr and retLen. It returns the address, or 0
// with the status to return (OK for n == 0, which writes 0 and 0).
func (in *instance) reserveOut(n int, retPtr, retLen uint32) (uint32, abi.Status) {
	if !in.writable(retPtr, 4) || !in.writable(retLen, 4) {
		return 0, abi.StatusInvalidMemoryAccess
	}
	if n == 0 {
		in.writeU32(retPtr, 0)
		in.writeU32(retLen, 0)
		return 0, abi.StatusOK
	}
	if uint64(n) > uint64(^uint32(0)) {
		return 0, abi.StatusBadArgument
	}
	ptr := in.alloc(uint32(n))
	if ptr == 0 {
		return 0, abi.StatusInvalidMemoryAccess
	}
	// Memory may have grown during the allocation; wazero's Memory
	// re-reads its buffer on every call, so these writes see the new one.
	if !in.writeU32(retPtr, ptr) || !in.writeU32(retLen, uint32(n)) {
		return 0, abi.StatusInvalidMemoryAccess
	}
	return ptr, abi.StatusOK
}

// u32 reads the i-th stack slot as a u32 parameter.
func u32(stack []uint64, i int) uint32 { return uint32(stack[i]) }

// ret stores a status as the host function's result.
func ret(stack []uint64, s abi.Status) { stack[0] = uint64(s) }
