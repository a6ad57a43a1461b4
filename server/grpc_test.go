package server

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	filterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/wasm-callout/wasm-callout/host"
)

const grpcMode = filterv3.ProcessingMode_GRPC

// grpcStart is the first message of a gRPC client's stream (gRFC A93):
// application metadata only, GRPC body modes, and flow_control_init.
func grpcStart(kv ...string) *extprocv3.ProcessingRequest {
	m := withConfig(reqHeaders(false, kv...), grpcMode, grpcMode)
	m.FlowControlInit = &extprocv3.ProcessingRequest_FlowControlInit{
		InitialWindowDownstreamToSidestream: 65536, InitialWindowUpstreamToSidestream: 65536,
		InitialWindowSidestreamToUpstream: 65536, InitialWindowSidestreamToDownstream: 65536}
	return m
}

func grpcHalfClose() *extprocv3.ProcessingRequest {
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{
		RequestBody: &extprocv3.HttpBody{EndOfStream: true, EndOfStreamWithoutMessage: true}}}
}

func respTrailersMsg() *extprocv3.ProcessingRequest {
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseTrailers{
		ResponseTrailers: &extprocv3.HttpTrailers{}}}
}

// A gRPC exchange in GRPC mode through a plugin that passes bodies: every
// message comes back in a streamed_response of its own, unchanged, the
// half-close is echoed with both flags, the response body never ends the
// stream, and each message's bytes are granted back as window, however
// large the message.
func TestGRPCModePassThrough(t *testing.T) {
	h := start(t, Options{Plugin: plugin(t, "basic", host.FailClosed, "")})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	big := strings.Repeat("m", 100<<10) // more than the 64 KiB window
	answers, err := exchange(ctx, h, []*extprocv3.ProcessingRequest{
		grpcStart("x-app", "1"),
		reqBody("hello", false),
		reqBody(big, false),
		{ClientWindowUpdate: &extprocv3.ProcessingRequest_ClientWindowUpdate{WindowIncrementSidestreamToUpstream: 5}},
		grpcHalfClose(),
		respHeadersMsg(),
		respBody("world", false),
		respTrailersMsg(),
	})
	if !isEOF(err) {
		t.Fatalf("stream ended with %v after %d answers", err, len(answers))
	}
	var got []string
	var reqWindow, respWindow int64
	for _, a := range answers {
		switch {
		case a.GetServerWindowUpdate() != nil:
			reqWindow += a.GetServerWindowUpdate().GetWindowIncrementDownstreamToSidestream()
			respWindow += a.GetServerWindowUpdate().GetWindowIncrementUpstreamToSidestream()
		case a.GetRequestHeaders() != nil:
			got = append(got, "request headers")
		case a.GetRequestBody() != nil || a.GetResponseBody() != nil:
			br := a.GetRequestBody()
			dir := "request"
			if br == nil {
				br, dir = a.GetResponseBody(), "response"
			}
			sr := br.GetResponse().GetBodyMutation().GetStreamedResponse()
			if sr == nil {
				t.Fatalf("%s body answer without streamed_response: %v", dir, a)
			}
			got = append(got, dir+" body "+abbrev(sr.GetBody())+flags(sr))
		case a.GetResponseHeaders() != nil:
			set := a.GetResponseHeaders().GetResponse().GetHeaderMutation().GetSetHeaders()
			if len(set) != 1 || set[0].GetHeader().GetValue() != "basic" {
				t.Errorf("response headers mutation %v, want x-wasm-callout: basic in value", set)
			}
			got = append(got, "response headers")
		case a.GetResponseTrailers() != nil:
			got = append(got, "response trailers")
		default:
			t.Errorf("unexpected answer %v", a)
		}
	}
	want := []string{"request headers", "request body hello", "request body m×102400", "request body  eos without-message",
		"response headers", "response body world", "response trailers"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("answers\n%q\nwant\n%q", got, want)
	}
	if reqWindow != int64(5+len(big)) || respWindow != 5 {
		t.Errorf("window granted: request %d, response %d; want %d and 5", reqWindow, respWindow, 5+len(big))
	}
}

func abbrev(b []byte) string {
	if len(b) > 16 && bytes.Count(b, b[:1]) == len(b) {
		return string(b[:1]) + "×" + itoa(len(b))
	}
	return string(b)
}

func itoa(n int) string {
	var buf [20]byte
	i := len(buf)
	for {
		i--
		buf[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			return string(buf[i:])
		}
	}
}

func flags(sr *extprocv3.StreamedBodyResponse) string {
	s := ""
	if sr.GetEndOfStream() {
		s += " eos"
	}
	if sr.GetEndOfStreamWithoutMessage() {
		s += " without-message"
	}
	return s
}

