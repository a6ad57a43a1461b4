package envoytest

import (
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"

	filterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// errKind mirrors the absl status codes the filter distinguishes:
// FailedPrecondition means "spurious", anything else is a processing error.
type errKind int

const (
	errSpurious errKind = iota
	errInvalid
)

type procError struct {
	kind errKind
	msg  string
}

func (e *procError) Error() string { return e.msg }

func spurious(msg string) *procError { return &procError{kind: errSpurious, msg: msg} }
func invalid(msg string) *procError  { return &procError{kind: errInvalid, msg: msg} }

// onReceiveMessage is Filter::onReceiveMessage.
func (x *exchange) onReceiveMessage(r *extprocv3.ProcessingResponse) {
	if x.cfg.ObservabilityMode || x.processingComplete {
		x.stats.IgnoredMessages++
		return
	}
	if r.GetOverrideMessageTimeout() != nil {
		x.onNewTimeout(r)
		return
	}
	x.maybeOverrideMode(r)

	isLastBody := false
	var perr *procError
	switch resp := r.GetResponse().(type) {
	case *extprocv3.ProcessingResponse_RequestHeaders:
		x.setDynamicMetadata(r)
		perr = x.dec.handleHeadersResponse(resp.RequestHeaders)
	case *extprocv3.ProcessingResponse_ResponseHeaders:
		x.setDynamicMetadata(r)
		perr = x.enc.handleHeadersResponse(resp.ResponseHeaders)
	case *extprocv3.ProcessingResponse_RequestBody:
		isLastBody = x.dec.isLastBodyResponse(resp.RequestBody)
		x.setDynamicMetadata(r)
		perr = x.dec.handleBodyResponse(resp.RequestBody)
	case *extprocv3.ProcessingResponse_ResponseBody:
		isLastBody = x.enc.isLastBodyResponse(resp.ResponseBody)
		x.setDynamicMetadata(r)
		perr = x.enc.handleBodyResponse(resp.ResponseBody)
	case *extprocv3.ProcessingResponse_RequestTrailers:
		x.setDynamicMetadata(r)
		perr = x.dec.handleTrailersResponse(resp.RequestTrailers)
	case *extprocv3.ProcessingResponse_ResponseTrailers:
		x.setDynamicMetadata(r)
		perr = x.enc.handleTrailersResponse(resp.ResponseTrailers)
	case *extprocv3.ProcessingResponse_ImmediateResponse:
		if x.cfg.DisableImmediateResponse {
			perr = spurious("unhandled immediate response due to config disabled it")
			break
		}
		x.setDynamicMetadata(r)
		x.processingComplete = true
		x.dec.finishCall(cbIdle)
		x.enc.finishCall(cbIdle)
		x.closeStream("immediate response")
		x.sendImmediateResponse(resp.ImmediateResponse)
	default:
		// Includes streamed_immediate_response (not in the emulated Envoy)
		// and messages with no response at all.
		perr = spurious("unhandled message")
	}

	switch {
	case perr == nil:
		x.stats.MessagesReceived++
	case perr.kind == errSpurious:
		x.stats.SpuriousMessages++
		if x.failureModeAllow() {
			x.stats.FailureModeAllowed++
			x.closeStream("spurious message (failure_mode_allow)")
			x.clearAsyncState()
			x.processingComplete = true
		} else {
			x.handleErrorResponse(perr)
		}
	default:
		x.stats.MessagesReceived++
		x.handleErrorResponse(perr)
	}
	x.closeIfLastResponse(r, isLastBody)
}

// handleErrorResponse is Filter::handleErrorResponse.
func (x *exchange) handleErrorResponse(perr *procError) {
	x.processingComplete = true
	x.dec.finishCall(cbIdle)
	x.enc.finishCall(cbIdle)
	x.closeStream("error: " + perr.msg)
	x.sendLocalReply(x.cfg.statusOnErr, nil, nil, -1, perr.msg, false)
}

// onNewTimeout is Filter::onNewTimeout.
func (x *exchange) onNewTimeout(r *extprocv3.ProcessingResponse) {
	d := r.GetOverrideMessageTimeout()
	if d.CheckValid() != nil {
		x.stats.OverrideMessageTimeoutIgnored++
		return
	}
	ms := d.GetSeconds()*1000 + int64(d.GetNanos())/1e6
	maxMS := x.cfg.MaxMessageTimeout.Milliseconds()
	if ms < 1 || ms > maxMS {
		x.stats.OverrideMessageTimeoutIgnored++
		return
	}
	dur := time.Duration(ms) * time.Millisecond
	r1 := x.dec.restartMessageTimer(dur)
	r2 := x.enc.restartMessageTimer(dur)
	if !r1 && !r2 {
		x.stats.OverrideMessageTimeoutIgnored++
		return
	}
	x.stats.OverrideMessageTimeoutReceived++
}

// maybeOverrideMode applies mode_override under Envoy's conditions.
func (x *exchange) maybeOverrideMode(r *extprocv3.ProcessingResponse) {
	cfg := x.cfg
	if !cfg.AllowModeOverride || cfg.SendBodyWithoutWaitingForHeaderResponse ||
		cfg.mode.GetRequestBodyMode() == modeFullDuplex || cfg.mode.GetResponseBodyMode() == modeFullDuplex ||
		!(x.dec.cb == cbHeaders || x.enc.cb == cbHeaders) || r.GetModeOverride() == nil {
		return
	}
	m := effectiveModeOverride(r.GetModeOverride(), cfg.mode)
	allowed := len(cfg.AllowedOverrideModes) == 0
	for _, o := range cfg.AllowedOverrideModes {
		if m.GetRequestBodyMode() == o.GetRequestBodyMode() &&
			m.GetRequestTrailerMode() == o.GetRequestTrailerMode() &&
			m.GetResponseHeaderMode() == o.GetResponseHeaderMode() &&
			m.GetResponseBodyMode() == o.GetResponseBodyMode() &&
			m.GetResponseTrailerMode() == o.GetResponseTrailerMode() {
			allowed = true
			break
		}
	}
	if !allowed {
		x.stats.ModeOverridesDisallowed++
		return
	}
	x.stats.ModeOverrides++
	x.dec.setMode(m)
	x.enc.setMode(m)
}

// effectiveModeOverride: DEFAULT header/trailer modes keep the configured
// value, body modes are always taken literally.
func effectiveModeOverride(target, configured *filterv3.ProcessingMode) *filterv3.ProcessingMode {
	m := proto.Clone(configured).(*filterv3.ProcessingMode)
	if target.GetRequestHeaderMode() != filterv3.ProcessingMode_DEFAULT {
		m.RequestHeaderMode = target.GetRequestHeaderMode()
	}
	if target.GetResponseHeaderMode() != filterv3.ProcessingMode_DEFAULT {
		m.ResponseHeaderMode = target.GetResponseHeaderMode()
	}
	if target.GetRequestTrailerMode() != filterv3.ProcessingMode_DEFAULT {
		m.RequestTrailerMode = target.GetRequestTrailerMode()
	}
	if target.GetResponseTrailerMode() != filterv3.ProcessingMode_DEFAULT {
		m.ResponseTrailerMode = target.GetResponseTrailerMode()
	}
	m.RequestBodyMode = target.GetRequestBodyMode()
	m.ResponseBodyMode = target.GetResponseBodyMode()
	return m
}

// setDynamicMetadata is Filter::setDynamicMetadata.
func (x *exchange) setDynamicMetadata(r *extprocv3.ProcessingResponse) {
	md := r.GetDynamicMetadata()
	if md == nil {
		return
	}
	for ns, v := range md.GetFields() {
		if !x.cfg.receiving[ns] {
			if x.stats.DynamicMetadataDropped == nil {
				x.stats.DynamicMetadataDropped = map[string]int{}
			}
			x.stats.DynamicMetadataDropped[ns]++
			continue
		}
		if x.stats.DynamicMetadata == nil {
			x.stats.DynamicMetadata = map[string]int{}
		}
		x.stats.DynamicMetadata[ns]++
		if x.res.DynamicMetadata == nil {
			x.res.DynamicMetadata = map[string]*structpb.Struct{}
		}
		dst := x.res.DynamicMetadata[ns]
		if dst == nil {
			dst = &structpb.Struct{Fields: map[string]*structpb.Value{}}
			x.res.DynamicMetadata[ns] = dst
		}
		// StreamInfo::setDynamicMetadata merges top-level fields; a value
		// that is not a Struct is an empty Struct.
		for k, fv := range v.GetStructValue().GetFields() {
			dst.Fields[k] = proto.Clone(fv).(*structpb.Value)
		}
	}
}

// closeIfLastResponse is Filter::closeGrpcStreamIfLastRespReceived (the
// stream close optimisation).
func (x *exchange) closeIfLastResponse(r *extprocv3.ProcessingResponse, isLastBody bool) {
	if x.stream == nil || x.streamClosed || x.cfg.DisableStreamCloseOptimization {
		return
	}
	dec, enc := x.dec, x.enc
	last := false
	switch r.GetResponse().(type) {
	case *extprocv3.ProcessingResponse_RequestHeaders:
		last = (dec.noBody || (dec.bodyMode == modeNone && !dec.sendTrailers)) && enc.noExternalProcess()
	case *extprocv3.ProcessingResponse_RequestBody:
		last = isLastBody && enc.noExternalProcess()
	case *extprocv3.ProcessingResponse_RequestTrailers:
		last = enc.noExternalProcess()
	case *extprocv3.ProcessingResponse_ResponseHeaders:
		last = enc.noBody || (enc.bodyMode == modeNone && !enc.sendTrailers)
	case *extprocv3.ProcessingResponse_ResponseBody:
		last = isLastBody
	case *extprocv3.ProcessingResponse_ResponseTrailers:
		last = true
	}
	if last {
		x.closeStreamMaybeGraceful("last response received")
	}
}

// isLastBodyResponse: only STREAMED and FULL_DUPLEX_STREAMED can tell.
func (d *dirState) isLastBodyResponse(b *extprocv3.BodyResponse) bool {
	switch d.bodyMode {
	case modeStreamed:
		return len(d.queue) > 0 && d.queue[0].eos
	case modeFullDuplex:
		if sr := b.GetResponse().GetBodyMutation().GetStreamedResponse(); sr != nil {
			return sr.GetEndOfStream()
		}
	}
	return false
}

// ---- ProcessorState::handle*Response ----

func (d *dirState) processHeaderMutation(cr *extprocv3.CommonResponse) *procError {
	return d.x.applyHeaderMutation(cr.GetHeaderMutation(), &d.headers,
		cr.GetStatus() == extprocv3.CommonResponse_CONTINUE_AND_REPLACE, d.shouldRemoveContentLength())
}

func (d *dirState) handleHeadersResponse(r *extprocv3.HeadersResponse) *procError {
	if d.cb != cbHeaders {
		return spurious("spurious message")
	}
	cr := r.GetResponse()
	if cr.GetHeaderMutation() != nil {
		if err := d.processHeaderMutation(cr); err != nil {
			return err
		}
	}
	d.clearRouteCache(cr)
	d.finishCall(d.stateAfterHeadersResponse(cr))

	if cr.GetStatus() == extprocv3.CommonResponse_CONTINUE_AND_REPLACE {
		if bm := cr.GetBodyMutation(); bm != nil {
			d.headers.remove("content-length")
			d.bodyReplaced = true
			d.fmBuf = applyBodyMutation(bm, d.fmBuf)
			d.fmBufExists = true
		}
		d.clearQueue()
		d.bodyMode = modeNone
		d.sendTrailers = false
	} else {
		switch {
		case d.noBody:
		case d.completeBody && d.bodyMode != modeNone:
			if d.cb == cbIdle {
				if d.fmBufExists {
					// The whole body arrived before the headers answer: it
					// goes as one message, whatever the body mode.
					d.sendBodyChunk(cbBufferedBody, d.bodyRequest(d.fmBuf, !d.trailersAvail))
					return nil
				}
			} else {
				d.sendBufferedDataInStreamedMode(!d.trailersAvail)
				return nil
			}
		case d.bodyMode == modeBuffered:
			return nil
		case d.bodyMode == modeStreamed:
			d.sendBufferedDataInStreamedMode(false)
			d.continueIfNecessary()
			return nil
		case d.bodyMode == modeFullDuplex:
			d.continueIfNecessary()
			return nil
		case d.bodyMode == modeBufferedPartial:
			if len(d.fmBuf) > 0 {
				data := d.fmBuf
				d.fmBuf = nil
				d.enqueue(data, false)
			}
			if d.queueBytes > d.x.cfg.bufferLimit {
				c := d.consolidate()
				d.sendBodyChunk(cbBufferedPartialBody, d.bodyRequest(c.data, false))
			}
			return nil
		}
		if d.sendTrailers && d.trailersAvail {
			d.sendTrailersMsg()
			return nil
		}
	}
	d.headersHeld = false
	d.continueIfNecessary()
	return nil
}

// stateAfterHeadersResponse is getCallbackStateAfterHeaderResp.
func (d *dirState) stateAfterHeadersResponse(cr *extprocv3.CommonResponse) cbState {
	if cr.GetStatus() == extprocv3.CommonResponse_CONTINUE_AND_REPLACE {
		return cbIdle
	}
	if d.bodyMode == modeStreamed && d.x.cfg.SendBodyWithoutWaitingForHeaderResponse && len(d.queue) > 0 {
		return cbStreamedBody
	}
	if d.bodyMode == modeFullDuplex {
		if d.bodyReceived {
			return cbStreamedBody
		}
		if d.trailersAvail {
			return cbTrailers
		}
	}
	return cbIdle
}

func (d *dirState) handleBodyResponse(r *extprocv3.BodyResponse) *procError {
	cr := r.GetResponse()
	shouldContinue := false
	switch d.cb {
	case cbBufferedBody:
		if cr.GetHeaderMutation() != nil && d.headersHeld {
			if err := d.processHeaderMutation(cr); err != nil {
				return err
			}
		}
		if bm := cr.GetBodyMutation(); bm != nil {
			if d.headersHeld {
				if cl, ok := d.headers.Get("content-length"); ok {
					if n, err := strconv.ParseUint(cl, 10, 64); err == nil && n != uint64(len(bm.GetBody())) {
						return invalid("mismatch between content length and the length of the mutated body")
					}
				}
			}
			d.fmBuf = applyBodyMutation(bm, d.fmBuf)
		}
		d.finishCall(cbIdle)
		shouldContinue = true
	case cbStreamedBody:
		if sr := cr.GetBodyMutation().GetStreamedResponse(); sr != nil {
			if d.bodyMode != modeFullDuplex {
				return spurious("spurious message: streamed_response is received while body_mode_ is not FULL_DUPLEX_STREAMED")
			}
			if len(sr.GetBody()) > 0 {
				d.inject(append([]byte(nil), sr.GetBody()...), sr.GetEndOfStream())
			}
			if sr.GetEndOfStream() {
				d.finishCall(cbIdle)
			} else {
				d.finishCall(cbStreamedBody)
			}
			shouldContinue = sr.GetEndOfStream()
		} else {
			if d.bodyMode == modeFullDuplex {
				return spurious("spurious message: Normal body mutation response is received while body_mode_ is FULL_DUPLEX_STREAMED")
			}
			c, _ := d.pop()
			data := c.data
			if bm := cr.GetBodyMutation(); bm != nil {
				data = applyBodyMutation(bm, data)
			}
			shouldContinue = c.eos
			if len(data) > 0 {
				d.inject(data, c.eos)
			}
			if len(d.queue) == 0 {
				d.finishCall(cbIdle)
			} else {
				d.finishCall(cbStreamedBody)
			}
		}
	case cbBufferedPartialBody:
		c, _ := d.pop()
		if cr.GetHeaderMutation() != nil && d.headersHeld {
			if err := d.processHeaderMutation(cr); err != nil {
				return err
			}
		}
		data := c.data
		if bm := cr.GetBodyMutation(); bm != nil {
			data = applyBodyMutation(bm, data)
		}
		if len(data) > 0 {
			d.inject(data, c.eos)
		}
		d.finishCall(cbIdle)
		if d.queueBytes > 0 || len(d.queue) > 0 {
			rest := d.consolidate()
			d.queue, d.queueBytes = nil, 0
			d.inject(rest.data, rest.eos)
		}
		d.partialDone = true
		shouldContinue = true
	default:
		return spurious("spurious message")
	}
	d.clearRouteCache(cr)
	// finalizeBodyResponse.
	d.headersHeld = false
	if d.sendTrailers && d.trailersAvail && len(d.queue) == 0 {
		d.sendTrailersMsg()
		return nil
	}
	if shouldContinue || (d.trailersAvail && len(d.queue) == 0) {
		d.continueIfNecessary()
	}
	return nil
}

func (d *dirState) handleTrailersResponse(r *extprocv3.TrailersResponse) *procError {
	if d.cb != cbTrailers && d.bodyMode != modeFullDuplex {
		return spurious("spurious message")
	}
	if hm := r.GetHeaderMutation(); hm != nil && d.trailers != nil {
		if err := d.x.applyHeaderMutation(hm, &d.trailers, false, false); err != nil {
			return err
		}
	}
	d.finishCall(cbIdle)
	d.continueIfNecessary()
	return nil
}

// clearRouteCache is DecodingProcessorState::clearRouteCache (a no-op on the
// response path).
func (d *dirState) clearRouteCache(cr *extprocv3.CommonResponse) {
	if !d.inbound {
		return
	}
	st := &d.x.stats
	if cr.GetHeaderMutation() == nil {
		if cr.GetClearRouteCache() {
			st.ClearRouteCacheIgnored++
		}
		return
	}
	switch d.x.cfg.RouteCacheAction {
	case RouteCacheClear:
		st.ClearRouteCache++
	case RouteCacheRetain:
		if cr.GetClearRouteCache() {
			st.ClearRouteCacheDisabled++
		}
	default:
		if cr.GetClearRouteCache() {
			st.ClearRouteCache++
		}
	}
}

// applyBodyMutation is MutationUtils::applyBodyMutations.
func applyBodyMutation(bm *extprocv3.BodyMutation, data []byte) []byte {
	switch m := bm.GetMutation().(type) {
	case *extprocv3.BodyMutation_ClearBody:
		if m.ClearBody {
			return nil
		}
	case *extprocv3.BodyMutation_Body:
		return append([]byte(nil), m.Body...)
	}
	return data
}

// applyHeaderMutation is MutationUtils::applyHeaderMutations.
func (x *exchange) applyHeaderMutation(m *extprocv3.HeaderMutation, h *Headers, replacing, removeContentLength bool) *procError {
	st := &x.stats
	maxCount := x.cfg.maxHdrCount
	if len(m.GetRemoveHeaders()) > maxCount || len(m.GetSetHeaders()) > maxCount {
		st.RejectedHeaderMutations++
		return invalid(fmt.Sprintf("Header mutation remove header count %d or set header count %d exceed the HCM header countlimit %d",
			len(m.GetRemoveHeaders()), len(m.GetSetHeaders()), maxCount))
	}
	for _, name := range m.GetRemoveHeaders() {
		if !headerNameValid(name) {
			st.RejectedHeaderMutations++
			return invalid("Invalid character in remove_headers mutation.")
		}
		name = lowerASCII(name)
		switch x.cfg.checker.check(opRemove, name, "") {
		case checkOK:
			h.remove(name)
		case checkIgnore:
			st.RejectedHeaderMutations++
		case checkFail:
			st.RejectedHeaderMutations++
			return invalid("Invalid attempt to remove " + name)
		}
	}
	for _, sh := range m.GetSetHeaders() {
		hv := sh.GetHeader()
		if hv == nil {
			continue
		}
		if removeContentLength && strings.EqualFold(hv.GetKey(), "content-length") {
			continue
		}
		if hv.GetValue() != "" && len(hv.GetRawValue()) > 0 {
			st.RejectedHeaderMutations++
			return invalid("Only one of value or raw_value in the HeaderValue message should be set.")
		}
		value := string(hv.GetRawValue())
		if !headerNameValid(hv.GetKey()) || !headerValueValid(value) {
			st.RejectedHeaderMutations++
			return invalid("Invalid character in set_headers mutation.")
		}
		name := lowerASCII(hv.GetKey())
		appendMode := sh.GetAppend().GetValue()
		op := opSet
		if appendMode && h.Has(name) {
			op = opAppend
		}
		res := x.cfg.checker.check(op, name, value)
		if replacing && name == ":method" {
			res = checkOK
		}
		switch res {
		case checkOK:
			if appendMode {
				h.add(name, value)
			} else {
				h.set(name, value)
			}
		case checkIgnore:
			st.RejectedHeaderMutations++
		case checkFail:
			st.RejectedHeaderMutations++
			return invalid("Invalid attempt to modify " + name)
		}
	}
	if len(*h) > maxCount || h.byteSize() > x.cfg.maxHdrBytes {
		st.RejectedHeaderMutations++
		return invalid(fmt.Sprintf("Header mutation causes end result header count %d or header size %d bytes, exceeding the count limit %d or the size limit %d kilobytes",
			len(*h), h.byteSize(), maxCount, x.cfg.maxHdrBytes/1024))
	}
	return nil
}

// sendImmediateResponse is Filter::sendImmediateResponse.
func (x *exchange) sendImmediateResponse(ir *extprocv3.ImmediateResponse) {
	code := 200
	if ir.GetStatus() != nil {
		code = int(ir.GetStatus().GetCode())
	}
	if code < 200 {
		code = 200
	}
	grpcStatus := -1
	if ir.GetGrpcStatus() != nil {
		grpcStatus = int(ir.GetGrpcStatus().GetStatus())
	}
	x.sentImmediate = true
	x.sendLocalReply(code, ir.GetBody(), ir.GetHeaders(), grpcStatus, ir.GetDetails(), true)
}

// sendLocalReply is the filter manager's sendLocalReply: the local reply
// replaces the upstream response, or resets the downstream stream when
// response headers were already sent.
func (x *exchange) sendLocalReply(code int, body []byte, hm *extprocv3.HeaderMutation, grpcStatus int, details string, immediate bool) {
	if x.finished {
		return
	}
	x.finished = true
	lr := &LocalReply{Status: code, Details: replaceAllEmptySpace(details), Body: append([]byte(nil), body...),
		GRPCStatus: grpcStatus, Immediate: immediate}
	x.res.LocalReply = lr
	if x.dec.out.Sent && !x.dec.out.Complete {
		x.dec.out.Reset = true
	}
	if x.enc.out.Sent {
		x.enc.out.Reset = true
		return
	}
	h := H(":status", strconv.Itoa(code))
	respBody := lr.Body
	if ct, _ := x.req.Headers.Get("content-type"); strings.HasPrefix(ct, "application/grpc") {
		// gRPC requests get a trailers-only response.
		gs := grpcStatus
		if gs < 0 {
			gs = httpToGRPCStatus(code)
		}
		h = H(":status", "200", "content-type", "application/grpc", "grpc-status", strconv.Itoa(gs))
		if len(body) > 0 {
			h.add("grpc-message", string(body))
		}
		respBody = nil
	} else if len(body) > 0 {
		h.add("content-length", strconv.Itoa(len(body)))
		h.add("content-type", "text/plain")
	}
	if hm != nil {
		// Errors in immediate response mutations are only logged by Envoy.
		_ = x.applyHeaderMutation(hm, &h, false, false)
	}
	*x.enc.out = Message{Sent: true, Complete: true, Headers: h, Body: respBody}
}

// httpToGRPCStatus is Grpc::Utility::httpToGrpcStatus.
func httpToGRPCStatus(code int) int {
	switch code {
	case 400:
		return 13
	case 401:
		return 16
	case 403:
		return 7
	case 404:
		return 12
	case 429, 502, 503, 504:
		return 14
	}
	return 2
}

// replaceAllEmptySpace is StringUtil::replaceAllEmptySpace.
func replaceAllEmptySpace(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsSpace(r) {
			return '_'
		}
		return r
	}, s)
}
