// Package gctune sets the Go garbage collector's GOGC from the live heap,
// so that a server with a small live heap and a high allocation rate does
// not collect every few megabytes.
//
// Go's default (GOGC=100) lets the heap grow by as much as is live before
// the next collection, and by at least 4 MB. A wasm-callout server serving
// a small plugin keeps about 2 MB live while every request allocates, so
// under load it collected 40 to 50 times a second; each collection also
// shrinks the stacks of its idle stream workers, which then grow again on
// their next stream. A Tuner instead gives the heap a fixed headroom above
// what is live: GOGC rises while the live heap is small and falls back to
// 100 once the live heap is as large as the headroom, so large plugins
// (whose live heap is tens of megabytes) keep Go's default.
package gctune

import (
	"context"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// MaxPercent bounds the GOGC a Tuner sets, whatever the live heap.
const MaxPercent = 10000

// Percent is the GOGC that lets the heap grow by headroom bytes past live
// before the next collection: never below Go's default of 100, never above
// MaxPercent.
func Percent(live, headroom uint64) int {
	live = max(live, 1)
	if headroom/live >= MaxPercent/100 {
		return MaxPercent
	}
	return max(100, int(headroom*100/live))
}

// A Tuner sets GOGC after each collection (it looks every Interval) to
// Percent of the live heap the collection found and Headroom.
type Tuner struct {
	Headroom uint64
	Interval time.Duration

	// For tests: what the runtime reports, and how GOGC is set.
	read func() (cycles, live uint64)
	set  func(percent int) (previous int)
}

// Run tunes until ctx ends, then restores the GOGC it found.
func (t *Tuner) Run(ctx context.Context) {
	read, set := t.read, t.set
	if read == nil {
		read = readRuntime
	}
	if set == nil {
		set = debug.SetGCPercent
	}
	interval := t.Interval
	if interval <= 0 {
		interval = time.Second
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	var seen uint64
	current := -1 // the value set last; -1 before the first
	original := -1
	defer func() {
		if original >= 0 {
			set(original)
		}
	}()
	for {
		if cycles, live := read(); cycles != seen && live > 0 {
			seen = cycles
			// A change of less than an eighth is not worth a call.
			if p := Percent(live, t.Headroom); current < 0 || p < current-current/8 || p > current+current/8 {
				prev := set(p)
				if original < 0 {
					original = prev
				}
				current = p
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

var samples = []metrics.Sample{{Name: "/gc/cycles/total:gc-cycles"}, {Name: "/gc/heap/live:bytes"}}

func readRuntime() (cycles, live uint64) {
	s := make([]metrics.Sample, len(samples))
	copy(s, samples)
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 || s[1].Value.Kind() != metrics.KindUint64 {
		return 0, 0
	}
	return s[0].Value.Uint64(), s[1].Value.Uint64()
}
