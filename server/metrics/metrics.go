// Package metrics exports what a server.Server, its plugin and the plugin's
// own metrics count, in Prometheus form, with
// github.com/prometheus/client_golang.
//
// Neither server nor host imports this package or Prometheus: they keep
// atomic counters and lock-free histograms (server.Stats, server.Latency,
// host.Telemetry, host.Upstreams.Stats, host.Metrics), and the collectors
// here read them when scraped. Recording stays a few atomic adds on the
// hot path whatever exporter is used, and a scrape costs what the families
// hold, not what the traffic did.
package metrics

import (
	"net/http"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/wasm-callout/wasm-callout/abi"
	"github.com/wasm-callout/wasm-callout/host"
	"github.com/wasm-callout/wasm-callout/server"
)

// Options say what to export.
type Options struct {
	// Server returns the server to export, or nil while there is none
	// (the plugin is loading, say): its families are then left out.
	Server func() *server.Server
	// Metrics holds the plugin-defined metrics (host.Config.Metrics,
	// shared across reloads); nil means the current plugin's.
	Metrics *host.Metrics
	// Upstreams are the clusters plugins call (host.Config.Upstreams);
	// nil means none.
	Upstreams *host.Upstreams
}

// NewRegistry returns a registry holding the server's and the plugin's
// families (wasm_callout_*), the plugin-defined metrics named as Envoy
// names them (see EnvoyName), and the Go runtime and process collectors.
func NewRegistry(o Options) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		newCollector(o),
		&pluginMetrics{o: o},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return reg
}