// A plugin that leaves a gRPC body that is not whole messages fails its
// stream with a clear status; the next stream is served.
func TestGRPCModeBrokenFraming(t *testing.T) {
	h := start(t, Options{Plugin: plugin(t, "edge", host.FailClosed, "")})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// x-act b: the edge plugin replaces the request body with "replaced".
	_, err := exchange(ctx, h, []*extprocv3.ProcessingRequest{grpcStart("x-act", "b"), reqBody("hello", false), grpcHalfClose()})
	if status.Code(err) != codes.Internal || !strings.Contains(err.Error(), "request body") {
		t.Fatalf("stream ended with %v, want INTERNAL naming the request body's framing", err)
	}
	answers, err := exchange(ctx, h, []*extprocv3.ProcessingRequest{grpcStart(), reqBody("x", false), grpcHalfClose()})
	if !isEOF(err) || len(answers) < 3 {
		t.Fatalf("next stream: %d answers, %v", len(answers), err)
	}
	waitIdle(t, h)
}

func TestSplitGRPC(t *testing.T) {
	frame := func(flag byte, body string) string {
		n := len(body)
		return string([]byte{flag, byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}) + body
	}
	for _, tc := range []struct {
		in   string
		want []string
		err  string
	}{
		{"", nil, ""},
		{frame(0, "a") + frame(0, "") + frame(1, "bc"), []string{"a", "", "bc"}, ""},
		{frame(0, "a")[:3], nil, "truncated"},
		{frame(2, "a"), nil, "unknown flag"},
		{frame(0, "abc")[:6], nil, "shorter"},
	} {
		msgs, err := splitGRPC([]byte(tc.in))
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("split(%q) error %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		var got []string
		for _, m := range msgs {
			got = append(got, string(m.body))
		}
		if err != nil || strings.Join(got, "|") != strings.Join(tc.want, "|") || len(got) != len(tc.want) {
			t.Errorf("split(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

// A plugin that rewrites gRPC messages in place (testbed's buffer-body
// upper-cases the whole body at the half-close) sends changed messages,
// framing intact, and a half-close after them.
func TestGRPCModeRewrite(t *testing.T) {
	h := start(t, Options{Plugin: plugin(t, "testbed", host.FailClosed, "")})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	answers, err := exchange(ctx, h, []*extprocv3.ProcessingRequest{
		grpcStart("x-testbed", "buffer-body"), reqBody("\x0a\x05hello", false), reqBody("\x0a\x03abc", false), grpcHalfClose()})
	if !isEOF(err) {
		t.Fatalf("ended with %v", err)
	}
	var bodies []string
	for _, a := range answers {
		if sr := a.GetRequestBody().GetResponse().GetBodyMutation().GetStreamedResponse(); sr != nil {
			bodies = append(bodies, string(sr.GetBody())+flags(sr))
		}
	}
	if want := []string{"\x0a\x05HELLO", "\x0a\x03ABC", " eos without-message"}; strings.Join(bodies, "|") != strings.Join(want, "|") {
		t.Errorf("request body answers %q, want %q", bodies, want)
	}
}

// sentBodies records what a stream sends, as a gRPC client would see it.
type sentBodies struct {
	extprocv3.ExternalProcessor_ProcessServer
	got []string
}

func (f *sentBodies) Send(r *extprocv3.ProcessingResponse) error {
	switch {
	case r.GetRequestBody() != nil:
		sr := r.GetRequestBody().GetResponse().GetBodyMutation().GetStreamedResponse()
		f.got = append(f.got, string(sr.GetBody())+flags(sr))
	case r.GetRequestTrailers() != nil:
		f.got = append(f.got, "trailers")
	}
	return nil
}

// Body answers wait for the client's window, in order, and trailers wait
// behind them; a window update sends what waited.
func TestClientWindow(t *testing.T) {
	f := &sentBodies{}
	st := &stream{srv: &Server{}, gs: f, log: testLogger()}
	st.dirs[0] = &direction{typ: 0, name: "request", mode: grpcMode, modeKnown: true}
	st.dirs[1] = &direction{typ: 1, name: "response", mode: grpcMode, modeKnown: true}
	st.flow = true
	st.setWindows(&extprocv3.ProcessingRequest_FlowControlInit{InitialWindowSidestreamToUpstream: 4})
	d := st.dirs[0]
	for i, step := range []struct {
		do   func() error
		want string
	}{
		{func() error { return st.sendGRPC(d, grpcFrame("hello"), false) }, "hello"}, // window 4 > 0: sent, -1 left
		{func() error { return st.sendGRPC(d, grpcFrame("abc"), true) }, "hello"},    // waits, the half-close behind it
		{func() error { return st.answerTrailers(d) }, "hello"},                      // waits behind them
		{func() error { return st.windowUpdate(upd(1)) }, "hello"},                   // 0: still no window
		{func() error { return st.windowUpdate(upd(2)) }, "hello|abc| eos without-message|trailers"},
	} {
		if err := step.do(); err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(f.got, "|"); got != step.want {
			t.Fatalf("step %d: sent %q, want %q", i, got, step.want)
		}
	}
	if st.waiting() {
		t.Error("still waiting after the window allowed everything")
	}
}

func grpcFrame(s string) []byte {
	n := len(s)
	return append([]byte{0, byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}, s...)
}

func upd(n int64) *extprocv3.ProcessingRequest_ClientWindowUpdate {
	return &extprocv3.ProcessingRequest_ClientWindowUpdate{WindowIncrementSidestreamToUpstream: n}
}
