package host

import (
	"sync"

	"github.com/tetratelabs/wazero/api"

	"github.com/wasm-callout/wasm-callout/abi"
)

// stream is the state HTTP and TCP contexts share: identity, the actions a
// plugin requested during a call, the failure policy's bookkeeping, and the
// events delivered outside the stream's own callbacks. Exactly one of http
// and tcp is set.
type stream struct {
	in    *instance
	id    uint32
	ctx   pluginContext // the instance's entry for this stream (in.contexts)
	props PropertySource
	http  *HTTPStream
	tcp   *TCPStream

	// Guarded by in.mu.
	acts       actions
	properties map[string][]byte // written by proxy_set_property
	failed     error
	skip       bool // fail-open: the plugin is bypassed for the rest of the stream
	closed     bool

	evMu   sync.Mutex
	events []Event
	notify chan struct{}
}

// openStream creates s on a healthy instance of p (see pool.lock).
func (p *Plugin) openStream(s *stream, props PropertySource) error {
	in, err := p.pool.lock()
	if err != nil {
		return err
	}
	defer in.mu.Unlock()
	s.open(in, props)
	return nil
}

// invoke runs one of the stream's callbacks, fn(id, params...), in callback
// phase ph. Caller holds in.mu.
func (s *stream) invoke(ph phase, fn api.Function, params ...uint64) (uint64, error) {
	in := s.in
	in.frame, in.phase = s, ph
	raw, err := in.callCtx(fn, s.id, params...)
	in.frame, in.phase = nil, phaseNone
	return raw, err
}

// open registers a new context on in and calls proxy_on_context_create.
// Caller holds in.mu.
func (s *stream) open(in *instance, props PropertySource) {
	s.in, s.props = in, props
	if s.notify == nil {
		s.notify = make(chan struct{}, 1)
	}
	s.id = in.nextContextID()
	s.ctx = pluginContext{id: s.id, stream: s}
	in.contexts[s.id] = &s.ctx
	in.live.Add(1)
	in.plugin.pool.streams.Add(1)
	in.frame = s
	_, err := in.callCtx(in.fns.onContextCreate, s.id, uint64(in.rootID))
	in.frame = nil
	in.flushActions(s)
	s.acts = actions{}
	if err != nil {
		s.failed = err
	}
}

// close ends the stream exactly once: it runs the final callbacks in the
// given order (HTTP and TCP differ), unless the stream or its instance
// failed, cancels the stream's outbound calls, and forgets the context.
// It is idempotent.
func (s *stream) close(callbacks ...api.Function) {
	in := s.in
	in.lock()
	defer in.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	if in.failed == nil && s.failed == nil {
		for _, fn := range callbacks {
			if _, err := s.invoke(phaseLog, fn); err != nil {
				break
			}
		}
		in.flushActions(s)
		s.acts = actions{}
	}
	in.cancelCalls(s.id)
	delete(in.contexts, s.id)
	in.live.Add(-1)
	in.plugin.pool.streams.Add(-1)
}

// ID is the stream's context id within its instance.
func (s *stream) ID() uint32 { return s.id }

// PropertyWrites returns what the plugin stored with proxy_set_property, by
// dotted path. The server forwards these as dynamic metadata.
func (s *stream) PropertyWrites() map[string][]byte {
	s.in.lock()
	defer s.in.mu.Unlock()
	if len(s.properties) == 0 {
		return nil
	}
	out := make(map[string][]byte, len(s.properties))
	for k, v := range s.properties {
		out[k] = v
	}
	return out
}

// Notify is signalled when events are waiting; TakeEvents collects them.
func (s *stream) Notify() <-chan struct{} { return s.notify }

// TakeEvents returns and clears the stream's pending events, oldest first.
func (s *stream) TakeEvents() []Event {
	s.evMu.Lock()
	defer s.evMu.Unlock()
	ev := s.events
	s.events = nil
	return ev
}