// Handler serves reg's metrics in the exposition format the scraper asks
// for (the text format by default). A family that fails to gather is left
// out and the rest served.
func Handler(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

const ns = "wasm_callout_"

// collector exports the server's and the current plugin's counts.
type collector struct {
	o     Options
	descs []*prometheus.Desc // every desc below, for Describe

	streamsStarted, streamsFinished, streamsActive   *prometheus.Desc
	messages, messageDuration, timeoutOverrides      *prometheus.Desc
	mutationsDropped, limitRefusals, shed            *prometheus.Desc
	bufferedBytes, lostBodyBytes, immediateResponses *prometheus.Desc

	instances, instancesHealthy, instancesStalled *prometheus.Desc
	failures, replacements, memory                *prometheus.Desc
	callbackDuration                              *prometheus.Desc
	reloads, reloadFailures, generation, draining *prometheus.Desc
	compileSeconds, loadSeconds, liveStreams      *prometheus.Desc

	calls, callDuration, callsInFlight, unknownCluster *prometheus.Desc

	chainStreams, chainUnknown *prometheus.Desc
}

func newCollector(o Options) *collector {
	var descs []*prometheus.Desc
	d := func(name, help string, labels ...string) *prometheus.Desc {
		desc := prometheus.NewDesc(ns+name, help, labels, nil)
		descs = append(descs, desc)
		return desc
	}
	c := &collector{
		o: o,

		streamsStarted:     d("streams_started_total", "Process streams started, per gRPC service.", "service"),
		streamsFinished:    d("streams_finished_total", "Process streams ended, per gRPC service and outcome (ok, immediate_response, plugin_failure, protocol_error, limit, error).", "service", "outcome"),
		streamsActive:      d("streams_active", "Process streams in flight, per gRPC service.", "service"),
		messages:           d("messages_total", "Messages received, per gRPC service and phase.", "service", "phase"),
		messageDuration:    d("message_duration_seconds", "Time from a message's arrival to its answer, per gRPC service and phase.", "service", "phase"),
		timeoutOverrides:   d("message_timeout_overrides_total", "override_message_timeout messages sent while a plugin's outbound call was out.", "service"),
		mutationsDropped:   d("header_mutations_dropped_total", "Header changes not sent to Envoy, by reason: rejected (Envoy would fail the answer), ignored (mutation_rules or body mode), late (after Envoy forwarded the map).", "reason"),
		limitRefusals:      d("limit_refusals_total", "Times a limit (streams, buffers, queued messages, idle time, shedding) refused or ended a stream."),
		shed:               d("streams_shed_total", "Streams refused because every plugin instance was overloaded (--shed-queue-delay)."),
		bufferedBytes:      d("buffered_bytes", "Bytes streams hold across messages for their plugins."),
		lostBodyBytes:      d("lost_body_bytes_total", "Body or connection bytes the plugin held that could not be delivered."),
		immediateResponses: d("immediate_responses_total", "Immediate responses sent (the plugin's, the failure policy's, or for proxy_close_stream)."),

		instances:        d("plugin_instances", "Plugin instances configured (the pool size).", "plugin"),
		instancesHealthy: d("plugin_instances_healthy", "Plugin instances serving now.", "plugin"),
		instancesStalled: d("plugin_instances_stalled", "Plugin instances stuck in a call their deadline could not stop.", "plugin"),
		failures:         d("plugin_instance_failures_total", "Plugin instances failed, by cause (trap, deadline, memory, exit).", "plugin", "cause"),
		replacements:     d("plugin_instance_replacements_total", "Plugin instances started in place of failed ones.", "plugin"),
		memory:           d("plugin_instance_memory_bytes", "Linear memory of each plugin instance after its last call.", "plugin", "instance"),
		callbackDuration: d("plugin_callback_duration_seconds", "Time the guest ran per callback, measured on the host around the call.", "plugin", "callback"),
		reloads:          d("plugin_reloads_total", "Switches to a new plugin generation.", "plugin"),
		reloadFailures:   d("plugin_reload_failures_total", "Reloads (of any plugin) whose new generation failed to load; the current one kept serving."),
		generation:       d("plugin_generation", "The plugin generation new streams start on (1 at start, one more per reload).", "plugin"),
		draining:         d("plugin_draining_generations", "Replaced plugin generations (of any plugin) still serving the streams that started on them."),
		compileSeconds:   d("plugin_compile_seconds", "Time the current generation took to compile (or to read from the compilation cache).", "plugin"),
		loadSeconds:      d("plugin_load_seconds", "Time the current generation took to load: compiling and starting its instances.", "plugin"),
		liveStreams:      d("plugin_streams", "Plugin HTTP and TCP contexts open now on the current generation.", "plugin"),

		calls:          d("outbound_calls_total", "Outbound calls finished (proxy_http_call, proxy_grpc_call, proxy_grpc_stream), by cluster, kind and outcome (ok, error, timeout, cancelled).", "cluster", "kind", "outcome"),
		callDuration:   d("outbound_call_duration_seconds", "Time from an outbound call's start to its end, by cluster and kind.", "cluster", "kind"),
		callsInFlight:  d("outbound_calls_in_flight", "Outbound calls of the current generation in flight.", "plugin"),
		chainStreams:   d("chain_streams_total", "Streams (HTTP and TCP) that ran through each plugin chain (see --config), by chain name.", "chain"),
		chainUnknown:   d("chain_unknown_total", "Streams refused with NOT_FOUND because they named no chain the server has."),
		unknownCluster: d("outbound_calls_unknown_cluster_total", "Outbound calls refused because no --upstream has the cluster name."),
	}
	c.descs = descs
	return c
}

// Describe implements prometheus.Collector: every family, whether or not
// the server exists yet.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	c.collectUpstreams(ch)
	var srv *server.Server
	if c.o.Server != nil {
		srv = c.o.Server()
	}
	if srv == nil {
		return
	}
	c.collectServer(ch, srv)
	c.collectPlugin(ch, srv)
	cs := srv.ChainStats()
	for name, n := range cs.Streams {
		counter(ch, c.chainStreams, n, name)
	}
	counter(ch, c.chainUnknown, cs.Unknown)
}

func counter(ch chan<- prometheus.Metric, d *prometheus.Desc, v int64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
}

func gauge(ch chan<- prometheus.Metric, d *prometheus.Desc, v float64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
}

// histogram sends a duration histogram with host.DurationBounds buckets.
func histogram(ch chan<- prometheus.Metric, d *prometheus.Desc, h host.HistogramSnapshot, labels ...string) {
	ch <- prometheus.MustNewConstHistogram(d, h.Count, h.Sum, buckets(host.DurationBounds, h.Buckets), labels...)
}

func buckets(bounds []float64, counts []uint64) map[float64]uint64 {
	m := make(map[float64]uint64, len(bounds))
	for i, b := range bounds {
		if i < len(counts) {
			m[b] = counts[i]
		}
	}
	return m
}

