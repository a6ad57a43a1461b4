package host

import (
	"testing"

	"github.com/wasm-callout/wasm-callout/abi"
)

func TestMetrics(t *testing.T) {
	m := NewMetrics()
	cfg := Config{Metrics: m}
	def := newHostcall(t, "proxy_define_metric", cfg)
	inc := newHostcall(t, "proxy_increment_metric", cfg)
	rec := newHostcall(t, "proxy_record_metric", cfg)
	get := newHostcall(t, "proxy_get_metric", cfg)

	define := func(typ abi.MetricType, name string) uint32 {
		t.Helper()
		p, n := def.put(argA, []byte(name))
		if st := def.run(nil, phaseNone, uint64(typ), p, n, retP); st != abi.StatusOK {
			t.Fatalf("define %s: %v", name, st)
		}
		return def.u32(retP)
	}
	counter, gauge, hist := define(abi.MetricCounter, "c"), define(abi.MetricGauge, "g"), define(abi.MetricHistogram, "h")
	if again := define(abi.MetricCounter, "c"); again != counter {
		t.Errorf("redefining returned %d, want %d", again, counter)
	}
	if p, n := def.put(argA, []byte("x")); def.run(nil, phaseNone, 3, p, n, retP) != abi.StatusBadArgument {
		t.Error("unknown metric type accepted")
	}
	if def.run(nil, phaseNone, 0, badPtr, 1, retP) != abi.StatusInvalidMemoryAccess {
		t.Error("bad name pointer")
	}

	tests := []struct {
		name string
		h    *hostcall
		id   uint32
		v    int64
		want abi.Status
	}{
		{"increment counter", inc, counter, 5, abi.StatusOK},
		{"counters cannot go down", inc, counter, -1, abi.StatusBadArgument},
		{"counters need a positive delta", inc, counter, 0, abi.StatusBadArgument},
		{"record on a counter adds", rec, counter, 2, abi.StatusOK},
		{"increment gauge", inc, gauge, 10, abi.StatusOK},
		{"decrement gauge", inc, gauge, -3, abi.StatusOK},
		{"histograms are not incremented", inc, hist, 1, abi.StatusBadArgument},
		{"record histogram", rec, hist, 7, abi.StatusOK},
		{"unknown id", inc, 999, 1, abi.StatusNotFound},
		{"id with the wrong type bits", rec, counter | 1, 1, abi.StatusNotFound},
	}
	for _, tc := range tests {
		if got := tc.h.run(nil, phaseNone, uint64(tc.id), uint64(tc.v)); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
	for _, tc := range []struct {
		id   uint32
		want abi.Status
		v    uint64
	}{{counter, abi.StatusOK, 7}, {gauge, abi.StatusOK, 7}, {hist, abi.StatusBadArgument, 0}, {12345, abi.StatusNotFound, 0}} {
		if got := get.run(nil, phaseNone, uint64(tc.id), retP); got != tc.want || (got == abi.StatusOK && get.u64(retP) != tc.v) {
			t.Errorf("get %d: %v %d, want %v %d", tc.id, got, get.u64(retP), tc.want, tc.v)
		}
	}
	if got := rec.run(nil, phaseNone, uint64(gauge), 1); got != abi.StatusOK || get.run(nil, phaseNone, uint64(gauge), retP) != abi.StatusOK || get.u64(retP) != 1 {
		t.Errorf("record sets a gauge: %d", get.u64(retP))
	}
	snap := m.Snapshot()
	if len(snap) != 3 || snap[0].Counter != 7 || snap[1].Gauge != 1 || snap[2].Count != 1 || snap[2].Sum != 7 || snap[2].Buckets[2] != 0 || snap[2].Buckets[3] != 1 {
		t.Errorf("snapshot = %+v", snap)
	}
}
