package host

import (
	"github.com/wasm-callout/wasm-callout/abi"
)

// pluginContext is one context id of an instance: its root context, or a
// stream.
type pluginContext struct {
	id     uint32
	root   bool
	stream *stream // nil for the root context
}

// phase is the callback an instance is running, which decides what host
// functions may see (configuration buffers, body buffers, maps in on_log).
type phase uint8

const (
	phaseNone phase = iota
	phaseVMStart
	phaseConfigure
	phaseRequestHeaders
	phaseRequestBody
	phaseRequestTrailers
	phaseResponseHeaders
	phaseResponseBody
	phaseResponseTrailers
	phaseDownstreamData
	phaseUpstreamData
	phaseLog
)

// LocalResponse is a reply the plugin sends instead of proxying
// (proxy_send_local_response), or the reply the failure policy sends.
type LocalResponse struct {
	Status  uint32
	Details string
	Body    []byte
	Headers []abi.Pair
	// GRPCStatus is the grpc-status to send, or -1 for none.
	GRPCStatus int32
}

// Result is what the plugin decided in one stream callback.
type Result struct {
	// Action is Continue or Pause after the callback's deferred actions:
	// a proxy_continue_stream of the same direction turns a Pause into a
	// Continue, and a local response or a close always stops.
	Action abi.Action
	// Body holds, for a body or data callback that continued, the bytes to forward:
	// every chunk buffered while the plugin paused plus this one, with the
	// plugin's changes. BodyModified says whether the plugin changed them.
	Body         []byte
	BodyModified bool
	// LocalResponse is set when the plugin (or the failure policy) replies
	// in place of the upstream.
	LocalResponse *LocalResponse
	// Close is set when the plugin called proxy_close_stream, or, on a
	// TCP stream, sent a local response or failed closed. Reset asks for
	// an abortive close (a local response on TCP).
	Close, Reset bool
	// ClearRouteCache is set when the plugin asked for route re-selection.
	ClearRouteCache bool
	// Failure is the plugin failure behind this result, if any. The result
	// already carries the failure policy's answer.
	Failure error
}

// EventKind says what a plugin did to a stream outside that stream's own
// callbacks: from a timer, a queue notification, an outbound call's
// response, or another stream's callback via proxy_set_effective_context.
type EventKind uint8

const (
	// EventContinue resumes the direction in Event.Stream.
	EventContinue EventKind = iota + 1
	// EventLocalResponse replies with Event.LocalResponse.
	EventLocalResponse
	// EventClose closes the stream.
	EventClose
	// EventFailed reports that the stream's instance failed; Event.Result
	// carries the failure policy's answer.
	EventFailed
)

// Event is an asynchronous decision about a stream.
type Event struct {
	Kind            EventKind
	Stream          abi.StreamType
	LocalResponse   *LocalResponse
	ClearRouteCache bool
	Result          Result
}

// actions are the stream actions a plugin requested during a call. Envoy
// defers them until the call returns, and so does this host.
type actions struct {
	continued       [4]bool // by abi.StreamType
	local           *LocalResponse
	close           bool
	clearRouteCache bool
	any             bool
}

// touch records that s has pending actions to deliver after the current
// call. Caller holds mu.
func (in *instance) touch(s *stream) *actions {
	if !s.acts.any {
		s.acts.any = true
		in.touched = append(in.touched, s)
	}
	return &s.acts
}

// flushActions delivers the actions recorded during a call: those of the
// stream the call was for (sync) are left for its caller to fold into a
// Result; every other stream gets events. Caller holds mu.
func (in *instance) flushActions(sync *stream) {
	for _, s := range in.touched {
		if s == sync {
			continue
		}
		a := s.acts
		s.acts = actions{}
		if s.closed {
			continue
		}
		switch {
		case a.local != nil && s.tcp == nil:
			s.push(Event{Kind: EventLocalResponse, LocalResponse: a.local, ClearRouteCache: a.clearRouteCache})
		case a.local != nil, a.close:
			s.push(Event{Kind: EventClose})
		default:
			for st, c := range a.continued {
				if c {
					s.push(Event{Kind: EventContinue, Stream: abi.StreamType(st), ClearRouteCache: a.clearRouteCache})
				}
			}
		}
	}
	in.touched = in.touched[:0]
}

// activeStream is the stream host functions act on: the effective
// context's, or nil when that is the root context.
func (in *instance) activeStream() *stream {
	if c := in.contexts[in.effective]; c != nil {
		return c.stream
	}
	return nil
}

// activeHTTP is the effective context's HTTP stream, or nil.
func (in *instance) activeHTTP() *HTTPStream {
	if s := in.activeStream(); s != nil {
		return s.http
	}
	return nil
}

// nextContextID returns a fresh id: never 0, never one in use.
func (in *instance) nextContextID() uint32 {
	for {
		in.nextID++
		if in.nextID != 0 && in.contexts[in.nextID] == nil {
			return in.nextID
		}
	}
}
