package envoytest

import (
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	filterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// This file holds small in-test ext_proc servers for testing the emulator.

type processFunc func(extprocv3.ExternalProcessor_ProcessServer) error

type fakeServer struct {
	extprocv3.UnimplementedExternalProcessorServer
	fn processFunc

	mu     sync.Mutex
	ends   []error // what each Process returned
	closed chan struct{}
}

func (f *fakeServer) Process(s extprocv3.ExternalProcessor_ProcessServer) error {
	err := f.fn(s)
	f.mu.Lock()
	f.ends = append(f.ends, err)
	f.mu.Unlock()
	select {
	case f.closed <- struct{}{}:
	default:
	}
	return err
}

// startFake serves fn on a loopback port and returns a connection to it.
func startFake(t *testing.T, fn processFunc) (*grpc.ClientConn, *fakeServer) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fs := &fakeServer{fn: fn, closed: make(chan struct{}, 16)}
	srv := grpc.NewServer()
	extprocv3.RegisterExternalProcessorServer(srv, fs)
	go func() { _ = srv.Serve(lis) }()
	conn, err := Dial(lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		srv.Stop()
	})
	return conn, fs
}

// isNormalEnd reports Envoy-style stream ends: EOF or cancellation.
func isNormalEnd(err error) bool {
	return errors.Is(err, io.EOF) || status.Code(err) == codes.Canceled
}

// srvState is what a scripted server knows about its stream.
type srvState struct {
	n          int // messages received so far, including this one
	reqMode    filterv3.ProcessingMode_BodySendMode
	respMode   filterv3.ProcessingMode_BodySendMode
	reqBody    bytes.Buffer
	respBody   bytes.Buffer
	reqTrailer bool
}

// responder answers each request with zero or more responses.
type responder func(r *extprocv3.ProcessingRequest, st *srvState) []*extprocv3.ProcessingResponse

// serve runs a responder as a process function.
func serve(fn responder) processFunc {
	return func(s extprocv3.ExternalProcessor_ProcessServer) error {
		st := &srvState{}
		for {
			r, err := s.Recv()
			if err != nil {
				if isNormalEnd(err) {
					return nil
				}
				return err
			}
			st.n++
			if pc := r.GetProtocolConfig(); pc != nil {
				st.reqMode, st.respMode = pc.GetRequestBodyMode(), pc.GetResponseBodyMode()
			}
			for _, resp := range fn(r, st) {
				if err := s.Send(resp); err != nil {
					return nil
				}
			}
		}
	}
}

// cont is the CONTINUE answer a correct server gives to r, echoing bodies in
// FULL_DUPLEX_STREAMED mode.
func cont(r *extprocv3.ProcessingRequest, st *srvState) []*extprocv3.ProcessingResponse {
	if r.GetObservabilityMode() {
		return nil
	}
	switch q := r.GetRequest().(type) {
	case *extprocv3.ProcessingRequest_RequestHeaders:
		return one(&extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestHeaders{RequestHeaders: &extprocv3.HeadersResponse{}}})
	case *extprocv3.ProcessingRequest_ResponseHeaders:
		return one(&extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseHeaders{ResponseHeaders: &extprocv3.HeadersResponse{}}})
	case *extprocv3.ProcessingRequest_RequestBody:
		if st.reqMode == modeFullDuplex {
			return one(reqBodyResp(streamed(q.RequestBody.GetBody(), q.RequestBody.GetEndOfStream())))
		}
		return one(reqBodyResp(nil))
	case *extprocv3.ProcessingRequest_ResponseBody:
		if st.respMode == modeFullDuplex {
			return one(respBodyResp(streamed(q.ResponseBody.GetBody(), q.ResponseBody.GetEndOfStream())))
		}
		return one(respBodyResp(nil))
	case *extprocv3.ProcessingRequest_RequestTrailers:
		return one(&extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestTrailers{RequestTrailers: &extprocv3.TrailersResponse{}}})
	case *extprocv3.ProcessingRequest_ResponseTrailers:
		return one(&extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseTrailers{ResponseTrailers: &extprocv3.TrailersResponse{}}})
	}
	return nil
}

func one(r *extprocv3.ProcessingResponse) []*extprocv3.ProcessingResponse {
	return []*extprocv3.ProcessingResponse{r}
}

func streamed(body []byte, eos bool) *extprocv3.CommonResponse {
	return &extprocv3.CommonResponse{BodyMutation: &extprocv3.BodyMutation{Mutation: &extprocv3.BodyMutation_StreamedResponse{
		StreamedResponse: &extprocv3.StreamedBodyResponse{Body: body, EndOfStream: eos}}}}
}

func replaceBody(body []byte) *extprocv3.CommonResponse {
	return &extprocv3.CommonResponse{BodyMutation: &extprocv3.BodyMutation{Mutation: &extprocv3.BodyMutation_Body{Body: body}}}
}

