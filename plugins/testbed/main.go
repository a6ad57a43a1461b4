// Command testbed is a multi-purpose proxy-wasm plugin (TinyGo-era
// proxy-wasm-go-sdk v0.24.0) for the host and server tests: one build covers
// many cases, selected per request.
//
// # Selecting behaviour
//
// The request header "x-testbed" holds a comma-separated list of actions
// (spaces around names are ignored, names are case-insensitive). Without the
// header the plugin only counts the request and continues. An unknown action
// is answered with a local reply 400, header "x-testbed-error: unknown
// action", body "testbed: unknown action NAME\n".
//
// In OnHttpRequestHeaders the actions run in the order of this table, whatever
// their order in the header; the first one that stops the stream (local-reply,
// close, continue-inline, http-call, pause-headers) ends the list.
//
//	action            phase            what it does
//	----------------  ---------------  ------------------------------------------------
//	log-levels        request headers  logs "testbed: log LEVEL" at trace, debug, info,
//	                                   warn, error and critical (in that order)
//	metrics           request headers  counter testbed_counter_total += 1, gauge
//	                                   testbed_gauge += 1, histogram testbed_histogram
//	                                   records 42; response headers x-metric-counter
//	                                   and x-metric-gauge carry the values read back
//	trap              request headers  panics ("testbed: trap requested")
//	loop              request headers  loops forever
//	oom               request headers  allocates 1 MiB blocks without bound
//	echo-headers      both             every request header NAME: VALUE is added to the
//	                                   response as x-echo-NAME: VALUE (pseudo-headers
//	                                   lose their ':', e.g. x-echo-path, x-echo-method)
//	props             both             reads the properties below in request headers and
//	                                   adds one response header each, x-prop-NAME where
//	                                   NAME is the path with '.' and '_' turned into '-'
//	                                   (x-prop-request-path, x-prop-request-method,
//	                                   x-prop-source-address, x-prop-plugin-name,
//	                                   x-prop-plugin-root-id, x-prop-plugin-vm-id,
//	                                   x-prop-xds-cluster-name, x-prop-cluster-name); the
//	                                   value is the raw property bytes, "NOT_FOUND" if the
//	                                   host says so, "ERROR: ..." on other errors
//	shared-data       both             increments the shared-data key "testbed_counter"
//	                                   (decimal text, missing = 0) with CAS, retrying up
//	                                   to 10 times on CAS mismatch; response header
//	                                   x-shared-counter: the value it stored
//	queue             request headers  enqueues :path into the shared queue "testbed",
//	                                   which the root context registered; the root's
//	                                   OnQueueReady dequeues until empty, logs
//	                                   "testbed: dequeued PATH" at info and adds 1 per
//	                                   item to counter testbed_queue_items_total
//	set-req           request headers  for each "name=value" in header x-set (';'
//	                                   separated): ReplaceHttpRequestHeader
//	add-req           request headers  same with header x-add: AddHttpRequestHeader
//	del-req           request headers  for each name in header x-del (';' separated):
//	                                   RemoveHttpRequestHeader
//	set-resp          response headers same as set-req with header x-set-resp (read from
//	                                   the request), applied to the response headers
//	add-resp          response headers same as add-req with x-add-resp
//	del-resp          response headers same as del-req with x-del-resp
//	buffer-body       request body     removes request content-length; Pause until
//	                                   end_of_stream, then replaces the whole body with
//	                                   its ASCII upper-case version
//	prepend-body      request body     removes request content-length;
//	                                   PrependHttpRequestBody("prepended+") on the first
//	                                   body callback (after buffer-body's replacement)
//	append-body       request body     removes request content-length;
//	                                   AppendHttpRequestBody("+appended") on the
//	                                   end_of_stream callback (after the replacement)
//	replace-resp-body response         removes response content-length; Pause on the
//	                                   response body until end_of_stream, then
//	                                   replaces it with "replaced by testbed\n"
//	trailers          trailers         request trailers: counts them and sets trailer
//	                                   x-testbed-trailer: req; response trailers: sets
//	                                   x-testbed-trailer: resp and adds
//	                                   x-testbed-req-trailers: COUNT
//	local-reply       request headers  SendHttpResponse(403, header x-testbed-reply:
//	                                   local, body "denied by testbed\n", gRPC status
//	                                   -1) and Pause. (SDK v0.24.0 cannot set the
//	                                   details string: it always sends it empty.)
//	local-reply-resp  response headers same with x-testbed-reply: local-resp and body
//	                                   "denied by testbed in response\n"
//	close             request headers  CloseDownstream() (proxy_close_stream with stream
//	                                   type 2, Downstream: the SDK has no HTTP close),
//	                                   logs a returned error at warn, and Pause
//	continue-inline   request headers  ResumeHttpRequest() from inside the callback
//	                                   (proxy_continue_stream(HttpRequest)), then Pause
//	http-call         request headers  DispatchHttpCall to cluster x-http-call-cluster
//	                                   (default "testbed_upstream"): GET, :path from
//	                                   x-http-call-path (default "/"), :authority =
//	                                   cluster, timeout x-http-call-timeout ms
//	                                   (default 5000); Pause. The callback
//	                                   resumes the request; the response gets
//	                                   x-http-call-status (":status" of the call, or
//	                                   "failed" if it had no headers) and
//	                                   x-http-call-body-len. A dispatch error sets
//	                                   x-http-call-status: dispatch-error and continues.
//	pause-headers     request headers  Pause; the next OnTick (see tick_ms) sets request
//	                                   header x-testbed-resumed: tick via
//	                                   SetEffectiveContext and resumes the request
//
// # Configuration
//
// VM configuration: "fail" (alone, spaces ignored) makes OnVMStart return false.
//
// Plugin configuration: lines of "name: value" ('#' comments and blank lines
// ignored):
//
//	tick_ms: N         OnPluginStart sets the tick period to N ms (default 0: no
//	                   ticks, so pause-headers never resumes)
//	fail_start: true   OnPluginStart returns false
//	action_header: H   read the actions from request header H instead of
//	                   x-testbed (several testbeds in one filter chain)
//	tag: NAME          mark the order of a filter chain: OnHttpRequestHeaders
//	                   adds the response header x-saw-NAME with the request's
//	                   x-chain as it found it ("-" if absent), then sets
//	                   x-chain to that value + "," + NAME (or NAME);
//	                   OnHttpResponseHeaders does the same with the response
//	                   header x-chain-resp (and x-saw-resp-NAME), before the
//	                   actions. Runs before, and whatever, the actions.
//
// An unknown name or a bad value makes OnPluginStart log an error and return
// false. OnPluginStart logs "testbed: started (tick_ms=N)" at info.
//
// # Always
//
// Every request adds 1 to counter testbed_requests_total; every tick adds 1 to
// counter testbed_ticks_total; OnHttpStreamDone logs "testbed: stream ID
// done" at debug.
package main

