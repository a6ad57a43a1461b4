// Command tick-call issues outbound calls from the root context
// (TinyGo-era proxy-wasm-go-sdk v0.24.0), the pattern of the SDK's
// dispatch_call_on_tick example, and consumes a shared queue whose items
// each trigger a call.
//
//   - Plugin configuration: lines of "name: value": cluster (required) is
//     the upstream to call; tick_ms (default 0, no ticks) makes every tick
//     call GET /tick on it.
//   - OnPluginStart registers the shared queue "calls".
//   - OnHttpRequestHeaders enqueues the request's :path into "calls" and
//     continues.
//   - OnQueueReady dequeues every item and calls GET ITEM on the cluster.
//   - Every call's answer adds 1 to counter tick_call_responses_total (or
//     tick_call_failures_total when the call failed); every dispatch error
//     adds 1 to tick_call_dispatch_errors_total.
package main

import (
	"strconv"
	"strings"

	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm"
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/types"
)

func main() {
	proxywasm.SetVMContext(&vmContext{})
}

type vmContext struct {
	types.DefaultVMContext
}

// NewPluginContext implements types.VMContext.
func (*vmContext) NewPluginContext(uint32) types.PluginContext {
	return &pluginContext{}
}

type pluginContext struct {
	types.DefaultPluginContext
	cluster                             string
	queue                               uint32
	responses, failures, dispatchErrors proxywasm.MetricCounter
}

// OnPluginStart implements types.PluginContext.
func (p *pluginContext) OnPluginStart(int) types.OnPluginStartStatus {
	data, _ := proxywasm.GetPluginConfiguration()
	var tick uint64
	for _, line := range strings.Split(string(data), "\n") {
		name, value, _ := strings.Cut(line, ":")
		switch strings.TrimSpace(name) {
		case "cluster":
			p.cluster = strings.TrimSpace(value)
		case "tick_ms":
			tick, _ = strconv.ParseUint(strings.TrimSpace(value), 10, 32)
		}
	}
	if p.cluster == "" {
		proxywasm.LogError("tick-call: configuration needs cluster: NAME")
		return types.OnPluginStartStatusFailed
	}
	p.responses = proxywasm.DefineCounterMetric("tick_call_responses_total")
	p.failures = proxywasm.DefineCounterMetric("tick_call_failures_total")
	p.dispatchErrors = proxywasm.DefineCounterMetric("tick_call_dispatch_errors_total")
	q, err := proxywasm.RegisterSharedQueue("calls")
	if err != nil {
		proxywasm.LogErrorf("tick-call: registering the queue: %v", err)
		return types.OnPluginStartStatusFailed
	}
	p.queue = q
	if tick > 0 {
		proxywasm.SetTickPeriodMilliSeconds(uint32(tick))
	}
	return types.OnPluginStartStatusOK
}

// OnTick implements types.PluginContext.
func (p *pluginContext) OnTick() { p.call("/tick") }

// OnQueueReady implements types.PluginContext.
func (p *pluginContext) OnQueueReady(queueID uint32) {
	for {
		item, err := proxywasm.DequeueSharedQueue(queueID)
		if err != nil || item == nil {
			return
		}
		p.call(string(item))
	}
}

func (p *pluginContext) call(path string) {
	headers := [][2]string{{":method", "GET"}, {":path", path}, {":authority", p.cluster}}
	_, err := proxywasm.DispatchHttpCall(p.cluster, headers, nil, nil, 5000, func(numHeaders, _, _ int) {
		if numHeaders == 0 {
			p.failures.Increment(1)
			return
		}
		p.responses.Increment(1)
	})
	if err != nil {
		p.dispatchErrors.Increment(1)
	}
}

// NewHttpContext implements types.PluginContext.
func (p *pluginContext) NewHttpContext(uint32) types.HttpContext {
	return &httpContext{queue: p.queue}
}

type httpContext struct {
	types.DefaultHttpContext
	queue uint32
}

// OnHttpRequestHeaders implements types.HttpContext.
func (h *httpContext) OnHttpRequestHeaders(int, bool) types.Action {
	path, _ := proxywasm.GetHttpRequestHeader(":path")
	if err := proxywasm.EnqueueSharedQueue(h.queue, []byte(path)); err != nil {
		proxywasm.LogErrorf("tick-call: enqueue: %v", err)
	}
	return types.ActionContinue
}
