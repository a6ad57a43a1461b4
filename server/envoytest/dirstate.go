package envoytest

import (
	"fmt"
	"strings"
	"time"

	filterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/protobuf/types/known/structpb"
)

const (
	modeNone            = filterv3.ProcessingMode_NONE
	modeStreamed        = filterv3.ProcessingMode_STREAMED
	modeBuffered        = filterv3.ProcessingMode_BUFFERED
	modeBufferedPartial = filterv3.ProcessingMode_BUFFERED_PARTIAL
	modeFullDuplex      = filterv3.ProcessingMode_FULL_DUPLEX_STREAMED
)

// cbState is ProcessorState::CallbackState: what answer, if any, the
// direction is waiting for.
type cbState int

const (
	cbIdle cbState = iota
	cbHeaders
	cbBufferedBody
	cbStreamedBody
	cbBufferedPartialBody
	cbTrailers
)

func (s cbState) String() string {
	return [...]string{"Idle", "HeadersCallback", "BufferedBodyCallback", "StreamedBodyCallback",
		"BufferedPartialBodyCallback", "TrailersCallback"}[s]
}

// filterStatus is the status a filter callback returns to the filter manager.
type filterStatus int

const (
	fsContinue filterStatus = iota
	fsStopIteration
	fsStopIterationAndBuffer
	fsStopIterationAndWatermark
	fsStopIterationNoBuffer
)

type inKind int

const (
	inHeaders inKind = iota
	inData
	inTrailers
)

type inEvent struct {
	kind    inKind
	headers Headers
	data    []byte
	eos     bool
}

type chunk struct {
	data []byte
	eos  bool
}

// dirState is one direction of the filter: Envoy's DecodingProcessorState or
// EncodingProcessorState, plus the part of the filter manager around the
// ext_proc filter that decides what leaves the filter chain.
type dirState struct {
	x       *exchange
	inbound bool // request path (decoding)

	// Input (downstream request or upstream response) and its delivery.
	started bool
	input   []inEvent
	next    int

	// Processing mode of this direction.
	sendHeaders  bool
	sendTrailers bool
	bodyMode     filterv3.ProcessingMode_BodySendMode

	cb     cbState
	paused bool

	noBody        bool // headers had end_stream
	completeBody  bool // complete_body_available_
	trailersAvail bool
	trailersSent  bool
	bodyReplaced  bool
	bodyReceived  bool
	partialDone   bool
	attrsSent     bool

	headers     Headers // the live header map
	headersHeld bool    // Envoy's headers_ != nullptr: mutations still apply
	trailers    Headers

	queue      []chunk // the STREAMED / BUFFERED_PARTIAL chunk queue
	queueBytes int

	timer              *time.Timer
	timerGen           uint64
	timerOn            bool
	newTimeoutReceived bool

	// Filter manager state.
	fmBuf          []byte
	fmBufExists    bool
	fmEOS          bool // the end of stream reached the filter and is held
	fmTrailersHeld bool
	out            *Message
}

func newDirState(x *exchange, inbound bool, out *Message) *dirState {
	d := &dirState{x: x, inbound: inbound, out: out}
	d.setMode(x.cfg.mode)
	return d
}

func (d *dirState) describe() string {
	return fmt.Sprintf("state=%v mode=%v delivered=%d/%d queued=%d sent=%v complete=%v",
		d.cb, d.bodyMode, d.next, len(d.input), len(d.queue), d.out.Sent, d.out.Complete)
}

// setMode is setProcessingModeInternal: header DEFAULT means send, trailer
// DEFAULT means skip.
func (d *dirState) setMode(m *filterv3.ProcessingMode) {
	if d.inbound {
		d.sendHeaders = m.GetRequestHeaderMode() != filterv3.ProcessingMode_SKIP
		d.sendTrailers = m.GetRequestTrailerMode() == filterv3.ProcessingMode_SEND
		d.bodyMode = m.GetRequestBodyMode()
	} else {
		d.sendHeaders = m.GetResponseHeaderMode() != filterv3.ProcessingMode_SKIP
		d.sendTrailers = m.GetResponseTrailerMode() == filterv3.ProcessingMode_SEND
		d.bodyMode = m.GetResponseBodyMode()
	}
}