import (
	"errors"
	"strconv"
	"strings"

	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm"
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/types"
)

const (
	actionHeader = "x-testbed"
	queueName    = "testbed"
	sharedKey    = "testbed_counter"
)

// knownActions are the action names of the table above.
var knownActions = map[string]bool{
	"log-levels": true, "metrics": true, "trap": true, "loop": true, "oom": true,
	"echo-headers": true, "props": true, "shared-data": true, "queue": true,
	"set-req": true, "add-req": true, "del-req": true,
	"set-resp": true, "add-resp": true, "del-resp": true,
	"buffer-body": true, "prepend-body": true, "append-body": true,
	"replace-resp-body": true, "trailers": true,
	"local-reply": true, "local-reply-resp": true,
	"close": true, "continue-inline": true, "http-call": true, "pause-headers": true,
}

// properties read by the props action.
var properties = []string{
	"request.path", "request.method", "source.address",
	"plugin_name", "plugin_root_id", "plugin_vm_id",
	"xds.cluster_name", "cluster_name",
}

func main() {
	proxywasm.SetVMContext(&vmContext{})
}

type vmContext struct {
	types.DefaultVMContext
}

// OnVMStart implements types.VMContext.
func (*vmContext) OnVMStart(int) types.OnVMStartStatus {
	config, err := proxywasm.GetVMConfiguration()
	if err != nil && err != types.ErrorStatusNotFound {
		proxywasm.LogErrorf("testbed: reading VM configuration: %v", err)
		return types.OnVMStartStatusFailed
	}
	if strings.TrimSpace(string(config)) == "fail" {
		proxywasm.LogError("testbed: VM configuration says fail")
		return types.OnVMStartStatusFailed
	}
	return types.OnVMStartStatusOK
}