func (c *collector) collectServer(ch chan<- prometheus.Metric, srv *server.Server) {
	st := srv.Stats()
	lat := srv.Latency()
	for svc := range server.NumServices {
		name := svc.String()
		s := st.Services[svc]
		counter(ch, c.streamsStarted, s.StreamsStarted, name)
		gauge(ch, c.streamsActive, float64(s.StreamsActive), name)
		for o := range server.NumOutcomes {
			counter(ch, c.streamsFinished, s.Finished[o], name, o.String())
		}
		for _, p := range svc.Phases() {
			counter(ch, c.messages, st.Messages[p], name, p.String())
			histogram(ch, c.messageDuration, lat[p], name, p.String())
		}
		if svc == server.ServiceExtProc {
			counter(ch, c.timeoutOverrides, s.TimeoutOverrides, name)
		}
	}
	for r := range server.NumDropReasons {
		counter(ch, c.mutationsDropped, st.Dropped[r], r.String())
	}
	counter(ch, c.limitRefusals, st.LimitRefusals)
	counter(ch, c.shed, st.Shed)
	gauge(ch, c.bufferedBytes, float64(st.BufferedBytes))
	counter(ch, c.lostBodyBytes, st.LostBodyBytes)
	counter(ch, c.immediateResponses, st.ImmediateResponses)
}

// collectPlugin sends the families of every plugin's current generation,
// labelled with the plugin's name, and the server-wide reload counts.
func (c *collector) collectPlugin(ch chan<- prometheus.Metric, srv *server.Server) {
	st := srv.Stats()
	seen := map[*host.Telemetry]bool{}
	for _, g := range srv.Generations() {
		p := g.Plugin
		if p == nil {
			continue
		}
		name := g.Name
		ps := p.Stats()
		gauge(ch, c.instances, float64(ps.Instances), name)
		gauge(ch, c.instancesHealthy, float64(ps.Healthy), name)
		gauge(ch, c.instancesStalled, float64(ps.Stalled), name)
		gauge(ch, c.liveStreams, float64(ps.LiveStreams), name)
		gauge(ch, c.callsInFlight, float64(ps.PendingCalls), name)
		for _, in := range p.Instances() {
			gauge(ch, c.memory, float64(in.MemoryBytes), name, strconv.Itoa(in.Slot))
		}
		// Plugins share a Telemetry only when the embedder gives them
		// one; its counts are then sent once, under the first name.
		if t := p.Telemetry(); !seen[t] {
			seen[t] = true
			snap := t.Snapshot()
			for cause := range host.NumFailureCauses {
				counter(ch, c.failures, snap.Failures[cause], name, cause.String())
			}
			counter(ch, c.replacements, snap.Replaced, name)
			for _, cb := range snap.Callbacks {
				histogram(ch, c.callbackDuration, cb.HistogramSnapshot, name, cb.Callback)
			}
		}
		counter(ch, c.reloads, int64(g.ID)-1, name)
		gauge(ch, c.generation, float64(g.ID), name)
		lt := p.LoadTimes()
		gauge(ch, c.compileSeconds, lt.Compile.Seconds(), name)
		gauge(ch, c.loadSeconds, (lt.Compile + lt.Start).Seconds(), name)
	}
	counter(ch, c.reloadFailures, st.ReloadFailures)
	gauge(ch, c.draining, float64(st.DrainingGenerations))
}

func (c *collector) collectUpstreams(ch chan<- prometheus.Metric) {
	if c.o.Upstreams == nil {
		return
	}
	for _, u := range c.o.Upstreams.Stats() {
		for o := range host.NumCallOutcomes {
			counter(ch, c.calls, u.Calls[o], u.Cluster, u.Kind, o.String())
		}
		histogram(ch, c.callDuration, u.Duration, u.Cluster, u.Kind)
	}
	counter(ch, c.unknownCluster, c.o.Upstreams.UnknownClusterCalls())
}

// pluginMetrics exports the plugin-defined metrics. Their names are known
// only when scraped, so it is an unchecked collector (Describe sends
// nothing).
type pluginMetrics struct{ o Options }

// Describe implements prometheus.Collector.
func (*pluginMetrics) Describe(chan<- *prometheus.Desc) {}