func (d *dirState) attributes() *structpb.Struct {
	if d.inbound {
		return d.x.cfg.reqAttrs
	}
	return d.x.cfg.respAttrs
}

// start queues the direction's input; its headers are delivered next.
func (d *dirState) start(h Headers, body [][]byte, trailers Headers) {
	d.started = true
	d.input = append(d.input, inEvent{kind: inHeaders, headers: h.Clone(), eos: len(body) == 0 && trailers == nil})
	for i, c := range body {
		d.input = append(d.input, inEvent{kind: inData, data: c, eos: i == len(body)-1 && trailers == nil})
	}
	if trailers != nil {
		d.input = append(d.input, inEvent{kind: inTrailers, headers: trailers.Clone()})
	}
}

// withoutWaiting reports whether body data is sent while the headers answer
// is outstanding.
func (d *dirState) withoutWaiting() bool {
	return d.bodyMode == modeFullDuplex || (d.bodyMode == modeStreamed && d.x.cfg.SendBodyWithoutWaitingForHeaderResponse)
}

// canDeliver applies the pacing to the next input event.
func (d *dirState) canDeliver() bool {
	if d.next == 0 || d.x.processingComplete || d.x.cfg.ObservabilityMode {
		return true
	}
	switch d.x.req.Pacing {
	case PaceEager:
		return true
	case PaceLockstep:
		if !d.withoutWaiting() {
			return d.cb == cbIdle
		}
	}
	return !(d.cb == cbHeaders && !d.withoutWaiting())
}

func (d *dirState) deliver() {
	ev := d.input[d.next]
	d.next++
	switch ev.kind {
	case inHeaders:
		d.onHeaders(ev.headers, ev.eos)
	case inData:
		d.onData(append([]byte(nil), ev.data...), ev.eos)
	case inTrailers:
		d.onTrailers(ev.headers)
	}
}

// ---- filter manager ----

func (d *dirState) forwardHeaders() {
	if d.out.Sent {
		return
	}
	d.out.Sent = true
	d.out.Headers = d.headers.Clone()
}

func (d *dirState) complete() {
	d.out.Complete = true
}

func (d *dirState) flushBuffer() {
	if len(d.fmBuf) > 0 {
		d.out.Body = append(d.out.Body, d.fmBuf...)
	}
	d.fmBuf = nil
	d.fmBufExists = false
}

func (d *dirState) fmHeaders(s filterStatus, eos bool) {
	if s == fsContinue {
		d.forwardHeaders()
		if eos {
			d.complete()
		}
		return
	}
	if eos {
		d.fmEOS = true
	}
}

func (d *dirState) fmData(s filterStatus, data []byte, eos bool) {
	switch s {
	case fsContinue:
		d.forwardHeaders()
		d.flushBuffer()
		d.out.Body = append(d.out.Body, data...)
		if eos {
			d.complete()
		}
	case fsStopIterationAndBuffer, fsStopIterationAndWatermark:
		d.fmBuf = append(d.fmBuf, data...)
		d.fmBufExists = true
		if eos {
			d.fmEOS = true
		}
		if s == fsStopIterationAndBuffer {
			d.checkBufferLimit()
		}
	default:
		if eos {
			d.fmEOS = true
		}
	}
}

// checkBufferLimit is the filter manager's buffer limit for
// StopIterationAndBuffer: 413 on the request path, 500 on the response path.
func (d *dirState) checkBufferLimit() {
	if len(d.fmBuf) <= d.x.cfg.bufferLimit || d.x.finished {
		return
	}
	if d.inbound {
		d.x.sendLocalReply(413, []byte("Payload Too Large"), nil, -1, "request_payload_too_large", false)
	} else {
		d.x.sendLocalReply(500, []byte("Internal Server Error"), nil, -1, "response_payload_too_large", false)
	}
}