// NewPluginContext implements types.VMContext.
func (*vmContext) NewPluginContext(contextID uint32) types.PluginContext {
	return &pluginContext{id: contextID}
}

type pluginContext struct {
	types.DefaultPluginContext
	id      uint32
	queueID uint32
	// paused are the HTTP contexts pause-headers stopped, resumed on tick.
	paused []uint32
	// actionHeader and tag are from the configuration.
	actionHeader, tag string

	requests, ticks, queueItems, counter proxywasm.MetricCounter
	gauge                                proxywasm.MetricGauge
	histogram                            proxywasm.MetricHistogram
}

// OnPluginStart implements types.PluginContext.
func (p *pluginContext) OnPluginStart(int) types.OnPluginStartStatus {
	config, err := proxywasm.GetPluginConfiguration()
	if err != nil && err != types.ErrorStatusNotFound {
		proxywasm.LogErrorf("testbed: reading plugin configuration: %v", err)
		return types.OnPluginStartStatusFailed
	}
	var tickMS uint64
	p.actionHeader = actionHeader
	for i, line := range strings.Split(string(config), "\n") {
		line = strings.Trim(line, " \t\r")
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, value, _ := strings.Cut(line, ":")
		name, value = strings.TrimSpace(name), strings.TrimSpace(value)
		switch name {
		case "tick_ms":
			tickMS, err = strconv.ParseUint(value, 10, 32)
		case "action_header":
			p.actionHeader = strings.ToLower(value)
		case "tag":
			p.tag = value
		case "fail_start":
			var fail bool
			if fail, err = strconv.ParseBool(value); err == nil && fail {
				proxywasm.LogError("testbed: configuration says fail_start")
				return types.OnPluginStartStatusFailed
			}
		default:
			err = errors.New("unknown setting")
		}
		if err != nil {
			proxywasm.LogErrorf("testbed: configuration line %d %q: %v", i+1, line, err)
			return types.OnPluginStartStatusFailed
		}
	}

	if p.queueID, err = proxywasm.RegisterSharedQueue(queueName); err != nil {
		proxywasm.LogErrorf("testbed: registering shared queue %s: %v", queueName, err)
		return types.OnPluginStartStatusFailed
	}
	p.requests = proxywasm.DefineCounterMetric("testbed_requests_total")
	p.ticks = proxywasm.DefineCounterMetric("testbed_ticks_total")
	p.queueItems = proxywasm.DefineCounterMetric("testbed_queue_items_total")
	p.counter = proxywasm.DefineCounterMetric("testbed_counter_total")
	p.gauge = proxywasm.DefineGaugeMetric("testbed_gauge")
	p.histogram = proxywasm.DefineHistogramMetric("testbed_histogram")
	if tickMS > 0 {
		if err := proxywasm.SetTickPeriodMilliSeconds(uint32(tickMS)); err != nil {
			proxywasm.LogErrorf("testbed: setting tick period: %v", err)
			return types.OnPluginStartStatusFailed
		}
	}
	proxywasm.LogInfof("testbed: started (tick_ms=%d)", tickMS)
	return types.OnPluginStartStatusOK
}

// OnTick implements types.PluginContext: it resumes the paused requests.
func (p *pluginContext) OnTick() {
	p.ticks.Increment(1)
	paused := p.paused
	p.paused = nil
	for _, id := range paused {
		if err := proxywasm.SetEffectiveContext(id); err != nil {
			proxywasm.LogWarnf("testbed: tick: context %d: %v", id, err)
			continue
		}
		if err := proxywasm.ReplaceHttpRequestHeader("x-testbed-resumed", "tick"); err != nil {
			proxywasm.LogWarnf("testbed: tick: context %d: setting x-testbed-resumed: %v", id, err)
		}
		if err := proxywasm.ResumeHttpRequest(); err != nil {
			proxywasm.LogWarnf("testbed: tick: resuming context %d: %v", id, err)
		}
	}
}

