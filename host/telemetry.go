package host

import (
	"errors"
	"sync/atomic"
	"time"

	"github.com/tetratelabs/wazero/sys"

	"github.com/wasm-callout/wasm-callout/abi"
)

// What the host counts about hosting a plugin, for a metrics exporter: why
// instances failed, and how long the guest ran per callback. The counts
// live in a Telemetry that, like Metrics, a server shares across reloads
// (Config.Telemetry), so they never go backwards when a generation is
// replaced. Recording is a few atomic adds on paths that already read the
// clock; nothing here allocates or takes a lock.

// FailureCause says why a plugin instance failed.
type FailureCause uint8

// Failure causes, as Telemetry counts them.
const (
	// CauseTrap is a trap: unreachable, an out-of-bounds access, a stack
	// overflow, a Go plugin's panic, or any other failure not below.
	CauseTrap FailureCause = iota
	// CauseDeadline is a call stopped by Config.CallTimeout.
	CauseDeadline
	// CauseMemory is a trap with the instance's memory at its limit
	// (within MemoryLimitSlack): the plugin ran out of memory.
	CauseMemory
	// CauseExit is the module calling proc_exit.
	CauseExit
	// NumFailureCauses is the number of causes.
	NumFailureCauses
)

var causeNames = [NumFailureCauses]string{"trap", "deadline", "memory", "exit"}

// String returns "trap", "deadline", "memory" or "exit".
func (c FailureCause) String() string {
	if c < NumFailureCauses {
		return causeNames[c]
	}
	return "unknown"
}

// MemoryLimitSlack is how close to Config.MemoryLimitPages an instance's
// memory must be, when it traps, for the failure to count as CauseMemory:
// allocators grow memory in steps (Go's runtime by 4 MiB arenas), so a
// failed grow leaves the memory short of the limit by up to a step.
const MemoryLimitSlack = 4 << 20

// classifyFailure returns why an instance failed with err, given its
// memory size and limit in bytes.
func classifyFailure(err error, memBytes, limitBytes uint64) FailureCause {
	var exit *sys.ExitError
	switch {
	case errors.Is(err, ErrCallTimeout):
		return CauseDeadline
	case errors.As(err, &exit) && exit.ExitCode() != sys.ExitCodeContextCanceled && exit.ExitCode() != sys.ExitCodeDeadlineExceeded:
		if memBytes+MemoryLimitSlack >= limitBytes {
			// A Go runtime that cannot grow its heap exits with code 2.
			return CauseMemory
		}
		return CauseExit
	case memBytes+MemoryLimitSlack >= limitBytes:
		return CauseMemory
	}
	return CauseTrap
}

// callbackNames are the callbacks Telemetry times, by index; the last,
// "other", covers the exports the host does not know.
var callbackNames = []string{
	abi.OnContextCreate, abi.OnVMStart, abi.OnConfigure, abi.OnTick, abi.OnQueueReady,
	abi.OnDone, abi.OnLog, abi.OnDelete,
	abi.OnRequestHeaders, abi.OnRequestBody, abi.OnRequestTrailers,
	abi.OnResponseHeaders, abi.OnResponseBody, abi.OnResponseTrailers,
	abi.OnNewConnection, abi.OnDownstreamData, abi.OnUpstreamData,
	abi.OnDownstreamClose, abi.OnUpstreamClose,
	abi.OnHTTPCallResponse, abi.OnGRPCReceiveInitialMetadata, abi.OnGRPCReceive,
	abi.OnGRPCReceiveTrailingMetadata, abi.OnGRPCClose,
	abi.FuncInitialize, abi.FuncStart, abi.FuncMain, abi.FuncMainVoid, // entry points
	"other",
}

const numCallbacks = 29

// callbackIndex returns the index in callbackNames of the export named
// name (the legacy gRPC trailers name counts as the current one).
func callbackIndex(name string) uint8 {
	if name == abi.OnGRPCTrailingMetadataLegacy {
		name = abi.OnGRPCReceiveTrailingMetadata
	}
	for i, n := range callbackNames[:numCallbacks-1] {
		if n == name {
			return uint8(i)
		}
	}
	return numCallbacks - 1
}

// Telemetry counts, across every generation that shares it, why a
// plugin's instances failed, how many were replaced, and how long each
// callback ran in the guest. The zero value is not usable; use
// NewTelemetry. Safe for concurrent use.
type Telemetry struct {
	failures  [NumFailureCauses]atomic.Int64
	replaced  atomic.Int64
	callbacks [numCallbacks]Histogram
}

// NewTelemetry returns empty counts.
func NewTelemetry() *Telemetry { return &Telemetry{} }

// CallbackTime is how long one callback ran in the guest.
type CallbackTime struct {
	// Callback is the export's name, such as proxy_on_request_headers or
	// _initialize, or "other" for an export the host does not know.
	Callback string
	HistogramSnapshot
}

// TelemetrySnapshot is the state of a Telemetry.
type TelemetrySnapshot struct {
	// Failures counts failed instances by cause (index: FailureCause).
	Failures [NumFailureCauses]int64
	// Replaced counts instances started in place of failed ones.
	Replaced int64
	// Callbacks has the callbacks that ran at least once, in a fixed
	// order: wall time from entering the guest to its return, with the
	// host functions it called, measured on the host.
	Callbacks []CallbackTime
}

// Snapshot returns the counts.
func (t *Telemetry) Snapshot() TelemetrySnapshot {
	var s TelemetrySnapshot
	for i := range t.failures {
		s.Failures[i] = t.failures[i].Load()
	}
	s.Replaced = t.replaced.Load()
	for i := range t.callbacks {
		if h := t.callbacks[i].Snapshot(); h.Count > 0 {
			s.Callbacks = append(s.Callbacks, CallbackTime{Callback: callbackNames[i], HistogramSnapshot: h})
		}
	}
	return s
}

// Telemetry returns the counts the plugin records to (Config.Telemetry).
func (p *Plugin) Telemetry() *Telemetry { return p.cfg.Telemetry }

// LoadTimes are how long Load took for a plugin: compiling (or reading the
// compilation cache) and starting its instances.
type LoadTimes struct {
	Compile, Start time.Duration
}

// LoadTimes returns how long loading the plugin took.
func (p *Plugin) LoadTimes() LoadTimes { return p.loadTimes }

// InstanceState is one pool slot, as a metrics exporter sees it.
type InstanceState struct {
	// Slot is the instance's index in the pool, stable across
	// replacements.
	Slot int
	// Healthy is false while the slot is being replaced.
	Healthy bool
	// MemoryBytes is the size of the instance's linear memory after its
	// last call.
	MemoryBytes uint64
}

// Instances describes every slot of the pool. It never waits for a call.
func (p *Plugin) Instances() []InstanceState {
	out := make([]InstanceState, len(p.pool.slots))
	for i := range p.pool.slots {
		out[i].Slot = i
		if in := p.pool.slots[i].Load(); in != nil {
			out[i].Healthy = !in.dead.Load()
			out[i].MemoryBytes = in.memBytes.Load()
		}
	}
	return out
}
