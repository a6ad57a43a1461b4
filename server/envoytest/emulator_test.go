package envoytest

import (
	"bytes"
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	mutationrulesv3 "github.com/envoyproxy/go-control-plane/envoy/config/common/mutation_rules/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	filterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func getReq() *Request {
	return &Request{Headers: H(":method", "GET", ":path", "/p", ":authority", "example.com", ":scheme", "http")}
}

func postReq(cl string, chunks ...string) *Request {
	h := H(":method", "POST", ":path", "/p", ":authority", "example.com", ":scheme", "http")
	if cl != "" {
		h = append(h, Header{"content-length", cl})
	}
	return &Request{Headers: h, Body: bodyOf(chunks...)}
}

func with(r *Request, f func(*Request)) *Request { f(r); return r }

type emuCase struct {
	name   string
	cfg    Config
	req    *Request
	server processFunc
	// kinds is the expected transcript shape (see kinds()); "" skips.
	kinds string
	check func(t *testing.T, r *Result)
}

func runCases(t *testing.T, cases []emuCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			conn, _ := startFake(t, tc.server)
			if tc.cfg.MessageTimeout == 0 {
				// Only the timeout tests rely on the timer; elsewhere a busy
				// machine must not turn a slow answer into a 504.
				tc.cfg.MessageTimeout = 10 * time.Second
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			res, err := Do(ctx, conn, tc.cfg, tc.req)
			if err != nil {
				t.Fatalf("Do: %v", err)
			}
			if tc.kinds != "" {
				if got := kinds(res.Transcript); got != tc.kinds {
					t.Errorf("transcript:\n got  %s\n want %s", got, tc.kinds)
				}
			}
			if tc.check != nil {
				tc.check(t, res)
			}
		})
	}
}

// forwarded checks that the request reached the upstream complete with body.
func forwarded(t *testing.T, r *Result, body string) {
	t.Helper()
	if !r.Request.Sent || !r.Request.Complete || r.Request.Reset {
		t.Errorf("request not forwarded completely: %+v", r.Request)
	}
	if string(r.Request.Body) != body {
		t.Errorf("upstream body = %q, want %q", r.Request.Body, body)
	}
}

func localReply(t *testing.T, r *Result, status int, details string) {
	t.Helper()
	if r.LocalReply == nil {
		t.Fatalf("no local reply; response %+v", r.Response)
	}
	if r.LocalReply.Status != status || r.LocalReply.Details != details {
		t.Errorf("local reply = %d %q, want %d %q", r.LocalReply.Status, r.LocalReply.Details, status, details)
	}
	if s, _ := r.Response.Headers.Get(":status"); !r.Response.Reset && s != strconv.Itoa(status) {
		t.Errorf("downstream :status = %q, want %d", s, status)
	}
}

func okResponse(t *testing.T, r *Result, status string) {
	t.Helper()
	if r.LocalReply != nil {
		t.Fatalf("unexpected local reply %+v", r.LocalReply)
	}
	if s, _ := r.Response.Headers.Get(":status"); s != status || !r.Response.Complete {
		t.Errorf("response = %+v, want complete %s", r.Response, status)
	}
}