func (s *stream) push(ev Event) {
	s.evMu.Lock()
	s.events = append(s.events, ev)
	s.evMu.Unlock()
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

// precheck answers for a stream that must not call the plugin: closed,
// failed, or bypassed by fail-open. Caller holds mu.
func (s *stream) precheck() (Result, bool) {
	switch {
	case s.closed:
		return Result{Action: abi.ActionContinue, Failure: errClosed}, true
	case s.skip:
		return Result{Action: abi.ActionContinue}, true
	case s.failed != nil:
		return s.failure(s.failed), true
	case s.in.failed != nil:
		// Failed, or closed under the stream (Plugin.Close): errClosed.
		s.failed = s.in.failed
		return s.failure(s.failed), true
	}
	return Result{}, false
}

// failure applies the failure policy: fail-open continues and bypasses the
// plugin; fail-closed replies locally on HTTP and closes a TCP connection.
// Caller holds mu.
func (s *stream) failure(err error) Result {
	cfg := &s.in.plugin.cfg
	if cfg.FailurePolicy == FailOpen {
		s.skip = true
		return Result{Action: abi.ActionContinue, Failure: err}
	}
	if s.tcp != nil {
		return Result{Action: abi.ActionPause, Failure: err, Close: true}
	}
	return Result{
		Action:        abi.ActionPause,
		Failure:       err,
		LocalResponse: &LocalResponse{Status: cfg.FailStatus, Details: "wasm_fail_stream", GRPCStatus: 14},
	}
}

// Fail applies the failure policy to the stream from outside, as if its
// instance had failed with err: the stream receives an EventFailed with the
// policy's Result (fail-closed: a local response, or a close for TCP;
// fail-open: continue), its outbound calls are cancelled, and the plugin is
// never called for it again, not even when it is closed. A server uses it
// to let go of a plugin it is retiring. It does nothing if the stream is
// closed or has failed already. It must not be called from inside a
// callback of the stream's plugin.
func (s *stream) Fail(err error) {
	s.in.lock()
	defer s.in.mu.Unlock()
	if s.closed || s.failed != nil {
		return
	}
	s.in.cancelCalls(s.id)
	s.instanceFailed(err)
}

// instanceFailed is called by instance.fail for every live stream. The
// stream running the failing call gets the failure in its Result; the
// others get an event, since they may be paused waiting. Caller holds mu.
func (s *stream) instanceFailed(err error) {
	if s.closed || s.failed != nil {
		return
	}
	s.failed = err
	if s.in.frame != s {
		s.push(Event{Kind: EventFailed, Result: s.failure(err)})
	}
}

// finish folds the call's outcome and deferred actions into a Result and
// delivers actions aimed at other streams. dir is the direction the
// callback was about. Caller holds mu.
func (s *stream) finish(dir abi.StreamType, action abi.Action, err error) Result {
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
	case a.local != nil && s.tcp != nil:
		r.Action, r.Close, r.Reset = abi.ActionPause, true, true
	case a.local != nil:
		r.Action, r.LocalResponse = abi.ActionPause, a.local
	case a.close:
		r.Action, r.Close = abi.ActionPause, true
	}
	return r
}

// bodyCall appends chunk to b, runs fn(ctx, len, eos) for direction dir,
// and releases the buffered bytes in the Result when the plugin continues.
// A Pause keeps them for the next call, which then sees the total. Caller
// holds mu.
func (s *stream) bodyCall(b *body, dir abi.StreamType, ph phase, fn api.Function, chunk []byte, eos bool) Result {
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
	raw, err := s.invoke(ph, fn, uint64(len(b.buf)), boolArg(eos))
	r := s.finish(dir, abi.BodyAction(uint32(raw)), err)
	if r.Action == abi.ActionContinue && r.LocalResponse == nil && !r.Close {
		r.Body, r.BodyModified = b.buf, b.modified
		*b = body{}
	}
	return r
}

// takeBody releases b's bytes after an asynchronous resume.
func (s *stream) takeBody(b *body) (data []byte, modified bool) {
	s.in.lock()
	defer s.in.mu.Unlock()
	data, modified = b.buf, b.modified
	*b = body{}
	return data, modified
}
