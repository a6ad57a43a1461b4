package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	filterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	"github.com/wasm-callout/wasm-callout/host"
	"github.com/wasm-callout/wasm-callout/server/envoytest"
)

// Raw ProcessingRequest builders for hand-written streams.

func reqHeaders(eos bool, kv ...string) *extprocv3.ProcessingRequest {
	h := &corev3.HeaderMap{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Headers = append(h.Headers, &corev3.HeaderValue{Key: kv[i], RawValue: []byte(kv[i+1])})
	}
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{
		RequestHeaders: &extprocv3.HttpHeaders{Headers: h, EndOfStream: eos}}}
}

func reqBody(b string, eos bool) *extprocv3.ProcessingRequest {
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{
		RequestBody: &extprocv3.HttpBody{Body: []byte(b), EndOfStream: eos}}}
}

func reqTrailers() *extprocv3.ProcessingRequest {
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestTrailers{
		RequestTrailers: &extprocv3.HttpTrailers{Trailers: &corev3.HeaderMap{}}}}
}

func withConfig(m *extprocv3.ProcessingRequest, reqMode, respMode filterv3.ProcessingMode_BodySendMode) *extprocv3.ProcessingRequest {
	m.ProtocolConfig = &extprocv3.ProtocolConfiguration{RequestBodyMode: reqMode, ResponseBodyMode: respMode}
	return m
}

// malformed are streams an Envoy never sends; each must end with the code
// and a message naming the problem, after the answers the legal prefix
// earns.
var malformed = []struct {
	name    string
	msgs    []*extprocv3.ProcessingRequest
	code    codes.Code
	message string
	answers int
}{
	{"no request set", []*extprocv3.ProcessingRequest{{}}, codes.InvalidArgument, "sets none of", 0},
	{"headers twice", []*extprocv3.ProcessingRequest{reqHeaders(false, ":path", "/"), reqHeaders(false, ":path", "/")},
		codes.FailedPrecondition, "request_headers received twice", 1},
	{"trailers after end_of_stream body", []*extprocv3.ProcessingRequest{
		withConfig(reqHeaders(false, ":path", "/"), streamed, none), reqBody("x", true), reqTrailers()},
		codes.FailedPrecondition, "request_trailers after end_of_stream", 2},
	{"body after headers end_of_stream", []*extprocv3.ProcessingRequest{
		withConfig(reqHeaders(true, ":path", "/"), streamed, none), reqBody("x", false)},
		codes.FailedPrecondition, "request_body after the end of the request", 1},
	{"body after trailers", []*extprocv3.ProcessingRequest{
		withConfig(reqHeaders(false, ":path", "/"), streamed, none), reqTrailers(), reqBody("x", false)},
		codes.FailedPrecondition, "request_body after request_trailers", 2},
	{"body in mode NONE", []*extprocv3.ProcessingRequest{
		withConfig(reqHeaders(false, ":path", "/"), none, none), reqBody("x", true)},
		codes.FailedPrecondition, "request_body_mode NONE", 1},
	{"second BUFFERED body", []*extprocv3.ProcessingRequest{
		withConfig(reqHeaders(false, ":path", "/"), buffered, none), reqBody("x", false), reqBody("y", true)},
		codes.FailedPrecondition, "second request_body message in BUFFERED mode", 2},
	{"unknown body mode", []*extprocv3.ProcessingRequest{withConfig(reqHeaders(false, ":path", "/"), 42, none)},
		codes.Unimplemented, "42 is not supported", 0},
}

// play sends msgs on a new stream, then reads until the server ends it.
func play(ctx context.Context, h *harness, msgs []*extprocv3.ProcessingRequest) (answers int, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := extprocv3.NewExternalProcessorClient(h.conn).Process(ctx)
	if err != nil {
		return 0, err
	}
	for _, m := range msgs {
		if err := st.Send(m); err != nil {
			break // the server already ended the stream; Recv says how
		}
	}
	for {
		if _, err := st.Recv(); err != nil {
			return answers, err
		}
		answers++
	}
}

// The plugins export body callbacks, so mode_override is turned off: a body
// in mode NONE would otherwise be Envoy honouring the override.

func TestMalformedStreams(t *testing.T) {
	h := start(t, Options{Plugin: plugin(t, "edge", host.FailClosed, ""), DisableModeOverride: true})
	for _, tt := range malformed {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			n, err := play(ctx, h, tt.msgs)
			st := status.Convert(err)
			if st.Code() != tt.code || !strings.Contains(st.Message(), tt.message) {
				t.Errorf("stream ended with %v %q, want %v containing %q", st.Code(), st.Message(), tt.code, tt.message)
			}
			if n != tt.answers {
				t.Errorf("%d answers before the error, want %d", n, tt.answers)
			}
		})
	}
	waitIdle(t, h)
}

