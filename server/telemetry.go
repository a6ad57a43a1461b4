package server

// This file holds what the server counts per service for a metrics
// exporter: streams by outcome, messages by phase and the time from each
// message's arrival to its answer, and why header changes were dropped.
// Everything is an atomic counter or a host.Histogram indexed by small
// enums resolved when the stream is set up, so counting costs no lookup
// and no allocation; an exporter reads it through Stats and Latency when
// scraped (server/metrics).

import (
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/wasm-callout/wasm-callout/abi"
	"github.com/wasm-callout/wasm-callout/host"
)

// Service is one of the gRPC services a Server serves.
type Service uint8

// Services.
const (
	// ServiceExtProc is envoy.service.ext_proc.v3.ExternalProcessor (HTTP).
	ServiceExtProc Service = iota
	// ServiceNetworkExtProc is
	// envoy.service.network_ext_proc.v3.NetworkExternalProcessor (TCP).
	ServiceNetworkExtProc
	// NumServices is the number of services.
	NumServices
)

var serviceNames = [NumServices]string{"ext_proc", "network_ext_proc"}

// String returns "ext_proc" or "network_ext_proc".
func (s Service) String() string { return serviceNames[s] }

// Phases returns the message phases of the service.
func (s Service) Phases() []Phase {
	if s == ServiceNetworkExtProc {
		return []Phase{PhaseRead, PhaseWrite}
	}
	return []Phase{PhaseRequestHeaders, PhaseRequestBody, PhaseRequestTrailers,
		PhaseResponseHeaders, PhaseResponseBody, PhaseResponseTrailers}
}

// Outcome is how a stream ended.
type Outcome uint8

// Outcomes, in the order they are decided: the first that applies wins.
const (
	// OutcomeProtocolError: a malformed or out-of-order message ended the
	// stream (InvalidArgument or FailedPrecondition).
	OutcomeProtocolError Outcome = iota
	// OutcomeLimit: a limit (Limits, or shedding) refused or ended it.
	OutcomeLimit
	// OutcomePluginFailure: the plugin failed for it (trap, deadline,
	// memory, exit, no healthy instance), whatever the failure policy.
	OutcomePluginFailure
	// OutcomeImmediateResponse: it ended with an immediate response (the
	// plugin's local response or proxy_close_stream; for TCP, the plugin
	// closed the connection).
	OutcomeImmediateResponse
	// OutcomeError: it ended with another error, such as a failed send.
	OutcomeError
	// OutcomeOK: it ended normally.
	OutcomeOK
	// NumOutcomes is the number of outcomes.
	NumOutcomes
)

var outcomeNames = [NumOutcomes]string{"protocol_error", "limit", "plugin_failure", "immediate_response", "error", "ok"}

// String returns the outcome's metric label, such as "plugin_failure".
func (o Outcome) String() string { return outcomeNames[o] }

// Phase is the kind of a message a client sends.
type Phase uint8

// Message phases: six for ext_proc, two for network_ext_proc.
const (
	PhaseRequestHeaders Phase = iota
	PhaseRequestBody
	PhaseRequestTrailers
	PhaseResponseHeaders
	PhaseResponseBody
	PhaseResponseTrailers
	PhaseRead  // network_ext_proc read_data
	PhaseWrite // network_ext_proc write_data
	// NumPhases is the number of phases.
	NumPhases
)

var phaseNames = [NumPhases]string{"request_headers", "request_body", "request_trailers",
	"response_headers", "response_body", "response_trailers", "read", "write"}

// String returns the phase's metric label, such as "request_headers".
func (p Phase) String() string { return phaseNames[p] }

// httpPhase is the Phase of a message of direction typ and phase ph.
func httpPhase(typ abi.StreamType, ph phase) Phase {
	return Phase(int(typ)*3 + int(ph) - 1)
}

// DropReason says why a header change was not sent to Envoy.
type DropReason uint8

// Drop reasons.
const (
	// DropRejected: Envoy would reject the whole answer (an invalid name
	// or value), failing the request.
	DropRejected DropReason = iota
	// DropIgnored: Envoy would ignore it under its mutation_rules or body
	// mode (routing and x-envoy-* headers, removing pseudo-headers,
	// content-length).
	DropIgnored
	// DropLate: made after Envoy forwarded the map it changes.
	DropLate
	// NumDropReasons is the number of reasons.
	NumDropReasons
)

