// Command queue-receiver is the receiving half of a shared-queue pair (the
// Go SDK's shared_queue example, in the TinyGo-era proxy-wasm-go-sdk
// v0.24.0 style): it registers a queue and keeps what arrives on it in
// shared data, where its HTTP contexts read it back. With queue-sender in
// the same server it shows that queues and shared data are keyed by vm_id
// across plugins, as in Envoy.
//
//   - Plugin configuration: "queue: NAME" (default "http_headers"); '#'
//     comments and blank lines ignored; any other line fails the start.
//   - OnPluginStart registers the queue NAME in the plugin's vm_id.
//   - OnQueueReady dequeues every item and, for each, increments the
//     shared-data key "queue_received" (decimal text) with CAS and stores
//     the item under "queue_last".
//   - OnHttpResponseHeaders adds x-queue-received (the count, "0" if none)
//     and x-queue-last (the last item, "-" if none) from shared data.
package main

import (
	"errors"
	"strconv"
	"strings"

	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm"
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/types"
)

const (
	countKey = "queue_received"
	lastKey  = "queue_last"
)

func main() {
	proxywasm.SetVMContext(&vmContext{})
}

type vmContext struct {
	types.DefaultVMContext
}

// NewPluginContext implements types.VMContext.
func (*vmContext) NewPluginContext(uint32) types.PluginContext { return &pluginContext{} }

type pluginContext struct {
	types.DefaultPluginContext
}

// OnPluginStart implements types.PluginContext.
func (p *pluginContext) OnPluginStart(int) types.OnPluginStartStatus {
	config, err := proxywasm.GetPluginConfiguration()
	if err != nil && err != types.ErrorStatusNotFound {
		proxywasm.LogErrorf("queue-receiver: reading plugin configuration: %v", err)
		return types.OnPluginStartStatusFailed
	}
	queue, err := queueName(string(config))
	if err != nil {
		proxywasm.LogErrorf("queue-receiver: %v", err)
		return types.OnPluginStartStatusFailed
	}
	id, err := proxywasm.RegisterSharedQueue(queue)
	if err != nil {
		proxywasm.LogErrorf("queue-receiver: registering queue %s: %v", queue, err)
		return types.OnPluginStartStatusFailed
	}
	proxywasm.LogInfof("queue-receiver: queue %s registered (id %d)", queue, id)
	return types.OnPluginStartStatusOK
}

// queueName reads the configuration (see the package comment).
func queueName(config string) (string, error) {
	name := "http_headers"
	for _, line := range strings.Split(config, "\n") {
		line = strings.Trim(line, " \t\r")
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, _ := strings.Cut(line, ":")
		if strings.TrimSpace(k) != "queue" || strings.TrimSpace(v) == "" {
			return "", errors.New("configuration line " + strconv.Quote(line) + ": want queue: NAME")
		}
		name = strings.TrimSpace(v)
	}
	return name, nil
}

// OnQueueReady implements types.PluginContext.
func (p *pluginContext) OnQueueReady(queueID uint32) {
	for {
		item, err := proxywasm.DequeueSharedQueue(queueID)
		if err == types.ErrorStatusEmpty {
			return
		}
		if err != nil {
			proxywasm.LogWarnf("queue-receiver: dequeue: %v", err)
			return
		}
		count(item)
	}
}

// count adds one to the received count, retrying on CAS mismatch, and
// keeps item as the last one.
func count(item []byte) {
	for try := 0; try < 10; try++ {
		v, cas, err := proxywasm.GetSharedData(countKey)
		n := 0
		if err == nil {
			n, _ = strconv.Atoi(string(v))
		} else if err != types.ErrorStatusNotFound {
			proxywasm.LogWarnf("queue-receiver: reading %s: %v", countKey, err)
			return
		}
		err = proxywasm.SetSharedData(countKey, []byte(strconv.Itoa(n+1)), cas)
		if err == types.ErrorStatusCasMismatch {
			continue
		}
		if err != nil {
			proxywasm.LogWarnf("queue-receiver: storing %s: %v", countKey, err)
			return
		}
		if err := proxywasm.SetSharedData(lastKey, item, 0); err != nil {
			proxywasm.LogWarnf("queue-receiver: storing %s: %v", lastKey, err)
		}
		return
	}
}

// NewHttpContext implements types.PluginContext.
func (p *pluginContext) NewHttpContext(uint32) types.HttpContext { return &httpContext{} }

type httpContext struct {
	types.DefaultHttpContext
}

// OnHttpResponseHeaders implements types.HttpContext.
func (h *httpContext) OnHttpResponseHeaders(int, bool) types.Action {
	received, last := "0", "-"
	if v, _, err := proxywasm.GetSharedData(countKey); err == nil {
		received = string(v)
	}
	if v, _, err := proxywasm.GetSharedData(lastKey); err == nil {
		last = string(v)
	}
	for _, kv := range [][2]string{{"x-queue-received", received}, {"x-queue-last", last}} {
		if err := proxywasm.AddHttpResponseHeader(kv[0], kv[1]); err != nil {
			proxywasm.LogWarnf("queue-receiver: adding %s: %v", kv[0], err)
		}
	}
	return types.ActionContinue
}
