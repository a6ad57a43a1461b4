//go:build !unix

package server

import "time"

// cpuTime is not measured here: the CPU metric of the benchmarks reads 0.
func cpuTime() time.Duration { return 0 }
