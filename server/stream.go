package server

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime/debug"
	"strconv"
	"time"

	filterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/wasm-callout/wasm-callout/abi"
	"github.com/wasm-callout/wasm-callout/host"
)

// maxStreamedChunk bounds the body of one FULL_DUPLEX_STREAMED answer; a
// larger output is split (Envoy's gRPC client may limit message size).
const maxStreamedChunk = 64 << 10

// Details of the immediate responses the server makes up itself.
const (
	detailsFailStream  = "wasm_fail_stream"        // no instance (the host uses it for failures too)
	detailsCloseStream = "wasm_close_stream"       // proxy_close_stream
	detailsUndelivered = "wasm_body_undeliverable" // STREAMED body held past its end
	grpcStatusInternal = 13
	grpcStatusUnavail  = 14
	noGRPCStatus       = -1
)

// bodyMode is a direction's body send mode as the server handles it.
type bodyMode uint8

const (
	modeNone bodyMode = iota
	modeStreamed
	modeBuffered
	modePartial    // BUFFERED_PARTIAL
	modeFullDuplex // FULL_DUPLEX_STREAMED
	// modeUnknown: Envoy did not say (no protocol_config: Envoy before
	// 1.35, or observability mode). Bodies are answered one per message,
	// as STREAMED, with header mutations allowed in the first.
	modeUnknown
)

var modeNames = [...]string{"NONE", "STREAMED", "BUFFERED", "BUFFERED_PARTIAL", "FULL_DUPLEX_STREAMED", "unknown"}

func (m bodyMode) String() string { return modeNames[m] }

// phase is the kind of message a direction is waiting to answer.
type phase uint8

const (
	phaseNone phase = iota
	phaseHeaders
	phaseBody
	phaseTrailers
)

// direction is one side of the HTTP stream (request or response).
type direction struct {
	typ         abi.StreamType
	name        string
	headersMap  abi.MapType
	trailersMap abi.MapType

	mode      filterv3.ProcessingMode_BodySendMode
	modeKnown bool // from protocol_config
	// overrideRequested: the server asked for BUFFERED with mode_override;
	// a body arriving while mode is NONE means Envoy honoured it.
	overrideRequested bool

	// What the client sent, updated as messages arrive (validation).
	gotHeaders, headersEOS bool
	bodyMsgs               int
	bodyEOS, gotTrailers   bool
	ended                  bool

	// What the server answered, updated as messages are processed.
	blocked          phase  // an answer withheld until the plugin resumes
	blockedIn        []byte // the withheld body message's bytes
	queue            []*extprocv3.ProcessingRequest
	answeredHeaders  bool
	headersOpen      bool // Envoy still applies header mutations in the next body answer
	trailersAnswered bool
	released         []byte // resumed bytes waiting for the next STREAMED answer
	clearRouteCache  bool
}

func (d *direction) bodyMode() bodyMode {
	if !d.modeKnown {
		return modeUnknown
	}
	switch d.mode {
	case filterv3.ProcessingMode_STREAMED:
		return modeStreamed
	case filterv3.ProcessingMode_BUFFERED:
		return modeBuffered
	case filterv3.ProcessingMode_BUFFERED_PARTIAL:
		return modePartial
	case filterv3.ProcessingMode_FULL_DUPLEX_STREAMED:
		return modeFullDuplex
	}
	if d.overrideRequested {
		return modeBuffered
	}
	return modeNone
}

// stream is one Process call: one HTTP request and its response.
type stream struct {
	srv *Server
	gs  extprocv3.ExternalProcessor_ProcessServer
	log *slog.Logger
	// plugin is the generation this stream runs on, from first message to
	// end, whatever happens to the server's current plugin meanwhile.
	// lease holds it; expired is the lease's expiry, nil once handled.
	plugin  *host.Plugin
	lease   *lease
	expired <-chan struct{}
	hs      *host.HTTPStream
	props   attributeSource
	dirs    [2]*direction

	noPlugin           bool // fail-open without an instance: everything continues
	failed             bool // a plugin failure was reported
	msgs               int
	observability      bool
	protocolConfig     bool
	sendWithoutWaiting bool
	overrideSent       bool
	finished           bool // an immediate response ended the stream
	sentProps          map[string]string
}

type received struct {
	msg *extprocv3.ProcessingRequest
	err error
}

