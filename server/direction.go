package server

// This file holds the per-direction state machine: a direction's body
// mode and phase, what the first message configures, and the validation
// of each message against what its direction has received so far.

import (
	"fmt"

	filterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/wasm-callout/wasm-callout/abi"
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
	// modeGRPC: one deframed gRPC message per body message (gRFC A93
	// clients); answered M:N as FULL_DUPLEX_STREAMED, one message per
	// streamed_response (grpc.go).
	modeGRPC
)

var modeNames = [...]string{"NONE", "STREAMED", "BUFFERED", "BUFFERED_PARTIAL", "FULL_DUPLEX_STREAMED", "unknown", "GRPC"}

// duplex reports whether the mode answers bodies M:N with streamed_response:
// nothing is owed per message, and every byte must be sent back.
func (m bodyMode) duplex() bool { return m == modeFullDuplex || m == modeGRPC }

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
	// skippedHeaders: Envoy sent no headers for this direction (header
	// mode SKIP); the plugin's headers callback runs on an empty map
	// before the first body or trailers, and nothing answers it.
	skippedHeaders       bool
	bodyMsgs             int
	bodyEOS, gotTrailers bool
	ended                bool

	// What the server answered, updated as messages are processed.
	blocked   phase  // an answer withheld until the plugin resumes
	blockedIn []byte // the withheld body message's bytes
	queue     []*extprocv3.ProcessingRequest
	queued    int64 // body bytes in queue
	// unconsumed counts GRPC-mode body bytes received and not yet
	// granted back to the client as window; window is what the client
	// lets the server send, when windowed, and outq what waits for it
	// (grpc.go).
	unconsumed int64
	window     int64
	windowed   bool
	outq       []windowed
	// hostHeld is what the host keeps of this direction's body: the
	// chunks the plugin paused on, not yet released.
	hostHeld         int64
	answeredHeaders  bool
	headersOpen      bool // Envoy still applies header mutations in the next body answer
	trailersAnswered bool
	released         []byte // resumed bytes waiting for the next STREAMED answer
	clearRouteCache  bool

	// arrivals are the messages waiting for their answers, oldest first,
	// for Server.Latency; arrivalBuf backs the usual few.
	arrivals   []arrival
	arrivalBuf [4]arrival
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
	case filterv3.ProcessingMode_GRPC:
		return modeGRPC
	}
	if d.overrideRequested {
		return modeBuffered
	}
	return modeNone
}

// configure reads what the first message says about the stream.
func (st *stream) configure(m *extprocv3.ProcessingRequest) error {
	st.observability = m.GetObservabilityMode()
	st.mutations = mutationPolicy{rules: st.srv.opts.MutationRules, client: st.srv.opts.Client}
	if st.mutations.client == ClientAuto {
		st.mutations.client = clientOf(m)
	}
	st.flow = m.GetFlowControlInit() != nil
	if st.flow {
		st.setWindows(m.GetFlowControlInit())
	}
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
			filterv3.ProcessingMode_BUFFERED_PARTIAL, filterv3.ProcessingMode_FULL_DUPLEX_STREAMED, filterv3.ProcessingMode_GRPC:
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
			"response_headers, response_body, response_trailers, nor only a client_window_update")
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
			d.gotHeaders, d.skippedHeaders = true, true // header mode SKIP
		}
		if d.ended {
			if d.bodyEOS && b.GetEndOfStream() && d.bodyMode().duplex() {
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
			d.gotHeaders, d.skippedHeaders = true, true // header mode SKIP
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