func TestModes(t *testing.T) {
	runCases(t, []emuCase{
		{
			name:   "headers only",
			req:    getReq(),
			server: serve(cont),
			kinds:  ">reqH <reqH >respH <respH envoy-close",
			check: func(t *testing.T, r *Result) {
				forwarded(t, r, "")
				okResponse(t, r, "200")
				first := r.Transcript[0].Request
				pc := first.GetProtocolConfig()
				if pc == nil || pc.GetRequestBodyMode() != modeNone || first.GetMetadataContext() == nil {
					t.Errorf("first message lacks protocol_config/metadata_context: %v", first)
				}
				for _, h := range first.GetRequestHeaders().GetHeaders().GetHeaders() {
					if h.GetValue() != "" || len(h.GetRawValue()) == 0 {
						t.Errorf("header %q not in raw_value only", h.GetKey())
					}
				}
				if r.Transcript[2].Request.GetProtocolConfig() != nil {
					t.Error("protocol_config on a later message")
				}
				if r.Stats.StreamsStarted != 1 || r.Stats.MessagesSent != 2 || r.Stats.MessagesReceived != 2 {
					t.Errorf("stats %+v", r.Stats)
				}
			},
		},
		{
			name:   "streamed pipelined",
			cfg:    Config{ProcessingMode: &filterv3.ProcessingMode{RequestBodyMode: modeStreamed}},
			req:    postReq("3", "a", "b", "c"),
			server: serve(upper),
			kinds:  ">reqH <reqH >reqB(a) >reqB(b) >reqB(c|eos) <reqB <reqB <reqB >respH <respH envoy-close",
			check: func(t *testing.T, r *Result) {
				forwarded(t, r, "ABC")
				if r.Request.Headers.Has("content-length") {
					t.Error("content-length not removed in STREAMED mode")
				}
				sent := HeadersFromProto(r.Transcript[0].Request.GetRequestHeaders().GetHeaders())
				if v, _ := sent.Get("content-length"); v != "3" {
					t.Error("the server must still see content-length")
				}
			},
		},
		{
			name:   "streamed eager body goes as one message",
			cfg:    Config{ProcessingMode: &filterv3.ProcessingMode{RequestBodyMode: modeStreamed}},
			req:    with(postReq("", "a", "b", "c"), func(r *Request) { r.Pacing = PaceEager }),
			server: serve(upper),
			kinds:  ">reqH <reqH >reqB(abc|eos) <reqB >respH <respH envoy-close",
			check:  func(t *testing.T, r *Result) { forwarded(t, r, "ABC") },
		},
		{
			name:   "streamed lockstep",
			cfg:    Config{ProcessingMode: &filterv3.ProcessingMode{RequestBodyMode: modeStreamed}},
			req:    with(postReq("", "a", "b", "c"), func(r *Request) { r.Pacing = PaceLockstep }),
			server: serve(upper),
			kinds:  ">reqH <reqH >reqB(a) <reqB >reqB(b) <reqB >reqB(c|eos) <reqB >respH <respH envoy-close",
			check:  func(t *testing.T, r *Result) { forwarded(t, r, "ABC") },
		},
		{
			name: "streamed response body",
			cfg:  Config{ProcessingMode: &filterv3.ProcessingMode{ResponseBodyMode: modeStreamed}},
			req: with(getReq(), func(r *Request) {
				r.Response = &Response{Headers: H(":status", "200", "content-length", "4"), Body: bodyOf("ab", "cd")}
			}),
			server: serve(upper),
			kinds:  ">reqH <reqH >respH <respH >respB(ab) >respB(cd|eos) <respB <respB envoy-close",
			check: func(t *testing.T, r *Result) {
				okResponse(t, r, "200")
				if string(r.Response.Body) != "ABCD" || r.Response.Headers.Has("content-length") {
					t.Errorf("response %+v", r.Response)
				}
			},
		},
		{
			name:   "buffered",
			cfg:    Config{ProcessingMode: &filterv3.ProcessingMode{RequestBodyMode: modeBuffered}},
			req:    postReq("3", "a", "bc"),
			server: serve(upper),
			kinds:  ">reqH <reqH >reqB(abc|eos) <reqB >respH <respH envoy-close",
			check: func(t *testing.T, r *Result) {
				forwarded(t, r, "ABC")
				if v, _ := r.Request.Headers.Get("content-length"); v != "3" {
					t.Error("BUFFERED with header SEND keeps content-length")
				}
			},
		},
		{
			name:   "buffered with header mode skip strips content-length",
			cfg:    Config{ProcessingMode: &filterv3.ProcessingMode{RequestHeaderMode: filterv3.ProcessingMode_SKIP, RequestBodyMode: modeBuffered}},
			req:    postReq("3", "a", "bc"),
			server: serve(upper),
			kinds:  ">reqB(abc|eos) <reqB >respH <respH envoy-close",
			check: func(t *testing.T, r *Result) {
				forwarded(t, r, "ABC")
				if r.Request.Headers.Has("content-length") {
					t.Error("content-length kept")
				}
				if r.Transcript[0].Request.GetProtocolConfig() == nil {
					t.Error("protocol_config must be on the first message, a body here")
				}
			},
		},
		{
			name:   "buffered over limit is 413",
			cfg:    Config{ProcessingMode: &filterv3.ProcessingMode{RequestBodyMode: modeBuffered}, BufferLimit: 4},
			req:    postReq("", "abc", "def"),
			server: serve(upper),
			kinds:  ">reqH <reqH envoy-close",
			check: func(t *testing.T, r *Result) {
				localReply(t, r, 413, "request_payload_too_large")
				if r.Request.Sent {
					t.Error("request forwarded")
				}
			},
		},
		{
			name: "buffered trailers",
			cfg:  Config{ProcessingMode: &filterv3.ProcessingMode{RequestBodyMode: modeBuffered, RequestTrailerMode: filterv3.ProcessingMode_SEND}},
			req: with(postReq("", "a", "b"), func(r *Request) {
				r.Trailers = H("x-t", "1")
			}),
			server: serve(upper),
			kinds:  ">reqH <reqH >reqB(ab) <reqB >reqT <reqT >respH <respH envoy-close",
			check: func(t *testing.T, r *Result) {
				forwarded(t, r, "AB")
				if v, _ := r.Request.Trailers.Get("x-t"); v != "1" {
					t.Errorf("trailers %v", r.Request.Trailers)
				}
			},
		},
		{
			name:   "buffered partial",
			cfg:    Config{ProcessingMode: &filterv3.ProcessingMode{RequestBodyMode: modeBufferedPartial}, BufferLimit: 10},
			req:    postReq("18", "aaaaaaaa", "bbbbbbbb", "cc"),
			server: serve(upper),
			kinds:  ">reqH <reqH >reqB(aaaaaaaabbbbbbbb) <reqB >respH <respH envoy-close",
			check: func(t *testing.T, r *Result) {
				forwarded(t, r, "AAAAAAAABBBBBBBBcc")
				if r.Request.Headers.Has("content-length") {
					t.Error("content-length kept in BUFFERED_PARTIAL")
				}
			},
		},
		{
			name:   "buffered partial under limit",
			cfg:    Config{ProcessingMode: &filterv3.ProcessingMode{RequestBodyMode: modeBufferedPartial}, BufferLimit: 100},
			req:    postReq("", "a", "b"),
			server: serve(upper),
			kinds:  ">reqH <reqH >reqB(ab|eos) <reqB >respH <respH envoy-close",
			check:  func(t *testing.T, r *Result) { forwarded(t, r, "AB") },
		},
		{
			name: "full duplex echo",
			cfg: Config{ProcessingMode: &filterv3.ProcessingMode{RequestBodyMode: modeFullDuplex,
				RequestTrailerMode: filterv3.ProcessingMode_SEND}},
			req:    postReq("4", "ab", "cd"),
			server: serve(cont),
			kinds:  ">reqH >reqB(ab) >reqB(cd|eos) <reqH <reqB <reqB >respH <respH envoy-close",
			check: func(t *testing.T, r *Result) {
				forwarded(t, r, "abcd")
				if r.Request.Headers.Has("content-length") {
					t.Error("content-length kept in FULL_DUPLEX_STREAMED")
				}
			},
		},
		{
			name: "full duplex with trailers",
			cfg: Config{ProcessingMode: &filterv3.ProcessingMode{RequestBodyMode: modeFullDuplex,
				RequestTrailerMode: filterv3.ProcessingMode_SEND}},
			req:    with(postReq("", "ab"), func(r *Request) { r.Trailers = H("x-t", "1") }),
			server: serve(cont),
			kinds:  ">reqH >reqB(ab) >reqT <reqH <reqB <reqT >respH <respH envoy-close",
			check: func(t *testing.T, r *Result) {
				forwarded(t, r, "ab")
				if !r.Request.Trailers.Has("x-t") {
					t.Error("trailers lost")
				}
			},
		},
		{
			name: "full duplex server may re-chunk",
			cfg: Config{ProcessingMode: &filterv3.ProcessingMode{RequestBodyMode: modeFullDuplex,
				RequestTrailerMode: filterv3.ProcessingMode_SEND}},
			req: postReq("", "ab", "cd"),
			server: serve(func(r *extprocv3.ProcessingRequest, st *srvState) []*extprocv3.ProcessingResponse {
				if b := r.GetRequestBody(); b != nil {
					st.reqBody.Write(b.GetBody())
					if !b.GetEndOfStream() {
						return nil
					}
					all := bytes.ToUpper(st.reqBody.Bytes())
					return []*extprocv3.ProcessingResponse{
						reqBodyResp(streamed(all[:1], false)), reqBodyResp(streamed(all[1:], false)),
						reqBodyResp(streamed(nil, true)),
					}
				}
				return cont(r, st)
			}),
			kinds: ">reqH >reqB(ab) >reqB(cd|eos) <reqH <reqB <reqB <reqB >respH <respH envoy-close",
			check: func(t *testing.T, r *Result) { forwarded(t, r, "ABCD") },
		},
		{
			name: "send body without waiting: delayed headers answer",
			cfg: Config{ProcessingMode: &filterv3.ProcessingMode{RequestBodyMode: modeStreamed},
				SendBodyWithoutWaitingForHeaderResponse: true},
			req: postReq("", "ab", "cd"),
			server: serve(func(r *extprocv3.ProcessingRequest, st *srvState) []*extprocv3.ProcessingResponse {
				switch {
				case r.GetRequestHeaders() != nil:
					return nil // answer once the body is seen
				case r.GetRequestBody() != nil:
					st.reqBody.Write(r.GetRequestBody().GetBody())
					if !r.GetRequestBody().GetEndOfStream() {
						return nil
					}
					return []*extprocv3.ProcessingResponse{
						reqHeadersResp(mutation([]*corev3.HeaderValueOption{setH("x-body", st.reqBody.String(), nil)})),
						reqBodyResp(nil), reqBodyResp(nil),
					}
				}
				return cont(r, st)
			}),
			kinds: ">reqH >reqB(ab) >reqB(cd|eos) <reqH <reqB <reqB >respH <respH envoy-close",
			check: func(t *testing.T, r *Result) {
				forwarded(t, r, "abcd")
				if v, _ := r.Request.Headers.Get("x-body"); v != "abcd" {
					t.Errorf("x-body = %q", v)
				}
				if !r.Transcript[0].Request.GetProtocolConfig().GetSendBodyWithoutWaitingForHeaderResponse() {
					t.Error("protocol_config lacks send_body_without_waiting_for_header_response")
				}
			},
		},
		{
			name: "streamed with trailers",
			cfg: Config{ProcessingMode: &filterv3.ProcessingMode{RequestBodyMode: modeStreamed,
				RequestTrailerMode: filterv3.ProcessingMode_SEND}},
			req: with(postReq("", "a"), func(r *Request) { r.Trailers = H("x-t", "1") }),
			server: serve(func(r *extprocv3.ProcessingRequest, st *srvState) []*extprocv3.ProcessingResponse {
				if r.GetRequestTrailers() != nil {
					return one(&extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestTrailers{
						RequestTrailers: &extprocv3.TrailersResponse{HeaderMutation: &extprocv3.HeaderMutation{
							SetHeaders: []*corev3.HeaderValueOption{setH("x-t2", "2", nil)}}}}})
				}
				return cont(r, st)
			}),
			kinds: ">reqH <reqH >reqB(a) <reqB >reqT <reqT >respH <respH envoy-close",
			check: func(t *testing.T, r *Result) {
				forwarded(t, r, "a")
				if !r.Request.Trailers.Has("x-t") || !r.Request.Trailers.Has("x-t2") {
					t.Errorf("trailers %v", r.Request.Trailers)
				}
			},
		},
		{
			name:   "trailers skipped by default",
			cfg:    Config{ProcessingMode: &filterv3.ProcessingMode{RequestBodyMode: modeStreamed}},
			req:    with(postReq("", "a"), func(r *Request) { r.Trailers = H("x-t", "1") }),
			server: serve(cont),
			kinds:  ">reqH <reqH >reqB(a) <reqB >respH <respH envoy-close",
			check: func(t *testing.T, r *Result) {
				forwarded(t, r, "a")
				if !r.Request.Trailers.Has("x-t") {
					t.Error("trailers lost")
				}
			},
		},
		{
			name: "early upstream response interleaves",
			cfg:  Config{ProcessingMode: &filterv3.ProcessingMode{RequestBodyMode: modeStreamed}},
			req: with(postReq("", "a", "b"), func(r *Request) {
				r.EarlyResponse = true
			}),
			server: serve(cont),
			kinds:  ">reqH <reqH >reqB(a) >reqB(b|eos) >respH <reqB <reqB <respH envoy-close",
			check:  func(t *testing.T, r *Result) { forwarded(t, r, "ab"); okResponse(t, r, "200") },
		},
		{
			name: "observability mode",
			cfg: Config{ProcessingMode: &filterv3.ProcessingMode{RequestBodyMode: modeStreamed},
				ObservabilityMode: true, DeferredCloseTimeout: 50 * time.Millisecond},
			req: postReq("", "a", "b"),
			server: serve(func(r *extprocv3.ProcessingRequest, st *srvState) []*extprocv3.ProcessingResponse {
				return nil
			}),
			kinds: ">reqH >reqB(a) >reqB(b|eos) >respH envoy-close",
			check: func(t *testing.T, r *Result) {
				forwarded(t, r, "ab")
				okResponse(t, r, "200")
				for _, q := range r.Transcript.Requests() {
					if !q.GetObservabilityMode() || q.GetProtocolConfig() != nil {
						t.Errorf("observability message wrong: %v", q)
					}
				}
			},
		},
		{
			name:   "header skip and no body: no stream at all",
			cfg:    Config{ProcessingMode: &filterv3.ProcessingMode{RequestHeaderMode: filterv3.ProcessingMode_SKIP, ResponseHeaderMode: filterv3.ProcessingMode_SKIP}},
			req:    getReq(),
			server: serve(cont),
			kinds:  "",
			check: func(t *testing.T, r *Result) {
				forwarded(t, r, "")
				if r.Stats.StreamsStarted != 0 || len(r.Transcript) != 0 {
					t.Errorf("stream opened: %+v", r.Stats)
				}
			},
		},
		{
			name: "attributes on the first message of each direction",
			cfg: Config{
				ProcessingMode:     &filterv3.ProcessingMode{RequestBodyMode: modeStreamed},
				RequestAttributes:  map[string]*structpb.Value{"request.path": structpb.NewStringValue("/p")},
				ResponseAttributes: map[string]*structpb.Value{"response.code": structpb.NewNumberValue(200)},
			},
			req:    postReq("", "a", "b"),
			server: serve(cont),
			check: func(t *testing.T, r *Result) {
				reqs := r.Transcript.Requests()
				var with []string
				for _, q := range reqs {
					if a := q.GetAttributes()["envoy.filters.http.ext_proc"]; a != nil {
						for k := range a.GetFields() {
							with = append(with, reqName(q)+":"+k)
						}
					}
				}
				if got := strings.Join(with, ","); got != "reqH:request.path,respH:response.code" {
					t.Errorf("attributes sent on %s", got)
				}
			},
		},
	})
}

