package server

// This file holds the stream: one Process call, its receive loop, the
// plugin generation it runs on, and the resumption of answers the plugin
// withheld (its asynchronous events).

import (
	"errors"
	"io"
	"log/slog"
	"runtime/debug"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/wasm-callout/wasm-callout/abi"
	"github.com/wasm-callout/wasm-callout/host"
)

// stream is one Process call: one HTTP request and its response.
type stream struct {
	srv *Server
	gs  extprocv3.ExternalProcessor_ProcessServer
	log *slog.Logger
	// plugin is the generation this stream runs on, from first message to
	// end, whatever happens to the server's current plugin meanwhile.
	// lease holds it; expired is the lease's expiry, nil once handled.
	// A chain of several plugins holds one lease per plugin (chain; plugin
	// and lease are then its first) and expired is the server's expiry
	// channel.
	plugin   *host.Plugin
	lease    *lease
	expired  <-chan struct{}
	chain    *chainDef
	leases   []*lease
	leaseBuf [1]*lease // room for the lease of a chain of one
	// hs is the plugin's HTTP context: a *host.HTTPStream, or a
	// *chainStream over one per plugin of a chain.
	hs    pluginStream
	props attributeSource
	dirs  [2]*direction

	held               held           // bytes kept across messages, against the limits
	mutations          mutationPolicy // how header changes are encoded for this client
	flow               bool           // the client sent flow_control_init: grant window (grpc.go)
	noPlugin           bool           // fail-open without an instance: everything continues
	failed             bool           // a plugin failure was reported
	msgs               int
	observability      bool
	protocolConfig     bool
	sendWithoutWaiting bool
	overrideSent       bool
	finished           bool // an immediate response ended the stream
	local              bool // an immediate response was sent
	limited            bool // a limit ended the stream (Outcome)
	sentProps          map[string]string
}

// Process implements extprocv3.ExternalProcessorServer: one call per HTTP
// request. The plugin's HTTP context is created on the first message and
// closed (proxy_on_log, proxy_on_done, proxy_on_delete) exactly once when
// the stream ends, however it ends. Envoy ending the stream (EOF,
// cancellation, reset) is a normal end.
func (s *Server) Process(gs extprocv3.ExternalProcessor_ProcessServer) (err error) {
	if err := s.enter(ServiceExtProc); err != nil {
		return err
	}
	defer s.leave(ServiceExtProc)
	st := &stream{srv: s, gs: gs, log: s.log, held: held{srv: s}}
	defer func() { s.finish(ServiceExtProc, outcomeOf(err, st.limited, st.failed, st.local)) }()
	defer st.held.set(0)
	defer st.releaseLeases() // the chain is chosen by the first message
	st.dirs[abi.StreamHTTPRequest] = &direction{typ: abi.StreamHTTPRequest, name: "request",
		headersMap: abi.MapHTTPRequestHeaders, trailersMap: abi.MapHTTPRequestTrailers}
	st.dirs[abi.StreamHTTPResponse] = &direction{typ: abi.StreamHTTPResponse, name: "response",
		headersMap: abi.MapHTTPResponseHeaders, trailersMap: abi.MapHTTPResponseTrailers}
	defer st.close()
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("ext_proc stream panicked", "panic", r, "stack", string(debug.Stack()))
			err = status.Error(codes.Internal, "wasm-callout: internal error")
		}
	}()
	err = st.run()
	if c := status.Code(err); c == codes.InvalidArgument || c == codes.FailedPrecondition {
		s.log.Debug("ext_proc stream rejected", "code", c, "err", status.Convert(err).Message())
	}
	return err
}

// run reads messages on a helper goroutine and handles them, and the
// plugin's asynchronous events, on this one, which alone sends.
func (st *stream) run() error {
	ctx := st.gs.Context()
	done := make(chan struct{})
	defer close(done)
	in := receive(st.gs.Recv, done)
	idle := st.srv.newIdleTimer()
	defer idle.stop()
	eof := false
	for {
		var notify <-chan struct{}
		if st.hs != nil {
			notify = st.hs.Notify()
		}
		recv := in
		if eof {
			recv = nil
		}
		select {
		case r := <-recv:
			if r.err != nil {
				if errors.Is(r.err, io.EOF) {
					eof = true
					// A half-closed client can return no more window.
					if err := st.flushWindowed(); err != nil {
						return err
					}
					break
				}
				switch status.Code(r.err) {
				case codes.Canceled, codes.DeadlineExceeded:
					return nil
				}
				return r.err
			}
			idle.reset()
			if err := st.receive(r.msg); err != nil {
				return err
			}
		case <-notify:
			if err := st.events(); err != nil {
				return err
			}
		case <-st.expired:
			st.expire()
		case <-idle.C():
			st.srv.stats.limitRefusals.Add(1)
			return idle.err()
		case <-ctx.Done():
			return nil
		}
		st.held.set(st.holding())
		if st.finished {
			return nil
		}
		// After a half-close, stay only for answers the plugin still owes.
		if eof && !st.waiting() {
			return nil
		}
	}
}

