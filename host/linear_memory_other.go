//go:build !linux

package host

import "github.com/tetratelabs/wazero/experimental"

// memoryAllocator is wazero's default (the Go heap) where this host maps
// no memory of its own.
var memoryAllocator experimental.MemoryAllocator
