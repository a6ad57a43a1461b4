package host

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/tetratelabs/wazero/sys"
)

// Observations land in the first bucket whose bound they do not exceed;
// snapshots are cumulative, as Prometheus counts buckets.
func TestHistogram(t *testing.T) {
	var h Histogram
	for _, d := range []time.Duration{0, 10 * time.Microsecond, 11 * time.Microsecond, time.Millisecond, 10 * time.Second, time.Minute} {
		h.Observe(d)
	}
	s := h.Snapshot()
	if s.Count != 6 {
		t.Errorf("count %d, want 6", s.Count)
	}
	if want := (10*time.Microsecond + 11*time.Microsecond + time.Millisecond + 10*time.Second + time.Minute).Seconds(); s.Sum != want {
		t.Errorf("sum %v, want %v", s.Sum, want)
	}
	for _, tc := range []struct {
		le   float64
		want uint64
	}{{0.00001, 2}, {0.000025, 3}, {0.00005, 3}, {0.001, 4}, {5, 4}, {10, 5}} {
		for i, b := range DurationBounds {
			if b == tc.le && s.Buckets[i] != tc.want {
				t.Errorf("bucket le=%v: %d, want %d", tc.le, s.Buckets[i], tc.want)
			}
		}
	}
	if len(s.Buckets) != len(DurationBounds) || len(DurationBounds) != numDurationBuckets {
		t.Errorf("%d buckets for %d bounds", len(s.Buckets), len(DurationBounds))
	}
}

func TestClassifyFailure(t *testing.T) {
	const limit = 32 << 20
	for _, tc := range []struct {
		err  error
		mem  uint64
		want FailureCause
	}{
		{errors.New("wasm error: unreachable"), 1 << 20, CauseTrap},
		{errors.New("wasm error: unreachable"), limit - 1<<20, CauseMemory},
		{errors.New("wasm error: out of bounds memory access"), limit, CauseMemory},
		{fmt.Errorf("%w (module closed with context canceled)", ErrCallTimeout), limit, CauseDeadline},
		{sys.NewExitError(3), 1 << 20, CauseExit},
		{fmt.Errorf("proxy_on_request_headers: %w", sys.NewExitError(2)), limit, CauseMemory},
		{sys.NewExitError(sys.ExitCodeContextCanceled), 1 << 20, CauseTrap},
	} {
		if got := classifyFailure(tc.err, tc.mem, limit); got != tc.want {
			t.Errorf("classifyFailure(%v, %d) = %v, want %v", tc.err, tc.mem, got, tc.want)
		}
	}
}

// Every guest call is timed under its callback's name, and the instance's
// memory size is kept for Plugin.Instances.
func TestTelemetryCallbacks(t *testing.T) {
	p := loadFile(t, "faults", Config{Instances: 1})
	s, err := p.NewHTTPStream(nil)
	if err != nil {
		t.Fatal(err)
	}
	s.RequestHeaders(faultHeaders("none"), true)
	s.Close()
	got := map[string]uint64{}
	for _, cb := range p.Telemetry().Snapshot().Callbacks {
		got[cb.Callback] = cb.Count
	}
	if got["proxy_on_request_headers"] != 1 || got["proxy_on_context_create"] < 2 {
		t.Errorf("callbacks timed: %v", got)
	}
	if in := p.Instances(); len(in) != 1 || !in[0].Healthy || in[0].MemoryBytes < 65536 {
		t.Errorf("instances: %+v", in)
	}
}

// BenchmarkHistogramObserve is the cost the server and the host add per
// timed message or guest call, on every core at once.
func BenchmarkHistogramObserve(b *testing.B) {
	var h Histogram
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		start := time.Now()
		for pb.Next() {
			h.Observe(time.Since(start))
		}
	})
}
