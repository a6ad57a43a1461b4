package server

// This file holds the bounds on what clients can make the server hold: the
// number of streams, the bytes and messages one stream keeps while its
// plugin pauses, the bytes all streams keep together, and how long a
// stream may sit idle. Both services share them.

import (
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/wasm-callout/wasm-callout/abi"
	"github.com/wasm-callout/wasm-callout/host"
)

// Default limits (Options.Limits). RATIONALE.md says why these values.
const (
	DefaultMaxStreams              = 10000
	DefaultMaxStreamsPerConnection = 1000
	DefaultMaxStreamBuffer         = MaxMessageSize // one whole BUFFERED body
	DefaultMaxBufferTotal          = 1 << 30
	DefaultMaxQueuedMessages       = 4096
	// DefaultIdleTimeout is Envoy's default stream_idle_timeout: the HTTP
	// stream an ext_proc stream serves would have been reset by then.
	DefaultIdleTimeout = 5 * time.Minute
)

// Limits bound what clients can make the server hold, across both
// services. The zero value of each field means its default; a negative
// value turns that limit off. Past a limit only the stream that passed it
// ends, at once, with a clear status; every other stream keeps serving.
type Limits struct {
	// MaxStreams caps the streams open at once, HTTP and TCP together. A
	// stream past it is refused with RESOURCE_EXHAUSTED, which Envoy
	// handles with the filter's failure mode at once.
	MaxStreams int
	// MaxStreamsPerConnection is the HTTP/2 concurrent-stream limit each
	// client connection is given (GRPCServerOptions); Envoy opens another
	// connection when it reaches it.
	MaxStreamsPerConnection int
	// MaxStreamBuffer caps the bytes one stream holds across messages:
	// body or data bytes its plugin paused on, and messages queued behind
	// a paused direction. An HTTP stream past it gets Envoy's answer to a
	// filter buffer overflow: 413 for a request body, 500 for a response
	// body. A TCP connection past it is closed.
	MaxStreamBuffer int64
	// MaxBufferTotal caps what MaxStreamBuffer counts, summed over every
	// stream. The stream whose message would pass it ends with
	// RESOURCE_EXHAUSTED.
	MaxBufferTotal int64
	// MaxQueuedMessages caps the messages queued behind a paused HTTP
	// direction (RESOURCE_EXHAUSTED past it), however small they are.
	MaxQueuedMessages int
	// IdleTimeout ends a stream that has received no message for this
	// long, with UNAVAILABLE.
	IdleTimeout time.Duration
}

func (l Limits) withDefaults() Limits {
	def := func(v *int64, d int64) {
		if *v == 0 {
			*v = d
		}
	}
	defInt := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	defInt(&l.MaxStreams, DefaultMaxStreams)
	defInt(&l.MaxStreamsPerConnection, DefaultMaxStreamsPerConnection)
	def(&l.MaxStreamBuffer, DefaultMaxStreamBuffer)
	def(&l.MaxBufferTotal, DefaultMaxBufferTotal)
	defInt(&l.MaxQueuedMessages, DefaultMaxQueuedMessages)
	if l.IdleTimeout == 0 {
		l.IdleTimeout = DefaultIdleTimeout
	}
	return l
}

// enter admits a new stream of service svc, or refuses it past
// MaxStreams (both services count against it). A stream admitted must
// call leave when it ends.
func (s *Server) enter(svc Service) error {
	c := &s.stats.svc[svc]
	c.started.Add(1)
	c.active.Add(1)
	n := s.stats.open.Add(1)
	if max := s.opts.Limits.MaxStreams; max > 0 && n > int64(max) {
		c.active.Add(-1)
		s.stats.open.Add(-1)
		s.stats.limitRefusals.Add(1)
		c.finished[OutcomeLimit].Add(1)
		return status.Errorf(codes.ResourceExhausted,
			"wasm-callout: %d streams are open, the server's limit (--max-streams)", max)
	}
	return nil
}

