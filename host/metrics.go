package host

import (
	"context"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/tetratelabs/wazero/api"

	"github.com/wasm-callout/wasm-callout/abi"
)

// Metrics is a registry of plugin-defined counters, gauges and histograms.
// Every instance of a plugin shares it, as Envoy's workers share stats, and
// a server can share one across reloads so values survive a swap. Safe for
// concurrent use.
type Metrics struct {
	mu     sync.RWMutex
	byName map[metricKey]uint32
	list   []*metric // index = id >> 2
}

type metricKey struct {
	name string
	typ  abi.MetricType
}

type metric struct {
	name  string
	typ   abi.MetricType
	value atomic.Int64 // counter (as uint64 bits) or gauge

	mu      sync.Mutex // histogram only
	count   uint64
	sum     float64
	buckets []uint64 // cumulative counts per HistogramBounds
}

// HistogramBounds are the upper bounds of histogram buckets, Envoy's
// defaults.
var HistogramBounds = []float64{0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000}

// NewMetrics returns an empty registry.
func NewMetrics() *Metrics { return &Metrics{byName: map[metricKey]uint32{}} }

// define returns the id of the metric, creating it if new. The low two bits
// of an id hold the metric's type, as in Envoy.
func (m *Metrics) define(typ abi.MetricType, name string) uint32 {
	k := metricKey{name, typ}
	m.mu.RLock()
	id, ok := m.byName[k]
	m.mu.RUnlock()
	if ok {
		return id
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if id, ok := m.byName[k]; ok {
		return id
	}
	id = uint32(len(m.list)+1)<<2 | uint32(typ)
	mt := &metric{name: name, typ: typ}
	if typ == abi.MetricHistogram {
		mt.buckets = make([]uint64, len(HistogramBounds))
	}
	m.list = append(m.list, mt)
	m.byName[k] = id
	return id
}

func (m *Metrics) get(id uint32) *metric {
	i := int(id>>2) - 1
	m.mu.RLock()
	defer m.mu.RUnlock()
	if i < 0 || i >= len(m.list) || uint32(m.list[i].typ) != id&3 {
		return nil
	}
	return m.list[i]
}

func (mt *metric) observe(v float64) {
	mt.mu.Lock()
	defer mt.mu.Unlock()
	mt.count++
	mt.sum += v
	for i, b := range HistogramBounds {
		if v <= b {
			mt.buckets[i]++
		}
	}
}

// MetricValue is a snapshot of one metric. Counter and Gauge hold the value
// of their type; histograms fill Count, Sum and cumulative Buckets (per
// HistogramBounds).
type MetricValue struct {
	Name    string
	Type    abi.MetricType
	Counter uint64
	Gauge   int64
	Count   uint64
	Sum     float64
	Buckets []uint64
}

// Snapshot returns every metric, sorted by name then type.
func (m *Metrics) Snapshot() []MetricValue {
	m.mu.RLock()
	list := append([]*metric(nil), m.list...)
	m.mu.RUnlock()
	out := make([]MetricValue, 0, len(list))
	for _, mt := range list {
		v := MetricValue{Name: mt.name, Type: mt.typ}
		switch mt.typ {
		case abi.MetricCounter:
			v.Counter = uint64(mt.value.Load())
		case abi.MetricGauge:
			v.Gauge = mt.value.Load()
		default:
			mt.mu.Lock()
			v.Count, v.Sum, v.Buckets = mt.count, mt.sum, append([]uint64(nil), mt.buckets...)
			mt.mu.Unlock()
		}
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Name != out[j].Name {
			return out[i].Name < out[j].Name
		}
		return out[i].Type < out[j].Type
	})
	return out
}

// proxy_define_metric(type, name_ptr, name_size, ret_id_ptr) defines (or
// finds, by name and type) a metric and writes its id (u32).
// Statuses: OK; BAD_ARGUMENT for an unknown type; INVALID_MEMORY_ACCESS.
func defineMetric(ctx context.Context, _ api.Module, stack []uint64) {
	in := instanceFrom(ctx)
	typ := abi.MetricType(u32(stack, 0))
	if !typ.Valid() {
		ret(stack, abi.StatusBadArgument)
		return
	}
	name, ok := in.readString(u32(stack, 1), u32(stack, 2))
	if !ok || !in.writable(u32(stack, 3), 4) {
		ret(stack, abi.StatusInvalidMemoryAccess)
		return
	}
	in.writeU32(u32(stack, 3), in.plugin.cfg.Metrics.define(typ, name))
	ret(stack, abi.StatusOK)
}

// proxy_increment_metric(metric_id, offset i64) adds offset to a counter
// (offset must be positive) or a gauge (any sign). Statuses: OK; NOT_FOUND
// for an unknown id; BAD_ARGUMENT for a histogram or a counter decrement, as
// Envoy answers.
func incrementMetric(ctx context.Context, _ api.Module, stack []uint64) {
	mt := instanceFrom(ctx).plugin.cfg.Metrics.get(u32(stack, 0))
	delta := int64(stack[1])
	switch {
	case mt == nil:
		ret(stack, abi.StatusNotFound)
	case mt.typ == abi.MetricHistogram, mt.typ == abi.MetricCounter && delta <= 0:
		ret(stack, abi.StatusBadArgument)
	default:
		mt.value.Add(delta)
		ret(stack, abi.StatusOK)
	}
}

// proxy_record_metric(metric_id, value i64) sets a gauge, records a
// histogram sample, or (as Envoy does) adds value to a counter.
// Statuses: OK; NOT_FOUND for an unknown id.
func recordMetric(ctx context.Context, _ api.Module, stack []uint64) {
	mt := instanceFrom(ctx).plugin.cfg.Metrics.get(u32(stack, 0))
	v := int64(stack[1])
	switch {
	case mt == nil:
		ret(stack, abi.StatusNotFound)
		return
	case mt.typ == abi.MetricCounter:
		mt.value.Add(v)
	case mt.typ == abi.MetricGauge:
		mt.value.Store(v)
	default:
		mt.observe(float64(uint64(v)))
	}
	ret(stack, abi.StatusOK)
}

// proxy_get_metric(metric_id, ret_value_ptr) writes a counter's or gauge's
// value (u64). Statuses: OK; NOT_FOUND for an unknown id; BAD_ARGUMENT for a
// histogram; INVALID_MEMORY_ACCESS.
func getMetric(ctx context.Context, _ api.Module, stack []uint64) {
	in := instanceFrom(ctx)
	mt := in.plugin.cfg.Metrics.get(u32(stack, 0))
	switch {
	case mt == nil:
		ret(stack, abi.StatusNotFound)
	case mt.typ == abi.MetricHistogram:
		ret(stack, abi.StatusBadArgument)
	case !in.writeU64(u32(stack, 1), uint64(mt.value.Load())):
		ret(stack, abi.StatusInvalidMemoryAccess)
	default:
		ret(stack, abi.StatusOK)
	}
}
