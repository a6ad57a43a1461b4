package main

import (
	"fmt"

	"github.com/corazawaf/coraza/v3/types"
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm"
	ptypes "github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/types"

	"github.com/wasm-callout/wasm-callout/plugins/waf/engine"
)

// Phase names, as the blocked metric's phase tag gives them.
const (
	phaseRequestHeaders  = "http_request_headers"
	phaseRequestBody     = "http_request_body"
	phaseResponseHeaders = "http_response_headers"
	phaseResponseBody    = "http_response_body"
)

// httpContext is one stream's transaction. tx is nil when no directive set
// applies to the request's authority; done is set once the stream was
// answered (or its last phase ran), after which callbacks only continue.
type httpContext struct {
	ptypes.DefaultHttpContext
	plugin *pluginContext
	id     uint32
	tx     *engine.Tx
	done   bool

	authority, path string
	requestBodyDone bool
	requestBodySize int
	holdingResponse bool // response headers held until the body is inspected
}

// OnHttpRequestHeaders implements types.HttpContext.
func (h *httpContext) OnHttpRequestHeaders(_ int, endOfStream bool) ptypes.Action {
	headers, err := proxywasm.GetHttpRequestHeaders()
	if err != nil {
		proxywasm.LogErrorf("waf: reading request headers: %v", err)
		return h.block(&types.Interruption{Status: 500}, phaseRequestHeaders)
	}
	for _, kv := range headers {
		switch kv[0] {
		case ":authority":
			h.authority = kv[1]
		case ":path":
			h.path = kv[1]
		}
	}
	waf := h.plugin.wafs.For(h.authority)
	if waf == nil {
		h.done = true
		return ptypes.ActionContinue
	}
	h.plugin.requests.Increment(1)
	h.tx = engine.Begin(waf)
	if h.tx.IsRuleEngineOff() {
		h.done = true
		return ptypes.ActionContinue
	}
	protocol, _ := proxywasm.GetProperty([]string{"request", "protocol"})
	source, _ := proxywasm.GetProperty([]string{"source", "address"})
	destination, _ := proxywasm.GetProperty([]string{"destination", "address"})
	if it := h.tx.RequestHeaders(headers, string(protocol), string(source), string(destination)); it != nil {
		return h.block(it, phaseRequestHeaders)
	}
	if endOfStream {
		return h.requestBody(nil)
	}
	return ptypes.ActionContinue
}

// OnHttpRequestBody implements types.HttpContext: the body is buffered
// (Pause) until its end, then inspected whole.
func (h *httpContext) OnHttpRequestBody(bodySize int, endOfStream bool) ptypes.Action {
	if h.done || h.requestBodyDone {
		return ptypes.ActionContinue
	}
	h.requestBodySize = bodySize
	if !h.tx.IsRequestBodyAccessible() {
		if endOfStream {
			return h.requestBody(nil)
		}
		return ptypes.ActionContinue
	}
	if !endOfStream {
		return ptypes.ActionPause
	}
	return h.requestBody(h.bufferedRequestBody())
}

// OnHttpRequestTrailers implements types.HttpContext: trailers end a
// request whose body had no end of stream.
func (h *httpContext) OnHttpRequestTrailers(int) ptypes.Action {
	if h.done || h.requestBodyDone {
		return ptypes.ActionContinue
	}
	var body []byte
	if h.tx.IsRequestBodyAccessible() {
		body = h.bufferedRequestBody()
	}
	return h.requestBody(body)
}

func (h *httpContext) bufferedRequestBody() []byte {
	if h.requestBodySize == 0 {
		return nil
	}
	body, err := proxywasm.GetHttpRequestBody(0, h.requestBodySize)
	if err != nil {
		proxywasm.LogErrorf("waf: reading request body: %v", err)
	}
	return body
}

func (h *httpContext) requestBody(body []byte) ptypes.Action {
	h.requestBodyDone = true
	it, err := h.tx.RequestBody(body)
	if err != nil {
		proxywasm.LogErrorf("waf: request body: %v", err)
	}
	if it != nil {
		return h.block(it, phaseRequestBody)
	}
	return ptypes.ActionContinue
}

// OnHttpResponseHeaders implements types.HttpContext. When the response
// body will be inspected, the headers are held (Pause) until it is, so a
// block can still replace the response.
func (h *httpContext) OnHttpResponseHeaders(_ int, endOfStream bool) ptypes.Action {
	if h.done {
		return ptypes.ActionContinue
	}
	if !h.requestBodyDone {
		// A response before the request ended (e.g. an early upstream
		// reply): phase 2 runs on what there is.
		if a := h.requestBody(nil); a != ptypes.ActionContinue {
			return a
		}
	}
	headers, err := proxywasm.GetHttpResponseHeaders()
	if err != nil {
		proxywasm.LogErrorf("waf: reading response headers: %v", err)
		return h.block(&types.Interruption{Status: 500}, phaseResponseHeaders)
	}
	protocol, _ := proxywasm.GetProperty([]string{"request", "protocol"})
	if it := h.tx.ResponseHeaders(headers, string(protocol)); it != nil {
		return h.block(it, phaseResponseHeaders)
	}
	if endOfStream {
		return h.responseBody(nil)
	}
	if h.tx.IsResponseBodyProcessable() {
		h.holdingResponse = true
		return ptypes.ActionPause
	}
	return ptypes.ActionContinue
}

// OnHttpResponseBody implements types.HttpContext.
func (h *httpContext) OnHttpResponseBody(bodySize int, endOfStream bool) ptypes.Action {
	if h.done {
		return ptypes.ActionContinue
	}
	if !h.holdingResponse {
		if endOfStream {
			return h.responseBody(nil)
		}
		return ptypes.ActionContinue
	}
	if !endOfStream {
		return ptypes.ActionPause
	}
	var body []byte
	if bodySize > 0 {
		var err error
		if body, err = proxywasm.GetHttpResponseBody(0, bodySize); err != nil {
			proxywasm.LogErrorf("waf: reading response body: %v", err)
		}
	}
	return h.responseBody(body)
}

func (h *httpContext) responseBody(body []byte) ptypes.Action {
	h.done = true
	it, err := h.tx.ResponseBody(body)
	if err != nil {
		proxywasm.LogErrorf("waf: response body: %v", err)
	}
	if it != nil {
		return h.block(it, phaseResponseBody)
	}
	// Held headers go on with the body: Continue from the last body
	// callback releases both.
	return ptypes.ActionContinue
}

// OnHttpStreamDone implements types.HttpContext.
func (h *httpContext) OnHttpStreamDone() {
	if h.tx != nil {
		h.tx.Done()
		h.tx = nil
	}
}

// block answers the stream for an interruption, logs it and counts it.
func (h *httpContext) block(it *types.Interruption, phase string) ptypes.Action {
	h.done = true
	status := engine.Status(it)
	var matched []int
	if h.tx != nil {
		matched = h.tx.MatchedRuleIDs()
	}
	proxywasm.LogWarnf("waf: blocked %s %q: rule %d, action %s, status %d, phase %s, matched rules %v",
		h.authority, h.path, it.RuleID, it.Action, status, phase, matched)
	h.plugin.countBlock(it.RuleID, phase)
	body := []byte(fmt.Sprintf("Request blocked by the web application firewall (rule %d).\n", it.RuleID))
	if err := proxywasm.SendHttpResponse(uint32(status), [][2]string{{"content-type", "text/plain"}}, body, -1); err != nil {
		proxywasm.LogErrorf("waf: sending the %d answer: %v", status, err)
	}
	return ptypes.ActionPause
}
