package server

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	filterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/wasm-callout/wasm-callout/abi"
	"github.com/wasm-callout/wasm-callout/host"
	"github.com/wasm-callout/wasm-callout/server/envoytest"
)

const (
	none        = filterv3.ProcessingMode_NONE
	streamed    = filterv3.ProcessingMode_STREAMED
	buffered    = filterv3.ProcessingMode_BUFFERED
	partial     = filterv3.ProcessingMode_BUFFERED_PARTIAL
	fullDuplex  = filterv3.ProcessingMode_FULL_DUPLEX_STREAMED
	send        = filterv3.ProcessingMode_SEND
	headerDflt  = filterv3.ProcessingMode_DEFAULT
	testbedHdr  = "x-testbed"
	goldenDir   = "golden"
	upstreamMsg = "upstream says hi"
)

// mode builds a ProcessingMode with both directions' body modes; trailers
// are sent when asked (FULL_DUPLEX_STREAMED requires it).
func mode(req, resp filterv3.ProcessingMode_BodySendMode, trailers bool) *filterv3.ProcessingMode {
	m := &filterv3.ProcessingMode{RequestBodyMode: req, ResponseBodyMode: resp}
	if trailers {
		m.RequestTrailerMode, m.ResponseTrailerMode = send, send
	}
	return m
}

// post is a POST with the given testbed actions and body chunks.
func post(actions string, body ...string) *envoytest.Request {
	h := envoytest.H(":method", "POST", ":path", "/echo?q=1", ":authority", "example.com", ":scheme", "https",
		"content-type", "text/plain")
	if actions != "" {
		h = append(h, envoytest.Header{Key: testbedHdr, Value: actions})
	}
	r := &envoytest.Request{Headers: h, Response: &envoytest.Response{
		Headers: envoytest.H(":status", "200", "content-type", "text/plain"),
		Body:    [][]byte{[]byte(upstreamMsg)},
	}}
	for _, c := range body {
		r.Body = append(r.Body, []byte(c))
	}
	return r
}

func get(actions string) *envoytest.Request {
	r := post(actions)
	r.Headers[0].Value = "GET"
	return r
}

func withHeader(r *envoytest.Request, kv ...string) *envoytest.Request {
	r.Headers = append(r.Headers, envoytest.H(kv...)...)
	return r
}

// clean fails the test on anything Envoy would count as a server error.
func clean(t *testing.T, res *envoytest.Result) {
	t.Helper()
	s := res.Stats
	if s.SpuriousMessages+s.MessageTimeouts+s.RejectedHeaderMutations+s.StreamsFailed > 0 {
		t.Errorf("Envoy saw errors: %+v", s)
	}
	if lr := res.LocalReply; lr != nil && !lr.Immediate {
		t.Errorf("Envoy generated a local reply: %+v", lr)
	}
}

func golden(t *testing.T, res *envoytest.Result) {
	t.Helper()
	name := strings.ReplaceAll(t.Name(), "/", "__")
	envoytest.CompareGolden(t, filepath.Join("testdata", goldenDir, name+".txt"), res.Transcript)
}

func header(t *testing.T, h envoytest.Headers, key, want string) {
	t.Helper()
	if got, ok := h.Get(key); !ok || got != want {
		t.Errorf("header %s = %q (present %v), want %q\n%s", key, got, ok, want, h)
	}
}

func noHeader(t *testing.T, h envoytest.Headers, key string) {
	t.Helper()
	if h.Has(key) {
		t.Errorf("header %s present, want absent\n%s", key, h)
	}
}

func body(t *testing.T, what string, got []byte, want string) {
	t.Helper()
	if string(got) != want {
		t.Errorf("%s body = %q, want %q", what, got, want)
	}
}