func (d *dirState) fmTrailers(s filterStatus) {
	if s == fsContinue {
		d.forwardHeaders()
		d.flushBuffer()
		d.out.Trailers = d.trailers.Clone()
		d.complete()
		return
	}
	d.fmTrailersHeld = true
}

// addBufferedData is the filter adding data to the filter manager's buffer
// (addDecodedData / addEncodedData).
func (d *dirState) addBufferedData(data []byte) {
	d.fmBuf = append(d.fmBuf, data...)
	d.fmBufExists = true
}

// inject is injectDecodedDataToFilterChain: data goes to the next filters
// (held with the headers if those have not been continued yet).
func (d *dirState) inject(data []byte, eos bool) {
	if !d.out.Sent {
		d.fmBuf = append(d.fmBuf, data...)
		d.fmBufExists = true
		if eos {
			d.fmEOS = true
		}
		return
	}
	d.out.Body = append(d.out.Body, data...)
	if eos {
		d.complete()
	}
}

// continueIfNecessary resumes the filter chain if the filter paused it.
func (d *dirState) continueIfNecessary() {
	if !d.paused {
		return
	}
	d.paused = false
	d.forwardHeaders()
	d.flushBuffer()
	if d.bodyMode != modeNone &&
		(len(d.queue) > 0 || d.cb == cbBufferedBody || d.cb == cbStreamedBody || d.cb == cbBufferedPartialBody) {
		// The rest of the body is still with the processor; it is injected
		// (with the end of stream) when the answers arrive.
		return
	}
	if d.fmTrailersHeld {
		d.fmTrailersHeld = false
		d.out.Trailers = d.trailers.Clone()
		d.complete()
	} else if d.fmEOS {
		d.complete()
	}
}

// ---- timer ----

// startCall is onStartProcessorCall.
func (d *dirState) startCall(next cbState) {
	d.cb = next
	if d.bodyMode != modeFullDuplex {
		d.startTimer(d.x.cfg.msgTimeout)
	}
	d.newTimeoutReceived = false
}

// finishCall is onFinishProcessorCall.
func (d *dirState) finishCall(next cbState) {
	d.stopTimer()
	d.cb = next
	d.newTimeoutReceived = false
}

func (d *dirState) startTimer(dur time.Duration) {
	d.stopTimer()
	d.timerGen++
	gen := d.timerGen
	d.timerOn = true
	d.timer = time.AfterFunc(dur, func() { d.x.post(event{kind: evTimer, dir: d, gen: gen}) })
}

func (d *dirState) stopTimer() {
	d.timerOn = false
	if d.timer != nil {
		d.timer.Stop()
	}
}

// restartMessageTimer honours one override_message_timeout per state.
func (d *dirState) restartMessageTimer(dur time.Duration) bool {
	if !d.timerOn || d.newTimeoutReceived {
		return false
	}
	d.startTimer(dur)
	d.newTimeoutReceived = true
	return true
}

// ---- requests ----

func (d *dirState) newRequest(observability bool) *extprocv3.ProcessingRequest {
	r := &extprocv3.ProcessingRequest{ObservabilityMode: observability, MetadataContext: d.x.cfg.metadata}
	if attrs := d.attributes(); attrs != nil && !d.attrsSent {
		d.attrsSent = true
		r.Attributes = map[string]*structpb.Struct{"envoy.filters.http.ext_proc": attrs}
	}
	return r
}

func (d *dirState) finishRequest(r *extprocv3.ProcessingRequest) *extprocv3.ProcessingRequest {
	x := d.x
	if !x.protocolConfigSent && !x.cfg.ObservabilityMode {
		x.protocolConfigSent = true
		r.ProtocolConfig = &extprocv3.ProtocolConfiguration{
			RequestBodyMode:                         x.dec.bodyMode,
			ResponseBodyMode:                        x.enc.bodyMode,
			SendBodyWithoutWaitingForHeaderResponse: x.cfg.SendBodyWithoutWaitingForHeaderResponse,
		}
	}
	return r
}

