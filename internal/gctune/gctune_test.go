package gctune

import (
	"context"
	"runtime"
	"sync"
	"testing"
	"time"
)

func TestPercent(t *testing.T) {
	const mib = 1 << 20
	tests := []struct {
		live, headroom uint64
		want           int
	}{
		{2 * mib, 16 * mib, 800},
		{16 * mib, 16 * mib, 100},
		{86 * mib, 16 * mib, 100}, // a large plugin keeps Go's default
		{3 * mib, 16 * mib, 533},
		{0, 16 * mib, MaxPercent},
		{1, 1 << 62, MaxPercent},
		{2 * mib, 0, 100},
	}
	for _, tc := range tests {
		if got := Percent(tc.live, tc.headroom); got != tc.want {
			t.Errorf("Percent(%d, %d) = %d, want %d", tc.live, tc.headroom, got, tc.want)
		}
	}
}

// Run sets GOGC after each new collection, skips small changes, and puts
// back the value it found when it stops.
func TestRun(t *testing.T) {
	const mib = 1 << 20
	var mu sync.Mutex
	gogc := 100
	var sets []int
	steps := []struct{ cycles, live uint64 }{
		{1, 2 * mib},  // → 800
		{1, 1 * mib},  // same cycle: nothing
		{2, 2100000},  // → 799: within an eighth, nothing
		{3, 4 * mib},  // → 400
		{4, 40 * mib}, // → 100
		{5, 0},        // no live figure: nothing
	}
	var step int
	tu := &Tuner{Headroom: 16 * mib, Interval: time.Millisecond,
		read: func() (uint64, uint64) {
			mu.Lock()
			defer mu.Unlock()
			s := steps[min(step, len(steps)-1)]
			step++
			return s.cycles, s.live
		},
		set: func(p int) int {
			mu.Lock()
			defer mu.Unlock()
			prev := gogc
			gogc = p
			sets = append(sets, p)
			return prev
		},
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { tu.Run(ctx); close(done) }()
	for {
		mu.Lock()
		n := step
		mu.Unlock()
		if n > len(steps)+2 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	<-done
	want := []int{800, 400, 100, 100}
	if len(sets) != len(want) {
		t.Fatalf("GOGC set to %v, want %v", sets, want)
	}
	for i := range want {
		if sets[i] != want[i] {
			t.Fatalf("GOGC set to %v, want %v", sets, want)
		}
	}
}

// readRuntime reads what the runtime reports: a collection is counted,
// and something is live after it.
func TestReadRuntime(t *testing.T) {
	c0, _ := readRuntime()
	runtime.GC()
	c1, live := readRuntime()
	if c1 <= c0 || live == 0 {
		t.Errorf("cycles %d → %d, live %d", c0, c1, live)
	}
}