// TestModes plays every processing mode with the Go plugins and compares
// the side-stream transcripts with testdata/golden (rerun with -update to
// rewrite them after an intended change).
func TestModes(t *testing.T) {
	testbed := start(t, Options{Plugin: plugin(t, "testbed", host.FailClosed, "")})
	basic := start(t, Options{Plugin: plugin(t, "basic", host.FailClosed, "x-added: by-basic")})
	var seen uint64
	lockstep := func(r *envoytest.Request) *envoytest.Request { r.Pacing = envoytest.PaceLockstep; return r }

	tests := []struct {
		name  string
		h     *harness
		cfg   envoytest.Config
		req   *envoytest.Request
		setup func()
		check func(t *testing.T, res *envoytest.Result)
	}{
		{
			name: "headers_only_basic",
			h:    basic, req: post("", "body passes"),
			check: func(t *testing.T, res *envoytest.Result) {
				header(t, res.Response.Headers, "x-added", "by-basic")
				body(t, "request", res.Request.Body, "body passes")
				body(t, "response", res.Response.Body, upstreamMsg)
			},
		},
		{
			name: "headers_end_of_stream",
			h:    testbed, req: get("echo-headers"),
			cfg: envoytest.Config{ProcessingMode: mode(streamed, streamed, false)},
			check: func(t *testing.T, res *envoytest.Result) {
				if !res.Transcript.Requests()[0].GetRequestHeaders().GetEndOfStream() {
					t.Error("GET headers without end_of_stream")
				}
				header(t, res.Response.Headers, "x-echo-method", "GET")
				header(t, res.Response.Headers, "x-echo-path", "/echo?q=1")
			},
		},
		{
			name: "streamed_pipelined",
			h:    testbed, req: post("echo-headers", "one,", "two,", "three"),
			cfg: envoytest.Config{ProcessingMode: mode(streamed, streamed, false)},
			check: func(t *testing.T, res *envoytest.Result) {
				body(t, "request", res.Request.Body, "one,two,three")
				// Exactly one BodyResponse per chunk, none with a mutation.
				n := 0
				for _, r := range res.Transcript.Responses() {
					if b := r.GetRequestBody(); b != nil {
						n++
						if b.GetResponse().GetBodyMutation() != nil {
							t.Errorf("unchanged chunk answered with a mutation: %v", b)
						}
					}
				}
				if n != 3 {
					t.Errorf("%d request body answers, want 3", n)
				}
			},
		},
		{
			name: "streamed_pause_until_eos",
			h:    testbed, req: post("buffer-body,replace-resp-body", "abc", "def", "ghi"),
			cfg: envoytest.Config{ProcessingMode: mode(streamed, streamed, false)},
			check: func(t *testing.T, res *envoytest.Result) {
				body(t, "request", res.Request.Body, "ABCDEFGHI")
				body(t, "response", res.Response.Body, "replaced by testbed\n")
			},
		},
		{
			name: "streamed_send_without_waiting",
			h:    testbed, req: post("prepend-body,append-body", "abc", "def"),
			cfg: envoytest.Config{ProcessingMode: mode(streamed, none, false), SendBodyWithoutWaitingForHeaderResponse: true},
			check: func(t *testing.T, res *envoytest.Result) {
				body(t, "request", res.Request.Body, "prepended+abcdef+appended")
			},
		},
		{
			name: "buffered",
			h:    testbed, req: post("buffer-body,replace-resp-body", "abc", "def"),
			cfg: envoytest.Config{ProcessingMode: mode(buffered, buffered, false)},
			check: func(t *testing.T, res *envoytest.Result) {
				body(t, "request", res.Request.Body, "ABCDEF")
				body(t, "response", res.Response.Body, "replaced by testbed\n")
			},
		},
		{
			name: "buffered_with_trailers",
			h:    testbed, req: withTrailers(post("buffer-body,trailers", "abc", "def")),
			cfg: envoytest.Config{ProcessingMode: mode(buffered, none, true)},
			check: func(t *testing.T, res *envoytest.Result) {
				// buffer-body waits for an end of stream the body never has
				// (trailers follow): the server releases it unchanged, as
				// Envoy forwards a paused body when trailers continue.
				body(t, "request", res.Request.Body, "abcdef")
				header(t, res.Request.Trailers, "x-testbed-trailer", "req")
				header(t, res.Response.Headers, ":status", "200")
			},
		},
		{
			name: "buffered_partial",
			h:    testbed, req: post("prepend-body,append-body", "abc", "def", "ghi"),
			cfg: envoytest.Config{ProcessingMode: mode(partial, none, false), BufferLimit: 4},
			check: func(t *testing.T, res *envoytest.Result) {
				// The first 6 bytes (over the 4-byte limit) are processed,
				// the rest streams through unprocessed.
				body(t, "request", res.Request.Body, "prepended+abcdefghi")
			},
		},
		{
			name: "full_duplex",
			h:    testbed, req: withTrailers(post("buffer-body,replace-resp-body", "ab", "cd")),
			cfg: envoytest.Config{ProcessingMode: mode(fullDuplex, fullDuplex, true)},
			check: func(t *testing.T, res *envoytest.Result) {
				// With trailers no body chunk has end_of_stream, so the
				// plugins' wait for it never ends: the held bytes go out
				// unchanged before the trailers answer, as Envoy forwards a
				// paused body when the trailers continue.
				body(t, "request", res.Request.Body, "abcd")
				header(t, res.Request.Trailers, "x-trailer", "t")
				body(t, "response", res.Response.Body, upstreamMsg)
			},
		},
		{
			name: "full_duplex_eos",
			h:    testbed, req: post("buffer-body", "ab", "cd"),
			cfg: envoytest.Config{ProcessingMode: mode(fullDuplex, fullDuplex, true)},
			check: func(t *testing.T, res *envoytest.Result) {
				body(t, "request", res.Request.Body, "ABCD")
				body(t, "response", res.Response.Body, upstreamMsg)
			},
		},
		{
			name: "trailers",
			h:    testbed, req: withTrailers(post("trailers", "abc")),
			cfg: envoytest.Config{ProcessingMode: mode(streamed, streamed, true)},
			check: func(t *testing.T, res *envoytest.Result) {
				header(t, res.Request.Trailers, "x-testbed-trailer", "req")
				header(t, res.Response.Trailers, "x-testbed-trailer", "resp")
				header(t, res.Response.Trailers, "x-testbed-req-trailers", "1")
			},
		},
		{
			name: "headers_mutations",
			h:    testbed,
			req: withHeader(get("set-req,add-req,del-req,set-resp,del-resp"),
				"x-set", "x-a=1;:path=/new;host=evil.example;x-envoy-x=1", "x-add", "x-a=2;x-b=3",
				"x-del", "x-gone;content-type", "x-gone", "1",
				"x-set-resp", ":status=201;x-r=1", "x-del-resp", "content-type"),
			check: func(t *testing.T, res *envoytest.Result) {
				if got := res.Request.Headers.Values("x-a"); len(got) != 2 || got[0] != "1" || got[1] != "2" {
					t.Errorf("x-a = %v, want [1 2]", got)
				}
				header(t, res.Request.Headers, "x-b", "3")
				header(t, res.Request.Headers, ":path", "/new")
				header(t, res.Request.Headers, ":authority", "example.com")
				noHeader(t, res.Request.Headers, "x-gone")
				noHeader(t, res.Request.Headers, "content-type")
				noHeader(t, res.Request.Headers, "host")
				noHeader(t, res.Request.Headers, "x-envoy-x")
				header(t, res.Response.Headers, ":status", "201")
				header(t, res.Response.Headers, "x-r", "1")
				noHeader(t, res.Response.Headers, "content-type")
			},
		},
		{
			name: "local_reply",
			h:    testbed, req: post("local-reply", "never sent"),
			cfg: envoytest.Config{ProcessingMode: mode(buffered, buffered, false)},
			check: func(t *testing.T, res *envoytest.Result) {
				lr := res.LocalReply
				if lr == nil || !lr.Immediate || lr.Status != 403 || string(lr.Body) != "denied by testbed\n" {
					t.Fatalf("local reply %+v", lr)
				}
				header(t, res.Response.Headers, "x-testbed-reply", "local")
				if res.Request.Sent {
					t.Error("request went upstream")
				}
			},
		},
		{
			name: "local_reply_in_response",
			h:    testbed, req: get("local-reply-resp"),
			check: func(t *testing.T, res *envoytest.Result) {
				if lr := res.LocalReply; lr == nil || lr.Status != 403 || string(lr.Body) != "denied by testbed in response\n" {
					t.Fatalf("local reply %+v", lr)
				}
				header(t, res.Response.Headers, "x-testbed-reply", "local-resp")
			},
		},
		{
			name: "unknown_action_local_reply",
			h:    testbed, req: get("no-such-action"),
			check: func(t *testing.T, res *envoytest.Result) {
				if lr := res.LocalReply; lr == nil || lr.Status != 400 {
					t.Fatalf("local reply %+v", lr)
				}
			},
		},
		{
			name: "continue_inline",
			h:    testbed, req: get("continue-inline,echo-headers"),
			check: func(t *testing.T, res *envoytest.Result) {
				// The plugin resumed inside its own callback: the pause it
				// returned is a continue.
				header(t, res.Response.Headers, "x-echo-method", "GET")
			},
		},
		{
			name: "properties_from_attributes",
			h:    testbed, req: get("props"),
			cfg: envoytest.Config{RequestAttributes: map[string]*structpb.Value{
				"source.address":   structpb.NewStringValue("10.1.2.3:4567"),
				"xds.cluster_name": structpb.NewStringValue("backend"),
				"request.path":     structpb.NewStringValue("/ignored: the host derives it from :path"),
			}},
			check: func(t *testing.T, res *envoytest.Result) {
				h := res.Response.Headers
				header(t, h, "x-prop-source-address", "10.1.2.3:4567")
				header(t, h, "x-prop-xds-cluster-name", "backend")
				header(t, h, "x-prop-cluster-name", "backend")
				header(t, h, "x-prop-request-path", "/echo?q=1")
				header(t, h, "x-prop-request-method", "GET")
				header(t, h, "x-prop-plugin-name", "testbed")
				header(t, h, "x-prop-plugin-root-id", "root-testbed")
				header(t, h, "x-prop-plugin-vm-id", "vm-testbed")
			},
		},
		{
			name: "properties_absent",
			h:    testbed, req: get("props"),
			check: func(t *testing.T, res *envoytest.Result) {
				header(t, res.Response.Headers, "x-prop-source-address", "NOT_FOUND")
				header(t, res.Response.Headers, "x-prop-xds-cluster-name", "NOT_FOUND")
			},
		},
		{
			name: "mode_override_buffered",
			h:    testbed, req: post("buffer-body,replace-resp-body", "abc", "def"),
			cfg: envoytest.Config{AllowModeOverride: true},
			check: func(t *testing.T, res *envoytest.Result) {
				if res.Stats.ModeOverrides != 1 {
					t.Errorf("mode overrides applied: %d, want 1", res.Stats.ModeOverrides)
				}
				body(t, "request", res.Request.Body, "ABCDEF")
				body(t, "response", res.Response.Body, "replaced by testbed\n")
			},
		},
		{
			name: "mode_override_ignored_by_default",
			h:    testbed, req: post("buffer-body", "abc"),
			check: func(t *testing.T, res *envoytest.Result) {
				if res.Stats.ModeOverrides != 0 {
					t.Errorf("override applied without allow_mode_override")
				}
				body(t, "request", res.Request.Body, "abc")
			},
		},
		{
			name: "observability",
			h:    testbed, req: withTrailers(post("buffer-body,echo-headers,trailers", "abc", "def")),
			cfg: envoytest.Config{ObservabilityMode: true, DeferredCloseTimeout: 50 * time.Millisecond,
				ProcessingMode: mode(streamed, streamed, true)},
			setup: func() { seen = counter(testbed.srv.Plugin(), "testbed_requests_total") },
			check: func(t *testing.T, res *envoytest.Result) {
				if n := counter(testbed.srv.Plugin(), "testbed_requests_total"); n != seen+1 {
					t.Error("the plugin never saw the request")
				}
				if n := len(res.Transcript.Responses()); n != 0 {
					t.Errorf("%d answers in observability mode, want none", n)
				}
				body(t, "request", res.Request.Body, "abcdef")
				noHeader(t, res.Response.Headers, "x-echo-method")
			},
		},
		{
			name: "interleaved_directions",
			h:    testbed, req: func() *envoytest.Request {
				r := post("echo-headers", "a", "b", "c")
				r.EarlyResponse = true
				r.Pacing = envoytest.PaceLockstep
				r.Response.Body = [][]byte{[]byte("x"), []byte("y")}
				return r
			}(),
			cfg: envoytest.Config{ProcessingMode: mode(streamed, streamed, false)},
			check: func(t *testing.T, res *envoytest.Result) {
				body(t, "request", res.Request.Body, "abc")
				body(t, "response", res.Response.Body, "xy")
				header(t, res.Response.Headers, "x-echo-method", "POST")
			},
		},
		{
			name: "lockstep_streamed_pause",
			h:    testbed, req: lockstep(post("buffer-body", "abc", "def", "ghi")),
			cfg: envoytest.Config{ProcessingMode: mode(streamed, none, false)},
			check: func(t *testing.T, res *envoytest.Result) {
				body(t, "request", res.Request.Body, "ABCDEFGHI")
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.setup != nil {
				tt.setup()
			}
			res := tt.h.do(t, tt.cfg, tt.req)
			clean(t, res)
			tt.check(t, res)
			if tt.name != "interleaved_directions" { // its interleaving depends on timing
				golden(t, res)
			}
		})
	}
}