func (d *dirState) headersRequest(eos, observability bool) *extprocv3.ProcessingRequest {
	r := d.newRequest(observability)
	hh := &extprocv3.HttpHeaders{Headers: d.headers.toProto(), EndOfStream: eos}
	if d.inbound {
		r.Request = &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: hh}
	} else {
		r.Request = &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: hh}
	}
	return d.finishRequest(r)
}

func (d *dirState) bodyRequest(data []byte, eos bool) *extprocv3.ProcessingRequest {
	r := d.newRequest(false)
	b := &extprocv3.HttpBody{Body: append([]byte(nil), data...), EndOfStream: eos}
	if d.inbound {
		r.Request = &extprocv3.ProcessingRequest_RequestBody{RequestBody: b}
	} else {
		r.Request = &extprocv3.ProcessingRequest_ResponseBody{ResponseBody: b}
	}
	return d.finishRequest(r)
}

func (d *dirState) trailersRequest(observability bool) *extprocv3.ProcessingRequest {
	r := d.newRequest(observability)
	t := &extprocv3.HttpTrailers{Trailers: d.trailers.toProto()}
	if d.inbound {
		r.Request = &extprocv3.ProcessingRequest_RequestTrailers{RequestTrailers: t}
	} else {
		r.Request = &extprocv3.ProcessingRequest_ResponseTrailers{ResponseTrailers: t}
	}
	return d.finishRequest(r)
}

// sendBodyChunk is Filter::sendBodyChunk.
func (d *dirState) sendBodyChunk(next cbState, r *extprocv3.ProcessingRequest) {
	d.startCall(next)
	d.x.send(r)
}

// sendTrailersMsg is Filter::sendTrailers (not in observability mode).
func (d *dirState) sendTrailersMsg() {
	if d.trailersSent {
		return
	}
	d.trailersSent = true
	r := d.trailersRequest(false)
	next := d.cb
	if next == cbIdle {
		next = cbTrailers
	}
	d.startCall(next)
	d.x.send(r)
}

// ---- downstream / upstream callbacks (decodeHeaders/encodeHeaders, ...) ----

func (d *dirState) shouldRemoveContentLength() bool {
	if d.x.cfg.AllowContentLengthHeader {
		return false
	}
	switch d.bodyMode {
	case modeStreamed, modeFullDuplex, modeBufferedPartial:
		return true
	case modeBuffered:
		return !d.sendHeaders
	}
	return false
}

// noExternalProcess is EncodingProcessorState::noExternalProcess.
func (d *dirState) noExternalProcess() bool {
	return !d.sendHeaders && !d.sendTrailers && d.bodyMode == modeNone
}

func (d *dirState) onHeaders(h Headers, eos bool) {
	x := d.x
	d.headers = h
	if d.sendHeaders && x.cfg.ObservabilityMode {
		switch x.openStream() {
		case streamError:
			d.fmHeaders(fsStopIteration, eos)
			return
		case streamOK:
			x.send(d.headersRequest(eos, true))
		}
		d.fmHeaders(fsContinue, eos)
		return
	}
	if eos {
		d.completeBody = true
	}
	status := fsContinue
	if d.sendHeaders && (d.inbound || !x.processingComplete) {
		status = d.sendHeadersMsg(eos)
	}
	if x.finished {
		return
	}
	if !x.processingComplete && d.shouldRemoveContentLength() {
		d.headers.remove("content-length")
	}
	d.fmHeaders(status, eos)
	if !d.inbound && d.noExternalProcess() {
		x.closeStreamMaybeGraceful("no response processing")
	}
}

// sendHeadersMsg is Filter::onHeaders.
func (d *dirState) sendHeadersMsg(eos bool) filterStatus {
	switch d.x.openStream() {
	case streamError:
		return fsStopIteration
	case streamIgnoreError:
		return fsContinue
	}
	d.headersHeld = true
	d.noBody = eos
	r := d.headersRequest(eos, false)
	d.startCall(cbHeaders)
	d.x.send(r)
	d.paused = true
	return fsStopIteration
}

