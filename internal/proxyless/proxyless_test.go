package proxyless

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	extprocfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"
)

const (
	bodyNone = extprocfilterv3.ProcessingMode_NONE
	bodyGRPC = extprocfilterv3.ProcessingMode_GRPC
	send     = extprocfilterv3.ProcessingMode_SEND
	skip     = extprocfilterv3.ProcessingMode_SKIP
)

// backendResp is the digest of the backend's unary response payload.
func backendResp(id string, size int) []digest {
	return []digest{digestOf(payload(id, 1000, size, false))}
}

// backendGot fails the test unless the backend got call id, and returns
// what it recorded.
func backendGot(t *testing.T, e *env, id string) *backendCall {
	t.Helper()
	c := e.backend.call(id)
	if c == nil {
		t.Fatalf("call %s never reached the backend", id)
	}
	return c
}

// wantClean fails the test unless the server's streams all ended and it
// counted no protocol error, plugin failure or dropped header change.
func wantClean(t *testing.T, e *env) {
	t.Helper()
	st := e.waitIdle(t)
	if st.ProtocolErrors != 0 || st.PluginFailures != 0 || st.DroppedMutations != 0 || st.LimitRefusals != 0 {
		t.Errorf("server stats %+v: want no protocol errors, plugin failures, dropped mutations or limit refusals", st)
	}
}

// TestNoneModeBasic: body mode NONE, request and response headers SEND,
// trailers SKIP, through plugins/basic (adds x-wasm-callout: basic to
// every response). The header change must reach a real grpc-go client in
// HeaderValue.value (grpc-go ignores raw_value for keys not ending in
// -bin), and messages pass untouched.
func TestNoneModeBasic(t *testing.T) {
	t.Parallel()
	e := setup(t, plugin(t, "basic", ""), modes(bodyNone, bodyNone, skip), nil)

	// A unary RPC made as a stream: the headers the application gets are
	// the filter's.
	spec := callSpec{ID: "none-unary-stream", Kind: "unary-stream", Sizes: []int{1000}, RespSize: 300}
	r := e.client.call(t, spec)
	wantCode(t, r, codes.OK, "")
	wantValues(t, "response header", r.Header, "x-wasm-callout", "basic")
	wantValues(t, "response header", r.Header, "x-backend", "unary")
	wantValues(t, "response trailer", r.Trailer, "x-backend-trailer", "unary")
	wantValues(t, "response trailer", r.Trailer, "x-wasm-callout")
	wantDigests(t, "client received", r.Received, backendResp(spec.ID, 300))
	wantDigests(t, "backend received", backendGot(t, e, spec.ID).received, sent(spec))

	// The same through the generated stub. grpc-go fills grpc.Header()'s
	// call option from the transport stream under its interceptors, so the
	// application never sees what the ext_proc filter changed in a unary
	// call (a grpc-go limitation, not the server's): the ext_proc exchange
	// happened, but x-wasm-callout is not in the call option's headers.
	spec = callSpec{ID: "none-unary", Kind: "unary", Sizes: []int{1000}, RespSize: 300}
	r = e.client.call(t, spec)
	wantCode(t, r, codes.OK, "")
	wantValues(t, "response header (grpc.Header call option; grpc-go shows the transport's copy)", r.Header, "x-wasm-callout")
	wantValues(t, "response header", r.Header, "x-backend", "unary")
	wantDigests(t, "client received", r.Received, backendResp(spec.ID, 300))
	wantDigests(t, "backend received", backendGot(t, e, spec.ID).received, sent(spec))

	// Bidirectional streaming, with an empty payload and a message that
	// marshals to zero bytes.
	spec = callSpec{ID: "none-bidi", Kind: "bidi", Sizes: []int{10, 20000, 0, -1}}
	r = e.client.call(t, spec)
	wantCode(t, r, codes.OK, "")
	wantValues(t, "response header", r.Header, "x-wasm-callout", "basic")
	wantValues(t, "response header", r.Header, "x-backend", "bidi")
	wantValues(t, "response trailer", r.Trailer, "x-backend-trailer", "bidi")
	wantDigests(t, "client received", r.Received, sent(spec))
	wantDigests(t, "backend received", backendGot(t, e, spec.ID).received, sent(spec))

	// A backend error without headers is a trailers-only response: grpc-go
	// sends its trailers to ext_proc as the response headers, so the
	// plugin's header lands in the trailers and the status is kept.
	spec = callSpec{ID: "none-backend-error", Kind: "unary-stream", Sizes: []int{10}, FailCode: int(codes.PermissionDenied)}
	r = e.client.call(t, spec)
	wantCode(t, r, codes.PermissionDenied, "backend says no")
	if len(r.Header) != 0 {
		t.Errorf("trailers-only response: header %v, want none", r.Header)
	}
	wantValues(t, "response trailer", r.Trailer, "x-wasm-callout", "basic")

	wantClean(t, e)
	if st := e.srv.Stats(); st.StreamsStarted != 4 || st.ImmediateResponses != 0 {
		t.Errorf("server stats %+v: want 4 streams started (one per RPC) and no immediate response", st)
	}
}

