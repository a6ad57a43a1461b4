package host

import "sync/atomic"

// Guest linear memory. wazero keeps a guest's memory on the Go heap by
// default and grows it by appending: every memory.grow past the capacity
// copies the whole memory and leaves the old copy as garbage. A plugin that
// grows to its limit (a memory bomb, or a Go runtime growing its heap)
// then costs about five times the limit in copies and garbage, stalls
// every other stream in the garbage collector, and the process keeps the
// freed heap long after the instance is gone (RATIONALE.md has the
// figures). Where the system allows it, each instance's memory is instead
// a mapping of its own (linear_memory_linux.go): the address space up to
// the limit is reserved once, the kernel commits pages only as the guest
// touches them, growing never copies, and closing the instance returns
// every page at once.

// mappedBytes counts the bytes of guest memory mappings alive in the
// process (reserved, not necessarily committed).
var mappedBytes atomic.Int64

// MappedMemory returns the bytes of address space reserved for the linear
// memories of live instances, across every plugin of the process. A closed
// plugin leaves none: tests use it to check that failed instances give
// their memory back.
func MappedMemory() int64 { return mappedBytes.Load() }
