// Package plugintest runs declarative proxy-wasm plugin tests written in the
// format of Google's plugin tester (a TestSuite in protobuf text format,
// tests.textpb, or its YAML twin, tests.yaml; see specpb/spec.proto) on
// wasm-callout's own host, directly or through the real ext_proc server and
// the Envoy emulator.
//
// A test is one HTTP stream: the plugin is loaded afresh (plugin_init), a
// stream is opened (stream_init), the phases given run in order
// (request_headers, request_body…, response_headers, response_body…), and
// the stream is closed (stream_destroy). Each phase's expectations are
// checked against what the plugin left (headers, body, a local reply) and
// the log lines it wrote during that phase. A local reply ends the stream:
// later phases are not run, and any expectation they hold fails.
//
// Differences from Google's tester, all deliberate:
//   - the logs of a body invocation split into chunks are those of all its
//     chunks, not of the last one only;
//   - properties from the spec answer proxy_get_property after what the
//     host derives itself (request.*, response.* from the header maps,
//     plugin_name…), as Envoy's attributes do;
//   - a body the plugin still holds (paused) at the end of an invocation is
//     reported as that invocation's output.
package plugintest
