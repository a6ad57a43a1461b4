package host

import (
	"github.com/tetratelabs/wazero/api"

	"github.com/wasm-callout/wasm-callout/abi"
)

// PropertySource answers the properties a host cannot derive from headers
// or its own configuration: connection, upstream and xds attributes, and
// metadata. The server fills it from what Envoy sends.
type PropertySource interface {
	// Property returns the Envoy-encoded value at path (segments as the
	// plugin sent them, with legacy top-level names already mapped to
	// xds.*), or false if it is absent.
	Property(path []string) ([]byte, bool)
}

// body is one direction's body or data buffer: what the plugin sees through
// proxy_get_buffer_bytes, accumulated across paused chunks.
type body struct {
	buf      []byte
	modified bool
	active   bool // a body callback has run and its bytes are not yet released
}

// HTTPStream is one HTTP request/response pair running through a plugin's
// HttpContext, pinned to one instance. Its methods are called in stream
// order by one goroutine (the server's stream handler); Events may arrive
// from others.
type HTTPStream struct {
	stream

	// Guarded by in.mu.
	maps   [4]*HeaderMap // by abi.MapType 0..3; nil until the map arrives
	store  [4]HeaderMap  // what maps point at, kept in the stream
	bodies [2]body       // by abi.StreamHTTPRequest / StreamHTTPResponse
	// strs and strsUsed back the first header keys and values the
	// plugin writes (see keep).
	strs     [128]byte
	strsUsed int
}

// NewHTTPStream creates an HTTP context (proxy_on_context_create) on the
// least busy healthy instance. props may be nil.
func (p *Plugin) NewHTTPStream(props PropertySource) (*HTTPStream, error) {
	s := &HTTPStream{}
	s.http = s
	if err := p.openStream(&s.stream, props); err != nil {
		return nil, err
	}
	return s, nil
}

// NewHTTPStreamNotify is NewHTTPStream for a stream whose Notify is notify,
// which the caller may share among streams: a filter chain waits on one
// channel for the events of all of its plugins' streams. notify must be
// buffered (capacity 1 is enough); the host never blocks on it.
func (p *Plugin) NewHTTPStreamNotify(props PropertySource, notify chan struct{}) (*HTTPStream, error) {
	s := &HTTPStream{}
	s.http = s
	s.notify = notify
	if err := p.openStream(&s.stream, props); err != nil {
		return nil, err
	}
	return s, nil
}

// RequestHeaders runs proxy_on_request_headers. The pairs become the
// request header map; their mutations are read back with Headers.
func (s *HTTPStream) RequestHeaders(headers []abi.Pair, endOfStream bool) Result {
	return s.mapCall(abi.MapHTTPRequestHeaders, phaseRequestHeaders, s.in.fns.onRequestHeaders, headers, true, endOfStream)
}

// ResponseHeaders runs proxy_on_response_headers.
func (s *HTTPStream) ResponseHeaders(headers []abi.Pair, endOfStream bool) Result {
	return s.mapCall(abi.MapHTTPResponseHeaders, phaseResponseHeaders, s.in.fns.onResponseHeaders, headers, true, endOfStream)
}

// RequestBody runs proxy_on_request_body with the size of everything
// buffered so far. A Pause keeps the bytes buffered for the next call, as
// Envoy's StopIterationAndBuffer does; a Continue releases them in
// Result.Body. chunk is not modified and may be retained until released.
func (s *HTTPStream) RequestBody(chunk []byte, endOfStream bool) Result {
	s.in.lock()
	defer s.in.mu.Unlock()
	return s.bodyCall(&s.bodies[abi.StreamHTTPRequest], abi.StreamHTTPRequest, phaseRequestBody, s.in.fns.onRequestBody, chunk, endOfStream)
}

// ResponseBody runs proxy_on_response_body; see RequestBody.
func (s *HTTPStream) ResponseBody(chunk []byte, endOfStream bool) Result {
	s.in.lock()
	defer s.in.mu.Unlock()
	return s.bodyCall(&s.bodies[abi.StreamHTTPResponse], abi.StreamHTTPResponse, phaseResponseBody, s.in.fns.onResponseBody, chunk, endOfStream)
}