func withTrailers(r *envoytest.Request) *envoytest.Request {
	r.Trailers = envoytest.H("x-trailer", "t")
	r.Response.Trailers = envoytest.H("grpc-status", "0")
	return r
}

// TestEdgePlugin covers what the Go SDK plugins cannot do: close_stream,
// set_property, clear_route_cache, refused header changes, changes made
// too late, and body replacement that keeps content-length.
func TestEdgePlugin(t *testing.T) {
	h := start(t, Options{Plugin: plugin(t, "edge", host.FailClosed, "")})
	act := func(a string, body ...string) *envoytest.Request {
		return withHeader(post("", body...), "x-act", a)
	}
	t.Run("close_stream", func(t *testing.T) {
		res := h.do(t, envoytest.Config{}, act("c"))
		clean(t, res)
		if lr := res.LocalReply; lr == nil || lr.Status != 503 || lr.Details != detailsCloseStream {
			t.Fatalf("local reply %+v", lr)
		}
		golden(t, res)
	})
	t.Run("properties_and_route_cache", func(t *testing.T) {
		res := h.do(t, envoytest.Config{ReceivingNamespaces: []string{DefaultMetadataNamespace}}, act("p"))
		clean(t, res)
		header(t, res.Request.Headers, ":path", "/rewritten")
		if res.Stats.ClearRouteCache != 1 {
			t.Errorf("route cache cleared %d times, want 1", res.Stats.ClearRouteCache)
		}
		md := res.DynamicMetadata[DefaultMetadataNamespace].GetFields()
		if md["note"].GetStringValue() != "hello" || md["bin"] != nil {
			t.Errorf("dynamic metadata %v, want note=hello and no bin", md)
		}
		golden(t, res)
	})
	t.Run("metadata_on_an_unchanged_answer", func(t *testing.T) {
		// The request headers answer changes nothing, so it starts from a
		// shared answer; the metadata must go on a copy.
		// Bodies BUFFERED already, so the headers answer asks for no
		// mode override either.
		buffered := &filterv3.ProcessingMode{RequestBodyMode: filterv3.ProcessingMode_BUFFERED,
			ResponseBodyMode: filterv3.ProcessingMode_BUFFERED}
		res := h.do(t, envoytest.Config{ProcessingMode: buffered, ReceivingNamespaces: []string{DefaultMetadataNamespace}}, act("m"))
		clean(t, res)
		header(t, res.Request.Headers, ":path", "/echo?q=1")
		if md := res.DynamicMetadata[DefaultMetadataNamespace].GetFields(); md["note"].GetStringValue() != "hello" {
			t.Errorf("dynamic metadata %v, want note=hello", md)
		}
		checkSharedAnswers(t)
	})
	t.Run("refused_mutations", func(t *testing.T) {
		before := h.srv.Stats().DroppedMutations
		res := h.do(t, envoytest.Config{}, withHeader(act("f"), "x-gone", "1"))
		clean(t, res) // RejectedHeaderMutations == 0: nothing refused was sent
		header(t, res.Request.Headers, ":method", "POST")
		header(t, res.Request.Headers, ":path", "/echo?q=1")
		noHeader(t, res.Request.Headers, "host")
		noHeader(t, res.Request.Headers, "x-gone")
		if got := res.Request.Headers.Values("x-ok"); len(got) != 2 {
			t.Errorf("x-ok = %v, want [1 2]", got)
		}
		if n := h.srv.Stats().DroppedMutations - before; n != 4 {
			t.Errorf("dropped %d mutations, want 4 (host, :method, x-envoy-foo, removal of :path)", n)
		}
		golden(t, res)
	})
	t.Run("late_request_header_change", func(t *testing.T) {
		res := h.do(t, envoytest.Config{}, act("l"))
		clean(t, res)
		noHeader(t, res.Request.Headers, "x-late")
		for _, r := range res.Transcript.Responses() {
			if strings.Contains(r.String(), "x-late") {
				t.Errorf("x-late sent after the request headers went upstream: %v", r)
			}
		}
	})
	t.Run("buffered_content_length", func(t *testing.T) {
		req := withHeader(act("b", "abc", "def"), "content-length", "6")
		res := h.do(t, envoytest.Config{ProcessingMode: mode(buffered, none, false)}, req)
		clean(t, res) // Envoy fails the request on a content-length mismatch
		body(t, "request", res.Request.Body, "replaced")
		header(t, res.Request.Headers, "content-length", "8")
		header(t, res.Request.Headers, "x-body-seen", "1")
		golden(t, res)
	})
	t.Run("streamed_body_change_after_headers", func(t *testing.T) {
		res := h.do(t, envoytest.Config{ProcessingMode: mode(streamed, none, false)}, act("b", "abc", "def"))
		clean(t, res)
		body(t, "request", res.Request.Body, "replaced")
		noHeader(t, res.Request.Headers, "x-body-seen") // headers were already upstream
	})
	t.Run("buffered_response_replace", func(t *testing.T) {
		req := act("r")
		req.Response.Headers = append(req.Response.Headers, envoytest.Header{Key: "content-length", Value: "16"})
		res := h.do(t, envoytest.Config{ProcessingMode: mode(none, buffered, false)}, req)
		clean(t, res)
		body(t, "response", res.Response.Body, "R")
		header(t, res.Response.Headers, "content-length", "1")
		header(t, res.Response.Headers, "x-wat", "resp")
	})
	t.Run("with_metadata_context", func(t *testing.T) {
		md := &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{}}
		md.FilterMetadata["ns"], _ = structpb.NewStruct(map[string]any{"k": "v"})
		res := h.do(t, envoytest.Config{MetadataContext: md}, act("x"))
		clean(t, res)
		header(t, res.Response.Headers, "x-wat", "resp")
	})
}