func TestSpuriousAndErrors(t *testing.T) {
	wrongDirection := serve(func(r *extprocv3.ProcessingRequest, st *srvState) []*extprocv3.ProcessingResponse {
		if r.GetRequestHeaders() != nil {
			return one(respHeadersResp(nil))
		}
		return cont(r, st)
	})
	runCases(t, []emuCase{
		{
			name:   "wrong direction is spurious",
			req:    getReq(),
			server: wrongDirection,
			kinds:  ">reqH <respH envoy-close",
			check: func(t *testing.T, r *Result) {
				localReply(t, r, 500, "spurious_message")
				if r.Stats.SpuriousMessages != 1 || r.Request.Sent {
					t.Errorf("stats %+v sent=%v", r.Stats, r.Request.Sent)
				}
			},
		},
		{
			name:   "spurious with failure_mode_allow passes through",
			cfg:    Config{FailureModeAllow: true},
			req:    getReq(),
			server: wrongDirection,
			kinds:  ">reqH <respH envoy-close",
			check: func(t *testing.T, r *Result) {
				forwarded(t, r, "")
				okResponse(t, r, "200")
				if r.Stats.SpuriousMessages != 1 || r.Stats.FailureModeAllowed != 1 {
					t.Errorf("stats %+v", r.Stats)
				}
			},
		},
		{
			name:   "status_on_error",
			cfg:    Config{StatusOnError: 503},
			req:    getReq(),
			server: wrongDirection,
			check:  func(t *testing.T, r *Result) { localReply(t, r, 503, "spurious_message") },
		},
		{
			name: "empty response is spurious",
			req:  getReq(),
			server: serve(func(*extprocv3.ProcessingRequest, *srvState) []*extprocv3.ProcessingResponse {
				return one(&extprocv3.ProcessingResponse{})
			}),
			kinds: ">reqH <empty envoy-close",
			check: func(t *testing.T, r *Result) { localReply(t, r, 500, "unhandled_message") },
		},
		{
			name: "body answer while none outstanding",
			req:  getReq(),
			server: serve(func(r *extprocv3.ProcessingRequest, st *srvState) []*extprocv3.ProcessingResponse {
				return append(cont(r, st), reqBodyResp(nil))
			}),
			check: func(t *testing.T, r *Result) { localReply(t, r, 500, "spurious_message") },
		},
		{
			name: "too many streamed body answers",
			cfg:  Config{ProcessingMode: &filterv3.ProcessingMode{RequestBodyMode: modeStreamed}},
			req:  postReq("", "a"),
			server: serve(func(r *extprocv3.ProcessingRequest, st *srvState) []*extprocv3.ProcessingResponse {
				if r.GetRequestBody() != nil {
					return []*extprocv3.ProcessingResponse{reqBodyResp(nil), reqBodyResp(nil)}
				}
				return cont(r, st)
			}),
			check: func(t *testing.T, r *Result) {
				// The first answer completes the request; the upstream's
				// response headers then go out and the extra body answer
				// arrives while the response headers are outstanding.
				localReply(t, r, 500, "spurious_message")
			},
		},
		{
			name: "streamed_response outside full duplex",
			cfg:  Config{ProcessingMode: &filterv3.ProcessingMode{RequestBodyMode: modeStreamed}},
			req:  postReq("", "a"),
			server: serve(func(r *extprocv3.ProcessingRequest, st *srvState) []*extprocv3.ProcessingResponse {
				if b := r.GetRequestBody(); b != nil {
					return one(reqBodyResp(streamed(b.GetBody(), b.GetEndOfStream())))
				}
				return cont(r, st)
			}),
			check: func(t *testing.T, r *Result) {
				localReply(t, r, 500, "spurious_message:_streamed_response_is_received_while_body_mode__is_not_FULL_DUPLEX_STREAMED")
			},
		},
		{
			name: "non-streamed body answer in full duplex ignores failure_mode_allow",
			cfg: Config{ProcessingMode: &filterv3.ProcessingMode{RequestBodyMode: modeFullDuplex,
				RequestTrailerMode: filterv3.ProcessingMode_SEND}, FailureModeAllow: true},
			req: postReq("", "a"),
			server: serve(func(r *extprocv3.ProcessingRequest, st *srvState) []*extprocv3.ProcessingResponse {
				if r.GetRequestBody() != nil {
					return one(reqBodyResp(nil))
				}
				return cont(r, st)
			}),
			check: func(t *testing.T, r *Result) {
				localReply(t, r, 500, "spurious_message:_Normal_body_mutation_response_is_received_while_body_mode__is_FULL_DUPLEX_STREAMED")
			},
		},
		{
			name: "server error status",
			req:  getReq(),
			server: func(s extprocv3.ExternalProcessor_ProcessServer) error {
				if _, err := s.Recv(); err != nil {
					return err
				}
				return status.Error(codes.Internal, "boom")
			},
			kinds: ">reqH server-close:Internal",
			check: func(t *testing.T, r *Result) {
				localReply(t, r, 500, "ext_proc_error_gRPC_error_13{boom}")
				if r.Stats.StreamsFailed != 1 {
					t.Errorf("stats %+v", r.Stats)
				}
			},
		},
		{
			name: "server error with failure_mode_allow",
			cfg:  Config{FailureModeAllow: true},
			req:  getReq(),
			server: func(s extprocv3.ExternalProcessor_ProcessServer) error {
				if _, err := s.Recv(); err != nil {
					return err
				}
				return status.Error(codes.Unavailable, "overloaded")
			},
			check: func(t *testing.T, r *Result) { forwarded(t, r, ""); okResponse(t, r, "200") },
		},
		{
			name: "server closes OK early: rest passes unmodified",
			cfg:  Config{ProcessingMode: &filterv3.ProcessingMode{ResponseBodyMode: modeStreamed}},
			req: with(getReq(), func(r *Request) {
				r.Response = &Response{Headers: H(":status", "200"), Body: bodyOf("x")}
			}),
			server: func(s extprocv3.ExternalProcessor_ProcessServer) error {
				if _, err := s.Recv(); err != nil {
					return err
				}
				return s.Send(reqHeadersResp(nil))
			},
			kinds: ">reqH <reqH >respH server-close:OK",
			check: func(t *testing.T, r *Result) {
				forwarded(t, r, "")
				okResponse(t, r, "200")
				if string(r.Response.Body) != "x" {
					t.Errorf("response body %q", r.Response.Body)
				}
			},
		},
		{
			name: "content-length mismatch in buffered mode",
			cfg:  Config{ProcessingMode: &filterv3.ProcessingMode{RequestBodyMode: modeBuffered}},
			req:  postReq("3", "abc"),
			server: serve(func(r *extprocv3.ProcessingRequest, st *srvState) []*extprocv3.ProcessingResponse {
				if r.GetRequestBody() != nil {
					return one(reqBodyResp(replaceBody([]byte("hello"))))
				}
				return cont(r, st)
			}),
			check: func(t *testing.T, r *Result) {
				localReply(t, r, 500, "mismatch_between_content_length_and_the_length_of_the_mutated_body")
			},
		},
		{
			name: "clear_body against content-length",
			cfg:  Config{ProcessingMode: &filterv3.ProcessingMode{RequestBodyMode: modeBuffered}},
			req:  postReq("3", "abc"),
			server: serve(func(r *extprocv3.ProcessingRequest, st *srvState) []*extprocv3.ProcessingResponse {
				if r.GetRequestBody() != nil {
					return one(reqBodyResp(&extprocv3.CommonResponse{BodyMutation: &extprocv3.BodyMutation{
						Mutation: &extprocv3.BodyMutation_ClearBody{ClearBody: true}}}))
				}
				return cont(r, st)
			}),
			check: func(t *testing.T, r *Result) {
				localReply(t, r, 500, "mismatch_between_content_length_and_the_length_of_the_mutated_body")
			},
		},
		{
			name: "content-length fixed in the same body answer",
			cfg:  Config{ProcessingMode: &filterv3.ProcessingMode{RequestBodyMode: modeBuffered}},
			req:  postReq("3", "abc"),
			server: serve(func(r *extprocv3.ProcessingRequest, st *srvState) []*extprocv3.ProcessingResponse {
				if r.GetRequestBody() != nil {
					cr := replaceBody([]byte("hello"))
					cr.HeaderMutation = &extprocv3.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{setH("content-length", "5", nil)}}
					return one(reqBodyResp(cr))
				}
				return cont(r, st)
			}),
			check: func(t *testing.T, r *Result) {
				forwarded(t, r, "hello")
				if v, _ := r.Request.Headers.Get("content-length"); v != "5" {
					t.Errorf("content-length %q", v)
				}
			},
		},
		{
			name: "streamed mode ignores content-length set",
			cfg:  Config{ProcessingMode: &filterv3.ProcessingMode{RequestBodyMode: modeStreamed}},
			req:  postReq("3", "abc"),
			server: serve(func(r *extprocv3.ProcessingRequest, st *srvState) []*extprocv3.ProcessingResponse {
				if r.GetRequestHeaders() != nil {
					return one(reqHeadersResp(mutation([]*corev3.HeaderValueOption{setH("content-length", "3", nil)})))
				}
				return cont(r, st)
			}),
			check: func(t *testing.T, r *Result) {
				forwarded(t, r, "abc")
				if r.Request.Headers.Has("content-length") {
					t.Error("content-length set in STREAMED mode")
				}
			},
		},
	})
}

