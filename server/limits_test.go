package server

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/wasm-callout/wasm-callout/host"
	"github.com/wasm-callout/wasm-callout/server/envoytest"
)

// exchange sends msgs on a new stream, then reads every answer until the
// server ends it.
func exchange(ctx context.Context, h *harness, msgs []*extprocv3.ProcessingRequest) ([]*extprocv3.ProcessingResponse, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := extprocv3.NewExternalProcessorClient(h.conn).Process(ctx)
	if err != nil {
		return nil, err
	}
	go func() {
		for _, m := range msgs {
			if st.Send(m) != nil {
				return // the server ended the stream; Recv says how
			}
		}
		st.CloseSend()
	}()
	var out []*extprocv3.ProcessingResponse
	for {
		r, err := st.Recv()
		if err != nil {
			return out, err
		}
		out = append(out, r)
	}
}

func chunks(n, size int, eos bool) []*extprocv3.ProcessingRequest {
	var out []*extprocv3.ProcessingRequest
	for i := range n {
		out = append(out, reqBody(strings.Repeat("x", size), eos && i == n-1))
	}
	return out
}

func respHeadersMsg() *extprocv3.ProcessingRequest {
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{
		ResponseHeaders: &extprocv3.HttpHeaders{}}}
}

func respBody(b string, eos bool) *extprocv3.ProcessingRequest {
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{
		ResponseBody: &extprocv3.HttpBody{Body: []byte(b), EndOfStream: eos}}}
}

// Every limit ends only the stream that passed it, with Envoy's answer or
// a clear status, and gives back what the stream held.
func TestLimits(t *testing.T) {
	pause := func(kv ...string) []*extprocv3.ProcessingRequest {
		return []*extprocv3.ProcessingRequest{withConfig(reqHeaders(false, append([]string{":path", "/"}, kv...)...), streamed, streamed)}
	}
	tests := []struct {
		name   string
		plugin string
		limits Limits
		msgs   []*extprocv3.ProcessingRequest
		// Either the last answer is an immediate response with this
		// status, or the stream ends with this code.
		status uint32
		code   codes.Code
		text   string
	}{
		{
			name: "paused request body past the stream buffer gets 413", plugin: "edge",
			limits: Limits{MaxStreamBuffer: 64 << 10},
			msgs:   append(pause("x-act", "b"), chunks(10, 16<<10, false)...),
			status: 413,
		},
		{
			name: "paused response body past the stream buffer gets 500", plugin: "edge",
			limits: Limits{MaxStreamBuffer: 64 << 10},
			msgs: append(append(pause("x-act", "r"), reqBody("", true), respHeadersMsg()),
				respBody(strings.Repeat("y", 40<<10), false), respBody(strings.Repeat("y", 40<<10), false)),
			status: 500,
		},
		{
			name: "a body under the limit passes", plugin: "edge",
			limits: Limits{MaxStreamBuffer: 64 << 10},
			msgs:   append(pause("x-act", "b"), chunks(3, 16<<10, true)...),
			code:   codes.OK,
		},
		{
			name: "messages queued behind paused headers past the cap", plugin: "testbed",
			limits: Limits{MaxQueuedMessages: 4},
			msgs:   append(pause("x-testbed", "pause-headers"), chunks(6, 10, false)...),
			code:   codes.ResourceExhausted, text: "messages queued",
		},
		{
			name: "queued bytes count against the stream buffer", plugin: "testbed",
			limits: Limits{MaxStreamBuffer: 32 << 10},
			msgs:   append(pause("x-testbed", "pause-headers"), chunks(4, 16<<10, false)...),
			status: 413,
		},
		{
			name: "past the server's total", plugin: "edge",
			limits: Limits{MaxBufferTotal: 48 << 10},
			msgs:   append(pause("x-act", "b"), chunks(4, 16<<10, false)...),
			code:   codes.ResourceExhausted, text: "--max-buffer-total",
		},
		{
			name: "an idle stream ends", plugin: "edge",
			limits: Limits{IdleTimeout: 100 * time.Millisecond},
			msgs:   pause("x-act", "b"),
			code:   codes.Unavailable, text: "--stream-idle-timeout",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := start(t, Options{Plugin: plugin(t, tc.plugin, host.FailClosed, ""), DisableModeOverride: true, Limits: tc.limits})
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			msgs := tc.msgs
			if tc.name == "an idle stream ends" {
				// Keep the stream open without sending: exchange half-closes
				// after msgs, so play it by hand.
				st, err := extprocv3.NewExternalProcessorClient(h.conn).Process(ctx)
				if err != nil {
					t.Fatal(err)
				}
				st.Send(msgs[0])
				var err2 error
				for err2 == nil {
					_, err2 = st.Recv()
				}
				checkEnd(t, nil, err2, tc.status, tc.code, tc.text)
			} else {
				answers, err := exchange(ctx, h, msgs)
				checkEnd(t, answers, err, tc.status, tc.code, tc.text)
			}
			waitIdle(t, h)
			if n := h.srv.Stats().BufferedBytes; n != 0 {
				t.Errorf("BufferedBytes = %d after every stream ended", n)
			}
		})
	}
}

