// Command queue-sender is the sending half of a shared-queue pair (see
// queue-receiver): every request's :path goes onto a queue that another
// plugin registered, found by that plugin's vm_id, as the Go SDK's
// shared_queue example does.
//
//   - Plugin configuration: "vm_id: ID" (the receiver's vm_id; default
//     empty, which means this plugin's own) and "queue: NAME" (default
//     "http_headers"), one per line; '#' comments and blank lines ignored;
//     any other line fails the start.
//   - OnHttpRequestHeaders resolves the queue (proxy_resolve_shared_queue)
//     and enqueues the request's :path; the response header x-queue-sent
//     says "ok", or "not-found" when no plugin registered the queue, or
//     "error" (logged at warn). The request always continues.
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
	return &pluginContext{queue: "http_headers"}
}

type pluginContext struct {
	types.DefaultPluginContext
	vmID, queue string
}

// OnPluginStart implements types.PluginContext.
func (p *pluginContext) OnPluginStart(int) types.OnPluginStartStatus {
	config, err := proxywasm.GetPluginConfiguration()
	if err != nil && err != types.ErrorStatusNotFound {
		proxywasm.LogErrorf("queue-sender: reading plugin configuration: %v", err)
		return types.OnPluginStartStatusFailed
	}
	for _, line := range strings.Split(string(config), "\n") {
		line = strings.Trim(line, " \t\r")
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, _ := strings.Cut(line, ":")
		switch k, v = strings.TrimSpace(k), strings.TrimSpace(v); k {
		case "vm_id":
			p.vmID = v
		case "queue":
			p.queue = v
		default:
			proxywasm.LogErrorf("queue-sender: configuration line %s: want vm_id: ID or queue: NAME", strconv.Quote(line))
			return types.OnPluginStartStatusFailed
		}
	}
	return types.OnPluginStartStatusOK
}

// NewHttpContext implements types.PluginContext.
func (p *pluginContext) NewHttpContext(uint32) types.HttpContext { return &httpContext{plugin: p} }

type httpContext struct {
	types.DefaultHttpContext
	plugin *pluginContext
	sent   string
}

// OnHttpRequestHeaders implements types.HttpContext.
func (h *httpContext) OnHttpRequestHeaders(int, bool) types.Action {
	path, err := proxywasm.GetHttpRequestHeader(":path")
	if err != nil {
		path = "-"
	}
	h.sent = "ok"
	id, err := proxywasm.ResolveSharedQueue(h.plugin.vmID, h.plugin.queue)
	if err == nil {
		err = proxywasm.EnqueueSharedQueue(id, []byte(path))
	}
	switch {
	case err == types.ErrorStatusNotFound:
		h.sent = "not-found"
	case err != nil:
		h.sent = "error"
		proxywasm.LogWarnf("queue-sender: queue %s of vm_id %q: %v", h.plugin.queue, h.plugin.vmID, err)
	}
	return types.ActionContinue
}

// OnHttpResponseHeaders implements types.HttpContext.
func (h *httpContext) OnHttpResponseHeaders(int, bool) types.Action {
	if err := proxywasm.AddHttpResponseHeader("x-queue-sent", h.sent); err != nil {
		proxywasm.LogWarnf("queue-sender: adding x-queue-sent: %v", err)
	}
	return types.ActionContinue
}
