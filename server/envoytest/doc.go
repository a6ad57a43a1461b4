// Package envoytest emulates Envoy's HTTP ext_proc filter
// (envoy.filters.http.ext_proc) as a gRPC client of an
// envoy.service.ext_proc.v3.ExternalProcessor server, so that ext_proc servers
// can be tested end to end without an Envoy binary.
//
// One call to [Emulator.Do] plays one HTTP request through the emulated
// filter: the downstream request (headers, body chunks, trailers) enters the
// decode path, the emulated upstream answers with the configured response,
// which enters the encode path, and the emulator records what Envoy would
// have forwarded upstream and sent downstream, together with a transcript of
// every ProcessingRequest sent and ProcessingResponse received.
//
// The emulation follows the filter's source (ext_proc.cc, processor_state.cc,
// mutation_utils.cc and the header mutation rules checker of Envoy
// ≈1.36–1.37, with the v1.40.0 protos):
//
//   - one Process stream per request, opened lazily when the first message
//     must be sent; protocol_config on the first message only;
//     attributes["envoy.filters.http.ext_proc"] on the first message of each
//     direction; metadata_context on every message; header values in raw_value
//     only;
//   - per-direction callback states (headers, buffered body, streamed body,
//     buffered-partial body, trailers) and the body send modes NONE, STREAMED,
//     BUFFERED, BUFFERED_PARTIAL and FULL_DUPLEX_STREAMED, including holding
//     body data while the headers answer is outstanding, the FIFO chunk queue
//     of STREAMED and the buffer limit;
//   - validation of every response: a response that does not match the
//     current state is "spurious" (counted; local reply status_on_error, or
//     pass-through with failure_mode_allow);
//   - header mutations as Envoy applies them (raw_value only, append flag only,
//     mutation rules, HCM limits, content-length handling), CONTINUE_AND_REPLACE,
//     clear_route_cache, mode_override, dynamic metadata receiving namespaces;
//   - the per-message timer and override_message_timeout, immediate
//     responses, gRPC stream closure by the server (OK or error) and the way
//     Envoy closes the side stream (cancellation, i.e. RST_STREAM, as soon as
//     no more answers are needed).
//
// Not emulated: the v1.37+ streamed_immediate_response, the v1.40
// stand-alone mode_override and flow-control messages (all treated as the
// unhandled messages they are for the emulated Envoy version), the GRPC body
// mode, the HTTP (non-gRPC) ext_proc service, forward_rules, per-route
// overrides and CEL evaluation (attribute values are supplied by the test).
//
// The network (L4) filter, envoy.filters.network.ext_proc, is emulated by
// [L4Emulator] (see l4.go): one connection per [L4Emulator.Do], frames of
// both directions sent without waiting for answers, answers checked against
// the frames outstanding in their direction, CLOSE and CLOSE_RST, the
// per-direction message timer, failure_mode_allow and
// close_stream_to_ext_proc_server; [L4Result] holds the bytes each side
// received and an [L4Transcript] for the same golden files.
//
// Timing: downstream and upstream data arrive according to a [Pacing]; the
// default delivers body data after the headers answer, which is what Envoy
// sees from a client that sends its body a little after its headers. All
// traffic goes over a real gRPC connection supplied by the caller (see
// [Dial]).
package envoytest