func checkEnd(t *testing.T, answers []*extprocv3.ProcessingResponse, err error, wantStatus uint32, code codes.Code, text string) {
	t.Helper()
	if wantStatus != 0 {
		if len(answers) == 0 || answers[len(answers)-1].GetImmediateResponse() == nil {
			t.Fatalf("want an immediate response %d; answers %v, err %v", wantStatus, answers, err)
		}
		if got := uint32(answers[len(answers)-1].GetImmediateResponse().GetStatus().GetCode()); got != wantStatus {
			t.Fatalf("immediate response status %d, want %d", got, wantStatus)
		}
		return
	}
	if got := status.Code(err); got != code && !(code == codes.OK && isEOF(err)) {
		t.Fatalf("stream ended with %v, want %v", err, code)
	}
	if text != "" && !strings.Contains(status.Convert(err).Message(), text) {
		t.Fatalf("status message %q does not mention %q", status.Convert(err).Message(), text)
	}
}

func isEOF(err error) bool { return errors.Is(err, io.EOF) }

// Past MaxStreams a new stream is refused at once, and the open ones keep
// serving; once they end, new streams are admitted again.
func TestMaxStreams(t *testing.T) {
	h := start(t, Options{Plugin: plugin(t, "testbed", host.FailClosed, ""), Limits: Limits{MaxStreams: 3}})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var open []extprocv3.ExternalProcessor_ProcessClient
	for range 3 {
		st, err := extprocv3.NewExternalProcessorClient(h.conn).Process(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Send(reqHeaders(false, ":path", "/", "x-testbed", "pause-headers")); err != nil {
			t.Fatal(err)
		}
		open = append(open, st)
	}
	waitFor(t, func() bool { return h.srv.Stats().StreamsActive == 3 })
	_, err := exchange(ctx, h, []*extprocv3.ProcessingRequest{reqHeaders(true, ":path", "/")})
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "--max-streams") {
		t.Fatalf("fourth stream: %v, want RESOURCE_EXHAUSTED naming --max-streams", err)
	}
	var wg sync.WaitGroup
	for _, st := range open {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st.CloseSend()
			for {
				if _, err := st.Recv(); err != nil {
					return
				}
			}
		}()
	}
	cancel()
	wg.Wait()
	waitIdle(t, h)
	ctx2, cancel2 := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel2()
	answers, err := exchange(ctx2, h, []*extprocv3.ProcessingRequest{reqHeaders(true, ":path", "/")})
	if !isEOF(err) || len(answers) != 1 {
		t.Fatalf("after the others ended: %d answers, %v", len(answers), err)
	}
	if got := h.srv.Stats().LimitRefusals; got != 1 {
		t.Errorf("LimitRefusals = %d, want 1", got)
	}
}

// A TCP connection whose plugin holds more than the stream buffer is
// closed; the next connection is served.
func TestNetworkStreamBuffer(t *testing.T) {
	p := tcpEdge(t, host.FailClosed, "", 0)
	h := start(t, Options{Plugin: p, Limits: Limits{MaxStreamBuffer: 64 << 10}})
	big := strings.Repeat("z", 40<<10)
	res := h.doL4(t, envoytest.L4Config{MessageTimeout: 5 * time.Second},
		&envoytest.Connection{Read: envoytest.Frames(false, "P", big, big, "never")})
	l4Want{close: envoytest.ClosedFlushWrite, statuses: "M M MC"}.check(t, res)
	res = h.doL4(t, envoytest.L4Config{MessageTimeout: 5 * time.Second}, &envoytest.Connection{Read: envoytest.Frames(true, "fine")})
	l4Want{up: "fine", upEOS: true, statuses: "U"}.check(t, res)
	waitNoStreams(t, p)
	if n := h.srv.Stats().BufferedBytes; n != 0 {
		t.Errorf("BufferedBytes = %d after the connections ended", n)
	}
}