// TestStreamedBodyHeldAtTrailers: a STREAMED body the plugin still holds
// when the trailers arrive cannot be delivered (every chunk was answered
// with clear_body); the request fails instead of losing data silently.
func TestStreamedBodyHeldAtTrailers(t *testing.T) {
	h := start(t, Options{Plugin: plugin(t, "testbed", host.FailClosed, "")})
	res := h.do(t, envoytest.Config{ProcessingMode: mode(streamed, none, true)}, withTrailers(post("buffer-body", "abc")))
	lr := res.LocalReply
	if lr == nil || !lr.Immediate || lr.Status != 500 || lr.Details != detailsUndelivered {
		t.Fatalf("local reply %+v, want 500 %s", lr, detailsUndelivered)
	}
	if got := h.srv.Stats().LostBodyBytes; got != 3 {
		t.Errorf("lost body bytes %d, want 3", got)
	}
}

// TestFullDuplexLargeBody: everything Envoy drains into the side stream
// comes back, in chunks of at most 64 KiB.
func TestFullDuplexLargeBody(t *testing.T) {
	h := start(t, Options{Plugin: plugin(t, "testbed", host.FailClosed, "")})
	chunk := bytes.Repeat([]byte("0123456789abcdef"), 10000) // 160 000 bytes
	req := post("buffer-body", string(chunk), string(chunk))
	cfg := envoytest.Config{ProcessingMode: mode(fullDuplex, none, true), NoTranscript: false}
	res := h.do(t, cfg, req)
	clean(t, res)
	want := strings.ToUpper(string(chunk) + string(chunk))
	if string(res.Request.Body) != want {
		t.Fatalf("request body: %d bytes, want %d", len(res.Request.Body), len(want))
	}
	n := 0
	for _, r := range res.Transcript.Responses() {
		if sr := r.GetRequestBody().GetResponse().GetBodyMutation().GetStreamedResponse(); sr != nil {
			n++
			if len(sr.GetBody()) > maxStreamedChunk {
				t.Errorf("streamed answer of %d bytes", len(sr.GetBody()))
			}
		}
	}
	if n != 5 {
		t.Errorf("%d streamed answers, want 5 for 320 000 bytes", n)
	}
}

