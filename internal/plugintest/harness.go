package plugintest

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/wasm-callout/wasm-callout/abi"
	"github.com/wasm-callout/wasm-callout/host"
)

// LogLine is one line the plugin logged.
type LogLine struct {
	Level   abi.LogLevel
	Message string
}

// Record is what happened in one phase: plugin_init, stream_init, a
// stream callback (or a body invocation's chunks), or stream_destroy.
type Record struct {
	Phase string
	// HeadersIn and HeadersOut are a headers phase's map before and after
	// the plugin; Changes are the keys it changed.
	HeadersIn, HeadersOut []abi.Pair
	Changes               []host.HeaderChange
	// BodyIn is a body phase's input, delivered in Chunks callbacks;
	// BodyOut is what the plugin let through (or still held at the end:
	// Held).
	BodyIn, BodyOut []byte
	Chunks          int
	Held            bool
	IsBody          bool
	// Action is the last callback's decision.
	Action abi.Action
	// Local is the plugin's local reply, if it sent one.
	Local *host.LocalResponse
	// Failure is the plugin's failure (a trap, a timeout, the memory
	// limit), if any.
	Failure error
	Logs    []LogLine
	// Calls are the host calls and callbacks, when tracing.
	Calls   []host.TraceCall
	Metrics []MetricDelta
	// Took is the time spent in the plugin's callbacks (the guest runs on
	// the calling goroutine, so this is its CPU time plus host work).
	Took time.Duration
}

// MetricDelta is how much a metric moved in a phase.
type MetricDelta struct {
	Name  string
	Type  abi.MetricType
	Delta float64 // counter and gauge change; histogram: observations
}

// HarnessConfig says how to load a plugin for a test or a run.
type HarnessConfig struct {
	Wasm         []byte
	Name         string
	PluginConfig []byte
	// LogLevel is the lowest plugin log level recorded (and what
	// proxy_get_log_level answers).
	LogLevel abi.LogLevel
	// Now freezes the plugin's clock; nil is the system clock.
	Now func() time.Time
	// Trace records host calls in each Record.
	Trace bool
	// CacheDir is a compilation cache shared by loads of the same module.
	CacheDir         string
	MemoryLimitPages uint32
	CallTimeout      time.Duration
	Upstreams        *host.Upstreams
	Local            *host.LocalInfo
	// HostLog receives the host's own messages (not the plugin's); nil
	// discards them.
	HostLog *slog.Logger
}

// Harness is a loaded plugin whose logs, host calls and metrics are
// recorded per phase. It runs one instance, so phases never interleave.
type Harness struct {
	Plugin *host.Plugin
	// Init is plugin_init: proxy_on_vm_start and proxy_on_configure.
	Init Record

	mu     sync.Mutex
	cur    *Record
	routes map[string]*Record // by callback name, when set
	last   *Record            // the last routed record a callback ran in
}

// Route sends each callback's logs and host calls to the record of its
// callback name (e.g. "proxy_on_request_headers") from now on, for streams
// the harness does not drive itself; nil stops routing. Routing needs
// HarnessConfig.Trace. Callbacks not in routes keep the current record.
func (h *Harness) Route(routes map[string]*Record) {
	h.mu.Lock()
	h.routes, h.cur, h.last = routes, nil, nil
	h.mu.Unlock()
}

// LastRouted is the record of the last routed callback, nil if none ran.
func (h *Harness) LastRouted() *Record {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.last
}

// Load loads the plugin and records plugin_init. A plugin that fails to
// start returns an error and a Harness with only Init filled.
func Load(ctx context.Context, cfg HarnessConfig) (*Harness, error) {
	h := &Harness{Init: Record{Phase: "plugin_init"}}
	h.cur = &h.Init
	hostLog := cfg.HostLog
	if hostLog == nil {
		hostLog = slog.New(slog.DiscardHandler)
	}
	hc := host.Config{
		Name:                cfg.Name,
		PluginConfig:        cfg.PluginConfig,
		Instances:           1,
		MemoryLimitPages:    cfg.MemoryLimitPages,
		CallTimeout:         cfg.CallTimeout,
		ShedQueueDelay:      -1,
		CompilationCacheDir: cfg.CacheDir,
		Logger:              slog.New(&levelHandler{min: host.LogLevelToSlog(cfg.LogLevel), next: hostLog.Handler()}),
		Metrics:             host.NewMetrics(),
		Upstreams:           cfg.Upstreams,
		Local:               cfg.Local,
		Shared:              host.NewSharedState(),
		Now:                 cfg.Now,
		PluginLog:           h.log,
	}
	if cfg.Trace {
		hc.Trace = h.trace
	}
	start := time.Now()
	p, err := host.Load(ctx, cfg.Wasm, hc)
	h.Init.Took = time.Since(start)
	if err != nil {
		h.Init.Failure = err
		return h, err
	}
	h.Plugin = p
	return h, nil
}

