// Command waf is a web application firewall plugin: Coraza
// (github.com/corazawaf/coraza/v3) with the OWASP Core Rule Set
// (github.com/corazawaf/coraza-coreruleset/v4) embedded, configured with
// coraza-proxy-wasm's JSON unchanged (see engine.Config):
//
//	{"directives_map": {"default": ["Include @demo-conf", "Include @crs-setup-demo-conf", "Include @owasp_crs/*.conf"]},
//	 "default_directives": "default"}
//
// Include names: @demo-conf (Coraza's recommended settings, blocking),
// @recommended-conf, @crs-setup-conf, @crs-setup-demo-conf (the CRS example
// setup with early blocking) and @owasp_crs/*.conf (the rules).
//
// It inspects request headers, request body, response headers and response
// body (bodies when the directive set turns body access on; the plugin then
// holds the message until its body is complete). An interruption answers
// the client with the rule's status (403 unless the rule says otherwise),
// logs the interrupting rule and the ids of every matched rule at warn,
// and counts the block in the counter
// waf_requests_blocked.rule_id=ID.phase=PHASE (Envoy/Istio tag style, with
// metric_labels appended as more tags). waf_requests_total counts the
// requests a directive set inspected. A configuration that does not parse,
// or a directive set Coraza refuses, fails the plugin start with the error.
//
// Build it with the tags listed in the file "tags" next to this one (make
// plugins reads it):
//
//	go run ./cmd/wasm-callout build -tags "$(cat plugins/waf/tags)" ./plugins/waf -o plugins/bin/waf.wasm
package main

import (
	"fmt"
	"sort"
	"strings"

	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm"
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/types"

	"github.com/wasm-callout/wasm-callout/plugins/waf/engine"
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
	wafs     *engine.WAFs
	labels   string // ".name=value" tags from metric_labels, sorted
	requests proxywasm.MetricCounter
	blocked  map[string]proxywasm.MetricCounter // by full metric name
}

// OnPluginStart implements types.PluginContext.
func (p *pluginContext) OnPluginStart(int) types.OnPluginStartStatus {
	data, err := proxywasm.GetPluginConfiguration()
	if err != nil && err != types.ErrorStatusNotFound {
		proxywasm.LogCriticalf("waf: reading plugin configuration: %v", err)
		return types.OnPluginStartStatusFailed
	}
	cfg, err := engine.ParseConfig(data)
	if err != nil {
		proxywasm.LogCriticalf("waf: %v", err)
		return types.OnPluginStartStatusFailed
	}
	wafs, err := engine.Build(cfg, engine.Options{})
	if err != nil {
		proxywasm.LogCriticalf("waf: %v", err)
		return types.OnPluginStartStatusFailed
	}
	p.wafs = wafs
	p.labels = tags(cfg.MetricLabels)
	p.requests = proxywasm.DefineCounterMetric("waf_requests_total" + p.labels)
	p.blocked = map[string]proxywasm.MetricCounter{}
	if len(wafs.Sets) == 0 {
		proxywasm.LogWarn("waf: no directive set applies (no default_directives, no per_authority_directives): every request passes")
	} else {
		proxywasm.LogInfof("waf: ready with directive set(s) %s", strings.Join(wafs.Sets, ", "))
	}
	return types.OnPluginStartStatusOK
}

// NewHttpContext implements types.PluginContext.
func (p *pluginContext) NewHttpContext(contextID uint32) types.HttpContext {
	return &httpContext{plugin: p, id: contextID}
}

// countBlock increments the blocked counter of a rule and phase.
func (p *pluginContext) countBlock(ruleID int, phase string) {
	name := fmt.Sprintf("waf_requests_blocked.rule_id=%d.phase=%s%s", ruleID, phase, p.labels)
	c, ok := p.blocked[name]
	if !ok {
		c = proxywasm.DefineCounterMetric(name)
		p.blocked[name] = c
	}
	c.Increment(1)
}

// tags renders metric labels as ".name=value" tags, sorted by name.
func tags(labels map[string]string) string {
	names := make([]string, 0, len(labels))
	for n := range labels {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, n := range names {
		fmt.Fprintf(&b, ".%s=%s", n, labels[n])
	}
	return b.String()
}