func TestImmediateResponse(t *testing.T) {
	immediate := func(code typev3.StatusCode) processFunc {
		return serve(func(r *extprocv3.ProcessingRequest, st *srvState) []*extprocv3.ProcessingResponse {
			return one(&extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ImmediateResponse{
				ImmediateResponse: &extprocv3.ImmediateResponse{
					Status:  &typev3.HttpStatus{Code: code},
					Body:    []byte("denied"),
					Details: "blocked by policy",
					Headers: &extprocv3.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{setH("x-deny", "yes", nil)}},
				}}})
		})
	}
	runCases(t, []emuCase{
		{
			name:   "on request headers",
			req:    getReq(),
			server: immediate(typev3.StatusCode_Forbidden),
			kinds:  ">reqH <immediate envoy-close",
			check: func(t *testing.T, r *Result) {
				localReply(t, r, 403, "blocked_by_policy")
				if !r.LocalReply.Immediate || r.Request.Sent || string(r.Response.Body) != "denied" {
					t.Errorf("result %+v", r)
				}
				if v, _ := r.Response.Headers.Get("x-deny"); v != "yes" {
					t.Errorf("headers %v", r.Response.Headers)
				}
			},
		},
		{
			name:   "status below 200 becomes 200",
			req:    getReq(),
			server: immediate(typev3.StatusCode_Continue),
			check:  func(t *testing.T, r *Result) { localReply(t, r, 200, "blocked_by_policy") },
		},
		{
			name:   "disabled immediate response is spurious",
			cfg:    Config{DisableImmediateResponse: true},
			req:    getReq(),
			server: immediate(typev3.StatusCode_Forbidden),
			check: func(t *testing.T, r *Result) {
				localReply(t, r, 500, "unhandled_immediate_response_due_to_config_disabled_it")
			},
		},
		{
			name: "on response headers",
			req:  getReq(),
			server: serve(func(r *extprocv3.ProcessingRequest, st *srvState) []*extprocv3.ProcessingResponse {
				if r.GetResponseHeaders() != nil {
					return one(&extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ImmediateResponse{
						ImmediateResponse: &extprocv3.ImmediateResponse{Status: &typev3.HttpStatus{Code: typev3.StatusCode_BadGateway}}}})
				}
				return cont(r, st)
			}),
			kinds: ">reqH <reqH >respH <immediate envoy-close",
			check: func(t *testing.T, r *Result) {
				forwarded(t, r, "")
				localReply(t, r, 502, "")
			},
		},
		{
			name: "grpc request gets trailers-only reply",
			req: with(getReq(), func(r *Request) {
				r.Headers = append(r.Headers, Header{"content-type", "application/grpc"})
			}),
			server: immediate(typev3.StatusCode_Forbidden),
			check: func(t *testing.T, r *Result) {
				if v, _ := r.Response.Headers.Get("grpc-status"); v != "7" {
					t.Errorf("headers %v", r.Response.Headers)
				}
				if v, _ := r.Response.Headers.Get("grpc-message"); v != "denied" {
					t.Errorf("headers %v", r.Response.Headers)
				}
			},
		},
	})
}

