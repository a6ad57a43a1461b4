package host

import (
	"syscall"

	"github.com/tetratelabs/wazero/experimental"
)

// memoryAllocator gives each instance a private anonymous mapping of the
// memory's maximum size (MAP_NORESERVE: address space, not memory, until
// touched). If the mapping fails, the memory lives on the Go heap.
var memoryAllocator experimental.MemoryAllocator = experimental.MemoryAllocatorFunc(
	func(capacity, max uint64) experimental.LinearMemory {
		if max > 0 && max <= 1<<32 {
			b, err := syscall.Mmap(-1, 0, int(max), syscall.PROT_READ|syscall.PROT_WRITE,
				syscall.MAP_PRIVATE|syscall.MAP_ANON|syscall.MAP_NORESERVE)
			if err == nil {
				mappedBytes.Add(int64(len(b)))
				return &mappedMemory{buf: b}
			}
		}
		return &heapMemory{buf: make([]byte, 0, capacity), max: max}
	})

// mappedMemory is a LinearMemory in its own mapping: growing returns a
// longer view of the same pages, so memory never moves or copies.
type mappedMemory struct{ buf []byte }

func (m *mappedMemory) Reallocate(size uint64) []byte {
	if m.buf == nil || size > uint64(len(m.buf)) {
		return nil
	}
	return m.buf[:size:size]
}

// Free unmaps the memory. wazero calls it when the module closes, never
// while the guest runs (a call cancelled by its deadline frees on the
// calling goroutine once the guest has stopped).
func (m *mappedMemory) Free() {
	if m.buf == nil {
		return
	}
	if syscall.Munmap(m.buf) == nil {
		mappedBytes.Add(-int64(len(m.buf)))
	}
	m.buf = nil
}

// heapMemory is a LinearMemory on the Go heap, used where no mapping can
// be made. It grows as wazero's own default does.
type heapMemory struct {
	buf []byte
	max uint64
}

func (m *heapMemory) Reallocate(size uint64) []byte {
	if size > m.max {
		return nil
	}
	if size <= uint64(cap(m.buf)) {
		m.buf = m.buf[:size]
		return m.buf
	}
	m.buf = append(m.buf[:cap(m.buf)], make([]byte, size-uint64(cap(m.buf)))...)
	return m.buf
}

func (m *heapMemory) Free() { m.buf = nil }