// Close closes the plugin.
func (h *Harness) Close() {
	if h.Plugin != nil {
		h.Plugin.Close(context.Background())
	}
}

func (h *Harness) log(level abi.LogLevel, msg string) {
	h.mu.Lock()
	if h.cur != nil {
		h.cur.Logs = append(h.cur.Logs, LogLine{level, msg})
	}
	h.mu.Unlock()
}

func (h *Harness) trace(c host.TraceCall) {
	h.mu.Lock()
	if c.Callback && h.routes != nil {
		if r := h.routes[c.Name]; r != nil {
			h.cur, h.last = r, r
		}
	}
	if h.cur != nil {
		h.cur.Calls = append(h.cur.Calls, c)
	}
	h.mu.Unlock()
}

// record makes r the destination of logs and calls while fn runs, and
// fills its timing and metric movements.
func (h *Harness) record(r *Record, fn func()) {
	before := h.Plugin.Metrics().Snapshot()
	h.mu.Lock()
	h.cur = r
	h.mu.Unlock()
	start := time.Now()
	fn()
	r.Took += time.Since(start)
	h.mu.Lock()
	h.cur = nil
	h.mu.Unlock()
	for _, d := range metricDeltas(before, h.Plugin.Metrics().Snapshot()) {
		merged := false
		for i := range r.Metrics {
			if r.Metrics[i].Name == d.Name && r.Metrics[i].Type == d.Type {
				r.Metrics[i].Delta += d.Delta
				merged = true
			}
		}
		if !merged {
			r.Metrics = append(r.Metrics, d)
		}
	}
}

func metricDeltas(before, after []host.MetricValue) []MetricDelta {
	old := make(map[string]host.MetricValue, len(before))
	for _, m := range before {
		old[m.Name+"\x00"+fmt.Sprint(m.Type)] = m
	}
	var out []MetricDelta
	for _, m := range after {
		o := old[m.Name+"\x00"+fmt.Sprint(m.Type)]
		var d float64
		switch m.Type {
		case abi.MetricCounter:
			d = float64(m.Counter) - float64(o.Counter)
		case abi.MetricGauge:
			d = float64(m.Gauge - o.Gauge)
		default:
			d = float64(m.Count) - float64(o.Count)
		}
		if d != 0 {
			out = append(out, MetricDelta{Name: m.Name, Type: m.Type, Delta: d})
		}
	}
	return out
}

// levelHandler is enabled from min up, so that the host asks the plugin
// for the right log level; it passes the host's own messages on (plugin
// lines reach the Harness through Config.PluginLog).
type levelHandler struct {
	min  slog.Level
	next slog.Handler
}

func (l *levelHandler) Enabled(_ context.Context, lv slog.Level) bool { return lv >= l.min }

func (l *levelHandler) Handle(ctx context.Context, r slog.Record) error {
	plugin := false
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "vm_id" {
			plugin = true
			return false
		}
		return true
	})
	if plugin || !l.next.Enabled(ctx, r.Level) {
		return nil
	}
	return l.next.Handle(ctx, r)
}

func (l *levelHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &levelHandler{min: l.min, next: l.next.WithAttrs(as)}
}

func (l *levelHandler) WithGroup(name string) slog.Handler {
	return &levelHandler{min: l.min, next: l.next.WithGroup(name)}
}

// Stream is an HTTP stream through a Harness's plugin.
type Stream struct {
	h *Harness
	s *host.HTTPStream
	// Replied is set once the plugin sent a local reply or failed: later
	// phases are not run.
	Replied *Record
}

