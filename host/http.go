package host

import (
	"sync"

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

// body is one direction's body buffer: what the plugin sees through
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
	in    *instance
	id    uint32
	props PropertySource

	// Guarded by in.mu.
	maps       [4]*HeaderMap // by abi.MapType 0..3
	bodies     [2]body       // by abi.StreamHTTPRequest / StreamHTTPResponse
	acts       actions
	properties map[string][]byte // written by proxy_set_property
	failed     error
	skip       bool // fail-open: the plugin is bypassed for the rest of the stream
	closed     bool

	evMu   sync.Mutex
	events []Event
	notify chan struct{}
}

// NewHTTPStream creates an HTTP context (proxy_on_context_create) on the
// least busy healthy instance. props may be nil.
func (p *Plugin) NewHTTPStream(props PropertySource) (*HTTPStream, error) {
	in, err := p.pool.pick()
	if err != nil {
		return nil, err
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.failed != nil {
		return nil, ErrNoInstance
	}
	s := &HTTPStream{in: in, props: props, notify: make(chan struct{}, 1)}
	s.id = in.nextContextID()
	in.contexts[s.id] = &pluginContext{id: s.id, http: s}
	p.pool.live[in.slot].Add(1)
	p.pool.streams.Add(1)
	in.frame = s
	_, err = in.callCtx(in.fns.onContextCreate, s.id, uint64(in.rootID))
	in.frame = nil
	in.flushActions(s)
	s.acts = actions{}
	if err != nil {
		s.failed = err
	}
	return s, nil
}

// ID is the stream's context id within its instance.
func (s *HTTPStream) ID() uint32 { return s.id }

// RequestHeaders runs proxy_on_request_headers. The pairs become the
// request header map; their mutations are read back with Headers.
func (s *HTTPStream) RequestHeaders(headers []abi.Pair, endOfStream bool) Result {
	return s.headers(abi.MapHTTPRequestHeaders, phaseRequestHeaders, headers, endOfStream)
}

// ResponseHeaders runs proxy_on_response_headers.
func (s *HTTPStream) ResponseHeaders(headers []abi.Pair, endOfStream bool) Result {
	return s.headers(abi.MapHTTPResponseHeaders, phaseResponseHeaders, headers, endOfStream)
}

// RequestBody runs proxy_on_request_body with the size of everything
// buffered so far. A Pause keeps the bytes buffered for the next call, as
// Envoy's StopIterationAndBuffer does; a Continue releases them in
// Result.Body. chunk is not modified and may be retained until released.
func (s *HTTPStream) RequestBody(chunk []byte, endOfStream bool) Result {
	return s.body(abi.StreamHTTPRequest, phaseRequestBody, chunk, endOfStream)
}

// ResponseBody runs proxy_on_response_body; see RequestBody.
func (s *HTTPStream) ResponseBody(chunk []byte, endOfStream bool) Result {
	return s.body(abi.StreamHTTPResponse, phaseResponseBody, chunk, endOfStream)
}

// RequestTrailers runs proxy_on_request_trailers.
func (s *HTTPStream) RequestTrailers(trailers []abi.Pair) Result {
	return s.trailers(abi.MapHTTPRequestTrailers, phaseRequestTrailers, trailers)
}

// ResponseTrailers runs proxy_on_response_trailers.
func (s *HTTPStream) ResponseTrailers(trailers []abi.Pair) Result {
	return s.trailers(abi.MapHTTPResponseTrailers, phaseResponseTrailers, trailers)
}

// Headers returns the stream's header or trailer map of type m (0 to 3), or
// nil if that map has not arrived. Its Mutation lists the plugin's changes.
// Call it only from the goroutine driving the stream, between callbacks.
func (s *HTTPStream) Headers(m abi.MapType) *HeaderMap {
	if m > abi.MapHTTPResponseTrailers {
		return nil
	}
	s.in.mu.Lock()
	defer s.in.mu.Unlock()
	return s.maps[m]
}

// TakeBody releases the bytes buffered for a direction after the plugin
// resumed it asynchronously (EventContinue), with whether the plugin
// changed them.
func (s *HTTPStream) TakeBody(dir abi.StreamType) (data []byte, modified bool) {
	if dir > abi.StreamHTTPResponse {
		return nil, false
	}
	s.in.mu.Lock()
	defer s.in.mu.Unlock()
	b := &s.bodies[dir]
	data, modified = b.buf, b.modified
	*b = body{}
	return data, modified
}

// PropertyWrites returns what the plugin stored with proxy_set_property, by
// dotted path. The server forwards these as dynamic metadata.
func (s *HTTPStream) PropertyWrites() map[string][]byte {
	s.in.mu.Lock()
	defer s.in.mu.Unlock()
	out := make(map[string][]byte, len(s.properties))
	for k, v := range s.properties {
		out[k] = v
	}
	return out
}

// Notify is signalled when events are waiting; TakeEvents collects them.
func (s *HTTPStream) Notify() <-chan struct{} { return s.notify }

// TakeEvents returns and clears the stream's pending events, oldest first.
func (s *HTTPStream) TakeEvents() []Event {
	s.evMu.Lock()
	defer s.evMu.Unlock()
	ev := s.events
	s.events = nil
	return ev
}

func (s *HTTPStream) push(ev Event) {
	s.evMu.Lock()
	s.events = append(s.events, ev)
	s.evMu.Unlock()
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

// Close ends the stream: proxy_on_log, proxy_on_done and proxy_on_delete,
// exactly once, whatever happened before (Envoy's HTTP order). A failed
// instance is not called again. Close is idempotent.
func (s *HTTPStream) Close() {
	in := s.in
	in.mu.Lock()
	defer in.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	if in.failed == nil && s.failed == nil {
		in.frame, in.phase = s, phaseLog
		in.callCtx(in.fns.onLog, s.id)
		in.callCtx(in.fns.onDone, s.id)
		in.callCtx(in.fns.onDelete, s.id)
		in.frame, in.phase = nil, phaseNone
		in.flushActions(s)
		s.acts = actions{}
	}
	delete(in.contexts, s.id)
	in.plugin.pool.live[in.slot].Add(-1)
	in.plugin.pool.streams.Add(-1)
}

// precheck answers for a stream that must not call the plugin: closed,
// failed, or bypassed by fail-open. Caller holds mu.
func (s *HTTPStream) precheck() (Result, bool) {
	switch {
	case s.closed:
		return Result{Action: abi.ActionContinue, Failure: errClosed}, true
	case s.skip:
		return Result{Action: abi.ActionContinue}, true
	case s.failed != nil:
		return s.failure(s.failed), true
	case s.in.failed != nil:
		s.failed = s.in.failed
		return s.failure(s.failed), true
	}
	return Result{}, false
}

// failure applies the failure policy. Caller holds mu.
func (s *HTTPStream) failure(err error) Result {
	cfg := &s.in.plugin.cfg
	if cfg.FailurePolicy == FailOpen {
		s.skip = true
		return Result{Action: abi.ActionContinue, Failure: err}
	}
	return Result{
		Action:        abi.ActionPause,
		Failure:       err,
		LocalResponse: &LocalResponse{Status: cfg.FailStatus, Details: "wasm_fail_stream", GRPCStatus: 14},
	}
}

// instanceFailed is called by instance.fail for every live stream. The
// stream running the failing call gets the failure in its Result; the
// others get an event, since they may be paused waiting. Caller holds mu.
func (s *HTTPStream) instanceFailed(err error) {
	if s.closed || s.failed != nil {
		return
	}
	s.failed = err
	if s.in.frame != s {
		s.push(Event{Kind: EventFailed, Result: s.failure(err)})
	}
}

func (s *HTTPStream) headers(m abi.MapType, ph phase, pairs []abi.Pair, eos bool) Result {
	in := s.in
	in.mu.Lock()
	defer in.mu.Unlock()
	s.maps[m] = newHeaderMap(pairs)
	if r, done := s.precheck(); done {
		return r
	}
	fn := in.fns.onRequestHeaders
	if m == abi.MapHTTPResponseHeaders {
		fn = in.fns.onResponseHeaders
	}
	var raw uint64
	var err error
	in.frame, in.phase = s, ph
	if in.arity == 2 {
		raw, err = in.callCtx(fn, s.id, uint64(len(pairs)))
	} else {
		raw, err = in.callCtx(fn, s.id, uint64(len(pairs)), boolArg(eos))
	}
	in.frame, in.phase = nil, phaseNone
	return s.finish(streamOf(ph), abi.HeadersAction(uint32(raw)), err)
}

func (s *HTTPStream) trailers(m abi.MapType, ph phase, pairs []abi.Pair) Result {
	in := s.in
	in.mu.Lock()
	defer in.mu.Unlock()
	s.maps[m] = newHeaderMap(pairs)
	if r, done := s.precheck(); done {
		return r
	}
	fn := in.fns.onRequestTrailers
	if m == abi.MapHTTPResponseTrailers {
		fn = in.fns.onResponseTrailers
	}
	in.frame, in.phase = s, ph
	raw, err := in.callCtx(fn, s.id, uint64(len(pairs)))
	in.frame, in.phase = nil, phaseNone
	// FilterTrailersStatus: 0 continues, anything else stops.
	return s.finish(streamOf(ph), abi.BodyAction(uint32(raw)), err)
}

func (s *HTTPStream) body(dir abi.StreamType, ph phase, chunk []byte, eos bool) Result {
	in := s.in
	in.mu.Lock()
	defer in.mu.Unlock()
	b := &s.bodies[dir]
	if len(b.buf) == 0 {
		// Alias the caller's chunk; the capacity is clipped so that any
		// growth copies instead of writing into the caller's array.
		b.buf = chunk[:len(chunk):len(chunk)]
	} else {
		b.buf = append(b.buf, chunk...)
	}
	b.active = true
	if r, done := s.precheck(); done {
		if r.Action == abi.ActionContinue {
			r.Body, r.BodyModified = b.buf, b.modified
			*b = body{}
		}
		return r
	}
	fn := in.fns.onRequestBody
	if dir == abi.StreamHTTPResponse {
		fn = in.fns.onResponseBody
	}
	in.frame, in.phase = s, ph
	raw, err := in.callCtx(fn, s.id, uint64(len(b.buf)), boolArg(eos))
	in.frame, in.phase = nil, phaseNone
	r := s.finish(dir, abi.BodyAction(uint32(raw)), err)
	if r.Action == abi.ActionContinue && r.LocalResponse == nil {
		r.Body, r.BodyModified = b.buf, b.modified
		*b = body{}
	}
	return r
}

// finish folds the call's outcome and deferred actions into a Result and
// delivers actions aimed at other streams. Caller holds mu.
func (s *HTTPStream) finish(dir abi.StreamType, action abi.Action, err error) Result {
	in := s.in
	in.flushActions(s)
	a := s.acts
	s.acts = actions{}
	if err != nil {
		s.failed = err
		return s.failure(err)
	}
	r := Result{Action: action, ClearRouteCache: a.clearRouteCache}
	if a.continued[dir] {
		r.Action = abi.ActionContinue
	}
	for other, c := range a.continued {
		if c && abi.StreamType(other) != dir {
			s.push(Event{Kind: EventContinue, Stream: abi.StreamType(other)})
		}
	}
	switch {
	case a.local != nil:
		r.Action, r.LocalResponse = abi.ActionPause, a.local
	case a.close:
		r.Action, r.Close = abi.ActionPause, true
	}
	return r
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