// TestDuplicateEOSIgnored: Envoy 1.35+ may repeat the last
// FULL_DUPLEX_STREAMED chunk with end_of_stream (envoyproxy/envoy#46237);
// it is ignored, not answered twice, not an error.
func TestDuplicateEOSIgnored(t *testing.T) {
	h := start(t, Options{Plugin: plugin(t, "edge", host.FailClosed, "")})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := extprocv3.NewExternalProcessorClient(h.conn).Process(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []*extprocv3.ProcessingRequest{
		withConfig(reqHeaders(false, ":path", "/"), fullDuplex, none), reqBody("ab", true), reqBody("ab", true),
	} {
		if err := st.Send(m); err != nil {
			t.Fatal(err)
		}
	}
	st.CloseSend()
	var got []string
	for {
		r, err := st.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("stream failed: %v", err)
		}
		got = append(got, fmt.Sprintf("%T", r.GetResponse()))
	}
	if len(got) != 2 {
		t.Errorf("answers %v, want headers and one body", got)
	}
	if h.srv.Stats().DuplicateEOS != 1 {
		t.Errorf("duplicate EOS counter %d, want 1", h.srv.Stats().DuplicateEOS)
	}
}

// TestMalformedFlood: 200 concurrent malformed streams leave a concurrent
// well-formed stream unaffected, and every plugin context is closed.
func TestMalformedFlood(t *testing.T) {
	p := plugin(t, "testbed", host.FailClosed, "")
	h := start(t, Options{Plugin: p, DisableModeOverride: true})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	var wg sync.WaitGroup
	errs := make(chan error, 400)
	const flood = 200
	for i := range flood {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tt := malformed[i%len(malformed)]
			if _, err := play(ctx, h, tt.msgs); status.Code(err) != tt.code {
				errs <- fmt.Errorf("malformed %q ended with %v, want %v", tt.name, err, tt.code)
			}
		}()
	}
	good := 0
	goodDone := make(chan struct{})
	go func() {
		defer close(goodDone)
		// A generous message timeout: this is about the flood's isolation,
		// not latency, and -race on a loaded machine is slow.
		cfg := envoytest.Config{ProcessingMode: mode(streamed, buffered, false), MessageTimeout: 10 * time.Second}
		for i := 0; i < 20; i++ {
			res, err := envoytest.Do(ctx, h.conn, cfg, post("buffer-body,echo-headers", "abc", "def"))
			switch {
			case err != nil:
				errs <- fmt.Errorf("good stream %d: %v", i, err)
			case res.LocalReply != nil || res.Stats.SpuriousMessages > 0 || string(res.Request.Body) != "ABCDEF":
				errs <- fmt.Errorf("good stream %d: local reply %+v, stats %+v, body %q", i, res.LocalReply, res.Stats, res.Request.Body)
			default:
				good++
			}
		}
	}()
	wg.Wait()
	<-goodDone
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if good != 20 {
		t.Errorf("%d of 20 well-formed streams succeeded", good)
	}
	if n := h.srv.Stats().ProtocolErrors; n < int64(flood-flood/len(malformed)) {
		t.Errorf("protocol errors counted: %d", n)
	}
	waitIdle(t, h)
}

// waitIdle waits until no stream is active in the server and no plugin
// context is live: every HTTP context was closed.
func waitIdle(t *testing.T, h *harness) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		s, live := h.srv.Stats(), int64(0)
		for _, p := range h.srv.Plugins() {
			live += p.Stats().LiveStreams
		}
		if s.StreamsActive == 0 && live == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not idle: %d active streams, %d live plugin contexts", s.StreamsActive, live)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestStreamEnds: however a stream ends (half-close, cancellation while