// TestBufferedLargeBody: a 16 MiB BUFFERED body fits the message limits.
func TestBufferedLargeBody(t *testing.T) {
	h := start(t, Options{Plugin: plugin(t, "testbed", host.FailClosed, "")})
	big := strings.Repeat("x", 16<<20)
	cfg := envoytest.Config{ProcessingMode: mode(buffered, none, false), BufferLimit: 32 << 20, NoTranscript: true,
		MessageTimeout: 20 * time.Second}
	res := h.do(t, cfg, post("prepend-body", big))
	clean(t, res)
	if len(res.Request.Body) != len(big)+10 || !strings.HasPrefix(string(res.Request.Body), "prepended+xxx") {
		t.Fatalf("request body: %d bytes, want %d", len(res.Request.Body), len(big)+10)
	}
}

// TestPauseHeadersResumedByTick: the answer to the request headers is
// withheld until the plugin resumes from its timer, and carries the
// header the timer set.
func TestPauseHeadersResumedByTick(t *testing.T) {
	h := start(t, Options{Plugin: plugin(t, "testbed", host.FailClosed, "tick_ms: 10")})
	req := post("pause-headers", "abc")
	req.Pacing = envoytest.PaceEager // body and more arrive while the headers wait
	res := h.do(t, envoytest.Config{ProcessingMode: mode(streamed, none, false), SendBodyWithoutWaitingForHeaderResponse: true}, req)
	clean(t, res)
	header(t, res.Request.Headers, "x-testbed-resumed", "tick")
	body(t, "request", res.Request.Body, "abc")
}