// Process implements extprocv3.ExternalProcessorServer: one call per HTTP
// request. The plugin's HTTP context is created on the first message and
// closed (proxy_on_log, proxy_on_done, proxy_on_delete) exactly once when
// the stream ends, however it ends. Envoy ending the stream (EOF,
// cancellation, reset) is a normal end.
func (s *Server) Process(gs extprocv3.ExternalProcessor_ProcessServer) (err error) {
	s.stats.streamsStarted.Add(1)
	s.stats.streamsActive.Add(1)
	defer s.stats.streamsActive.Add(-1)
	st := &stream{srv: s, gs: gs, log: s.log}
	st.lease = s.acquireLease()
	st.plugin, st.expired = st.lease.gen.plugin, st.lease.expired()
	defer func() { st.lease.release() }() // expire may move the stream
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
		s.stats.protocolErrors.Add(1)
		s.log.Debug("ext_proc stream rejected", "code", c, "err", status.Convert(err).Message())
	}
	return err
}

// run reads messages on a helper goroutine and handles them, and the
// plugin's asynchronous events, on this one, which alone sends.
func (st *stream) run() error {
	ctx := st.gs.Context()
	in := make(chan received)
	done := make(chan struct{})
	defer close(done)
	go func() {
		for {
			m, err := st.gs.Recv()
			select {
			case in <- received{m, err}:
			case <-done:
				return
			}
			if err != nil {
				return
			}
		}
	}()
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
					break
				}
				switch status.Code(r.err) {
				case codes.Canceled, codes.DeadlineExceeded:
					return nil
				}
				return r.err
			}
			if err := st.receive(r.msg); err != nil {
				return err
			}
		case <-notify:
			if err := st.events(); err != nil {
				return err
			}
		case <-st.expired:
			st.expire()
		case <-ctx.Done():
			return nil
		}
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
	if st.hs == nil && !st.noPlugin {
		old := st.lease
		st.lease = st.srv.acquireLease()
		st.plugin, st.expired = st.lease.gen.plugin, st.lease.expired()
		old.release()
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
		if d.blocked != phaseNone {
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
	st.srv.stats.messagesReceived.Add(1)
	st.msgs++
	if st.msgs == 1 {
		if err := st.configure(m); err != nil {
			return err
		}
	}
	d, ph, err := st.classify(m)
	if err != nil {
		return err
	}
	if a := m.GetAttributes()[AttributesKey]; a != nil {
		st.props.setAttributes(d.typ, a)
	}
	if md := m.GetMetadataContext(); md != nil {
		st.props.setMetadata(md)
	}
	ignore, err := st.validate(d, ph, m)
	if err != nil || ignore {
		return err
	}
	if d.blocked != phaseNone || len(d.queue) > 0 {
		d.queue = append(d.queue, m)
		return nil
	}
	return st.process(d, ph, m)
}

// configure reads what the first message says about the stream.
func (st *stream) configure(m *extprocv3.ProcessingRequest) error {
	st.observability = m.GetObservabilityMode()
	pc := m.GetProtocolConfig()
	if pc == nil {
		// Envoy before 1.35 (and observability mode) does not say: assume
		// Envoy's defaults but accept bodies (modeUnknown).
		return nil
	}
	st.protocolConfig = true
	st.sendWithoutWaiting = pc.GetSendBodyWithoutWaitingForHeaderResponse()
	for _, x := range []struct {
		d    *direction
		mode filterv3.ProcessingMode_BodySendMode
	}{
		{st.dirs[abi.StreamHTTPRequest], pc.GetRequestBodyMode()},
		{st.dirs[abi.StreamHTTPResponse], pc.GetResponseBodyMode()},
	} {
		switch x.mode {
		case filterv3.ProcessingMode_NONE, filterv3.ProcessingMode_STREAMED, filterv3.ProcessingMode_BUFFERED,
			filterv3.ProcessingMode_BUFFERED_PARTIAL, filterv3.ProcessingMode_FULL_DUPLEX_STREAMED:
		default:
			return status.Errorf(codes.Unimplemented, "%s_body_mode %v is not supported", x.d.name, x.mode)
		}
		x.d.mode, x.d.modeKnown = x.mode, true
	}
	return nil
}

func (st *stream) classify(m *extprocv3.ProcessingRequest) (*direction, phase, error) {
	req, resp := st.dirs[abi.StreamHTTPRequest], st.dirs[abi.StreamHTTPResponse]
	switch m.GetRequest().(type) {
	case *extprocv3.ProcessingRequest_RequestHeaders:
		return req, phaseHeaders, nil
	case *extprocv3.ProcessingRequest_RequestBody:
		return req, phaseBody, nil
	case *extprocv3.ProcessingRequest_RequestTrailers:
		return req, phaseTrailers, nil
	case *extprocv3.ProcessingRequest_ResponseHeaders:
		return resp, phaseHeaders, nil
	case *extprocv3.ProcessingRequest_ResponseBody:
		return resp, phaseBody, nil
	case *extprocv3.ProcessingRequest_ResponseTrailers:
		return resp, phaseTrailers, nil
	}
	return nil, phaseNone, status.Error(codes.InvalidArgument,
		"ProcessingRequest sets none of request_headers, request_body, request_trailers, "+
			"response_headers, response_body, response_trailers (flow control is not supported)")
}

func failedPrecondition(format string, args ...any) error {
	return status.Error(codes.FailedPrecondition, fmt.Sprintf(format, args...))
}

// validate checks that the message is legal for its direction now and
// records it. ignore is set for a repeated FULL_DUPLEX_STREAMED end of
// stream, which Envoy 1.35+ may send (envoyproxy/envoy#46237).
func (st *stream) validate(d *direction, ph phase, m *extprocv3.ProcessingRequest) (ignore bool, err error) {
	switch ph {
	case phaseHeaders:
		if d.gotHeaders {
			return false, failedPrecondition("%s_headers received twice", d.name)
		}
		d.gotHeaders = true
		if headersOf(m).GetEndOfStream() {
			d.headersEOS, d.ended = true, true
		}
	case phaseBody:
		b := bodyOf(m)
		if !d.gotHeaders {
			return false, failedPrecondition("%s_body before %s_headers (header mode SKIP is not supported: the plugin needs the headers)", d.name, d.name)
		}
		if d.ended {
			if d.bodyEOS && b.GetEndOfStream() && d.bodyMode() == modeFullDuplex {
				st.srv.stats.duplicateEOS.Add(1)
				st.log.Debug("ignoring a repeated end_of_stream body message", "direction", d.name, "bytes", len(b.GetBody()))
				return true, nil
			}
			if d.gotTrailers {
				return false, failedPrecondition("%s_body after %s_trailers", d.name, d.name)
			}
			return false, failedPrecondition("%s_body after the end of the %s", d.name, d.name)
		}
		switch mode := d.bodyMode(); mode {
		case modeNone:
			return false, failedPrecondition("%s_body received but protocol_config says %s_body_mode NONE", d.name, d.name)
		case modeBuffered, modePartial:
			if d.bodyMsgs > 0 {
				return false, failedPrecondition("second %s_body message in %v mode", d.name, mode)
			}
		}
		d.bodyMsgs++
		if b.GetEndOfStream() {
			d.bodyEOS, d.ended = true, true
		}
	case phaseTrailers:
		if !d.gotHeaders {
			return false, failedPrecondition("%s_trailers before %s_headers", d.name, d.name)
		}
		if d.gotTrailers {
			return false, failedPrecondition("%s_trailers received twice", d.name)
		}
		if d.ended {
			return false, failedPrecondition("%s_trailers after end_of_stream", d.name)
		}
		d.gotTrailers, d.ended = true, true
	}
	return false, nil
}

func headersOf(m *extprocv3.ProcessingRequest) *extprocv3.HttpHeaders {
	if h := m.GetRequestHeaders(); h != nil {
		return h
	}
	return m.GetResponseHeaders()
}

func bodyOf(m *extprocv3.ProcessingRequest) *extprocv3.HttpBody {
	if b := m.GetRequestBody(); b != nil {
		return b
	}
	return m.GetResponseBody()
}

func trailersOf(m *extprocv3.ProcessingRequest) *extprocv3.HttpTrailers {
	if t := m.GetRequestTrailers(); t != nil {
		return t
	}
	return m.GetResponseTrailers()
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
	hs, err := st.plugin.NewHTTPStream(&st.props)
	if err == nil {
		st.hs = hs
		return nil
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

func (st *stream) pluginFailed(err error, closed bool) {
	if st.failed {
		return
	}
	st.failed = true
	st.srv.stats.pluginFailures.Add(1)
	if closed {
		st.log.Warn("plugin failed; answering the request with the failure status (fail-closed)", "err", err)
	} else {
		st.log.Warn("plugin failed; continuing without it for this request (fail-open)", "err", err)
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

// ---- headers ----

func (st *stream) onHeaders(d *direction, pairs []abi.Pair, eos bool) error {
	r := host.Result{Action: abi.ActionContinue}
	if st.hs != nil {
		if d.typ == abi.StreamHTTPRequest {
			r = st.hs.RequestHeaders(pairs, eos)
		} else {
			r = st.hs.ResponseHeaders(pairs, eos)
		}
	}
	if stop, err := st.settle(d, r); stop || err != nil {
		return err
	}
	if r.Action == abi.ActionPause {
		d.blocked = phaseHeaders
		return st.extendTimeout(d)
	}
	return st.answerHeaders(d)
}

func (st *stream) answerHeaders(d *direction) error {
	cr := &extprocv3.CommonResponse{}
	cr.HeaderMutation = st.takeMutation(d.headersMap, kindHeaders, st.skipContentLength(d))
	st.routeCache(d, cr)
	resp := &extprocv3.ProcessingResponse{ModeOverride: st.modeOverride()}
	hr := &extprocv3.HeadersResponse{Response: orNil(cr)}
	if d.typ == abi.StreamHTTPRequest {
		resp.Response = &extprocv3.ProcessingResponse_RequestHeaders{RequestHeaders: hr}
	} else {
		resp.Response = &extprocv3.ProcessingResponse_ResponseHeaders{ResponseHeaders: hr}
	}
	d.answeredHeaders = true
	switch d.bodyMode() {
	case modeBuffered, modePartial, modeUnknown:
		// Envoy keeps the headers until the body answer.
		d.headersOpen = !d.headersEOS
	}
	if err := st.send(resp); err != nil {
		return err
	}
	return st.drain(d)
}

// modeOverride asks Envoy for BUFFERED bodies in the directions where the
// plugin has a body callback and protocol_config says NONE. It is sent
// once, with the first headers answer that can use it, and only where
// Envoy could honour it (not with FULL_DUPLEX_STREAMED or
// send_body_without_waiting_for_header_response). Body modes in an
// override are literal, so both are set; header and trailer modes stay
// DEFAULT (unchanged).
func (st *stream) modeOverride() *filterv3.ProcessingMode {
	if st.overrideSent || st.srv.opts.DisableModeOverride || !st.protocolConfig || st.observability || st.sendWithoutWaiting {
		return nil
	}
	req, resp := st.dirs[abi.StreamHTTPRequest], st.dirs[abi.StreamHTTPResponse]
	if req.mode == filterv3.ProcessingMode_FULL_DUPLEX_STREAMED || resp.mode == filterv3.ProcessingMode_FULL_DUPLEX_STREAMED {
		return nil
	}
	want := func(d *direction) bool {
		return st.lease.gen.wantBody[d.typ] && d.mode == filterv3.ProcessingMode_NONE && !d.answeredHeaders && !d.headersEOS
	}
	wantReq, wantResp := want(req), want(resp)
	if !wantReq && !wantResp {
		return nil
	}
	st.overrideSent = true
	m := &filterv3.ProcessingMode{RequestBodyMode: req.mode, ResponseBodyMode: resp.mode}
	if wantReq {
		m.RequestBodyMode, req.overrideRequested = filterv3.ProcessingMode_BUFFERED, true
	}
	if wantResp {
		m.ResponseBodyMode, resp.overrideRequested = filterv3.ProcessingMode_BUFFERED, true
	}
	return m
}

// skipContentLength reports whether Envoy removes content-length from this
// direction's headers (and ignores setting it).
func (st *stream) skipContentLength(d *direction) bool {
	switch d.bodyMode() {
	case modeStreamed, modePartial, modeFullDuplex:
		return true
	}
	return false
}

// routeCache sets clear_route_cache when the plugin asked for it. Envoy
// honours it on the request path only, and only alongside a header
// mutation.
func (st *stream) routeCache(d *direction, cr *extprocv3.CommonResponse) {
	if d.clearRouteCache && d.typ == abi.StreamHTTPRequest {
		cr.ClearRouteCache = true
	}
	d.clearRouteCache = false
}

func orNil(cr *extprocv3.CommonResponse) *extprocv3.CommonResponse {
	if cr.HeaderMutation == nil && cr.BodyMutation == nil && !cr.ClearRouteCache &&
		cr.Status == extprocv3.CommonResponse_CONTINUE && cr.Trailers == nil {
		return nil
	}
	return cr
}

// ---- body ----

func (st *stream) onBody(d *direction, chunk []byte, eos bool) error {
	r := host.Result{Action: abi.ActionContinue, Body: chunk}
	if st.hs != nil {
		if d.typ == abi.StreamHTTPRequest {
			r = st.hs.RequestBody(chunk, eos)
		} else {
			r = st.hs.ResponseBody(chunk, eos)
		}
	}
	if stop, err := st.settle(d, r); stop || err != nil {
		return err
	}
	if r.Action == abi.ActionContinue {
		return st.answerBody(d, chunk, r.Body, eos)
	}
	mode := d.bodyMode()
	switch {
	case eos:
		// Wait for the plugin to resume; the bytes stay in the host.
		d.blocked, d.blockedIn = phaseBody, chunk
		return st.extendTimeout(d)
	case mode == modeFullDuplex:
		// Answers are M:N: nothing is owed until the plugin releases bytes.
		return nil
	case mode == modeBuffered || mode == modePartial:
		// This was the only body message (trailers follow, or the rest of
		// a partial body passes unprocessed): the plugin cannot get more,
		// and Envoy holds the trailers until this answer, so release what
		// the plugin has now.
		out, _ := st.takeBody(d)
		st.log.Debug("plugin paused the only body message of its direction; releasing it",
			"direction", d.name, "mode", mode)
		return st.answerBody(d, chunk, out, false)
	default:
		// STREAMED: a pause is emulated by clearing the chunk at Envoy; the
		// host keeps the bytes and they go out with the chunk that
		// continues.
		return st.answerBody(d, chunk, nil, false)
	}
}

// answerBody answers one body message: in is what Envoy sent, out what
// must replace it.
func (st *stream) answerBody(d *direction, in, out []byte, eos bool) error {
	if len(d.released) > 0 {
		out = append(d.released, out...)
		d.released = nil
	}
	mode := d.bodyMode()
	if mode == modeFullDuplex {
		return st.sendStreamed(d, out, eos)
	}
	cr := &extprocv3.CommonResponse{}
	changed := !bytes.Equal(in, out)
	if d.headersOpen {
		if changed && (mode == modeBuffered || mode == modeUnknown) {
			st.fixContentLength(d, len(out))
		}
		cr.HeaderMutation = st.takeMutation(d.headersMap, kindHeaders, st.skipContentLength(d))
		d.headersOpen = false
	}
	if changed {
		cr.BodyMutation = bodyMutation(out)
	}
	st.routeCache(d, cr)
	br := &extprocv3.BodyResponse{Response: orNil(cr)}
	resp := &extprocv3.ProcessingResponse{}
	if d.typ == abi.StreamHTTPRequest {
		resp.Response = &extprocv3.ProcessingResponse_RequestBody{RequestBody: br}
	} else {
		resp.Response = &extprocv3.ProcessingResponse_ResponseBody{ResponseBody: br}
	}
	return st.send(resp)
}

// fixContentLength keeps content-length equal to the new body length in
// BUFFERED mode, where Envoy keeps the header and refuses a body mutation
// of another length. The change goes out with the body answer.
func (st *stream) fixContentLength(d *direction, n int) {
	if st.hs == nil {
		return
	}
	want := strconv.Itoa(n)
	st.hs.WithHeaders(d.headersMap, func(hm *host.HeaderMap) {
		if cl, ok := hm.Get("content-length"); ok && cl != want {
			hm.Replace("content-length", want)
		}
	})
}

// sendStreamed answers FULL_DUPLEX_STREAMED body data: out in chunks of at
// most maxStreamedChunk; nothing when out is empty unless eos must go.
func (st *stream) sendStreamed(d *direction, out []byte, eos bool) error {
	for {
		n := min(len(out), maxStreamedChunk)
		last := n == len(out)
		if n == 0 && !eos {
			return nil
		}
		br := &extprocv3.BodyResponse{Response: &extprocv3.CommonResponse{BodyMutation: streamedBody(out[:n], eos && last)}}
		resp := &extprocv3.ProcessingResponse{}
		if d.typ == abi.StreamHTTPRequest {
			resp.Response = &extprocv3.ProcessingResponse_RequestBody{RequestBody: br}
		} else {
			resp.Response = &extprocv3.ProcessingResponse_ResponseBody{ResponseBody: br}
		}
		if err := st.send(resp); err != nil {
			return err
		}
		if last {
			return nil
		}
		out = out[n:]
	}
}

func (st *stream) takeBody(d *direction) ([]byte, bool) {
	if st.hs == nil {
		return nil, false
	}
	return st.hs.TakeBody(d.typ)
}

// ---- trailers ----

func (st *stream) onTrailers(d *direction, pairs []abi.Pair) error {
	r := host.Result{Action: abi.ActionContinue}
	if st.hs != nil {
		if d.typ == abi.StreamHTTPRequest {
			r = st.hs.RequestTrailers(pairs)
		} else {
			r = st.hs.ResponseTrailers(pairs)
		}
	}
	if stop, err := st.settle(d, r); stop || err != nil {
		return err
	}
	if r.Action == abi.ActionPause {
		d.blocked = phaseTrailers
		return st.extendTimeout(d)
	}
	return st.answerTrailers(d)
}

// answerTrailers answers the trailers, after the body bytes the plugin
// still held: Envoy forwards a paused body when the trailers continue.
// Only FULL_DUPLEX_STREAMED can still carry them; in the other modes
// Envoy already has every body answer, so the request fails rather than
// lose data silently.
func (st *stream) answerTrailers(d *direction) error {
	held := d.released
	d.released = nil
	if b, _ := st.takeBody(d); len(b) > 0 {
		held = append(held, b...)
	}
	if len(held) > 0 && !st.observability {
		if d.bodyMode() != modeFullDuplex {
			return st.undeliverable(d, len(held))
		}
		if err := st.sendStreamed(d, held, false); err != nil {
			return err
		}
	}
	tr := &extprocv3.TrailersResponse{HeaderMutation: st.takeMutation(d.trailersMap, kindTrailers, false)}
	resp := &extprocv3.ProcessingResponse{}
	if d.typ == abi.StreamHTTPRequest {
		resp.Response = &extprocv3.ProcessingResponse_RequestTrailers{RequestTrailers: tr}
	} else {
		resp.Response = &extprocv3.ProcessingResponse_ResponseTrailers{ResponseTrailers: tr}
	}
	d.trailersAnswered = true
	if err := st.send(resp); err != nil {
		return err
	}
	return st.drain(d)
}

func (st *stream) undeliverable(d *direction, n int) error {
	st.srv.stats.lostBodyBytes.Add(int64(n))
	st.log.Warn("plugin held body bytes until the trailers; STREAMED ext_proc cannot deliver them, failing the request "+
		"(use BUFFERED or FULL_DUPLEX_STREAMED for plugins that buffer)", "direction", d.name, "bytes", n)
	return st.immediate(&host.LocalResponse{
		Status: st.plugin.Config().FailStatus, Details: detailsUndelivered, GRPCStatus: grpcStatusInternal,
	})
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

// extendTimeout asks Envoy to wait longer for an answer withheld while the
// plugin has an outbound call out: Envoy's per-message timer
// (message_timeout, 200 ms by default) would otherwise fail the request
// before the call can answer. Envoy takes override_message_timeout alone in
// its own message, only up to its max_message_timeout (Options), once per
// withheld message, which is when this sends it.
func (st *stream) extendTimeout(d *direction) error {
	limit := st.srv.opts.MaxMessageTimeout
	if limit <= 0 || st.hs == nil || st.observability || d.bodyMode() == modeFullDuplex {
		return nil
	}
	deadline, pending := st.hs.PendingCall()
	if !pending {
		return nil
	}
	want := limit
	if !deadline.IsZero() {
		want = time.Until(deadline) + callTimeoutMargin
	}
	if want <= st.srv.opts.MessageTimeout {
		return nil
	}
	st.srv.stats.timeoutOverrides.Add(1)
	return st.send(&extprocv3.ProcessingResponse{OverrideMessageTimeout: durationpb.New(min(want, limit))})
}

// callTimeoutMargin is added to a call's remaining time when asking Envoy
// to wait, so that the plugin's own timeout, not Envoy's, decides.
const callTimeoutMargin = 100 * time.Millisecond

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
	if d.bodyMode() == modeFullDuplex {
		return st.sendStreamed(d, out, false)
	}
	d.released = append(d.released, out...)
	return nil
}

// ---- ending ----

// immediate answers with an ImmediateResponse, which ends the stream.
func (st *stream) immediate(lr *host.LocalResponse) error {
	st.finished = true
	if st.observability {
		st.log.Debug("local response in observability mode: not sent", "status", lr.Status)
		return nil
	}
	ir, dropped := immediateResponse(lr, st.srv.opts.MutationRules)
	st.dropped(dropped, "local response")
	st.srv.stats.immediate.Add(1)
	return st.send(&extprocv3.ProcessingResponse{
		Response: &extprocv3.ProcessingResponse_ImmediateResponse{ImmediateResponse: ir},
	})
}

// closeStream stands for proxy_close_stream: ext_proc cannot reset the
// downstream stream, so the request gets an immediate response (which
// Envoy turns into a reset if the response has started).
func (st *stream) closeStream() error {
	st.log.Debug("plugin closed the stream")
	return st.immediate(&host.LocalResponse{Status: st.srv.opts.CloseStatus, Details: detailsCloseStream, GRPCStatus: noGRPCStatus})
}

// ---- sending ----

// send sends a response (not in observability mode), with the plugin's new
// property writes as dynamic metadata, then forgets header changes that
// can no longer reach Envoy.
func (st *stream) send(resp *extprocv3.ProcessingResponse) error {
	defer st.discardUndeliverable()
	if st.observability {
		return nil
	}
	if md := st.metadata(); md != nil {
		resp.DynamicMetadata = md
	}
	st.srv.stats.responsesSent.Add(1)
	if err := st.gs.Send(resp); err != nil {
		st.finished = true
		if status.Code(err) == codes.Canceled || errors.Is(err, io.EOF) {
			return nil
		}
		return err
	}
	return nil
}

func (st *stream) metadata() *structpb.Struct {
	if st.hs == nil {
		return nil
	}
	writes := st.hs.PropertyWrites()
	if len(writes) == 0 {
		return nil
	}
	if st.sentProps == nil {
		st.sentProps = map[string]string{}
	}
	md, skipped := propertyMetadata(st.srv.opts.MetadataNamespace, writes, st.sentProps)
	for _, k := range skipped {
		st.log.Debug("property value is not valid UTF-8; not sent as dynamic metadata", "property", k)
	}
	return md
}

// takeMutation returns the plugin's pending changes to one map as a
// HeaderMutation and marks them sent.
func (st *stream) takeMutation(mt abi.MapType, kind mapKind, skipContentLength bool) *extprocv3.HeaderMutation {
	if st.hs == nil {
		return nil
	}
	changes := st.hs.TakeHeaderChanges(mt)
	if len(changes) == 0 {
		return nil
	}
	m, dropped := headerMutation(changes, kind, st.srv.opts.MutationRules, skipContentLength)
	st.dropped(dropped, mt.String())
	return m
}

func (st *stream) dropped(ds []droppedHeader, where string) {
	for _, d := range ds {
		st.srv.stats.droppedMutations.Add(1)
		st.log.Debug("header change not sent to Envoy", "map", where, "header", d.Key, "reason", d.Reason)
	}
}

// deliverable reports whether changes to map mt can still reach Envoy.
func (st *stream) deliverable(mt abi.MapType) bool {
	d := st.dirs[abi.StreamHTTPRequest]
	if mt == abi.MapHTTPResponseHeaders || mt == abi.MapHTTPResponseTrailers {
		d = st.dirs[abi.StreamHTTPResponse]
	}
	if mt == d.headersMap {
		return !d.answeredHeaders || d.headersOpen
	}
	return !d.trailersAnswered
}

// discardUndeliverable drops changes made to maps Envoy no longer holds
// (for example request headers changed in a response callback, or in a
// STREAMED body callback after the headers went upstream).
func (st *stream) discardUndeliverable() {
	if st.hs == nil {
		return
	}
	for mt := abi.MapHTTPRequestHeaders; mt <= abi.MapHTTPResponseTrailers; mt++ {
		if st.deliverable(mt) {
			continue
		}
		for _, c := range st.hs.TakeHeaderChanges(mt) {
			st.dropped([]droppedHeader{{c.Key, "changed after Envoy forwarded this map"}}, mt.String())
		}
	}
}