// expire lets go of the stream's plugin generation, replaced and past its
// drain timeout. A stream that has not created its plugin context yet moves
// to the current generation, since nothing of it lives in the old one.
// Otherwise the host fails the stream as it would on an instance failure:
// an EventFailed, handled like any other, brings the failure policy
// (fail-closed: the fail status; fail-open: continue without the plugin),
// and the plugin is never called for this stream again, so the lease is
// released at once and the generation can close.
func (st *stream) expire() {
	st.expired = nil
	if st.leases != nil {
		st.expireChain()
		return
	}
	if st.hs == nil && !st.noPlugin {
		old := st.lease
		if l, ok := st.srv.acquireIn(old.slot); ok {
			st.lease = l
			st.plugin, st.expired = l.gen.plugin, l.expired()
			old.release()
		}
		return
	}
	if st.hs != nil {
		st.srv.gens.expiredStreams.Add(1)
		st.hs.Fail(ErrDrainTimeout)
	}
	st.lease.release()
}

func (st *stream) waiting() bool {
	for _, d := range st.dirs {
		if d.blocked != phaseNone || len(d.outq) > 0 {
			return true
		}
	}
	return false
}

// close ends the plugin's HTTP context. Bytes the plugin still holds are
// lost with the stream; when the direction had ended they can never have
// been delivered (STREAMED with trailers not sent), which is worth a warning.
func (st *stream) close() {
	if st.hs == nil {
		return
	}
	for _, d := range st.dirs {
		if st.finished || st.failed {
			break // the response was replaced, or the plugin is gone
		}
		if b, _ := st.hs.TakeBody(d.typ); len(b)+len(d.released) > 0 && d.ended && d.blocked == phaseNone {
			n := len(b) + len(d.released)
			st.srv.stats.lostBodyBytes.Add(int64(n))
			st.log.Warn("plugin held body bytes past the end of the body; ext_proc could not deliver them "+
				"(STREAMED mode with trailers not sent to the server; use BUFFERED or FULL_DUPLEX_STREAMED)",
				"direction", d.name, "bytes", n)
		}
	}
	st.hs.Close()
}

// receive validates a message and processes it, or queues it while its
// direction waits for the plugin (Envoy gives a filter that stopped
// iteration nothing more until it continues).
func (st *stream) receive(m *extprocv3.ProcessingRequest) error {
	now := monotonic()
	st.msgs++
	if u := m.GetClientWindowUpdate(); u != nil && st.msgs > 1 {
		// A gRPC client returning window (grpc.go), alone or with a
		// message; alone, there is nothing to answer.
		if err := st.windowUpdate(u); err != nil || m.GetRequest() == nil {
			return err
		}
	}
	if st.msgs == 1 {
		if err := st.selectChain(m); err != nil {
			return err
		}
		if err := st.configure(m); err != nil {
			return err
		}
	}
	d, ph, err := st.classify(m)
	if err != nil {
		return err
	}
	p := httpPhase(d.typ, ph)
	st.srv.stats.messages[p].Add(1)
	if a := m.GetAttributes()[AttributesKey]; a != nil {
		st.props.setAttributes(d.typ, a)
	}
	if md := m.GetMetadataContext(); md != nil {
		st.props.setMetadata(md)
	}
	skipped := d.skippedHeaders
	ignore, err := st.validate(d, ph, m)
	if err != nil || ignore {
		return err
	}
	if !st.observability && (ph != phaseBody || !d.bodyMode().duplex()) {
		d.arrived(p, now)
	}
	if d.skippedHeaders && !skipped {
		// A plugin in Envoy always sees headers first: run its headers
		// callback on an empty map (end_of_stream false); a pause holds
		// this message in the queue like any other.
		if err := st.process(d, phaseHeaders, nil); err != nil || st.finished {
			return err
		}
	}
	n := int64(len(bodyOf(m).GetBody()))
	queue := d.blocked != phaseNone || len(d.queue) > 0
	if queue || (ph == phaseBody && st.hs != nil) {
		if err := st.held.admit(st.holding(), n); err != nil {
			if err == errStreamBuffer {
				return st.overflow(d)
			}
			return err
		}
	}
	if queue {
		if max := st.srv.opts.Limits.MaxQueuedMessages; max > 0 && len(d.queue) >= max {
			st.srv.stats.limitRefusals.Add(1)
			st.limited = true
			return status.Errorf(codes.ResourceExhausted,
				"wasm-callout: %d messages queued behind the paused %s, the server's limit", max, d.name)
		}
		d.queue = append(d.queue, m)
		d.queued += n
		return nil
	}
	return st.process(d, ph, m)
}

