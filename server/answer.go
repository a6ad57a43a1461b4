package server

// This file holds the building and sending of answers: the headers
// answer and its mode override, immediate responses, the per-message
// timeout extension, and the header mutations and dynamic metadata every
// answer carries.

import (
	"errors"
	"io"
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

// Details of the immediate responses the server makes up itself.
const (
	detailsFailStream  = "wasm_fail_stream"        // no instance (the host uses it for failures too)
	detailsCloseStream = "wasm_close_stream"       // proxy_close_stream
	detailsUndelivered = "wasm_body_undeliverable" // STREAMED body held past its end
	grpcStatusInternal = 13
	grpcStatusUnavail  = 14
	noGRPCStatus       = -1
)

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
	if d.skippedHeaders {
		// Envoy sent no headers, so nothing answers them; in the modes
		// where Envoy still holds the headers, the plugin's changes go
		// with the first body answer.
		d.answeredHeaders = true
		switch d.bodyMode() {
		case modeBuffered, modePartial, modeUnknown:
			d.headersOpen = true
		}
		return st.drain(d)
	}
	cr := st.common(d, st.takeMutation(d.headersMap, kindHeaders, st.skipContentLength(d)), nil)
	resp := headersAnswer(d.typ, cr, st.modeOverride())
	d.answeredHeaders = true
	switch d.bodyMode() {
	case modeBuffered, modePartial, modeUnknown:
		// Envoy keeps the headers until the body answer.
		d.headersOpen = !d.headersEOS
	}
	st.answered(d, httpPhase(d.typ, phaseHeaders))
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
	if st.overrideSent || st.srv.opts.DisableModeOverride || !st.protocolConfig || st.observability || st.sendWithoutWaiting ||
		st.mutations.client == ClientGRPC { // gRFC A93 clients take no mode_override
		return nil
	}
	req, resp := st.dirs[abi.StreamHTTPRequest], st.dirs[abi.StreamHTTPResponse]
	if req.mode == filterv3.ProcessingMode_FULL_DUPLEX_STREAMED || resp.mode == filterv3.ProcessingMode_FULL_DUPLEX_STREAMED {
		return nil
	}
	want := func(d *direction) bool {
		return st.wantBody(d.typ) && d.mode == filterv3.ProcessingMode_NONE && !d.answeredHeaders && !d.headersEOS
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
	case modeStreamed, modePartial, modeFullDuplex, modeGRPC:
		return true
	}
	return false
}

// common is the CommonResponse of a headers or body answer, or nil when
// it would say nothing (Envoy reads an absent one as CONTINUE). It sets
// clear_route_cache when the plugin asked for it: Envoy honours it on the
// request path only, and only alongside a header mutation.
func (st *stream) common(d *direction, hm *extprocv3.HeaderMutation, bm *extprocv3.BodyMutation) *extprocv3.CommonResponse {
	clearRoutes := d.clearRouteCache && d.typ == abi.StreamHTTPRequest
	d.clearRouteCache = false
	if hm == nil && bm == nil && !clearRoutes {
		return nil
	}
	return &extprocv3.CommonResponse{HeaderMutation: hm, BodyMutation: bm, ClearRouteCache: clearRoutes}
}

// Answers that change nothing are the same for every stream, so they are
// built once and shared: the most common answers then allocate nothing.
// Nothing may modify them; send copies one before adding dynamic metadata.
var (
	unchangedHeaders = [2]*extprocv3.ProcessingResponse{
		abi.StreamHTTPRequest: {Response: &extprocv3.ProcessingResponse_RequestHeaders{
			RequestHeaders: &extprocv3.HeadersResponse{}}},
		abi.StreamHTTPResponse: {Response: &extprocv3.ProcessingResponse_ResponseHeaders{
			ResponseHeaders: &extprocv3.HeadersResponse{}}},
	}
	unchangedBody = [2]*extprocv3.ProcessingResponse{
		abi.StreamHTTPRequest: {Response: &extprocv3.ProcessingResponse_RequestBody{
			RequestBody: &extprocv3.BodyResponse{}}},
		abi.StreamHTTPResponse: {Response: &extprocv3.ProcessingResponse_ResponseBody{
			ResponseBody: &extprocv3.BodyResponse{}}},
	}
)