// TestLocalReply: plugins/testbed's local replies (proxy_send_local_response
// 403 with gRPC status -1, i.e. none, and a body) reach a gRPC client as
// Envoy answers a gRPC request locally: PERMISSION_DENIED, mapped from the
// HTTP status, with the body as the message. The reply's headers do not
// reach it (grpc-go drops an immediate response's headers).
func TestLocalReply(t *testing.T) {
	t.Parallel()
	e := setup(t, plugin(t, "testbed", ""), modes(bodyNone, bodyNone, skip), nil)
	for _, kind := range []string{"unary", "unary-stream", "bidi"} {
		// On the request headers: the backend is never called.
		spec := callSpec{ID: "local-reply-" + kind, Kind: kind, Sizes: []int{100}, RespSize: 10,
			Metadata: map[string]string{"x-testbed": "local-reply"}}
		r := e.client.call(t, spec)
		wantCode(t, r, codes.PermissionDenied, "denied by testbed")
		wantValues(t, "response header", r.Header, "x-testbed-reply")
		wantValues(t, "response trailer", r.Trailer, "x-testbed-reply")
		if c := e.backend.call(spec.ID); c != nil {
			t.Errorf("call %s reached the backend despite the local reply", spec.ID)
		}
	}

	// On the response headers: the backend answered, the client still
	// gets the local reply's status.
	spec := callSpec{ID: "local-reply-resp", Kind: "unary-stream", Sizes: []int{100}, RespSize: 10,
		Metadata: map[string]string{"x-testbed": "local-reply-resp"}}
	r := e.client.call(t, spec)
	wantCode(t, r, codes.PermissionDenied, "denied by testbed in response")
	if len(r.Received) != 0 {
		t.Errorf("call %s: client received %v after a local reply", spec.ID, r.Received)
	}
	backendGot(t, e, spec.ID)

	// proxy_close_stream: the server's stand-in immediate response (503,
	// details wasm_close_stream), UNAVAILABLE for a gRPC client.
	spec = callSpec{ID: "close", Kind: "unary-stream", Sizes: []int{100}, Metadata: map[string]string{"x-testbed": "close"}}
	r = e.client.call(t, spec)
	wantCode(t, r, codes.Unavailable, "wasm_close_stream")

	st := e.waitIdle(t)
	if st.ImmediateResponses != 5 || st.ProtocolErrors != 0 {
		t.Errorf("server stats %+v: want 5 immediate responses, no protocol error", st)
	}
}

// TestPluginFailure: a plugin that traps is answered by the fail-closed
// policy, whose immediate response carries gRPC status UNAVAILABLE and
// details wasm_fail_stream.
func TestPluginFailure(t *testing.T) {
	t.Parallel()
	e := setup(t, plugin(t, "testbed", "trap"), modes(bodyNone, bodyNone, skip), nil)
	spec := callSpec{ID: "trap", Kind: "unary-stream", Sizes: []int{100}, Metadata: map[string]string{"x-testbed": "trap"}}
	r := e.client.call(t, spec)
	wantCode(t, r, codes.Unavailable, "wasm_fail_stream")
	if c := e.backend.call(spec.ID); c != nil {
		t.Errorf("call %s reached the backend despite the plugin failure", spec.ID)
	}
	if st := e.waitIdle(t); st.PluginFailures != 1 {
		t.Errorf("server stats %+v: want 1 plugin failure", st)
	}
}