// RequestTrailers runs proxy_on_request_trailers.
func (s *HTTPStream) RequestTrailers(trailers []abi.Pair) Result {
	return s.mapCall(abi.MapHTTPRequestTrailers, phaseRequestTrailers, s.in.fns.onRequestTrailers, trailers, false, false)
}

// ResponseTrailers runs proxy_on_response_trailers.
func (s *HTTPStream) ResponseTrailers(trailers []abi.Pair) Result {
	return s.mapCall(abi.MapHTTPResponseTrailers, phaseResponseTrailers, s.in.fns.onResponseTrailers, trailers, false, false)
}

// Headers returns a snapshot of the stream's header or trailer map of type
// m (0 to 3), or nil if that map has not arrived. A snapshot is safe to
// read while plugin timers or calls run; change the live map with
// WithHeaders and collect the plugin's edits with TakeHeaderChanges.
func (s *HTTPStream) Headers(m abi.MapType) *HeaderMap {
	var snap *HeaderMap
	s.WithHeaders(m, func(h *HeaderMap) {
		snap = &HeaderMap{pairs: h.pairs[:len(h.pairs):len(h.pairs)], dirty: append([]string(nil), h.dirty...)}
	})
	return snap
}

// WithHeaders runs fn on the live map of type m (0 to 3) under the
// instance's lock, so no plugin callback runs meanwhile. It does nothing if
// the map has not arrived. fn must not call the stream's methods.
func (s *HTTPStream) WithHeaders(m abi.MapType, fn func(h *HeaderMap)) {
	if m > abi.MapHTTPResponseTrailers {
		return
	}
	s.in.lock()
	defer s.in.mu.Unlock()
	if h := s.maps[m]; h != nil {
		fn(h)
	}
}

// TakeHeaderChanges returns the plugin's edits to map m since the last
// take and forgets them, atomically with respect to plugin callbacks. The
// result is valid until the next take of the same map.
func (s *HTTPStream) TakeHeaderChanges(m abi.MapType) []HeaderChange {
	var changes []HeaderChange
	s.WithHeaders(m, func(h *HeaderMap) {
		changes = h.Changes()
		h.ClearChanges()
	})
	return changes
}

// TakeBody releases the bytes buffered for a direction after the plugin
// resumed it asynchronously (EventContinue), with whether the plugin
// changed them.
func (s *HTTPStream) TakeBody(dir abi.StreamType) (data []byte, modified bool) {
	if dir > abi.StreamHTTPResponse {
		return nil, false
	}
	return s.takeBody(&s.bodies[dir])
}

// Close ends the stream: proxy_on_log, proxy_on_done and proxy_on_delete,
// exactly once, whatever happened before (Envoy's HTTP order). A failed
// instance is not called again. Close is idempotent.
func (s *HTTPStream) Close() {
	s.close(s.in.fns.onLog, s.in.fns.onDone, s.in.fns.onDelete)
}

// mapCall installs pairs as map m and runs fn(context, number of pairs)
// for a headers (isHeaders, adding end_of_stream from ABI 0.2.0 on) or
// trailers callback.
func (s *HTTPStream) mapCall(m abi.MapType, ph phase, fn api.Function, pairs []abi.Pair, isHeaders, eos bool) Result {
	in := s.in
	in.lock()
	defer in.mu.Unlock()
	s.store[m] = HeaderMap{pairs: pairs[:len(pairs):len(pairs)]}
	s.maps[m] = &s.store[m]
	if r, done := s.precheck(); done {
		return r
	}
	if !isHeaders {
		// FilterTrailersStatus: 0 continues, anything else stops.
		raw, err := s.invoke(ph, fn, uint64(len(pairs)))
		return s.finish(streamOf(ph), abi.BodyAction(uint32(raw)), err)
	}
	var raw uint64
	var err error
	if in.arity == 2 {
		raw, err = s.invoke(ph, fn, uint64(len(pairs)))
	} else {
		raw, err = s.invoke(ph, fn, uint64(len(pairs)), boolArg(eos))
	}
	return s.finish(streamOf(ph), abi.HeadersAction(uint32(raw)), err)
}

func streamOf(ph phase) abi.StreamType {
	switch ph {
	case phaseResponseHeaders, phaseResponseBody, phaseResponseTrailers:
		return abi.StreamHTTPResponse
	}
	return abi.StreamHTTPRequest
}

func boolArg(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}