func TestMutations(t *testing.T) {
	req := func() *Request {
		return &Request{Headers: H(":method", "GET", ":path", "/old", ":authority", "a.com", ":scheme", "http",
			"x-multi", "1", "x-remove-me", "y", "x-keep", "k")}
	}
	answer := func(cr *extprocv3.CommonResponse) processFunc {
		return serve(func(r *extprocv3.ProcessingRequest, st *srvState) []*extprocv3.ProcessingResponse {
			if r.GetRequestHeaders() != nil {
				return one(reqHeadersResp(cr))
			}
			return cont(r, st)
		})
	}
	rules := mutation([]*corev3.HeaderValueOption{
		setH("host", "evil", nil),
		setH(":authority", "evil", nil),
		setH("x-envoy-foo", "1", nil),
		setH(":path", "/new", nil),
		setH("X-Added", "v", nil),
		setH("x-multi", "2", ptr(true)),
		setH("x-keep", "k2", nil),
	}, ":method", "x-remove-me")
	runCases(t, []emuCase{
		{
			name:   "default mutation rules",
			req:    req(),
			server: answer(rules),
			check: func(t *testing.T, r *Result) {
				forwarded(t, r, "")
				h := r.Request.Headers
				want := H(":method", "GET", ":path", "/new", ":authority", "a.com", ":scheme", "http",
					"x-multi", "1", "x-keep", "k2", "x-added", "v", "x-multi", "2")
				if h.String() != want.String() {
					t.Errorf("headers:\n%s\nwant:\n%s", h, want)
				}
				if r.Stats.RejectedHeaderMutations != 4 {
					t.Errorf("rejected = %d, want 4", r.Stats.RejectedHeaderMutations)
				}
			},
		},
		{
			name: "allow_all_routing and allow_envoy",
			cfg: Config{MutationRules: &mutationrulesv3.HeaderMutationRules{
				AllowAllRouting: wrapperspb.Bool(true), AllowEnvoy: wrapperspb.Bool(true)}},
			req:    req(),
			server: answer(rules),
			check: func(t *testing.T, r *Result) {
				h := r.Request.Headers
				if v, _ := h.Get(":authority"); v != "evil" {
					t.Errorf(":authority %q", v)
				}
				if !h.Has("x-envoy-foo") || !h.Has("host") {
					t.Errorf("headers %v", h)
				}
				if r.Stats.RejectedHeaderMutations != 1 { // removing :method
					t.Errorf("rejected = %d", r.Stats.RejectedHeaderMutations)
				}
			},
		},
		{
			name:   "disallow_is_error",
			cfg:    Config{MutationRules: &mutationrulesv3.HeaderMutationRules{DisallowIsError: wrapperspb.Bool(true)}},
			req:    req(),
			server: answer(mutation([]*corev3.HeaderValueOption{setH("x-envoy-foo", "1", nil)})),
			check:  func(t *testing.T, r *Result) { localReply(t, r, 500, "Invalid_attempt_to_modify_x-envoy-foo") },
		},
		{
			name: "append_action is ignored",
			req:  req(),
			server: answer(mutation([]*corev3.HeaderValueOption{{
				Header:       &corev3.HeaderValue{Key: "x-keep", RawValue: []byte("k2")},
				AppendAction: corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD,
			}})),
			check: func(t *testing.T, r *Result) {
				if vs := r.Request.Headers.Values("x-keep"); len(vs) != 1 || vs[0] != "k2" {
					t.Errorf("x-keep = %q, want overwrite", vs)
				}
			},
		},
		{
			name: "value without raw_value gives an empty header",
			req:  req(),
			server: answer(mutation([]*corev3.HeaderValueOption{{
				Header: &corev3.HeaderValue{Key: "x-v", Value: "text"},
			}})),
			check: func(t *testing.T, r *Result) {
				if v, ok := r.Request.Headers.Get("x-v"); !ok || v != "" {
					t.Errorf("x-v = %q, %v", v, ok)
				}
			},
		},
		{
			name: "value and raw_value both set",
			req:  req(),
			server: answer(mutation([]*corev3.HeaderValueOption{{
				Header: &corev3.HeaderValue{Key: "x-v", Value: "a", RawValue: []byte("b")},
			}})),
			check: func(t *testing.T, r *Result) {
				localReply(t, r, 500, "Only_one_of_value_or_raw_value_in_the_HeaderValue_message_should_be_set.")
			},
		},
		{
			name:   "invalid header value",
			req:    req(),
			server: answer(mutation([]*corev3.HeaderValueOption{setH("x-v", "a\nb", nil)})),
			check:  func(t *testing.T, r *Result) { localReply(t, r, 500, "Invalid_character_in_set_headers_mutation.") },
		},
		{
			name: "too many set_headers",
			cfg:  Config{MaxHeadersCount: 3},
			req:  getReq(),
			server: answer(mutation([]*corev3.HeaderValueOption{
				setH("a", "1", nil), setH("b", "1", nil), setH("c", "1", nil), setH("d", "1", nil)})),
			check: func(t *testing.T, r *Result) {
				if r.LocalReply == nil || r.LocalReply.Status != 500 || r.Stats.RejectedHeaderMutations != 1 {
					t.Errorf("got %+v %+v", r.LocalReply, r.Stats)
				}
			},
		},
		{
			name:   "clear_route_cache needs a header mutation",
			req:    req(),
			server: answer(&extprocv3.CommonResponse{ClearRouteCache: true}),
			check: func(t *testing.T, r *Result) {
				if r.Stats.ClearRouteCache != 0 || r.Stats.ClearRouteCacheIgnored != 1 {
					t.Errorf("stats %+v", r.Stats)
				}
			},
		},
		{
			name: "clear_route_cache with header mutation",
			req:  req(),
			server: answer(&extprocv3.CommonResponse{ClearRouteCache: true,
				HeaderMutation: &extprocv3.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{setH(":path", "/x", nil)}}}),
			check: func(t *testing.T, r *Result) {
				if r.Stats.ClearRouteCache != 1 || r.Stats.ClearRouteCacheIgnored != 0 {
					t.Errorf("stats %+v", r.Stats)
				}
			},
		},
		{
			name: "continue_and_replace",
			req:  req(),
			server: answer(&extprocv3.CommonResponse{
				Status: extprocv3.CommonResponse_CONTINUE_AND_REPLACE,
				HeaderMutation: &extprocv3.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{
					setH(":method", "POST", nil), setH("content-length", "99", nil)}},
				BodyMutation: &extprocv3.BodyMutation{Mutation: &extprocv3.BodyMutation_Body{Body: []byte("new body")}},
			}),
			check: func(t *testing.T, r *Result) {
				forwarded(t, r, "new body")
				if v, _ := r.Request.Headers.Get(":method"); v != "POST" {
					t.Errorf(":method = %q", v)
				}
				if r.Request.Headers.Has("content-length") {
					t.Error("content-length kept after CONTINUE_AND_REPLACE")
				}
			},
		},
		{
			name: "continue_and_replace drops the original body",
			cfg:  Config{ProcessingMode: &filterv3.ProcessingMode{RequestBodyMode: modeStreamed}},
			req:  postReq("", "old1", "old2"),
			server: serve(func(r *extprocv3.ProcessingRequest, st *srvState) []*extprocv3.ProcessingResponse {
				if r.GetRequestHeaders() != nil {
					return one(reqHeadersResp(&extprocv3.CommonResponse{Status: extprocv3.CommonResponse_CONTINUE_AND_REPLACE,
						BodyMutation: &extprocv3.BodyMutation{Mutation: &extprocv3.BodyMutation_Body{Body: []byte("new")}}}))
				}
				return cont(r, st)
			}),
			kinds: ">reqH <reqH >respH <respH envoy-close",
			check: func(t *testing.T, r *Result) { forwarded(t, r, "new") },
		},
		{
			name: "continue_and_replace with a chunk already sent",
			cfg: Config{ProcessingMode: &filterv3.ProcessingMode{RequestBodyMode: modeStreamed},
				SendBodyWithoutWaitingForHeaderResponse: true},
			req: postReq("", "old"),
			server: serve(func(r *extprocv3.ProcessingRequest, st *srvState) []*extprocv3.ProcessingResponse {
				switch {
				case r.GetRequestHeaders() != nil:
					return one(reqHeadersResp(&extprocv3.CommonResponse{Status: extprocv3.CommonResponse_CONTINUE_AND_REPLACE,
						BodyMutation: &extprocv3.BodyMutation{Mutation: &extprocv3.BodyMutation_Body{Body: []byte("new")}}}))
				case r.GetRequestBody() != nil:
					return nil // replaced: Envoy expects no body answer
				}
				return cont(r, st)
			}),
			kinds: ">reqH >reqB(old|eos) <reqH >respH <respH envoy-close",
			check: func(t *testing.T, r *Result) { forwarded(t, r, "new") },
		},
		{
			name: "dynamic metadata receiving namespaces",
			cfg:  Config{ReceivingNamespaces: []string{"ns.a"}},
			req:  req(),
			server: serve(func(r *extprocv3.ProcessingRequest, st *srvState) []*extprocv3.ProcessingResponse {
				out := cont(r, st)
				if r.GetRequestHeaders() != nil {
					md, _ := structpb.NewStruct(map[string]any{"ns.a": map[string]any{"k": "v"}, "ns.b": map[string]any{"x": "y"}})
					out[0].DynamicMetadata = md
				}
				return out
			}),
			check: func(t *testing.T, r *Result) {
				if len(r.DynamicMetadata) != 1 || r.DynamicMetadata["ns.a"].GetFields()["k"].GetStringValue() != "v" {
					t.Errorf("dynamic metadata %v", r.DynamicMetadata)
				}
				if r.Stats.DynamicMetadata["ns.a"] != 1 || r.Stats.DynamicMetadataDropped["ns.b"] != 1 {
					t.Errorf("stats %+v", r.Stats)
				}
			},
		},
		{
			name: "header mutation in a streamed body answer is ignored",
			cfg:  Config{ProcessingMode: &filterv3.ProcessingMode{RequestBodyMode: modeStreamed}},
			req:  postReq("", "a"),
			server: serve(func(r *extprocv3.ProcessingRequest, st *srvState) []*extprocv3.ProcessingResponse {
				if r.GetRequestBody() != nil {
					return one(reqBodyResp(mutation([]*corev3.HeaderValueOption{setH("x-late", "1", nil)})))
				}
				return cont(r, st)
			}),
			check: func(t *testing.T, r *Result) {
				forwarded(t, r, "a")
				if r.Request.Headers.Has("x-late") {
					t.Error("late header mutation applied")
				}
			},
		},
		{
			name: "header mutation in a buffered body answer applies",
			cfg:  Config{ProcessingMode: &filterv3.ProcessingMode{RequestBodyMode: modeBuffered}},
			req:  postReq("", "a"),
			server: serve(func(r *extprocv3.ProcessingRequest, st *srvState) []*extprocv3.ProcessingResponse {
				if r.GetRequestBody() != nil {
					return one(reqBodyResp(mutation([]*corev3.HeaderValueOption{setH("x-late", "1", nil)})))
				}
				return cont(r, st)
			}),
			check: func(t *testing.T, r *Result) {
				forwarded(t, r, "a")
				if !r.Request.Headers.Has("x-late") {
					t.Error("header mutation lost")
				}
			},
		},
	})
}