// OnQueueReady implements types.PluginContext.
func (p *pluginContext) OnQueueReady(queueID uint32) {
	for {
		data, err := proxywasm.DequeueSharedQueue(queueID)
		if err == types.ErrorStatusEmpty {
			return
		}
		if err != nil {
			proxywasm.LogWarnf("testbed: dequeue from queue %d: %v", queueID, err)
			return
		}
		p.queueItems.Increment(1)
		proxywasm.LogInfof("testbed: dequeued %s", string(data))
	}
}

// NewHttpContext implements types.PluginContext.
func (p *pluginContext) NewHttpContext(contextID uint32) types.HttpContext {
	return &httpContext{id: contextID, plugin: p}
}

type httpContext struct {
	types.DefaultHttpContext
	id      uint32
	plugin  *pluginContext
	actions map[string]bool

	// respHeaders are added to the response by OnHttpResponseHeaders.
	respHeaders [][2]string
	// setResp, addResp, delResp are the request's x-set-resp, x-add-resp and
	// x-del-resp headers.
	setResp, addResp, delResp string
	prepended                 bool
	reqTrailers               int
}

func (h *httpContext) has(action string) bool { return h.actions[action] }

// OnHttpRequestHeaders implements types.HttpContext.
func (h *httpContext) OnHttpRequestHeaders(int, bool) types.Action {
	h.plugin.requests.Increment(1)
	if t := h.plugin.tag; t != "" {
		h.respHeaders = append(h.respHeaders, [2]string{"x-saw-" + t, chainTag(proxywasm.GetHttpRequestHeader,
			proxywasm.ReplaceHttpRequestHeader, "x-chain", t)})
	}
	list, err := proxywasm.GetHttpRequestHeader(h.plugin.actionHeader)
	if err != nil {
		return types.ActionContinue
	}
	h.actions = map[string]bool{}
	for _, a := range strings.Split(list, ",") {
		a = strings.ToLower(strings.TrimSpace(a))
		if a == "" {
			continue
		}
		if !knownActions[a] {
			proxywasm.LogWarnf("testbed: unknown action %q", a)
			h.localReply(400, [][2]string{{"x-testbed-error", "unknown action"}}, "testbed: unknown action "+a+"\n")
			return types.ActionPause
		}
		h.actions[a] = true
	}

	if h.has("log-levels") {
		proxywasm.LogTrace("testbed: log trace")
		proxywasm.LogDebug("testbed: log debug")
		proxywasm.LogInfo("testbed: log info")
		proxywasm.LogWarn("testbed: log warn")
		proxywasm.LogError("testbed: log error")
		proxywasm.LogCritical("testbed: log critical")
	}
	if h.has("metrics") {
		h.plugin.counter.Increment(1)
		h.plugin.gauge.Add(1)
		h.plugin.histogram.Record(42)
		h.respHeaders = append(h.respHeaders,
			[2]string{"x-metric-counter", strconv.FormatUint(h.plugin.counter.Value(), 10)},
			[2]string{"x-metric-gauge", strconv.FormatInt(h.plugin.gauge.Value(), 10)})
	}
	if h.has("trap") {
		panic("testbed: trap requested")
	}
	if h.has("loop") {
		spin()
	}
	if h.has("oom") {
		exhaustMemory()
	}
	if h.has("echo-headers") {
		headers, err := proxywasm.GetHttpRequestHeaders()
		if err != nil {
			proxywasm.LogWarnf("testbed: echo-headers: %v", err)
		}
		for _, kv := range headers {
			h.respHeaders = append(h.respHeaders, [2]string{"x-echo-" + strings.TrimPrefix(kv[0], ":"), kv[1]})
		}
	}
	if h.has("props") {
		for _, path := range properties {
			h.respHeaders = append(h.respHeaders, [2]string{"x-prop-" + strings.NewReplacer(".", "-", "_", "-").Replace(path), property(path)})
		}
	}
	if h.has("shared-data") {
		h.respHeaders = append(h.respHeaders, [2]string{"x-shared-counter", incrementShared()})
	}
	if h.has("queue") {
		path, _ := proxywasm.GetHttpRequestHeader(":path")
		if err := proxywasm.EnqueueSharedQueue(h.plugin.queueID, []byte(path)); err != nil {
			proxywasm.LogWarnf("testbed: enqueue: %v", err)
		}
	}
	if h.has("set-req") {
		forEachPair(requestHeader("x-set"), proxywasm.ReplaceHttpRequestHeader)
	}
	if h.has("add-req") {
		forEachPair(requestHeader("x-add"), proxywasm.AddHttpRequestHeader)
	}
	if h.has("del-req") {
		forEachName(requestHeader("x-del"), proxywasm.RemoveHttpRequestHeader)
	}
	h.setResp, h.addResp, h.delResp = requestHeader("x-set-resp"), requestHeader("x-add-resp"), requestHeader("x-del-resp")
	if h.has("buffer-body") || h.has("prepend-body") || h.has("append-body") {
		if err := proxywasm.RemoveHttpRequestHeader("content-length"); err != nil {
			proxywasm.LogWarnf("testbed: removing content-length: %v", err)
		}
	}

	switch {
	case h.has("local-reply"):
		h.localReply(403, [][2]string{{"x-testbed-reply", "local"}}, "denied by testbed\n")
		return types.ActionPause
	case h.has("close"):
		if err := proxywasm.CloseDownstream(); err != nil {
			proxywasm.LogWarnf("testbed: close: %v", err)
		}
		return types.ActionPause
	case h.has("continue-inline"):
		if err := proxywasm.ResumeHttpRequest(); err != nil {
			proxywasm.LogWarnf("testbed: continue-inline: %v", err)
		}
		return types.ActionPause
	case h.has("http-call"):
		return h.httpCall()
	case h.has("pause-headers"):
		h.plugin.paused = append(h.plugin.paused, h.id)
		return types.ActionPause
	}
	return types.ActionContinue
}