// TestModeOverrideDisabled: the option keeps mode_override out.
func TestModeOverrideDisabled(t *testing.T) {
	h := start(t, Options{Plugin: plugin(t, "testbed", host.FailClosed, ""), DisableModeOverride: true})
	res := h.do(t, envoytest.Config{AllowModeOverride: true}, post("buffer-body", "abc"))
	clean(t, res)
	for _, r := range res.Transcript.Responses() {
		if r.GetModeOverride() != nil {
			t.Fatalf("mode_override sent: %v", r)
		}
	}
	body(t, "request", res.Request.Body, "abc")
}

// counter reads a plugin counter.
func counter(p *host.Plugin, name string) uint64 {
	for _, m := range p.Metrics().Snapshot() {
		if m.Name == name {
			return m.Counter
		}
	}
	return 0
}

// checkSharedAnswers fails if an answer shared by every stream was
// modified (answer.go).
func checkSharedAnswers(t *testing.T) {
	t.Helper()
	for typ := range 2 {
		for _, tc := range []struct {
			got, want *extprocv3.ProcessingResponse
		}{
			{unchangedHeaders[typ], headersAnswer(abi.StreamType(typ), &extprocv3.CommonResponse{}, nil)},
			{unchangedBody[typ], bodyAnswer(abi.StreamType(typ), &extprocv3.CommonResponse{})},
		} {
			// An empty CommonResponse builds a fresh answer: compare
			// without it.
			want := tc.want
			switch r := want.Response.(type) {
			case *extprocv3.ProcessingResponse_RequestHeaders:
				r.RequestHeaders.Response = nil
			case *extprocv3.ProcessingResponse_ResponseHeaders:
				r.ResponseHeaders.Response = nil
			case *extprocv3.ProcessingResponse_RequestBody:
				r.RequestBody.Response = nil
			case *extprocv3.ProcessingResponse_ResponseBody:
				r.ResponseBody.Response = nil
			}
			if diff := cmp.Diff(want, tc.got, protocmp.Transform()); diff != "" {
				t.Errorf("a shared answer was modified (-pristine +now):\n%s", diff)
			}
		}
	}
}