// TestHeaderAndTrailerEdits: plugins/testbed sets, adds and removes request
// headers (seen by the backend) and response headers, and sets and adds
// response trailers (response trailer mode SEND), including -bin keys,
// which the plugin sees base64-encoded and grpc-go takes as raw bytes from
// raw_value.
func TestHeaderAndTrailerEdits(t *testing.T) {
	t.Parallel()
	e := setup(t, plugin(t, "testbed", ""), modes(bodyNone, bodyNone, send), nil)
	md := map[string]string{
		"x-testbed":  "set-req,add-req,del-req,set-resp,add-resp,del-resp,trailers",
		"x-set":      "x-req-set=one",
		"x-add":      "x-req-add=two;x-req-data-bin=AQID",
		"x-del":      "x-req-del",
		"x-req-del":  "gone",
		"x-set-resp": "x-resp-set=three",
		"x-add-resp": "x-backend=added;x-resp-data-bin=BAUG",
		"x-del-resp": "x-backend-del",
	}
	for _, kind := range []string{"unary-stream", "bidi", "unary"} {
		spec := callSpec{ID: "edits-" + kind, Kind: kind, Sizes: []int{100}, RespSize: 10, Metadata: md}
		r := e.client.call(t, spec)
		wantCode(t, r, codes.OK, "")

		got := backendGot(t, e, spec.ID).md
		wantValues(t, "backend request header", got, "x-req-set", "one")
		wantValues(t, "backend request header", got, "x-req-add", "two")
		wantValues(t, "backend request header", got, "x-req-data-bin", "\x01\x02\x03")
		wantValues(t, "backend request header", got, "x-req-del")

		if kind == "unary" {
			// grpc.Header and grpc.Trailer call options show the
			// transport's metadata (see TestNoneModeBasic).
			wantValues(t, "response header (call option)", r.Header, "x-resp-set")
			continue
		}
		backendKind := strings.TrimSuffix(kind, "-stream")
		wantValues(t, "response header", r.Header, "x-resp-set", "three")
		wantValues(t, "response header", r.Header, "x-backend", backendKind, "added")
		wantValues(t, "response header", r.Header, "x-resp-data-bin", "\x04\x05\x06")
		wantValues(t, "response header", r.Header, "x-backend-del")
		wantValues(t, "response trailer", r.Trailer, "x-backend-trailer", backendKind)
		wantValues(t, "response trailer", r.Trailer, "x-testbed-trailer", "resp")
		wantValues(t, "response trailer", r.Trailer, "x-testbed-req-trailers", "0") // gRPC requests have no trailers
	}
	wantClean(t, e)

	// Changes grpc-go would fail the whole RPC over (host, grpc-*,
	// pseudo-headers) are left out by the server and counted; the rest
	// apply.
	spec := callSpec{ID: "edits-refused", Kind: "unary-stream", Sizes: []int{1}, Metadata: map[string]string{
		"x-testbed":  "set-req,set-resp",
		"x-set":      "host=elsewhere;grpc-x=1;:authority=elsewhere;x-fine=yes",
		"x-set-resp": "grpc-y=2;:status=500;x-fine-resp=yes",
	}}
	r := e.client.call(t, spec)
	wantCode(t, r, codes.OK, "")
	got := backendGot(t, e, spec.ID).md
	wantValues(t, "backend request header", got, "x-fine", "yes")
	wantValues(t, "backend request header", got, "grpc-x")
	wantValues(t, "backend request header", got, ":authority", listenerName)
	wantValues(t, "response header", r.Header, "x-fine-resp", "yes")
	wantValues(t, "response header", r.Header, "grpc-y")
	if st := e.waitIdle(t); st.DroppedMutations != 5 || st.ProtocolErrors != 0 {
		t.Errorf("server stats %+v: want 5 dropped mutations (host, grpc-x, :authority, grpc-y, :status), no protocol error", st)
	}
}

// TestObservabilityMode: with observability_mode the client does not wait
// for answers and the server sends none, so the plugin's header is not
// added and the RPCs pass as they are.
func TestObservabilityMode(t *testing.T) {
	t.Parallel()
	e := setup(t, plugin(t, "basic", ""), modes(bodyNone, bodyNone, skip), func(f *extprocfilterv3.ExternalProcessor) {
		f.ObservabilityMode = true
		f.DeferredCloseTimeout = durationpb.New(50 * time.Millisecond)
	})
	spec := callSpec{ID: "observed", Kind: "bidi", Sizes: []int{100000, 5}}
	r := e.client.call(t, spec)
	wantCode(t, r, codes.OK, "")
	wantValues(t, "response header", r.Header, "x-wasm-callout")
	wantDigests(t, "client received", r.Received, sent(spec))
	st := e.waitIdle(t)
	if st.StreamsStarted != 1 || st.ResponsesSent != 0 || st.ProtocolErrors != 0 {
		t.Errorf("server stats %+v: want 1 stream, no response sent, no protocol error", st)
	}
}