func TestModeOverride(t *testing.T) {
	override := func(m *filterv3.ProcessingMode) processFunc {
		return serve(func(r *extprocv3.ProcessingRequest, st *srvState) []*extprocv3.ProcessingResponse {
			out := cont(r, st)
			if r.GetRequestHeaders() != nil {
				out[0].ModeOverride = m
			}
			return out
		})
	}
	skipResp := &filterv3.ProcessingMode{ResponseHeaderMode: filterv3.ProcessingMode_SKIP}
	respBody := func(r *Request) { r.Response = &Response{Headers: H(":status", "200"), Body: bodyOf("xyz")} }
	runCases(t, []emuCase{
		{
			name:   "applied",
			cfg:    Config{AllowModeOverride: true},
			req:    getReq(),
			server: override(skipResp),
			kinds:  ">reqH <reqH envoy-close",
			check: func(t *testing.T, r *Result) {
				okResponse(t, r, "200")
				if r.Stats.ModeOverrides != 1 {
					t.Errorf("stats %+v", r.Stats)
				}
			},
		},
		{
			name:   "not allowed by config",
			req:    getReq(),
			server: override(skipResp),
			kinds:  ">reqH <reqH >respH <respH envoy-close",
		},
		{
			name: "in allowed_override_modes",
			cfg: Config{AllowModeOverride: true, AllowedOverrideModes: []*filterv3.ProcessingMode{
				{ResponseHeaderMode: filterv3.ProcessingMode_SKIP}}},
			req:    getReq(),
			server: override(skipResp),
			kinds:  ">reqH <reqH envoy-close",
		},
		{
			name: "not in allowed_override_modes",
			cfg: Config{AllowModeOverride: true, AllowedOverrideModes: []*filterv3.ProcessingMode{
				{ResponseHeaderMode: filterv3.ProcessingMode_SEND}}},
			req:    getReq(),
			server: override(skipResp),
			kinds:  ">reqH <reqH >respH <respH envoy-close",
			check: func(t *testing.T, r *Result) {
				if r.Stats.ModeOverridesDisallowed != 1 {
					t.Errorf("stats %+v", r.Stats)
				}
			},
		},
		{
			name:   "body modes are literal",
			cfg:    Config{AllowModeOverride: true, ProcessingMode: &filterv3.ProcessingMode{ResponseBodyMode: modeStreamed}},
			req:    with(getReq(), respBody),
			server: override(&filterv3.ProcessingMode{ResponseHeaderMode: filterv3.ProcessingMode_SEND}),
			kinds:  ">reqH <reqH >respH <respH envoy-close",
			check: func(t *testing.T, r *Result) {
				if string(r.Response.Body) != "xyz" {
					t.Errorf("body %q", r.Response.Body)
				}
			},
		},
		{
			name:   "without override the body is streamed",
			cfg:    Config{ProcessingMode: &filterv3.ProcessingMode{ResponseBodyMode: modeStreamed}},
			req:    with(getReq(), respBody),
			server: override(&filterv3.ProcessingMode{ResponseHeaderMode: filterv3.ProcessingMode_SEND}),
			kinds:  ">reqH <reqH >respH <respH >respB(xyz|eos) <respB envoy-close",
		},
		{
			name: "ignored outside header state",
			cfg:  Config{AllowModeOverride: true, ProcessingMode: &filterv3.ProcessingMode{RequestBodyMode: modeBuffered}},
			req:  postReq("", "a"),
			server: serve(func(r *extprocv3.ProcessingRequest, st *srvState) []*extprocv3.ProcessingResponse {
				out := cont(r, st)
				if r.GetRequestBody() != nil {
					out[0].ModeOverride = skipResp
				}
				return out
			}),
			kinds: ">reqH <reqH >reqB(a|eos) <reqB >respH <respH envoy-close",
		},
	})
}