// httpCall starts the http-call action.
func (h *httpContext) httpCall() types.Action {
	cluster := requestHeader("x-http-call-cluster")
	if cluster == "" {
		cluster = "testbed_upstream"
	}
	path := requestHeader("x-http-call-path")
	if path == "" {
		path = "/"
	}
	timeout := uint32(5000)
	if v, err := strconv.ParseUint(requestHeader("x-http-call-timeout"), 10, 32); err == nil {
		timeout = uint32(v)
	}
	headers := [][2]string{{":method", "GET"}, {":path", path}, {":authority", cluster}}
	_, err := proxywasm.DispatchHttpCall(cluster, headers, nil, nil, timeout, func(numHeaders, bodySize, numTrailers int) {
		status := "failed"
		if numHeaders > 0 {
			headers, _ := proxywasm.GetHttpCallResponseHeaders()
			for _, kv := range headers {
				if kv[0] == ":status" {
					status = kv[1]
				}
			}
		}
		body, _ := proxywasm.GetHttpCallResponseBody(0, bodySize)
		h.respHeaders = append(h.respHeaders,
			[2]string{"x-http-call-status", status},
			[2]string{"x-http-call-body-len", strconv.Itoa(len(body))})
		if err := proxywasm.ResumeHttpRequest(); err != nil {
			proxywasm.LogWarnf("testbed: http-call: resuming: %v", err)
		}
	})
	if err != nil {
		proxywasm.LogWarnf("testbed: http-call to %s: %v", cluster, err)
		h.respHeaders = append(h.respHeaders, [2]string{"x-http-call-status", "dispatch-error"})
		return types.ActionContinue
	}
	return types.ActionPause
}