// concurrent makes n bidi RPCs at once on one channel, each of sizes, and
// checks that every one ends OK with its own messages echoed unchanged and
// the plugin's header.
func concurrent(t *testing.T, e *env, prefix string, n int, sizes []int) {
	t.Helper()
	specs := make([]callSpec, n)
	for i := range specs {
		specs[i] = callSpec{ID: fmt.Sprintf("%s-%d", prefix, i), Kind: "bidi", Sizes: sizes}
	}
	for i, r := range e.client.calls(t, specs...) {
		wantCode(t, r, codes.OK, "")
		wantValues(t, "response header", r.Header, "x-wasm-callout", "basic")
		wantDigests(t, specs[i].ID+": client received", r.Received, sent(specs[i]))
		wantDigests(t, specs[i].ID+": backend received", backendGot(t, e, specs[i].ID).received, sent(specs[i]))
		if t.Failed() {
			return
		}
	}
	wantClean(t, e)
	if st := e.srv.Stats(); st.StreamsStarted != int64(n) {
		t.Errorf("server stats %+v: want %d streams", st, n)
	}
}

// TestConcurrentRPCs: 100 bidi RPCs at once on one channel, multiplexed by
// the client over its one connection to wasm-callout.
func TestConcurrentRPCs(t *testing.T) {
	t.Parallel()
	e := setup(t, plugin(t, "basic", ""), modes(bodyNone, bodyNone, skip), nil)
	concurrent(t, e, "none", 100, []int{1000, 5, -1})
}

// TestRequestProperties: a proxyless client sends only the RPC's metadata
// as request headers, no pseudo-headers, so the request.path and
// request.method properties are NOT_FOUND; with the filter's
// request_attributes asking for them, grpc-go sends them as attributes and
// the plugin reads them.
func TestRequestProperties(t *testing.T) {
	t.Parallel()
	p := plugin(t, "testbed", "")
	for _, tc := range []struct {
		name         string
		attrs        []string
		path, method string
	}{
		{"headers-only", nil, "NOT_FOUND", "NOT_FOUND"},
		{"attributes", []string{"request.path", "request.method"}, "/grpc.testing.TestService/UnaryCall", "POST"},
	} {
		e := setup(t, p, modes(bodyNone, bodyNone, skip), func(f *extprocfilterv3.ExternalProcessor) {
			f.RequestAttributes = tc.attrs
		})
		spec := callSpec{ID: "props-" + tc.name, Kind: "unary-stream", Sizes: []int{1}, Metadata: map[string]string{"x-testbed": "props,echo-headers"}}
		r := e.client.call(t, spec)
		wantCode(t, r, codes.OK, "")
		wantValues(t, tc.name+": response header", r.Header, "x-prop-request-path", tc.path)
		wantValues(t, tc.name+": response header", r.Header, "x-prop-request-method", tc.method)
		wantValues(t, tc.name+": response header", r.Header, "x-echo-path")
		wantValues(t, tc.name+": response header", r.Header, "x-echo-x-call-id", spec.ID)
		wantClean(t, e)
	}
}

// ---- GRPC body mode ----

// TestGRPCModePassThrough: request and response body mode GRPC (response
// trailers SEND, which grpc-go requires with it) through plugins/basic,
// with messages far larger than grpc-go's 64 KiB ext_proc flow-control
// windows, so the RPCs finish only if the server grants window back. Every
// message reaches the backend and the client byte for byte.
func TestGRPCModePassThrough(t *testing.T) {
	t.Parallel()
	e := setup(t, plugin(t, "basic", ""), modes(bodyGRPC, bodyGRPC, send), nil)
	for _, kind := range []string{"unary-stream", "unary"} {
		spec := callSpec{ID: "grpc-" + kind, Kind: kind, Sizes: []int{1 << 20}, RespSize: 300000}
		r := e.client.call(t, spec)
		wantCode(t, r, codes.OK, "")
		if kind == "unary-stream" {
			wantValues(t, "response header", r.Header, "x-wasm-callout", "basic")
			wantValues(t, "response trailer", r.Trailer, "x-backend-trailer", "unary")
		}
		wantDigests(t, "client received", r.Received, backendResp(spec.ID, 300000))
		wantDigests(t, "backend received", backendGot(t, e, spec.ID).received, sent(spec))
	}

	spec := callSpec{ID: "grpc-bidi", Kind: "bidi", Sizes: []int{100000, 70000, -1, 1, 150000, 300000, 0, 65536}}
	r := e.client.call(t, spec)
	wantCode(t, r, codes.OK, "")
	wantValues(t, "response header", r.Header, "x-wasm-callout", "basic")
	wantValues(t, "response trailer", r.Trailer, "x-backend-trailer", "bidi")
	wantDigests(t, "client received", r.Received, sent(spec))
	wantDigests(t, "backend received", backendGot(t, e, spec.ID).received, sent(spec))
	wantClean(t, e)
}

