package host

import (
	"sync/atomic"
	"time"
)

// DurationBounds are the upper bounds, in seconds, of the buckets of every
// Histogram: from 10 µs (a cheap callback) to 10 s (an outbound call or a
// paused message near Envoy's longest timeouts).
var DurationBounds = []float64{
	0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005,
	0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
	0.1, 0.25, 0.5, 1, 2.5, 5, 10,
}

// durationBoundsNS are DurationBounds in nanoseconds, for Observe.
var durationBoundsNS = func() [numDurationBuckets]int64 {
	var b [numDurationBuckets]int64
	for i, s := range DurationBounds {
		b[i] = int64(s * 1e9)
	}
	return b
}()

const numDurationBuckets = 19

// Histogram is a lock-free histogram of durations with the buckets of
// DurationBounds. Observing costs a bucket search and two atomic adds and
// never allocates, so the server and the host keep them on hot paths; a
// metrics exporter reads them with Snapshot when scraped. The zero value
// is ready to use. A snapshot taken while observations happen may count
// one of them in its buckets and not yet in its sum: it is consistent to
// within the observations in flight.
type Histogram struct {
	counts [numDurationBuckets + 1]atomic.Uint64 // last: above every bound
	sumNS  atomic.Int64
}

// Observe records d.
func (h *Histogram) Observe(d time.Duration) {
	ns := int64(d)
	i := 0
	for i < numDurationBuckets && ns > durationBoundsNS[i] {
		i++
	}
	h.counts[i].Add(1)
	h.sumNS.Add(ns)
}

// HistogramSnapshot is a Histogram's state: Count observations summing to
// Sum seconds, with Buckets[i] of them at most DurationBounds[i] seconds
// (cumulative, as Prometheus counts them).
type HistogramSnapshot struct {
	Count   uint64
	Sum     float64
	Buckets []uint64
}

// Snapshot returns the histogram's state.
func (h *Histogram) Snapshot() HistogramSnapshot {
	s := HistogramSnapshot{Buckets: make([]uint64, numDurationBuckets)}
	var n uint64
	for i := range h.counts {
		n += h.counts[i].Load()
		if i < numDurationBuckets {
			s.Buckets[i] = n
		}
	}
	s.Count = n
	s.Sum = float64(h.sumNS.Load()) / 1e9
	return s
}