// family is one exported name and the plugin metrics that map to it.
type family struct {
	typ    abi.MetricType
	labels []string // union of the label names, sorted
	series []series
}

type series struct {
	labels []Label
	v      host.MetricValue
}

// Collect implements prometheus.Collector. With several plugins (--config),
// each series also carries a plugin label, the plugin's name: plugins that
// define the same metric then stay apart, where Envoy, whose Wasm stats
// share one store, would add them up.
func (pm *pluginMetrics) Collect(ch chan<- prometheus.Metric) {
	var regs []namedRegistry
	if pm.o.Server != nil {
		if srv := pm.o.Server(); srv != nil {
			seen := map[*host.Metrics]bool{}
			for _, p := range srv.Plugins() {
				if m := p.Metrics(); m != nil && !seen[m] {
					seen[m] = true
					regs = append(regs, namedRegistry{p.Config().Name, m})
				}
			}
		}
	}
	if len(regs) == 0 && pm.o.Metrics != nil {
		regs = []namedRegistry{{"", pm.o.Metrics}}
	}
	var values []pluginValue
	for _, r := range regs {
		var extra []Label
		if len(regs) > 1 {
			extra = []Label{{Name: "plugin", Value: r.name}}
		}
		for _, v := range r.m.Snapshot() {
			values = append(values, pluginValue{v, extra})
		}
	}
	collectValues(ch, values)
}

// namedRegistry is one plugin's metrics registry.
type namedRegistry struct {
	name string
	m    *host.Metrics
}

// pluginValue is a plugin metric's value and the labels the exporter adds
// to the ones its name carries.
type pluginValue struct {
	host.MetricValue
	extra []Label
}

// collectValues sends the plugin metrics values as Envoy would export them.
func collectValues(ch chan<- prometheus.Metric, values []pluginValue) {
	fams := map[string]*family{}
	var order []string
	for _, pv := range values {
		v := pv.MetricValue
		name, labels, ok := EnvoyName(v.Name)
		if len(pv.extra) > 0 {
			labels = append(labels[:len(labels):len(labels)], pv.extra...)
		}
		if !ok || len(name) >= len(ns) && name[:len(ns)] == ns {
			continue
		}
		f := fams[name]
		if f == nil {
			f = &family{typ: v.Type}
			fams[name] = f
			order = append(order, name)
		}
		if f.typ != v.Type {
			continue // one type per name: the first (counter, gauge, histogram) wins
		}
		for _, l := range labels {
			f.labels = addSorted(f.labels, l.Name)
		}
		f.series = append(f.series, series{labels, v})
	}
	for _, name := range order {
		f := fams[name]
		desc := prometheus.NewDesc(name, "Plugin-defined "+f.typ.String()+" (proxy_define_metric), named as Envoy exports Wasm stats.", f.labels, nil)
		seen := map[string]bool{}
		for _, s := range f.series {
			values := make([]string, len(f.labels))
			for _, l := range s.labels {
				for i, n := range f.labels {
					if n == l.Name {
						values[i] = l.Value
					}
				}
			}
			key := joinKey(values)
			if seen[key] {
				continue // two plugin names that Envoy would merge into one series
			}
			seen[key] = true
			var m prometheus.Metric
			var err error
			switch f.typ {
			case abi.MetricCounter:
				m, err = prometheus.NewConstMetric(desc, prometheus.CounterValue, float64(s.v.Counter), values...)
			case abi.MetricGauge:
				m, err = prometheus.NewConstMetric(desc, prometheus.GaugeValue, float64(s.v.Gauge), values...)
			default:
				m, err = prometheus.NewConstHistogram(desc, s.v.Count, s.v.Sum, buckets(host.HistogramBounds, s.v.Buckets), values...)
			}
			if err == nil {
				ch <- m
			}
		}
	}
}

func addSorted(list []string, s string) []string {
	for i, v := range list {
		if v == s {
			return list
		}
		if v > s {
			return append(list[:i], append([]string{s}, list[i:]...)...)
		}
	}
	return append(list, s)
}

func joinKey(values []string) string {
	n := 0
	for _, v := range values {
		n += len(v) + 1
	}
	b := make([]byte, 0, n)
	for _, v := range values {
		b = append(b, v...)
		b = append(b, 0)
	}
	return string(b)
}