// OnHttpRequestBody implements types.HttpContext.
func (h *httpContext) OnHttpRequestBody(bodySize int, endOfStream bool) types.Action {
	if h.has("buffer-body") {
		if !endOfStream {
			return types.ActionPause
		}
		body, err := proxywasm.GetHttpRequestBody(0, bodySize)
		if err != nil && err != types.ErrorStatusNotFound {
			proxywasm.LogWarnf("testbed: buffer-body: reading body: %v", err)
		}
		if err := proxywasm.ReplaceHttpRequestBody([]byte(strings.ToUpper(string(body)))); err != nil {
			proxywasm.LogWarnf("testbed: buffer-body: replacing body: %v", err)
		}
	}
	if h.has("prepend-body") && !h.prepended {
		h.prepended = true
		if err := proxywasm.PrependHttpRequestBody([]byte("prepended+")); err != nil {
			proxywasm.LogWarnf("testbed: prepend-body: %v", err)
		}
	}
	if h.has("append-body") && endOfStream {
		if err := proxywasm.AppendHttpRequestBody([]byte("+appended")); err != nil {
			proxywasm.LogWarnf("testbed: append-body: %v", err)
		}
	}
	return types.ActionContinue
}

// OnHttpRequestTrailers implements types.HttpContext.
func (h *httpContext) OnHttpRequestTrailers(int) types.Action {
	if h.has("trailers") {
		trailers, err := proxywasm.GetHttpRequestTrailers()
		if err != nil && err != types.ErrorStatusNotFound {
			proxywasm.LogWarnf("testbed: trailers: %v", err)
		}
		h.reqTrailers = len(trailers)
		if err := proxywasm.ReplaceHttpRequestTrailer("x-testbed-trailer", "req"); err != nil {
			proxywasm.LogWarnf("testbed: trailers: %v", err)
		}
	}
	return types.ActionContinue
}

// OnHttpResponseHeaders implements types.HttpContext.
func (h *httpContext) OnHttpResponseHeaders(int, bool) types.Action {
	if t := h.plugin.tag; t != "" {
		saw := chainTag(proxywasm.GetHttpResponseHeader, proxywasm.ReplaceHttpResponseHeader, "x-chain-resp", t)
		if err := proxywasm.AddHttpResponseHeader("x-saw-resp-"+t, saw); err != nil {
			proxywasm.LogWarnf("testbed: adding x-saw-resp-%s: %v", t, err)
		}
	}
	if h.has("local-reply-resp") {
		h.localReply(403, [][2]string{{"x-testbed-reply", "local-resp"}}, "denied by testbed in response\n")
		return types.ActionPause
	}
	for _, kv := range h.respHeaders {
		if err := proxywasm.AddHttpResponseHeader(kv[0], kv[1]); err != nil {
			proxywasm.LogWarnf("testbed: adding response header %s: %v", kv[0], err)
		}
	}
	if h.has("set-resp") {
		forEachPair(h.setResp, proxywasm.ReplaceHttpResponseHeader)
	}
	if h.has("add-resp") {
		forEachPair(h.addResp, proxywasm.AddHttpResponseHeader)
	}
	if h.has("del-resp") {
		forEachName(h.delResp, proxywasm.RemoveHttpResponseHeader)
	}
	if h.has("replace-resp-body") {
		if err := proxywasm.RemoveHttpResponseHeader("content-length"); err != nil {
			proxywasm.LogWarnf("testbed: removing content-length: %v", err)
		}
	}
	return types.ActionContinue
}

// OnHttpResponseBody implements types.HttpContext.
func (h *httpContext) OnHttpResponseBody(bodySize int, endOfStream bool) types.Action {
	if h.has("replace-resp-body") {
		if !endOfStream {
			return types.ActionPause
		}
		if err := proxywasm.ReplaceHttpResponseBody([]byte("replaced by testbed\n")); err != nil {
			proxywasm.LogWarnf("testbed: replace-resp-body: %v", err)
		}
	}
	return types.ActionContinue
}