func (st *stream) process(d *direction, ph phase, m *extprocv3.ProcessingRequest) error {
	if err := st.ensurePlugin(); err != nil || st.finished {
		return err
	}
	switch ph {
	case phaseHeaders:
		h := headersOf(m)
		return st.onHeaders(d, pairsFromProto(h.GetHeaders()), h.GetEndOfStream())
	case phaseBody:
		b := bodyOf(m)
		if d.bodyMode() == modeGRPC {
			if err := st.onBody(d, st.grpcIn(d, b), b.GetEndOfStream()); err != nil || st.finished {
				return err
			}
			return st.grantWindow(d)
		}
		return st.onBody(d, b.GetBody(), b.GetEndOfStream())
	default:
		return st.onTrailers(d, pairsFromProto(trailersOf(m).GetTrailers()))
	}
}

// drain processes the messages queued while d waited for the plugin.
func (st *stream) drain(d *direction) error {
	for d.blocked == phaseNone && len(d.queue) > 0 && !st.finished {
		m := d.queue[0]
		d.queue[0] = nil
		d.queue = d.queue[1:]
		d.queued -= int64(len(bodyOf(m).GetBody()))
		_, ph, _ := st.classify(m)
		if err := st.process(d, ph, m); err != nil {
			return err
		}
	}
	return nil
}

// ensurePlugin creates the plugin's HTTP context on the first message. With
// no healthy instance the plugin's failure policy applies.
func (st *stream) ensurePlugin() error {
	if st.hs != nil || st.noPlugin {
		return nil
	}
	if st.leases != nil {
		return st.newChainStream()
	}
	hs, err := st.plugin.NewHTTPStream(&st.props)
	if err == nil {
		st.hs = hs
		return nil
	}
	if errors.Is(err, host.ErrOverloaded) {
		return st.srv.shed()
	}
	cfg := st.plugin.Config()
	if cfg.FailurePolicy == host.FailOpen {
		st.noPlugin = true
		st.pluginFailed(err, false)
		return nil
	}
	st.pluginFailed(err, true)
	return st.immediate(&host.LocalResponse{Status: cfg.FailStatus, Details: detailsFailStream, GRPCStatus: grpcStatusUnavail})
}

// pluginFailed logs and counts the stream's first plugin failure; attrs
// name the plugin of a chain.
func (st *stream) pluginFailed(err error, closed bool, attrs ...any) {
	if st.failed {
		return
	}
	st.failed = true
	st.srv.stats.pluginFailures.Add(1)
	attrs = append(attrs, "err", err)
	if closed {
		st.log.Warn("plugin failed; answering the request with the failure status (fail-closed)", attrs...)
	} else {
		st.log.Warn("plugin failed; continuing without it for this request (fail-open)", attrs...)
	}
}

// settle handles what every callback result may carry besides its action.
// It reports stop when the stream has ended.
func (st *stream) settle(d *direction, r host.Result) (stop bool, err error) {
	if r.Failure != nil {
		st.pluginFailed(r.Failure, r.LocalResponse != nil)
	}
	if r.ClearRouteCache {
		d.clearRouteCache = true
	}
	switch {
	case r.LocalResponse != nil:
		return true, st.immediate(r.LocalResponse)
	case r.Close:
		return true, st.closeStream()
	}
	return false, nil
}

// ---- asynchronous events ----

func (st *stream) events() error {
	for _, ev := range st.hs.TakeEvents() {
		if st.finished {
			return nil
		}
		switch ev.Kind {
		case host.EventContinue:
			if ev.Stream > abi.StreamHTTPResponse {
				continue
			}
			d := st.dirs[ev.Stream]
			if ev.ClearRouteCache {
				d.clearRouteCache = true
			}
			if err := st.resume(d); err != nil {
				return err
			}
		case host.EventLocalResponse:
			return st.immediate(ev.LocalResponse)
		case host.EventClose:
			return st.closeStream()
		case host.EventFailed:
			r := ev.Result
			st.pluginFailed(r.Failure, r.LocalResponse != nil)
			if r.LocalResponse != nil {
				return st.immediate(r.LocalResponse)
			}
			// Fail-open: answer whatever waited; the host skips the plugin
			// from now on.
			for _, d := range st.dirs {
				if err := st.resume(d); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// resume sends the answer d withheld, if any, and what queued behind it.
// Without a withheld answer, it releases bytes the plugin had paused
// mid-body: at once in FULL_DUPLEX_STREAMED, with the next STREAMED
// answer otherwise.
func (st *stream) resume(d *direction) error {
	switch d.blocked {
	case phaseHeaders:
		d.blocked = phaseNone
		return st.answerHeaders(d)
	case phaseBody:
		d.blocked = phaseNone
		out, _ := st.takeBody(d)
		in := d.blockedIn
		d.blockedIn = nil
		if err := st.answerBody(d, in, out, true); err != nil {
			return err
		}
		return st.drain(d)
	case phaseTrailers:
		d.blocked = phaseNone
		return st.answerTrailers(d)
	}
	if !d.answeredHeaders || d.trailersAnswered {
		return nil
	}
	out, _ := st.takeBody(d)
	if len(out) == 0 {
		return nil
	}
	if d.bodyMode().duplex() {
		return st.sendStreamed(d, out, false)
	}
	d.released = append(d.released, out...)
	return nil
}