func (d *dirState) onData(data []byte, eos bool) {
	x := d.x
	d.bodyReceived = true
	if x.cfg.ObservabilityMode {
		if d.bodyMode == modeStreamed {
			switch x.openStream() {
			case streamError:
				d.fmData(fsStopIterationNoBuffer, data, eos)
				return
			case streamOK:
				r := d.bodyRequest(data, eos)
				r.ObservabilityMode = true
				x.send(r)
			}
		}
		d.fmData(fsContinue, data, eos)
		return
	}
	if eos {
		d.completeBody = true
	}
	if d.bodyReplaced {
		d.fmData(fsContinue, nil, eos)
		return
	}
	if x.processingComplete {
		d.fmData(fsContinue, data, eos)
		return
	}
	if d.cb == cbHeaders && !d.withoutWaiting() {
		// Header processing still in progress: hold the body.
		d.paused = true
		if d.bodyMode == modeBuffered {
			d.fmData(fsStopIterationAndBuffer, data, eos)
		} else {
			d.fmData(fsStopIterationAndWatermark, data, eos)
		}
		return
	}
	var s filterStatus
	switch d.bodyMode {
	case modeBuffered:
		s, data = d.dataBuffered(data, eos)
	case modeStreamed, modeFullDuplex:
		s, data = d.dataStreamed(data, eos)
	case modeBufferedPartial:
		s, data = d.dataBufferedPartial(data, eos)
	default:
		s = fsContinue
	}
	if x.finished {
		return
	}
	d.fmData(s, data, eos)
}

func (d *dirState) dataBuffered(data []byte, eos bool) (filterStatus, []byte) {
	if !eos {
		d.paused = true
		return fsStopIterationAndBuffer, data
	}
	switch d.x.openStream() {
	case streamError:
		return fsStopIterationNoBuffer, nil
	case streamIgnoreError:
		return fsContinue, data
	}
	d.addBufferedData(data)
	// The emulated body arrives in the chunks the test chose, so the limit
	// is also checked on the last one (Envoy's codec would have delivered a
	// large last chunk in pieces, hitting the limit on the way).
	d.checkBufferLimit()
	if d.x.finished {
		return fsStopIterationNoBuffer, nil
	}
	d.sendBodyChunk(cbBufferedBody, d.bodyRequest(d.fmBuf, true))
	d.paused = true
	return fsStopIterationNoBuffer, nil
}

// dataStreamed is handleDataStreamedModeBase (STREAMED and FULL_DUPLEX).
func (d *dirState) dataStreamed(data []byte, eos bool) (filterStatus, []byte) {
	switch d.x.openStream() {
	case streamError:
		return fsStopIterationNoBuffer, nil
	case streamIgnoreError:
		return fsContinue, data
	}
	r := d.bodyRequest(data, eos)
	if d.bodyMode != modeFullDuplex {
		d.enqueue(data, eos)
	}
	// FULL_DUPLEX_STREAMED drains the data: only the server's
	// streamed_response brings it back.
	inHeaders := d.cb == cbHeaders
	if inHeaders {
		d.sendBodyChunk(cbHeaders, r)
	} else {
		d.sendBodyChunk(cbStreamedBody, r)
	}
	if eos || inHeaders {
		d.paused = true
		return fsStopIterationNoBuffer, nil
	}
	return fsContinue, nil
}

func (d *dirState) dataBufferedPartial(data []byte, eos bool) (filterStatus, []byte) {
	if d.partialDone {
		d.headersHeld = false
		return fsContinue, data
	}
	if d.cb == cbBufferedPartialBody {
		d.enqueue(data, eos)
		d.paused = true
		return fsStopIterationNoBuffer, nil
	}
	d.enqueue(data, eos)
	if eos || d.queueBytes > d.x.cfg.bufferLimit {
		switch d.x.openStream() {
		case streamError:
			return fsStopIterationNoBuffer, nil
		case streamIgnoreError:
			return fsContinue, nil
		}
		c := d.consolidate()
		d.sendBodyChunk(cbBufferedPartialBody, d.bodyRequest(c.data, c.eos))
		d.paused = true
	}
	return fsStopIterationNoBuffer, nil
}