func TestTimeouts(t *testing.T) {
	// delayed sends the given messages, sleeps, then answers correctly.
	delayed := func(first []*extprocv3.ProcessingResponse, wait time.Duration) processFunc {
		return func(s extprocv3.ExternalProcessor_ProcessServer) error {
			st := &srvState{}
			for {
				r, err := s.Recv()
				if err != nil {
					return nil
				}
				if r.GetRequestHeaders() != nil {
					for _, m := range first {
						if s.Send(m) != nil {
							return nil
						}
					}
					select {
					case <-time.After(wait):
					case <-s.Context().Done():
						return nil
					}
				}
				for _, m := range cont(r, st) {
					if s.Send(m) != nil {
						return nil
					}
				}
			}
		}
	}
	ov := func(d time.Duration) *extprocv3.ProcessingResponse {
		m := reqHeadersResp(mutation([]*corev3.HeaderValueOption{setH("x-ignored", "1", nil)}))
		m.OverrideMessageTimeout = durationpb.New(d)
		return m
	}
	runCases(t, []emuCase{
		{
			name:   "no answer is a 504",
			cfg:    Config{MessageTimeout: 100 * time.Millisecond},
			req:    getReq(),
			server: never,
			kinds:  ">reqH envoy-close",
			check: func(t *testing.T, r *Result) {
				localReply(t, r, 504, "ext_proc_error_per-message_timeout_exceeded")
				if r.Stats.MessageTimeouts != 1 {
					t.Errorf("stats %+v", r.Stats)
				}
			},
		},
		{
			name:   "timeout with failure_mode_allow continues",
			cfg:    Config{MessageTimeout: 100 * time.Millisecond, FailureModeAllow: true},
			req:    getReq(),
			server: never,
			kinds:  ">reqH envoy-close",
			check: func(t *testing.T, r *Result) {
				forwarded(t, r, "")
				okResponse(t, r, "200")
				if r.Stats.MessageTimeouts != 1 || r.Stats.FailureModeAllowed != 1 {
					t.Errorf("stats %+v", r.Stats)
				}
			},
		},
		{
			name:   "slow server within the timeout",
			cfg:    Config{MessageTimeout: 2 * time.Second},
			req:    getReq(),
			server: slow(20 * time.Millisecond),
			check:  func(t *testing.T, r *Result) { forwarded(t, r, ""); okResponse(t, r, "200") },
		},
		{
			name:   "override_message_timeout extends the timer and ignores the rest",
			cfg:    Config{MessageTimeout: 500 * time.Millisecond, MaxMessageTimeout: 10 * time.Second},
			req:    getReq(),
			server: delayed([]*extprocv3.ProcessingResponse{ov(5 * time.Second)}, 1500*time.Millisecond),
			kinds:  ">reqH <reqH <reqH >respH <respH envoy-close",
			check: func(t *testing.T, r *Result) {
				forwarded(t, r, "")
				if r.Request.Headers.Has("x-ignored") {
					t.Error("fields of the override message were applied")
				}
				if r.Stats.OverrideMessageTimeoutReceived != 1 {
					t.Errorf("stats %+v", r.Stats)
				}
			},
		},
		{
			name:   "override above max_message_timeout is ignored",
			cfg:    Config{MessageTimeout: 100 * time.Millisecond, MaxMessageTimeout: time.Second},
			req:    getReq(),
			server: delayed([]*extprocv3.ProcessingResponse{ov(5 * time.Second)}, 400*time.Millisecond),
			check: func(t *testing.T, r *Result) {
				localReply(t, r, 504, "ext_proc_error_per-message_timeout_exceeded")
				if r.Stats.OverrideMessageTimeoutIgnored != 1 {
					t.Errorf("stats %+v", r.Stats)
				}
			},
		},
		{
			name:   "only one override per state",
			cfg:    Config{MessageTimeout: 500 * time.Millisecond, MaxMessageTimeout: 10 * time.Second},
			req:    getReq(),
			server: delayed([]*extprocv3.ProcessingResponse{ov(time.Second), ov(5 * time.Second)}, 4*time.Second),
			check: func(t *testing.T, r *Result) {
				localReply(t, r, 504, "ext_proc_error_per-message_timeout_exceeded")
				if r.Stats.OverrideMessageTimeoutReceived != 1 || r.Stats.OverrideMessageTimeoutIgnored != 1 {
					t.Errorf("stats %+v", r.Stats)
				}
			},
		},
		{
			name: "no timer in full duplex",
			cfg: Config{MessageTimeout: 50 * time.Millisecond, ProcessingMode: &filterv3.ProcessingMode{
				RequestBodyMode: modeFullDuplex, RequestTrailerMode: filterv3.ProcessingMode_SEND,
				// The response path has its own timer; keep it out.
				ResponseHeaderMode: filterv3.ProcessingMode_SKIP}},
			req:    postReq("", "a"),
			server: slow(150 * time.Millisecond),
			check: func(t *testing.T, r *Result) {
				forwarded(t, r, "a")
				if r.Stats.MessageTimeouts != 0 {
					t.Errorf("stats %+v", r.Stats)
				}
			},
		},
	})
}