func reqHeadersResp(cr *extprocv3.CommonResponse) *extprocv3.ProcessingResponse {
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestHeaders{RequestHeaders: &extprocv3.HeadersResponse{Response: cr}}}
}

func respHeadersResp(cr *extprocv3.CommonResponse) *extprocv3.ProcessingResponse {
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseHeaders{ResponseHeaders: &extprocv3.HeadersResponse{Response: cr}}}
}

func reqBodyResp(cr *extprocv3.CommonResponse) *extprocv3.ProcessingResponse {
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestBody{RequestBody: &extprocv3.BodyResponse{Response: cr}}}
}

func respBodyResp(cr *extprocv3.CommonResponse) *extprocv3.ProcessingResponse {
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseBody{ResponseBody: &extprocv3.BodyResponse{Response: cr}}}
}

// setH is a set_headers entry with raw_value only; appendFlag nil leaves
// append unset.
func setH(key, value string, appendFlag *bool) *corev3.HeaderValueOption {
	o := &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: key, RawValue: []byte(value)}}
	if appendFlag != nil {
		o.Append = wrapperspb.Bool(*appendFlag)
	}
	return o
}

func ptr[T any](v T) *T { return &v }

func mutation(set []*corev3.HeaderValueOption, remove ...string) *extprocv3.CommonResponse {
	return &extprocv3.CommonResponse{HeaderMutation: &extprocv3.HeaderMutation{SetHeaders: set, RemoveHeaders: remove}}
}

// upper answers body messages with the upper-cased chunk (STREAMED and
// BUFFERED modes), and everything else with cont.
func upper(r *extprocv3.ProcessingRequest, st *srvState) []*extprocv3.ProcessingResponse {
	switch q := r.GetRequest().(type) {
	case *extprocv3.ProcessingRequest_RequestBody:
		return one(reqBodyResp(replaceBody(bytes.ToUpper(q.RequestBody.GetBody()))))
	case *extprocv3.ProcessingRequest_ResponseBody:
		return one(respBodyResp(replaceBody(bytes.ToUpper(q.ResponseBody.GetBody()))))
	}
	return cont(r, st)
}

// never reads and never answers until the stream ends.
func never(s extprocv3.ExternalProcessor_ProcessServer) error {
	<-s.Context().Done()
	return nil
}

// slow answers correctly, each answer after delay.
func slow(delay time.Duration) processFunc {
	return serve(func(r *extprocv3.ProcessingRequest, st *srvState) []*extprocv3.ProcessingResponse {
		time.Sleep(delay)
		return cont(r, st)
	})
}

func bodyOf(chunks ...string) [][]byte {
	var b [][]byte
	for _, c := range chunks {
		b = append(b, []byte(c))
	}
	return b
}

func kinds(t Transcript) string {
	var parts []string
	for _, e := range t {
		switch e.Kind {
		case KindSent:
			parts = append(parts, ">"+reqName(e.Request))
		case KindReceived:
			parts = append(parts, "<"+respName(e.Response))
		case KindServerClosed:
			parts = append(parts, "server-close:"+e.Code.String())
		case KindEnvoyClosed:
			parts = append(parts, "envoy-close")
		}
	}
	return strings.Join(parts, " ")
}

func reqName(r *extprocv3.ProcessingRequest) string {
	switch q := r.GetRequest().(type) {
	case *extprocv3.ProcessingRequest_RequestHeaders:
		return "reqH"
	case *extprocv3.ProcessingRequest_ResponseHeaders:
		return "respH"
	case *extprocv3.ProcessingRequest_RequestBody:
		return "reqB(" + string(q.RequestBody.GetBody()) + eosMark(q.RequestBody.GetEndOfStream()) + ")"
	case *extprocv3.ProcessingRequest_ResponseBody:
		return "respB(" + string(q.ResponseBody.GetBody()) + eosMark(q.ResponseBody.GetEndOfStream()) + ")"
	case *extprocv3.ProcessingRequest_RequestTrailers:
		return "reqT"
	case *extprocv3.ProcessingRequest_ResponseTrailers:
		return "respT"
	}
	return "?"
}

func eosMark(eos bool) string {
	if eos {
		return "|eos"
	}
	return ""
}

func respName(r *extprocv3.ProcessingResponse) string {
	switch r.GetResponse().(type) {
	case *extprocv3.ProcessingResponse_RequestHeaders:
		return "reqH"
	case *extprocv3.ProcessingResponse_ResponseHeaders:
		return "respH"
	case *extprocv3.ProcessingResponse_RequestBody:
		return "reqB"
	case *extprocv3.ProcessingResponse_ResponseBody:
		return "respB"
	case *extprocv3.ProcessingResponse_RequestTrailers:
		return "reqT"
	case *extprocv3.ProcessingResponse_ResponseTrailers:
		return "respT"
	case *extprocv3.ProcessingResponse_ImmediateResponse:
		return "immediate"
	}
	if r.GetOverrideMessageTimeout() != nil {
		return "override"
	}
	return "empty"
}