// leave ends a stream of service svc that enter admitted.
func (s *Server) leave(svc Service) {
	s.stats.svc[svc].active.Add(-1)
	s.stats.open.Add(-1)
}

// shed is the answer to a new stream that the plugin's pool refused as
// overloaded (host.ErrOverloaded): UNAVAILABLE at once, so that Envoy
// applies its failure mode now rather than after its message timeout, and
// the streams already open keep their instances' time.
func (s *Server) shed() error {
	s.stats.limitRefusals.Add(1)
	s.stats.shed.Add(1)
	return status.Error(codes.Unavailable,
		"wasm-callout: overloaded: every plugin instance has a queue longer than --shed-queue-delay")
}

// idleTimer ends a stream that receives nothing for IdleTimeout. Its
// channel is nil when the limit is off.
type idleTimer struct {
	t *time.Timer
	d time.Duration
}

func (s *Server) newIdleTimer() idleTimer {
	d := s.opts.Limits.IdleTimeout
	if d <= 0 {
		return idleTimer{}
	}
	return idleTimer{t: time.NewTimer(d), d: d}
}

func (it idleTimer) C() <-chan time.Time {
	if it.t == nil {
		return nil
	}
	return it.t.C
}

// reset restarts the timer after a message arrived.
func (it idleTimer) reset() {
	if it.t != nil {
		it.t.Reset(it.d)
	}
}

func (it idleTimer) stop() {
	if it.t != nil {
		it.t.Stop()
	}
}

func (it idleTimer) err() error {
	return status.Errorf(codes.Unavailable, "wasm-callout: no message for %v, the server's idle limit (--stream-idle-timeout)", it.d)
}

// held accounts the bytes one stream holds across messages against
// MaxStreamBuffer and, through the server's total, MaxBufferTotal.
type held struct {
	srv       *Server
	accounted int64 // what the server's total has of this stream
}

// admit reports which limit, if any, taking n more bytes on top of now
// would pass: errStreamBuffer for the stream's own, a RESOURCE_EXHAUSTED
// status for the server's total.
func (h *held) admit(now, n int64) error {
	l := &h.srv.opts.Limits
	if l.MaxStreamBuffer > 0 && now+n > l.MaxStreamBuffer {
		h.srv.stats.limitRefusals.Add(1)
		return errStreamBuffer
	}
	if l.MaxBufferTotal > 0 && n > 0 && h.srv.buffered.Load()+n > l.MaxBufferTotal {
		h.srv.stats.limitRefusals.Add(1)
		return status.Errorf(codes.ResourceExhausted,
			"wasm-callout: streams hold %d bytes for their plugins, the server's limit (--max-buffer-total)", l.MaxBufferTotal)
	}
	return nil
}

// set records that the stream now holds now bytes.
func (h *held) set(now int64) {
	if d := now - h.accounted; d != 0 {
		h.srv.buffered.Add(d)
		h.accounted = now
	}
}

// errStreamBuffer is admit's answer for a stream past MaxStreamBuffer;
// each service answers it in its own way.
var errStreamBuffer = fmt.Errorf("the stream holds more than its buffer limit (--max-stream-buffer)")

// overflow answers an HTTP stream whose direction d passed
// MaxStreamBuffer as Envoy answers a filter whose buffer overflows: 413 for
// the request, 500 for the response.
func (st *stream) overflow(d *direction) error {
	st.limited = true
	st.log.Warn("stream passed its buffer limit; answering as Envoy does for a buffer overflow",
		"direction", d.name, "limit", st.srv.opts.Limits.MaxStreamBuffer)
	lr := &host.LocalResponse{Status: 413, Details: "request_payload_too_large", GRPCStatus: noGRPCStatus}
	if d.typ == abi.StreamHTTPResponse {
		lr = &host.LocalResponse{Status: 500, Details: "response_payload_too_large", GRPCStatus: noGRPCStatus}
	}
	return st.immediate(lr)
}
