// Command basic is a minimal proxy-wasm plugin (TinyGo-era
// proxy-wasm-go-sdk v0.24.0): it adds configured headers to every response.
//
// Its behaviour is also implemented natively as a benchmark baseline, so it is
// specified exactly here:
//
//   - Plugin configuration: lines of "name: value". Each line is split at its
//     first ':'; name and value are trimmed of spaces and tabs (a trailing
//     '\r' is dropped too). Blank lines and lines whose first non-space
//     character is '#' are ignored. A line without ':' or with an empty name
//     is invalid: OnPluginStart logs an error naming the line and returns
//     false. If no header line remains (empty configuration, or only blanks
//     and comments), the single default header "x-wasm-callout: basic" is used.
//   - OnPluginStart logs at Info "basic: adding N response header(s)" and
//     defines the counter metric "basic_requests_total".
//   - OnHttpRequestHeaders increments basic_requests_total by 1, logs at Debug
//     "basic: request METHOD PATH" (from :method and :path) and continues.
//   - OnHttpResponseHeaders adds every configured header, in order, with
//     AddHttpResponseHeader (so existing values are kept), and continues.
package main

import (
	"fmt"
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
func (*vmContext) NewPluginContext(contextID uint32) types.PluginContext {
	return &pluginContext{}
}

type pluginContext struct {
	types.DefaultPluginContext
	headers  [][2]string
	requests proxywasm.MetricCounter
}

// defaultHeader is used when the configuration names no header.
var defaultHeader = [2]string{"x-wasm-callout", "basic"}

// OnPluginStart implements types.PluginContext.
func (p *pluginContext) OnPluginStart(int) types.OnPluginStartStatus {
	config, err := proxywasm.GetPluginConfiguration()
	if err != nil && err != types.ErrorStatusNotFound {
		proxywasm.LogErrorf("basic: reading plugin configuration: %v", err)
		return types.OnPluginStartStatusFailed
	}
	headers, err := parseConfig(string(config))
	if err != nil {
		proxywasm.LogErrorf("basic: %v", err)
		return types.OnPluginStartStatusFailed
	}
	if len(headers) == 0 {
		headers = [][2]string{defaultHeader}
	}
	p.headers = headers
	p.requests = proxywasm.DefineCounterMetric("basic_requests_total")
	proxywasm.LogInfof("basic: adding %d response header(s)", len(headers))
	return types.OnPluginStartStatusOK
}

// parseConfig parses "name: value" lines (see the package comment).
func parseConfig(config string) ([][2]string, error) {
	var headers [][2]string
	for i, line := range strings.Split(config, "\n") {
		line = strings.Trim(line, " \t\r")
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, value, ok := strings.Cut(line, ":")
		name = strings.Trim(name, " \t")
		if !ok || name == "" {
			return nil, fmt.Errorf("invalid configuration line %d %q: want \"name: value\"", i+1, line)
		}
		headers = append(headers, [2]string{name, strings.Trim(value, " \t")})
	}
	return headers, nil
}

// NewHttpContext implements types.PluginContext.
func (p *pluginContext) NewHttpContext(contextID uint32) types.HttpContext {
	return &httpContext{plugin: p}
}

type httpContext struct {
	types.DefaultHttpContext
	plugin *pluginContext
}

// OnHttpRequestHeaders implements types.HttpContext.
func (h *httpContext) OnHttpRequestHeaders(int, bool) types.Action {
	h.plugin.requests.Increment(1)
	method, _ := proxywasm.GetHttpRequestHeader(":method")
	path, _ := proxywasm.GetHttpRequestHeader(":path")
	proxywasm.LogDebugf("basic: request %s %s", method, path)
	return types.ActionContinue
}

// OnHttpResponseHeaders implements types.HttpContext.
func (h *httpContext) OnHttpResponseHeaders(int, bool) types.Action {
	for _, kv := range h.plugin.headers {
		if err := proxywasm.AddHttpResponseHeader(kv[0], kv[1]); err != nil {
			proxywasm.LogWarnf("basic: adding response header %s: %v", kv[0], err)
		}
	}
	return types.ActionContinue
}