// the plugin holds an answer, Envoy's reset after its last answer), the
// plugin context is closed.
func TestStreamEnds(t *testing.T) {
	h := start(t, Options{Plugin: plugin(t, "testbed", host.FailClosed, "")})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// Cancelled while the plugin paused the headers (no tick resumes it).
	sctx, scancel := context.WithCancel(ctx)
	st, err := extprocv3.NewExternalProcessorClient(h.conn).Process(sctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(reqHeaders(false, ":path", "/", "x-testbed", "pause-headers")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return h.srv.Plugin().Stats().LiveStreams > 0 })
	scancel()
	waitIdle(t, h)

	// Half-closed after the only answer.
	st, err = extprocv3.NewExternalProcessorClient(h.conn).Process(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st.Send(reqHeaders(true, ":path", "/"))
	st.CloseSend()
	if _, err := st.Recv(); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("after half-close: %v, want EOF", err)
	}
	waitIdle(t, h)

	// Envoy's way: reset as soon as the last answer arrived.
	res := h.do(t, envoytest.Config{}, get(""))
	clean(t, res)
	waitIdle(t, h)
	if errs := h.srv.Stats().ProtocolErrors; errs != 0 {
		t.Errorf("normal ends counted as %d protocol errors", errs)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// TestTrap: a trapping plugin fails its own stream by the failure policy;
// streams after it are served (the pool replaced the instance).
func TestTrap(t *testing.T) {
	for _, tt := range []struct {
		policy host.FailurePolicy
		check  func(t *testing.T, res *envoytest.Result)
	}{
		{host.FailClosed, func(t *testing.T, res *envoytest.Result) {
			lr := res.LocalReply
			if lr == nil || !lr.Immediate || lr.Status != 500 || lr.Details != detailsFailStream || lr.GRPCStatus != 14 {
				t.Fatalf("local reply %+v, want the immediate 500 of the failure policy", lr)
			}
			if res.Request.Sent {
				t.Error("request forwarded after a fail-closed failure")
			}
		}},
		{host.FailOpen, func(t *testing.T, res *envoytest.Result) {
			if res.LocalReply != nil {
				t.Fatalf("local reply %+v under fail-open", res.LocalReply)
			}
			body(t, "request", res.Request.Body, "abc")
			body(t, "response", res.Response.Body, upstreamMsg)
			noHeader(t, res.Response.Headers, "x-echo-method") // the plugin is skipped
		}},
	} {
		t.Run(tt.policy.String(), func(t *testing.T) {
			p := plugin(t, "testbed", tt.policy, "")
			h := start(t, Options{Plugin: p})
			cfg := envoytest.Config{ProcessingMode: mode(buffered, buffered, false)}
			failures := p.Stats().Failures

			var wg sync.WaitGroup
			wg.Add(1)
			var trapped *envoytest.Result
			go func() {
				defer wg.Done()
				trapped = h.do(t, cfg, post("trap,echo-headers", "abc"))
			}()
			// Streams running meanwhile either succeed or, when pinned to
			// the instance that failed, get the failure policy's answer.
			for i := 0; i < 10; i++ {
				res := h.do(t, cfg, post("echo-headers", "abc"))
				if lr := res.LocalReply; lr != nil && (lr.Details != detailsFailStream || tt.policy == host.FailOpen) {
					t.Errorf("concurrent stream: local reply %+v", lr)
				}
			}
			wg.Wait()
			clean(t, trapped)
			tt.check(t, trapped)
			if p.Stats().Failures == failures {
				t.Error("the pool counted no failure")
			}
			// After the trap every stream is served again.
			for i := 0; i < 10; i++ {
				res := h.do(t, cfg, post("echo-headers", "abc"))
				clean(t, res)
				if res.LocalReply != nil {
					t.Fatalf("stream %d after the trap: %+v", i, res.LocalReply)
				}
				header(t, res.Response.Headers, "x-echo-method", "POST")
			}
			waitIdle(t, h)
		})
	}
}

// TestNoInstance: with no plugin instance to run a stream, the failure
// policy answers.
func TestNoInstance(t *testing.T) {
	wasm := mustRead(t, "testdata/edge.wasm")
	for _, policy := range []host.FailurePolicy{host.FailClosed, host.FailOpen} {
		t.Run(policy.String(), func(t *testing.T) {
			p, err := host.Load(context.Background(), wasm, host.Config{Name: "edge", Instances: 1, FailurePolicy: policy,
				FailStatus: 500, Logger: testLogger()})
			if err != nil {
				t.Fatal(err)
			}
			h := start(t, Options{Plugin: p})
			p.Close(context.Background())
			res := h.do(t, envoytest.Config{}, withHeader(get(""), "x-act", "f"))
			clean(t, res)
			if policy == host.FailClosed {
				if lr := res.LocalReply; lr == nil || lr.Status != 500 || lr.Details != detailsFailStream {
					t.Fatalf("local reply %+v", lr)
				}
				return
			}
			if res.LocalReply != nil || res.Response.Headers.Has("x-wat") || !res.Request.Headers.Has("x-act") {
				t.Fatalf("fail-open: local reply %+v, response %v", res.LocalReply, res.Response.Headers)
			}
			if h.srv.Stats().PluginFailures != 1 {
				t.Errorf("plugin failures %d, want 1", h.srv.Stats().PluginFailures)
			}
		})
	}
}

// TestHealthAndReflection: the gRPC health service answers for "" and the
// ext_proc service and follows Drain; reflection lists the services.
func TestHealthAndReflection(t *testing.T) {
	h := start(t, Options{Plugin: plugin(t, "edge", host.FailClosed, ""), HealthInterval: 10 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	hc := healthpb.NewHealthClient(h.conn)
	check := func(want healthpb.HealthCheckResponse_ServingStatus) {
		t.Helper()
		for _, svc := range []string{"", ServiceName} {
			r, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
			if err != nil || r.GetStatus() != want {
				t.Errorf("Check(%q) = %v, %v; want %v", svc, r.GetStatus(), err, want)
			}
		}
	}
	check(healthpb.HealthCheckResponse_SERVING)
	if !h.srv.Ready() {
		t.Error("not ready")
	}

	rc, err := reflectionpb.NewServerReflectionClient(h.conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rc.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}})
	r, err := rc.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range r.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	for _, want := range []string{ServiceName, "grpc.health.v1.Health"} {
		if !strings.Contains(strings.Join(names, " "), want) {
			t.Errorf("reflection lists %v, missing %s", names, want)
		}
	}

	h.srv.Drain()
	check(healthpb.HealthCheckResponse_NOT_SERVING)
	if h.srv.Ready() {
		t.Error("ready after Drain")
	}
}

// TestNoProtocolConfig: Envoy before 1.35 does not say its body modes. The
// server assumes nothing beyond Envoy's defaults, accepts the body it gets
// and answers it permissively: header changes (content-length included)
// ride in the first body answer, where a BUFFERED Envoy applies them and a
// STREAMED one ignores them.
func TestNoProtocolConfig(t *testing.T) {
	h := start(t, Options{Plugin: plugin(t, "edge", host.FailClosed, "")})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := extprocv3.NewExternalProcessorClient(h.conn).Process(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st.Send(reqHeaders(false, ":path", "/", "x-act", "b", "content-length", "1"))
	hr, err := st.Recv()
	if err != nil || hr.GetRequestHeaders() == nil || hr.GetModeOverride() != nil {
		t.Fatalf("headers answer %v, %v", hr, err)
	}
	st.Send(reqBody("x", true))
	br, err := st.Recv()
	if err != nil {
		t.Fatal(err)
	}
	cr := br.GetRequestBody().GetResponse()
	if string(cr.GetBodyMutation().GetBody()) != "replaced" {
		t.Errorf("body answer %v", br)
	}
	set := map[string]string{}
	for _, o := range cr.GetHeaderMutation().GetSetHeaders() {
		set[o.GetHeader().GetKey()] = string(o.GetHeader().GetRawValue())
	}
	if set["content-length"] != "8" || set["x-body-seen"] != "1" {
		t.Errorf("header mutation in the body answer: %v", set)
	}
}

// With header mode SKIP the first message of a direction is a body (or
// trailers). A plugin inside Envoy always sees headers first, so its
// headers callback runs on an empty map, nothing answers the headers Envoy
// never sent, and in BUFFERED mode, where Envoy still holds the headers,
// the plugin's header changes go with the body answer.
func TestSkippedHeaders(t *testing.T) {
	p := plugin(t, "basic", host.FailClosed, "")
	h := start(t, Options{Plugin: p, DisableModeOverride: true})
	before := metric(p, "basic_requests_total")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	answers, err := exchange(ctx, h, []*extprocv3.ProcessingRequest{
		withConfig(reqBody("abc", true), streamed, buffered),
		respBody("x", true),
	})
	if !errors.Is(err, io.EOF) || len(answers) != 2 {
		t.Fatalf("%d answers, %v; want 2 and a clean end", len(answers), err)
	}
	if answers[0].GetRequestBody() == nil {
		t.Errorf("first answer %v, want the request body's", answers[0])
	}
	rb := answers[1].GetResponseBody()
	if rb == nil {
		t.Fatalf("second answer %v, want the response body's", answers[1])
	}
	set := rb.GetResponse().GetHeaderMutation().GetSetHeaders()
	if len(set) != 1 || set[0].GetHeader().GetKey() != "x-wasm-callout" || string(set[0].GetHeader().GetRawValue()) != "basic" {
		t.Errorf("response body answer's header mutation %v, want x-wasm-callout: basic from the response headers callback", set)
	}
	if got := metric(p, "basic_requests_total") - before; got != 1 {
		t.Errorf("the request headers callback ran %v times, want 1", got)
	}
}