func (d *dirState) onTrailers(t Headers) {
	x := d.x
	d.trailers = t
	if x.processingComplete {
		d.fmTrailers(fsContinue)
		return
	}
	if d.sendTrailers && x.cfg.ObservabilityMode {
		switch x.openStream() {
		case streamError:
			d.fmTrailers(fsStopIteration)
			return
		case streamOK:
			if !d.trailersSent {
				d.trailersSent = true
				x.send(d.trailersRequest(true))
			}
		}
		d.fmTrailers(fsContinue)
		return
	}
	bodyDelivered := d.completeBody
	d.completeBody = true
	d.trailersAvail = true
	if d.cb != cbIdle && d.bodyMode != modeFullDuplex {
		d.paused = true
		d.fmTrailers(fsStopIteration)
		return
	}
	if !bodyDelivered && ((d.fmBufExists && d.bodyMode == modeBuffered) || (len(d.queue) > 0 && d.bodyMode == modeBufferedPartial)) {
		switch x.openStream() {
		case streamError:
			d.fmTrailers(fsStopIteration)
			return
		case streamIgnoreError:
			d.fmTrailers(fsContinue)
			return
		}
		if d.bodyMode == modeBuffered {
			d.sendBodyChunk(cbBufferedBody, d.bodyRequest(d.fmBuf, false))
		} else {
			c := d.consolidate()
			d.sendBodyChunk(cbBufferedPartialBody, d.bodyRequest(c.data, false))
		}
		d.paused = true
		d.fmTrailers(fsStopIteration)
		return
	}
	if !d.sendTrailers {
		d.fmTrailers(fsContinue)
		return
	}
	switch x.openStream() {
	case streamError:
		d.fmTrailers(fsStopIteration)
		return
	case streamIgnoreError:
		d.fmTrailers(fsContinue)
		return
	}
	d.sendTrailersMsg()
	d.paused = true
	d.fmTrailers(fsStopIteration)
}

// ---- chunk queue ----

func (d *dirState) enqueue(data []byte, eos bool) {
	d.queue = append(d.queue, chunk{data: data, eos: eos})
	d.queueBytes += len(data)
}

func (d *dirState) pop() (chunk, bool) {
	if len(d.queue) == 0 {
		return chunk{}, false
	}
	c := d.queue[0]
	d.queue = d.queue[1:]
	d.queueBytes -= len(c.data)
	return c, true
}

// consolidate merges the queue into one chunk (ChunkQueue::consolidate).
func (d *dirState) consolidate() chunk {
	if len(d.queue) == 0 {
		return chunk{}
	}
	if len(d.queue) > 1 {
		var all []byte
		for _, c := range d.queue {
			all = append(all, c.data...)
		}
		d.queue = []chunk{{data: all, eos: d.queue[len(d.queue)-1].eos}}
	}
	return d.queue[0]
}

// clearQueue is ChunkQueue::clear, which only drops a queue of more than
// one chunk.
func (d *dirState) clearQueue() {
	if len(d.queue) > 1 {
		d.queue = nil
		d.queueBytes = 0
	}
}

// clearAsyncState is ProcessorState::clearAsyncState.
func (d *dirState) clearAsyncState() {
	d.finishCall(cbIdle)
	if d.queueBytes > 0 {
		c := d.consolidate()
		d.queue, d.queueBytes = nil, 0
		d.inject(c.data, c.eos)
	} else {
		d.queue = nil
	}
	d.continueIfNecessary()
}

// sendBufferedDataInStreamedMode moves data the filter manager held while
// the headers answer was outstanding onto the chunk queue and sends it.
func (d *dirState) sendBufferedDataInStreamedMode(eos bool) {
	if len(d.fmBuf) == 0 {
		return
	}
	data := d.fmBuf
	d.fmBuf = nil
	r := d.bodyRequest(data, eos)
	d.enqueue(data, eos)
	d.sendBodyChunk(cbStreamedBody, r)
}

// lowerASCII lower-cases header names like Http::LowerCaseString.
func lowerASCII(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' {
			return strings.ToLower(s)
		}
	}
	return s
}
