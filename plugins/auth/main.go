// Command auth is an external-authorization filter (TinyGo-era
// proxy-wasm-go-sdk v0.24.0): it asks an HTTP upstream whether the
// request's bearer token is allowed, pausing the request while the call is
// out, the pattern of the SDK's http_auth_random example.
//
//   - Plugin configuration: lines of "name: value":
//     cluster (required) is the upstream to call (wasm-callout --upstream);
//     path (default "/check") is the path called; timeout_ms (default
//     1000) bounds the call; on_error ("deny", the default, or "allow")
//     decides what a failed call (connect error, timeout) does.
//   - OnHttpRequestHeaders: without an authorization header the request
//     gets a local 401. Otherwise it calls GET path on the cluster with
//     the same authorization header and pauses.
//   - When the answer comes: 200 resumes the request and adds the
//     upstream's x-auth-user response header to the request as
//     x-auth-user; any other status gets a local 403; a failed call gets a
//     local 503 (on_error: deny) or resumes untouched (on_error: allow).
//   - Counters auth_allowed_total, auth_denied_total, auth_errors_total.
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

type config struct {
	cluster, path string
	timeoutMS     uint32
	allowOnError  bool
}

type pluginContext struct {
	types.DefaultPluginContext
	cfg                      config
	allowed, denied, errored proxywasm.MetricCounter
}

// OnPluginStart implements types.PluginContext.
func (p *pluginContext) OnPluginStart(int) types.OnPluginStartStatus {
	data, err := proxywasm.GetPluginConfiguration()
	if err != nil && err != types.ErrorStatusNotFound {
		proxywasm.LogErrorf("auth: reading plugin configuration: %v", err)
		return types.OnPluginStartStatusFailed
	}
	cfg, problem := parseConfig(string(data))
	if problem != "" {
		proxywasm.LogErrorf("auth: %s", problem)
		return types.OnPluginStartStatusFailed
	}
	p.cfg = cfg
	p.allowed = proxywasm.DefineCounterMetric("auth_allowed_total")
	p.denied = proxywasm.DefineCounterMetric("auth_denied_total")
	p.errored = proxywasm.DefineCounterMetric("auth_errors_total")
	proxywasm.LogInfof("auth: checking tokens with %s%s", cfg.cluster, cfg.path)
	return types.OnPluginStartStatusOK
}

// parseConfig reads the configuration; the error is empty on success.
func parseConfig(s string) (config, string) {
	cfg := config{path: "/check", timeoutMS: 1000}
	for _, line := range strings.Split(s, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, value, ok := strings.Cut(line, ":")
		if !ok {
			return cfg, "configuration line " + strconv.Quote(line) + " is not name: value"
		}
		value = strings.TrimSpace(value)
		switch strings.TrimSpace(name) {
		case "cluster":
			cfg.cluster = value
		case "path":
			cfg.path = value
		case "timeout_ms":
			n, err := strconv.ParseUint(value, 10, 32)
			if err != nil {
				return cfg, "timeout_ms " + strconv.Quote(value) + " is not a number"
			}
			cfg.timeoutMS = uint32(n)
		case "on_error":
			if value != "deny" && value != "allow" {
				return cfg, "on_error must be deny or allow"
			}
			cfg.allowOnError = value == "allow"
		default:
			return cfg, "unknown configuration " + strconv.Quote(name)
		}
	}
	if cfg.cluster == "" {
		return cfg, "configuration needs cluster: NAME"
	}
	return cfg, ""
}

// NewHttpContext implements types.PluginContext.
func (p *pluginContext) NewHttpContext(uint32) types.HttpContext {
	return &httpContext{plugin: p}
}

type httpContext struct {
	types.DefaultHttpContext
	plugin *pluginContext
}

// OnHttpRequestHeaders implements types.HttpContext.
func (h *httpContext) OnHttpRequestHeaders(int, bool) types.Action {
	token, err := proxywasm.GetHttpRequestHeader("authorization")
	if err != nil || token == "" {
		h.plugin.denied.Increment(1)
		h.reply(401, "missing credentials\n")
		return types.ActionPause
	}
	cfg := h.plugin.cfg
	headers := [][2]string{
		{":method", "GET"}, {":path", cfg.path}, {":authority", cfg.cluster}, {"authorization", token},
	}
	if _, err := proxywasm.DispatchHttpCall(cfg.cluster, headers, nil, nil, cfg.timeoutMS, h.onCheck); err != nil {
		proxywasm.LogErrorf("auth: calling %s: %v", cfg.cluster, err)
		return h.failed()
	}
	return types.ActionPause
}

// onCheck handles the upstream's answer.
func (h *httpContext) onCheck(numHeaders, _, _ int) {
	if numHeaders == 0 {
		proxywasm.LogWarnf("auth: the check call to %s failed", h.plugin.cfg.cluster)
		if h.failed() == types.ActionContinue {
			proxywasm.ResumeHttpRequest()
		}
		return
	}
	headers, _ := proxywasm.GetHttpCallResponseHeaders()
	var status, user string
	for _, kv := range headers {
		switch kv[0] {
		case ":status":
			status = kv[1]
		case "x-auth-user":
			user = kv[1]
		}
	}
	if status != "200" {
		h.plugin.denied.Increment(1)
		h.reply(403, "forbidden\n")
		return
	}
	if user != "" {
		proxywasm.ReplaceHttpRequestHeader("x-auth-user", user)
	}
	h.plugin.allowed.Increment(1)
	proxywasm.ResumeHttpRequest()
}

// failed applies on_error to a call that could not be made or did not
// answer, and returns what the request-headers callback should return.
func (h *httpContext) failed() types.Action {
	h.plugin.errored.Increment(1)
	if h.plugin.cfg.allowOnError {
		return types.ActionContinue
	}
	h.reply(503, "authorization unavailable\n")
	return types.ActionPause
}

func (h *httpContext) reply(status uint32, body string) {
	if err := proxywasm.SendHttpResponse(status, [][2]string{{"content-type", "text/plain"}}, []byte(body), -1); err != nil {
		proxywasm.LogErrorf("auth: local reply: %v", err)
	}
}