// OnHttpResponseTrailers implements types.HttpContext.
func (h *httpContext) OnHttpResponseTrailers(int) types.Action {
	if h.has("trailers") {
		if err := proxywasm.ReplaceHttpResponseTrailer("x-testbed-trailer", "resp"); err != nil {
			proxywasm.LogWarnf("testbed: trailers: %v", err)
		}
		if err := proxywasm.AddHttpResponseTrailer("x-testbed-req-trailers", strconv.Itoa(h.reqTrailers)); err != nil {
			proxywasm.LogWarnf("testbed: trailers: %v", err)
		}
	}
	return types.ActionContinue
}

// OnHttpStreamDone implements types.HttpContext.
func (h *httpContext) OnHttpStreamDone() {
	paused := h.plugin.paused[:0]
	for _, id := range h.plugin.paused {
		if id != h.id {
			paused = append(paused, id)
		}
	}
	h.plugin.paused = paused
	proxywasm.LogDebugf("testbed: stream %d done", h.id)
}

func (h *httpContext) localReply(status uint32, headers [][2]string, body string) {
	if err := proxywasm.SendHttpResponse(status, headers, []byte(body), -1); err != nil {
		proxywasm.LogWarnf("testbed: local reply %d: %v", status, err)
	}
}

// requestHeader returns a request header's value, or "" if it is absent.
func requestHeader(name string) string {
	v, _ := proxywasm.GetHttpRequestHeader(name)
	return v
}

// forEachPair calls set for each "name=value" in the ';'-separated list.
func forEachPair(list string, set func(name, value string) error) {
	for _, item := range strings.Split(list, ";") {
		name, value, ok := strings.Cut(item, "=")
		name = strings.TrimSpace(name)
		if !ok || name == "" {
			continue
		}
		if err := set(name, strings.TrimSpace(value)); err != nil {
			proxywasm.LogWarnf("testbed: header %s: %v", name, err)
		}
	}
}

// forEachName calls remove for each name in the ';'-separated list.
func forEachName(list string, remove func(name string) error) {
	for _, name := range strings.Split(list, ";") {
		if name = strings.TrimSpace(name); name != "" {
			if err := remove(name); err != nil {
				proxywasm.LogWarnf("testbed: removing header %s: %v", name, err)
			}
		}
	}
}

// property reads a dotted property path for the props action.
func property(path string) string {
	v, err := proxywasm.GetProperty(strings.Split(path, "."))
	switch {
	case err == types.ErrorStatusNotFound:
		return "NOT_FOUND"
	case err != nil:
		return "ERROR: " + err.Error()
	}
	return string(v)
}

// incrementShared adds 1 to the shared counter with compare-and-swap and
// returns the value stored (or "ERROR: ...").
func incrementShared() string {
	for attempt := 0; attempt < 10; attempt++ {
		value, cas, err := proxywasm.GetSharedData(sharedKey)
		n := uint64(0)
		switch {
		case err == types.ErrorStatusNotFound:
		case err != nil:
			return "ERROR: " + err.Error()
		default:
			if n, err = strconv.ParseUint(string(value), 10, 64); err != nil {
				return "ERROR: bad counter " + strconv.Quote(string(value))
			}
		}
		next := strconv.FormatUint(n+1, 10)
		switch err := proxywasm.SetSharedData(sharedKey, []byte(next), cas); err {
		case nil:
			return next
		case types.ErrorStatusCasMismatch:
			continue
		default:
			return "ERROR: " + err.Error()
		}
	}
	return "ERROR: CAS mismatch 10 times"
}

// spin never returns (the loop action).
func spin() {
	for {
	}
}

// hoard keeps what exhaustMemory allocates reachable.
var hoard [][]byte

// exhaustMemory allocates until the runtime (or the host's memory limit)
// gives up (the oom action).
func exhaustMemory() {
	for {
		b := make([]byte, 1<<20)
		b[0] = 1
		hoard = append(hoard, b)
	}
}

// chainTag appends tag to header key through get and set, and returns the
// value it found ("-" if absent).
func chainTag(get func(string) (string, error), set func(string, string) error, key, tag string) string {
	v, err := get(key)
	saw, next := "-", tag
	if err == nil {
		saw, next = v, v+","+tag
	}
	if err := set(key, next); err != nil {
		proxywasm.LogWarnf("testbed: setting %s: %v", key, err)
	}
	return saw
}
