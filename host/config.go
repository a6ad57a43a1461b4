// Package host runs proxy-wasm plugins on wazero: it loads a module, keeps a
// pool of started VM instances, and drives HTTP streams through them with the
// lifecycle and host functions Envoy gives plugins.
//
// A Plugin is one loaded .wasm with its configuration. Each of its instances
// is single-threaded, like one Envoy worker's VM: calls into an instance are
// serialized, a stream is pinned to one instance for its whole life, and many
// streams share an instance. See RATIONALE.md for why.
package host

import (
	"log/slog"
	"runtime"
	"time"

	"github.com/tetratelabs/wazero/experimental"

	"github.com/wasm-callout/wasm-callout/abi"
)

// FailurePolicy says what a stream gets when its plugin instance fails (a
// trap, proc_exit, a call over the deadline, or the memory limit).
type FailurePolicy uint8

const (
	// FailClosed answers the stream with a local response (FailStatus),
	// as Envoy's FAIL_CLOSED does. It is the default.
	FailClosed FailurePolicy = iota
	// FailOpen lets the stream continue and skips the plugin for the rest
	// of it, as Envoy's FAIL_OPEN does.
	FailOpen
)

func (p FailurePolicy) String() string {
	if p == FailOpen {
		return "fail-open"
	}
	return "fail-closed"
}

// Defaults applied by Config.withDefaults.
const (
	DefaultMemoryLimitPages = 4096 // 256 MiB of guest memory per instance.
	DefaultCallTimeout      = time.Second
	DefaultFailStatus       = 503 // Envoy's wasm_fail_stream reply.
	// DefaultShedQueueDelay is half of Envoy's default message_timeout
	// (200 ms): a stream queued longer than that for its instance is
	// unlikely to be answered before Envoy gives up on it.
	DefaultShedQueueDelay = 100 * time.Millisecond
)

// Config describes one plugin: its code's configuration, identity, pool and
// limits. The zero value of every field has a sensible default.
type Config struct {
	// Name is the plugin name (Envoy's plugin name, property plugin_name).
	Name string
	// RootID selects the plugin's root context (property plugin_root_id).
	RootID string
	// VMID keys shared data and queues, as Envoy's vm_id does (property
	// plugin_vm_id).
	VMID string
	// VMConfig is read by the plugin in proxy_on_vm_start.
	VMConfig []byte
	// PluginConfig is read by the plugin in proxy_on_configure.
	PluginConfig []byte
	// Local is what Envoy knows without a request (its bootstrap node, the
	// listener, the upstream cluster), answered as the node, xds.node,
	// listener_* and cluster_* properties after what a stream's Envoy
	// sent; node and listener_* in every context, as Envoy answers them in
	// proxy_on_vm_start and proxy_on_configure. nil means none.
	Local *LocalInfo
	// Env is the WASI environment the plugin sees (Envoy's
	// vm_config.environment_variables). The host's own environment is
	// never exposed.
	Env map[string]string

	// Instances is the pool size; zero means DefaultInstances().
	Instances int
	// MemoryLimitPages caps each instance's memory in 64 KiB pages.
	MemoryLimitPages uint32
	// CallTimeout bounds every call into the plugin; a call that runs
	// longer poisons its instance. Zero means DefaultCallTimeout. A
	// negative value turns deadlines off for trusted plugins: the host then
	// compiles in no loop budget (loopcheck.go), which saves little (about
	// 10 % of a loop-heavy plugin's CPU; RATIONALE.md has the figures), and
	// a plugin that loops forever hangs its instance for good.
	CallTimeout time.Duration
	// ShedQueueDelay sheds load: a new stream is refused with
	// ErrOverloaded when every healthy instance is busy and streams have
	// lately waited longer than this for each. Streams already open are
	// served. Zero means DefaultShedQueueDelay; negative never sheds.
	ShedQueueDelay time.Duration
	// CompilationCacheDir, when set, keeps compiled code on disk so a
	// restart or a reload of the same .wasm skips compilation.
	CompilationCacheDir string

	// FailurePolicy and FailStatus decide what a stream gets when its
	// instance fails.
	FailurePolicy FailurePolicy
	FailStatus    uint32

	// Logger receives the plugin's logs and the host's own. Plugin log
	// levels map onto slog levels (see LogLevelToSlog).
	Logger *slog.Logger

	// Metrics receives the plugin's metrics. Share one registry across
	// reloads to keep values; nil means a fresh registry.
	Metrics *Metrics
	// Telemetry counts instance failures by cause, replacements and guest
	// time per callback (see Telemetry). Share one across reloads, as
	// Metrics, so that the counts never go back; nil means fresh counts.
	Telemetry *Telemetry
	// Upstreams maps the cluster names plugins call to addresses. nil
	// means none: every proxy_http_call gets BAD_ARGUMENT, as Envoy
	// answers for an unknown cluster.
	Upstreams *Upstreams

	// Shared holds shared data and queues. nil means the process-wide
	// store, keyed by VMID, as Envoy's is.
	Shared *SharedState

	// Now, when set, is the clock proxy_get_current_time_nanoseconds
	// reads; nil means the system clock. Tests freeze it.
	Now func() time.Time
	// PluginLog, when set, receives every plugin log line the Logger is
	// enabled for (proxy_log and the WASI stdout/stderr lines), after
	// truncation, in addition to the Logger. It is called during the
	// plugin's call, under the instance's lock: it must not call the
	// plugin.
	PluginLog func(level abi.LogLevel, msg string)
	// Trace, when set, is told of every host function the plugin calls
	// and every callback the host makes into it (see TraceCall). Tracing
	// slows every call; it is meant for tools that show a plugin's work.
	Trace func(TraceCall)

	// listeners, set only by this package's tests, traces host calls and
	// callbacks through wazero's function listeners.
	listeners experimental.FunctionListenerFactory
	// wazeroLoopChecks, set only by this package's tests, compiles
	// deadlines as wazero's exit at every loop header, the fallback for a
	// module instrumentLoops cannot rewrite.
	wazeroLoopChecks bool
}

// MinDefaultInstances is the fewest instances a pool gets by default: a
// fault fails the streams of its instance, about 1/N of those in flight, and
// an instance costs about 4 MiB idle (RATIONALE.md has the measurements).
const MinDefaultInstances = 4

// DefaultInstances is the pool size when Config.Instances is zero:
// GOMAXPROCS, and at least MinDefaultInstances.
func DefaultInstances() int { return max(runtime.GOMAXPROCS(0), MinDefaultInstances) }

func (c Config) withDefaults() Config {
	if c.Instances <= 0 {
		c.Instances = DefaultInstances()
	}
	if c.MemoryLimitPages == 0 {
		c.MemoryLimitPages = DefaultMemoryLimitPages
	}
	if c.CallTimeout == 0 {
		c.CallTimeout = DefaultCallTimeout
	}
	if c.ShedQueueDelay == 0 {
		c.ShedQueueDelay = DefaultShedQueueDelay
	}
	if c.FailStatus == 0 {
		c.FailStatus = DefaultFailStatus
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Metrics == nil {
		c.Metrics = NewMetrics()
	}
	if c.Telemetry == nil {
		c.Telemetry = NewTelemetry()
	}
	if c.Shared == nil {
		c.Shared = processShared
	}
	if c.Trace != nil && c.listeners == nil {
		c.listeners = traceFactory(c.Trace)
	}
	return c
}