func shared(resp *extprocv3.ProcessingResponse) bool {
	for _, s := range [...]*extprocv3.ProcessingResponse{unchangedHeaders[0], unchangedHeaders[1], unchangedBody[0], unchangedBody[1]} {
		if resp == s {
			return true
		}
	}
	return false
}

// headersAnswer answers a headers message of direction typ with cr and a
// mode override, either of which may be nil.
func headersAnswer(typ abi.StreamType, cr *extprocv3.CommonResponse, override *filterv3.ProcessingMode) *extprocv3.ProcessingResponse {
	if cr == nil && override == nil {
		return unchangedHeaders[typ]
	}
	hr := &extprocv3.HeadersResponse{Response: cr}
	if typ == abi.StreamHTTPRequest {
		return &extprocv3.ProcessingResponse{ModeOverride: override,
			Response: &extprocv3.ProcessingResponse_RequestHeaders{RequestHeaders: hr}}
	}
	return &extprocv3.ProcessingResponse{ModeOverride: override,
		Response: &extprocv3.ProcessingResponse_ResponseHeaders{ResponseHeaders: hr}}
}

// bodyAnswer answers a body message of direction typ with cr (nil: no
// change).
func bodyAnswer(typ abi.StreamType, cr *extprocv3.CommonResponse) *extprocv3.ProcessingResponse {
	if cr == nil {
		return unchangedBody[typ]
	}
	br := &extprocv3.BodyResponse{Response: cr}
	if typ == abi.StreamHTTPRequest {
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestBody{RequestBody: br}}
	}
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseBody{ResponseBody: br}}
}

// ---- ending ----

// immediate answers with an ImmediateResponse, which ends the stream.
func (st *stream) immediate(lr *host.LocalResponse) error {
	st.finished = true
	if st.observability {
		st.log.Debug("local response in observability mode: not sent", "status", lr.Status)
		return nil
	}
	ir, dropped := immediateResponse(lr, st.mutations)
	st.dropped(dropped, "local response")
	st.srv.stats.immediate.Add(1)
	st.local = true
	st.answeredImmediate()
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
		if shared(resp) {
			resp = &extprocv3.ProcessingResponse{Response: resp.Response}
		}
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
	m, dropped := headerMutation(changes, kind, st.mutations, skipContentLength)
	st.dropped(dropped, mt.String())
	return m
}

func (st *stream) dropped(ds []droppedHeader, where string) {
	for _, d := range ds {
		st.srv.stats.dropped[d.Class].Add(1)
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
			st.dropped([]droppedHeader{{c.Key, "changed after Envoy forwarded this map", DropLate}}, mt.String())
		}
	}
}

// extendTimeout asks Envoy to wait longer for an answer withheld while the
// plugin has an outbound call out: Envoy's per-message timer
// (message_timeout, 200 ms by default) would otherwise fail the request
// before the call can answer. Envoy takes override_message_timeout alone in
// its own message, only up to its max_message_timeout (Options), once per
// withheld message, which is when this sends it.
func (st *stream) extendTimeout(d *direction) error {
	limit := st.srv.opts.MaxMessageTimeout
	// A gRPC client (gRFC A93) has no per-message timer to extend, and
	// its first answer must be the request headers'.
	if limit <= 0 || st.hs == nil || st.observability || d.bodyMode().duplex() || st.mutations.client == ClientGRPC {
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
	st.srv.stats.svc[ServiceExtProc].timeoutOverrides.Add(1)
	return st.send(&extprocv3.ProcessingResponse{OverrideMessageTimeout: durationpb.New(min(want, limit))})
}

// callTimeoutMargin is added to a call's remaining time when asking Envoy
// to wait, so that the plugin's own timeout, not Envoy's, decides.
const callTimeoutMargin = 100 * time.Millisecond