var dropNames = [NumDropReasons]string{"rejected", "ignored", "late"}

// String returns "rejected", "ignored" or "late".
func (r DropReason) String() string { return dropNames[r] }

// ServiceStats count one service's streams.
type ServiceStats struct {
	StreamsStarted int64 // Process calls
	StreamsActive  int64 // Process calls running now
	// Finished counts ended streams by outcome (index: Outcome).
	Finished [NumOutcomes]int64
	// TimeoutOverrides counts override_message_timeout messages sent.
	TimeoutOverrides int64
}

// serviceCounters are one service's counts.
type serviceCounters struct {
	started, active  atomic.Int64
	finished         [NumOutcomes]atomic.Int64
	timeoutOverrides atomic.Int64
}

func (c *serviceCounters) stats() ServiceStats {
	s := ServiceStats{StreamsStarted: c.started.Load(), StreamsActive: c.active.Load(), TimeoutOverrides: c.timeoutOverrides.Load()}
	for i := range c.finished {
		s.Finished[i] = c.finished[i].Load()
	}
	return s
}

// Latency returns, per phase, the time from a message's arrival to the
// answer that ends it: the answer of the same phase, or an immediate
// response. Body messages of FULL_DUPLEX_STREAMED and GRPC body modes,
// answered M:N, and messages in observability mode, never answered, are
// not timed.
func (s *Server) Latency() [NumPhases]host.HistogramSnapshot {
	var out [NumPhases]host.HistogramSnapshot
	for i := range out {
		out[i] = s.stats.latency[i].Snapshot()
	}
	return out
}

// finish counts a stream of svc that ended with outcome o.
func (s *Server) finish(svc Service, o Outcome) {
	s.stats.svc[svc].finished[o].Add(1)
}

// outcomeOf classifies a stream's end from its error and what the stream
// recorded: limited (a limit ended it without an error status), failed
// (the plugin failed) and local (an immediate response or a close was
// sent).
func outcomeOf(err error, limited, failed, local bool) Outcome {
	switch status.Code(err) {
	case codes.InvalidArgument, codes.FailedPrecondition:
		return OutcomeProtocolError
	case codes.ResourceExhausted, codes.Unavailable:
		// The server's only UNAVAILABLE endings are shedding and the idle
		// limit.
		return OutcomeLimit
	}
	switch {
	case limited:
		return OutcomeLimit
	case failed:
		return OutcomePluginFailure
	case local:
		return OutcomeImmediateResponse
	case err != nil:
		return OutcomeError
	}
	return OutcomeOK
}

// monotonic returns nanoseconds on the monotonic clock, for arrival stamps
// that fit in an int64.
func monotonic() int64 { return int64(time.Since(epoch)) }

var epoch = time.Now()

// arrival is a message waiting for its answer.
type arrival struct {
	phase Phase
	at    int64 // monotonic()
}

// arrived records that a message of phase p arrived on d at now.
func (d *direction) arrived(p Phase, now int64) {
	if d.arrivals == nil {
		d.arrivals = d.arrivalBuf[:0]
	}
	d.arrivals = append(d.arrivals, arrival{p, now})
}

// answered times the oldest message of d waiting for an answer if it is
// of phase p (messages of a direction are answered in order).
func (st *stream) answered(d *direction, p Phase) {
	if len(d.arrivals) == 0 || d.arrivals[0].phase != p {
		return
	}
	st.srv.stats.latency[p].Observe(time.Duration(monotonic() - d.arrivals[0].at))
	n := copy(d.arrivals, d.arrivals[1:])
	d.arrivals = d.arrivals[:n]
}

// answeredImmediate times the oldest message of the stream waiting for an
// answer: an immediate response answers it and ends the stream.
func (st *stream) answeredImmediate() {
	var oldest *direction
	for _, d := range st.dirs {
		if len(d.arrivals) > 0 && (oldest == nil || d.arrivals[0].at < oldest.arrivals[0].at) {
			oldest = d
		}
	}
	if oldest != nil {
		st.answered(oldest, oldest.arrivals[0].phase)
	}
}