// TestGRPCModeConcurrentRPCs: 100 bidi RPCs at once in GRPC mode, each
// with messages past the 64 KiB window.
func TestGRPCModeConcurrentRPCs(t *testing.T) {
	t.Parallel()
	e := setup(t, plugin(t, "basic", ""), modes(bodyGRPC, bodyGRPC, send), nil)
	concurrent(t, e, "grpc", 100, []int{100000, 5, 70000})
}

// upper is the digests of spec's messages in ASCII upper case.
func upper(spec callSpec) []digest {
	var d []digest
	for i, n := range spec.Sizes {
		d = append(d, digestOf(bytes.ToUpper(payload(spec.ID, i, n, spec.Text))))
	}
	return d
}

// TestGRPCModeRewrite: plugins/testbed's buffer-body holds the request body
// to its end and upper-cases it as text. The plugin sees the gRPC wire
// framing (5-byte prefix per message), so this only leaves valid messages
// when no framing or protobuf byte is a lower-case letter: messages with
// fields under 97 bytes of lower-case letters. (No repository plugin
// rewrites gRPC messages knowingly; larger messages come out as broken
// framing, which fails the stream with INTERNAL.)
func TestGRPCModeRewrite(t *testing.T) {
	t.Parallel()
	e := setup(t, plugin(t, "testbed", ""), modes(bodyGRPC, bodyGRPC, send), nil)
	md := map[string]string{"x-testbed": "buffer-body"}

	spec := callSpec{ID: "rewrite-unary", Kind: "unary-stream", Sizes: []int{80}, Text: true, RespSize: 10, Metadata: md}
	r := e.client.call(t, spec)
	wantCode(t, r, codes.OK, "")
	wantDigests(t, "backend received", backendGot(t, e, spec.ID).received, upper(spec))
	wantDigests(t, "client received", r.Received, backendResp(spec.ID, 10))

	spec = callSpec{ID: "rewrite-bidi", Kind: "bidi", Sizes: []int{80, 5, 0, 60}, Text: true, Metadata: md}
	r = e.client.call(t, spec)
	wantCode(t, r, codes.OK, "")
	wantDigests(t, "backend received", backendGot(t, e, spec.ID).received, upper(spec))
	wantDigests(t, "client received (the backend's echo)", r.Received, upper(spec))
	wantClean(t, e)
}

// TestGRPCModeHeldBeyondWindow: a plugin that holds the request body to
// its end (testbed buffer-body) on a client stream whose messages add up to
// more than the client's 64 KiB window. In Envoy the same plugin gets the
// whole body (or 413 past the buffer limit); here the RPC must end
// promptly too, not wait for its deadline because the client stopped
// sending for want of window while the plugin waits for the end of stream.
func TestGRPCModeHeldBeyondWindow(t *testing.T) {
	t.Parallel()
	e := setup(t, plugin(t, "testbed", ""), modes(bodyGRPC, bodyGRPC, send), nil)
	spec := callSpec{ID: "held", Kind: "bidi", Text: true, TimeoutMS: 5000, Metadata: map[string]string{"x-testbed": "buffer-body"}}
	for range 1000 { // 1000 messages of 84 bytes: 84 000 bytes of window
		spec.Sizes = append(spec.Sizes, 80)
	}
	r := e.client.call(t, spec)
	if r.Millis >= 4000 || r.Code == codes.DeadlineExceeded.String() || strings.Contains(r.Message, "DeadlineExceeded") {
		t.Fatalf("call %s waited for its deadline: %s %q after %d ms (the client ran out of window while the plugin held the body)",
			spec.ID, r.Code, r.Message, r.Millis)
	}
	wantCode(t, r, codes.OK, "")
	wantDigests(t, "backend received", backendGot(t, e, spec.ID).received, upper(spec))
}