func TestGolden(t *testing.T) {
	conn, _ := startFake(t, serve(upper))
	cfg := Config{
		MessageTimeout: 10 * time.Second,
		ProcessingMode: &filterv3.ProcessingMode{RequestBodyMode: modeStreamed, RequestTrailerMode: filterv3.ProcessingMode_SEND,
			ResponseBodyMode: modeBuffered},
		RequestAttributes: map[string]*structpb.Value{"request.path": structpb.NewStringValue("/p")},
	}
	req := postReq("", "hello ", "world")
	req.Trailers = H("x-checksum", "abc")
	req.Response = &Response{Headers: H(":status", "201", "content-length", "2"), Body: bodyOf("o", "k")}
	res, err := Do(context.Background(), conn, cfg, req)
	if err != nil {
		t.Fatal(err)
	}
	CompareGolden(t, "testdata/streamed_trailers.golden", res.Transcript.Normalize("envoy.service.ext_proc.v3.ProcessingRequest.metadata_context"))
	if string(res.Response.Body) != "OK" || string(res.Request.Body) != "HELLO WORLD" {
		t.Errorf("bodies %q %q", res.Request.Body, res.Response.Body)
	}
}

func TestTranscriptRoundTrip(t *testing.T) {
	conn, _ := startFake(t, serve(upper))
	res, err := Do(context.Background(), conn, Config{MessageTimeout: 10 * time.Second,
		ProcessingMode: &filterv3.ProcessingMode{RequestBodyMode: modeStreamed}}, postReq("", "a\nb", "c"))
	if err != nil {
		t.Fatal(err)
	}
	res.Transcript = append(res.Transcript, Entry{Kind: KindServerClosed, Code: codes.Internal, Message: "multi\nline"})
	back, err := UnmarshalTranscript(res.Transcript.MarshalText())
	if err != nil {
		t.Fatal(err)
	}
	if d := Diff(res.Transcript, back); d != "" {
		t.Fatalf("round trip differs:\n%s", d)
	}
	// A change must be detected.
	back[1].Response = proto.Clone(back[1].Response).(*extprocv3.ProcessingResponse)
	back[1].Response.DynamicMetadata = &structpb.Struct{}
	if Diff(res.Transcript, back) == "" {
		t.Fatal("Diff missed a change")
	}
	if n := res.Transcript.Normalize("envoy.service.ext_proc.v3.ProcessingRequest.metadata_context"); n[0].Request.GetMetadataContext() != nil ||
		res.Transcript[0].Request.GetMetadataContext() == nil {
		t.Fatal("Normalize did not clear (only) the copy")
	}
}

func TestInvalid(t *testing.T) {
	conn, _ := startFake(t, serve(cont))
	for _, tc := range []struct {
		name string
		cfg  Config
		req  *Request
	}{
		{"full duplex without trailers", Config{ProcessingMode: &filterv3.ProcessingMode{RequestBodyMode: modeFullDuplex}}, getReq()},
		{"grpc body mode", Config{ProcessingMode: &filterv3.ProcessingMode{ResponseBodyMode: filterv3.ProcessingMode_GRPC}}, getReq()},
		{"bad regex", Config{MutationRules: &mutationrulesv3.HeaderMutationRules{AllowExpression: &matcherv3.RegexMatcher{Regex: "("}}}, getReq()},
		{"no headers", Config{}, &Request{}},
		{"nil request", Config{}, nil},
		{"response without status", Config{}, with(getReq(), func(r *Request) { r.Response = &Response{} })},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Do(context.Background(), conn, tc.cfg, tc.req)
			if err == nil {
				t.Fatal("no error")
			}
		})
	}
}

func TestContextCancel(t *testing.T) {
	conn, _ := startFake(t, never)
	// A cancel, not a deadline: gRPC would send a deadline to the server,
	// whose handler could then end the stream with OK before the client's
	// own timer fired.
	ctx, cancel := context.WithCancel(context.Background())
	defer time.AfterFunc(100*time.Millisecond, cancel).Stop()
	// FULL_DUPLEX has no message timer: only the context ends the wait.
	_, err := Do(ctx, conn, Config{ProcessingMode: &filterv3.ProcessingMode{RequestBodyMode: modeFullDuplex,
		RequestTrailerMode: filterv3.ProcessingMode_SEND}}, postReq("", "a"))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
}
