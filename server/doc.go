// Package server is the Envoy ext_proc service
// (envoy.service.ext_proc.v3.ExternalProcessor) that runs every HTTP
// request through a proxy-wasm plugin.
//
// One Process stream is one HTTP request: the plugin's HTTP context
// (host.HTTPStream) is created on the first message, pinned to one plugin
// instance, and closed — proxy_on_log, proxy_on_done, proxy_on_delete,
// exactly once — however the stream ends. Envoy ending the stream (EOF,
// cancellation, RST_STREAM after its last answer) is a normal end.
//
// # What each message becomes
//
// Headers, body and trailers messages become the plugin's
// proxy_on_{request,response}_{headers,body,trailers} callbacks. Header
// changes go back as a HeaderMutation with values in raw_value only (Envoy
// reads nothing else): the first value of a changed key overwrites
// (append_action OVERWRITE_IF_EXISTS_OR_ADD with append unset, since
// Envoy's ext_proc reads only append and grpc-go only append_action),
// further values append (APPEND_IF_EXISTS_OR_ADD with append true), a
// removed key goes to remove_headers. Changes Envoy would reject (bad
// names or values, which fail the request) or ignore under its default
// mutation_rules (host, :authority, :scheme, :method and x-envoy-* sets;
// removing ':'-headers or host; content-length in modes where Envoy drops
// it) are not sent: they are logged at debug and counted
// (Stats.DroppedMutations). MutationRules relaxes this to match a filter
// configured with allow_all_routing or allow_envoy.
//
// A local response (proxy_send_local_response, or the failure policy)
// becomes an ImmediateResponse and ends the stream. proxy_clear_route_cache
// becomes clear_route_cache (Envoy honours it on the request path and only
// with a header mutation in the same answer, which is the normal case: the
// plugin changed :path or a routing header). proxy_set_property writes go
// out as dynamic_metadata on the next answer, as string values under
// Options.MetadataNamespace (default "envoy.filters.http.wasm"), which the
// filter must list in metadata_options.receiving_namespaces.
//
// Properties the plugin reads that the host cannot derive from the header
// maps come from what Envoy sends: attributes["envoy.filters.http.ext_proc"]
// (the filter's request_attributes and response_attributes, sent once per
// direction and kept), converted back to Envoy's binary encoding by the
// attribute's CEL type (integers arrive as doubles, timestamps and
// durations as text), and metadata_context for metadata and
// metadata.filter_metadata.NS.KEY paths. Anything not sent is NOT_FOUND.
//
// # Body modes
//
// Envoy says its body modes in protocol_config on the first message
// (Envoy 1.35+); without it the server assumes Envoy's defaults and still
// accepts bodies, answering each message as it comes.
//
//	Mode                  Envoy sends                    The server answers
//	NONE                  headers (and trailers if SEND)  one HeadersResponse / TrailersResponse each;
//	                                                     mode_override asks for BUFFERED when the
//	                                                     plugin has body callbacks (DisableModeOverride)
//	STREAMED              every chunk, pipelined          exactly one BodyResponse per chunk, in order;
//	                                                     a plugin pause answers the chunk with
//	                                                     clear_body, and the chunk that continues
//	                                                     carries everything held, as the plugin left it
//	                                                     (bytes resumed asynchronously mid-body go out
//	                                                     with the next chunk's answer)
//	BUFFERED              the whole body, once            one BodyResponse; header changes made in the
//	                                                     body callback ride in it, content-length is
//	                                                     kept equal to the new body length
//	BUFFERED_PARTIAL      the first buffer-full, once     one BodyResponse (the rest passes unprocessed)
//	FULL_DUPLEX_STREAMED  everything, without waiting     streamed_response answers, M:N, at most 64 KiB
//	                                                     each; every byte comes back; the last carries
//	                                                     end_of_stream, or a TrailersResponse ends it
//	observability_mode    copies                          nothing; the plugin still runs
//
// A plugin pause (headers, an end-of-stream body, trailers) withholds the
// answer until the plugin resumes (a timer, a queue, another stream);
// messages of that direction arriving meanwhile wait too, as Envoy gives a
// stopped filter nothing more. Directions are independent and may
// interleave.
//
// # Failures
//
// Plugin failures (trap, exit, call over its deadline, memory limit) and
// a pool without a healthy instance follow the plugin's failure policy
// (host.Config): fail-closed answers with an ImmediateResponse of the fail
// status (details wasm_fail_stream, grpc_status UNAVAILABLE); fail-open
// answers CONTINUE and skips the plugin for the rest of the stream. Only
// the streams on the failed instance are affected. A malformed or
// out-of-order message ends its stream with InvalidArgument or
// FailedPrecondition and a message naming the problem; other streams are
// unaffected.
//
// # Differences from the plugin running inside Envoy
//
//   - proxy_close_stream cannot reset the downstream stream through
//     ext_proc: the request gets an ImmediateResponse (Options.CloseStatus,
//     503, details wasm_close_stream), which Envoy turns into a reset if the
//     response has already started.
//   - Header changes reach Envoy only while it still holds the headers: in
//     the headers answer, or in the first body answer in BUFFERED and
//     BUFFERED_PARTIAL mode. Later changes (request headers changed in a
//     response callback or a STREAMED body callback, for instance) are
//     dropped with a debug log. Trailers can only change in the trailers
//     answer.
//   - In STREAMED mode a pause is emulated: Envoy forwards nothing of the
//     cleared chunks until the plugin continues, which is what the plugin
//     wants, but Envoy has then answered every chunk, so bytes still held
//     when the trailers arrive cannot be delivered: the request fails with
//     the fail status (details wasm_body_undeliverable) instead of losing
//     data. With trailer mode SKIP such bytes are lost (warned and counted
//     in Stats.LostBodyBytes). Use BUFFERED or FULL_DUPLEX_STREAMED for
//     plugins that buffer bodies with trailers.
//   - A BUFFERED or BUFFERED_PARTIAL body the plugin pauses without
//     end_of_stream (trailers follow, or the partial body is cut) is
//     released at once: no more body will come, and Envoy holds the
//     trailers until that answer.
//   - The plugin only sees bodies Envoy sends: with body mode NONE its body
//     callbacks never run unless Envoy honours mode_override
//     (allow_mode_override: true); BUFFERED bodies are bounded by Envoy's
//     buffer limit (413 beyond it).
//   - Header mode SKIP is not supported: a body or trailers message before
//     its direction's headers is a protocol error, since the plugin needs
//     the headers first.
//   - Envoy's mutation_rules and content-length handling are mirrored, not
//     read: set MutationRules to match the filter.
//   - Property values are what Envoy's CEL printing lets through: maps,
//     lists and protos other than metadata_context (xds.node,
//     xds.*_metadata, request.headers sent as an attribute) are NOT_FOUND
//     unless the host derives them itself (request.*, response.code and
//     headers).
//   - Flow control, the GRPC body mode and streamed_immediate_response are
//     not implemented (Envoy implements none of them either).
//
// # Chains
//
// Options.Plugins and Options.Chains serve several named plugins in chains
// (chains.go, chain.go): a stream picks its chain on its first message, by
// the gRPC initial metadata key x-wasm-callout-chain (ChainMetadataKey) or
// the metadata_context field wasm-callout.chain, else the default chain; an
// unknown name ends it with NotFound. The plugins of a chain run on that one
// stream with Envoy's filter-chain semantics (request callbacks in order,
// response callbacks in reverse, a pause stops the rest, a local reply
// short-circuits, each plugin its own failure policy) and one answer per
// message. Each plugin swaps on its own (SwapPlugin, ReloadPlugin); Apply
// changes plugins and chains for new streams while running ones finish on
// what they started with. L4 connections run chains the same way
// (network_chain.go), choosing them by initial metadata.
//
// # network_ext_proc (L4)
//
// The same Server also serves envoy.service.network_ext_proc.v3
// NetworkExternalProcessor (NetworkProcessor, registered by Register), for
// Envoy's envoy.filters.network.ext_proc filter: one Process stream is one
// TCP connection through the plugin's TCP context (host.TCPStream), created
// on the first frame. read_data becomes proxy_on_downstream_data, write_data
// proxy_on_upstream_data, end_of_stream the direction's connection-close
// callback. Every frame gets exactly one answer, in order, with the same
// direction's data (all of it, MODIFIED only when changed) and the frame's
// end_of_stream; a plugin pause is answered with empty data while the host
// holds the bytes, which go out with the answer that continues.
// proxy_close_stream becomes connection_status CLOSE, a local response
// CLOSE_RST; failures close the connection (fail-closed) or pass its data
// (fail-open). docs/network.md has the full mapping and the differences
// from the filter running inside Envoy.
package server
