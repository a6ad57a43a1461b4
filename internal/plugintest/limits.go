package plugintest

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/wasm-callout/wasm-callout/abi"
)

// Limits are a managed platform's constraints on plugins.
type Limits struct {
	// Name is how the limits are called on the command line ("gcp").
	Name string
	// RequestCPU bounds the time of all of one request's callbacks
	// together.
	RequestCPU time.Duration
	// MemoryBytes bounds the plugin's linear memory.
	MemoryBytes uint64
	// ModuleBytes bounds the module and its configuration together.
	ModuleBytes int
	// Forbidden maps host functions the platform does not offer to the
	// feature they belong to.
	Forbidden map[string]string
	// PausesIgnored is set when the platform ignores a callback's request
	// to pause the stream.
	PausesIgnored bool
}

// GCP is Google Cloud Service Extensions' plugin limits, as its "Quotas
// and limits" and "Plugin best practices" pages state them: 1 ms of
// execution for all the callbacks of one request, 16 MiB of memory, 2 MiB
// for the module and its configuration, no timers, custom metrics, shared
// data, shared queues or outbound calls, and callback pauses ignored.
var GCP = &Limits{
	Name:          "gcp",
	RequestCPU:    time.Millisecond,
	MemoryBytes:   16 << 20,
	ModuleBytes:   2 << 20,
	PausesIgnored: true,
	Forbidden: map[string]string{
		"proxy_set_tick_period_milliseconds": "timers",
		"proxy_define_metric":                "custom metrics",
		"proxy_increment_metric":             "custom metrics",
		"proxy_record_metric":                "custom metrics",
		"proxy_get_metric":                   "custom metrics",
		"proxy_get_shared_data":              "shared data",
		"proxy_set_shared_data":              "shared data",
		"proxy_register_shared_queue":        "shared queues",
		"proxy_resolve_shared_queue":         "shared queues",
		"proxy_enqueue_shared_queue":         "shared queues",
		"proxy_dequeue_shared_queue":         "shared queues",
		"proxy_http_call":                    "outbound calls",
		"proxy_grpc_call":                    "outbound calls",
		"proxy_grpc_stream":                  "outbound calls",
	},
}

// LimitsByName returns the named limits ("gcp").
func LimitsByName(name string) (*Limits, error) {
	if name == GCP.Name {
		return GCP, nil
	}
	return nil, fmt.Errorf("unknown limits %q (known: gcp)", name)
}

// MemoryPages is MemoryBytes in wasm pages, the host's memory limit.
func (l *Limits) MemoryPages() uint32 { return uint32(l.MemoryBytes / 65536) }

// Check names what in a test's phases would fail under l. The phases
// must have been recorded with tracing on.
func (l *Limits) Check(wasm, config []byte, phases []Record) []string {
	var out []string
	if n := len(wasm) + len(config); l.ModuleBytes > 0 && n > l.ModuleBytes {
		out = append(out, fmt.Sprintf("module and configuration are %d bytes, over the %d-byte limit", n, l.ModuleBytes))
	}
	used := map[string][]string{} // feature -> "fn in phase"
	var total time.Duration
	for _, r := range phases {
		if r.Phase != "plugin_init" {
			total += r.Took
		}
		seen := map[string]bool{}
		for _, c := range r.Calls {
			if f, ok := l.Forbidden[c.Name]; ok && !c.Callback && !seen[c.Name] {
				seen[c.Name] = true
				used[f] = append(used[f], c.Name+" in "+r.Phase)
			}
		}
		if r.Failure != nil && l.MemoryBytes > 0 && strings.Contains(strings.ToLower(r.Failure.Error()), "memory") {
			out = append(out, fmt.Sprintf("%s: the plugin failed under the %d MiB memory limit: %v", r.Phase, l.MemoryBytes>>20, r.Failure))
		}
		if l.PausesIgnored && r.Phase != "plugin_init" && r.Phase != "stream_init" && r.Phase != "stream_destroy" &&
			r.Action == abi.ActionPause && r.Local == nil && r.Failure == nil {
			out = append(out, fmt.Sprintf("%s: the plugin paused the stream; the platform ignores pauses and continues", r.Phase))
		}
	}
	features := make([]string, 0, len(used))
	for f := range used {
		features = append(features, f)
	}
	sort.Strings(features)
	for _, f := range features {
		out = append(out, fmt.Sprintf("uses %s, which the platform does not offer: %s", f, strings.Join(used[f], ", ")))
	}
	if l.RequestCPU > 0 && total > l.RequestCPU {
		out = append(out, fmt.Sprintf("the request's callbacks took %v together, over the %v limit (measured here; the platform's CPU differs)", total.Round(time.Microsecond), l.RequestCPU))
	}
	return out
}
