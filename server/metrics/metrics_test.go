package metrics

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/wasm-callout/wasm-callout/abi"
	"github.com/wasm-callout/wasm-callout/host"
	"github.com/wasm-callout/wasm-callout/server"
)

// collectorFunc adapts collectValues to a prometheus.Collector.
type collectorFunc func(chan<- prometheus.Metric)

func (collectorFunc) Describe(chan<- *prometheus.Desc)      {}
func (f collectorFunc) Collect(ch chan<- prometheus.Metric) { f(ch) }

// Plugin metrics become one family per exported name, with the union of
// their tags as labels; a name already taken by another type, a series
// Envoy would merge, a name Envoy drops and a label value that is not
// UTF-8 are left out, and the rest still served.
func TestPluginMetricFamilies(t *testing.T) {
	buckets := make([]uint64, len(host.HistogramBounds))
	for i, b := range host.HistogramBounds {
		if b >= 50 {
			buckets[i] = 1
		}
	}
	values := []host.MetricValue{
		{Name: "basic_requests_total", Type: abi.MetricCounter, Counter: 7},
		{Name: "reporter=.=destination;.;response_code=.=200;.;istio_requests_total", Type: abi.MetricCounter, Counter: 3},
		{Name: "reporter=.=source;.;istio_requests_total", Type: abi.MetricCounter, Counter: 2},
		{Name: "reporter=.=source;.;istio_requests_total", Type: abi.MetricGauge, Gauge: 9},       // another type: left out
		{Name: "istio_reporter=.=source;.;requests_total", Type: abi.MetricCounter, Counter: 100}, // merges with the one above: left out
		{Name: "queue.depth", Type: abi.MetricGauge, Gauge: -4},
		{Name: "latency_ms", Type: abi.MetricHistogram, Count: 1, Sum: 50, Buckets: buckets},
		{Name: "9lives", Type: abi.MetricCounter, Counter: 1},
		{Name: "wasm_callout_streams_active", Type: abi.MetricGauge, Gauge: 1}, // ours
		{Name: "bad=.=\xff;.;utf8_total", Type: abi.MetricCounter, Counter: 1},
	}
	reg := prometheus.NewPedanticRegistry()
	pvs := make([]pluginValue, len(values))
	for i, v := range values {
		pvs[i] = pluginValue{MetricValue: v}
	}
	reg.MustRegister(collectorFunc(func(ch chan<- prometheus.Metric) { collectValues(ch, pvs) }))
	want := `
# HELP basic_requests_total Plugin-defined counter (proxy_define_metric), named as Envoy exports Wasm stats.
# TYPE basic_requests_total counter
basic_requests_total 7
# HELP istio_requests_total Plugin-defined counter (proxy_define_metric), named as Envoy exports Wasm stats.
# TYPE istio_requests_total counter
istio_requests_total{reporter="destination",response_code="200"} 3
istio_requests_total{reporter="source",response_code=""} 2
# HELP latency_ms Plugin-defined histogram (proxy_define_metric), named as Envoy exports Wasm stats.
# TYPE latency_ms histogram
latency_ms_bucket{le="0.5"} 0
latency_ms_bucket{le="1"} 0
latency_ms_bucket{le="5"} 0
latency_ms_bucket{le="10"} 0
latency_ms_bucket{le="25"} 0
latency_ms_bucket{le="50"} 1
latency_ms_bucket{le="100"} 1
latency_ms_bucket{le="250"} 1
latency_ms_bucket{le="500"} 1
latency_ms_bucket{le="1000"} 1
latency_ms_bucket{le="2500"} 1
latency_ms_bucket{le="5000"} 1
latency_ms_bucket{le="10000"} 1
latency_ms_bucket{le="30000"} 1
latency_ms_bucket{le="60000"} 1
latency_ms_bucket{le="300000"} 1
latency_ms_bucket{le="600000"} 1
latency_ms_bucket{le="1.8e+06"} 1
latency_ms_bucket{le="3.6e+06"} 1
latency_ms_bucket{le="+Inf"} 1
latency_ms_sum 50
latency_ms_count 1
# HELP queue_depth Plugin-defined gauge (proxy_define_metric), named as Envoy exports Wasm stats.
# TYPE queue_depth gauge
queue_depth -4
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
}

// Every family the collector sends is described, before and after the
// server exists: a pedantic registry, which checks that, gathers without
// error.
func TestCollectorDescribesEverything(t *testing.T) {
	us, err := host.NewUpstreams([]host.Upstream{{Name: "authz", URL: "http://127.0.0.1:9"}})
	if err != nil {
		t.Fatal(err)
	}
	defer us.Close()
	wasm, err := os.ReadFile(filepath.Join("..", "testdata", "edge.wasm"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := host.Load(context.Background(), wasm, host.Config{Name: "edge", Instances: 1, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(context.Background())
	var cur atomic.Pointer[server.Server]
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(newCollector(Options{Server: cur.Load, Upstreams: us}))
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if len(fams) != 3 { // the outbound call families
		t.Errorf("%d families without a server, want 3", len(fams))
	}
	srv, err := server.New(server.Options{Plugin: p, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	cur.Store(srv)
	if fams, err = reg.Gather(); err != nil {
		t.Fatal(err)
	}
	if want := len(newCollector(Options{}).descs); len(fams) != want {
		t.Errorf("%d families with a server, want all %d", len(fams), want)
	}
}