// OpenHTTP opens an HTTP stream (stream_init) with props answering
// properties (nil for none).
func (h *Harness) OpenHTTP(props host.PropertySource) (*Stream, Record, error) {
	r := Record{Phase: "stream_init"}
	var s *host.HTTPStream
	var err error
	h.record(&r, func() { s, err = h.Plugin.NewHTTPStream(props) })
	if err != nil {
		r.Failure = err
		return nil, r, err
	}
	return &Stream{h: h, s: s}, r, nil
}

// Headers runs a request (request true) or response headers phase.
func (st *Stream) Headers(request bool, pairs []abi.Pair, eos bool) Record {
	r := Record{Phase: "response_headers", HeadersIn: pairs}
	m := abi.MapHTTPResponseHeaders
	if request {
		r.Phase, m = "request_headers", abi.MapHTTPRequestHeaders
	}
	in := append([]abi.Pair(nil), pairs...)
	var res host.Result
	st.h.record(&r, func() {
		if request {
			res = st.s.RequestHeaders(in, eos)
		} else {
			res = st.s.ResponseHeaders(in, eos)
		}
	})
	if hm := st.s.Headers(m); hm != nil {
		r.HeadersOut = append([]abi.Pair(nil), hm.Pairs()...)
	}
	r.Changes = st.s.TakeHeaderChanges(m)
	st.result(&r, res)
	return r
}

// Body runs a body phase: each chunk in turn, the last with eos as given.
// The output is what the plugin let through; what it still holds after
// the last chunk stays buffered (see TakeHeld and Await).
func (st *Stream) Body(request bool, chunks [][]byte, eos bool) Record {
	r := Record{Phase: "response_body", IsBody: true}
	if request {
		r.Phase = "request_body"
	}
	var res host.Result
	for i, c := range chunks {
		r.BodyIn = append(r.BodyIn, c...)
		r.Chunks++
		last := i == len(chunks)-1
		st.h.record(&r, func() {
			if request {
				res = st.s.RequestBody(c, eos && last)
			} else {
				res = st.s.ResponseBody(c, eos && last)
			}
		})
		if res.LocalResponse != nil || res.Failure != nil || res.Close {
			break
		}
		if res.Action == abi.ActionContinue {
			r.BodyOut = append(r.BodyOut, res.Body...)
		}
	}
	st.result(&r, res)
	return r
}

// TakeHeld releases what a body phase r left buffered because the plugin
// paused at its end, as its output (r.Held).
func (st *Stream) TakeHeld(r *Record) {
	if !r.IsBody || r.Local != nil || r.Failure != nil || r.Action == abi.ActionContinue {
		return
	}
	dir := abi.StreamHTTPResponse
	if r.Phase == "request_body" || strings.HasPrefix(r.Phase, "request_body[") {
		dir = abi.StreamHTTPRequest
	}
	if held, _ := st.s.TakeBody(dir); len(held) > 0 {
		r.BodyOut = append(r.BodyOut, held...)
		r.Held = true
	}
}

func (st *Stream) result(r *Record, res host.Result) {
	r.Action = res.Action
	r.Failure = res.Failure
	if res.Failure == nil {
		r.Local = res.LocalResponse
	}
	if r.Local != nil || r.Failure != nil || res.Close {
		st.Replied = r
	}
}

// Close ends the stream (stream_destroy).
func (st *Stream) Close() Record {
	r := Record{Phase: "stream_destroy"}
	st.h.record(&r, st.s.Close)
	return r
}

// Properties answers proxy_get_property from a fixed table keyed by the
// dotted path. Legacy top-level names (cluster_name, node…) are keyed by
// the xds.* form the host asks for.
type Properties map[string][]byte

// Set stores value at the dotted path.
func (p Properties) Set(path string, value []byte) {
	p[joinPath(abi.CanonicalPath(splitPath(path)))] = value
}

// Property implements host.PropertySource.
func (p Properties) Property(path []string) ([]byte, bool) {
	v, ok := p[joinPath(path)]
	return v, ok
}

func splitPath(p string) []string { return strings.Split(p, ".") }

func joinPath(p []string) string { return strings.Join(p, ".") }
