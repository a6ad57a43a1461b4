// Package baseline is a native Go ext_proc server with exactly the behaviour
// of the plugins/basic proxy-wasm plugin, used as the benchmark baseline for
// wasm-callout: the difference between the two is the cost of running the
// plugin in wasm.
//
// Behaviour (see plugins/basic/main.go):
//
//   - configuration: lines of "name: value"; each line is split at its first
//     ':', name and value trimmed of spaces and tabs (and a trailing '\r');
//     blank lines and '#' comments are ignored; a line without ':' or with an
//     empty name is an error; no header line means the single header
//     "x-wasm-callout: basic";
//   - request headers: count the request, answer CONTINUE without mutation;
//   - response headers: add every configured header, in order, keeping
//     existing values (set_headers with raw_value only, append: true and
//     append_action APPEND_IF_EXISTS_OR_ADD, which Envoy and gRPC clients
//     both read as "append");
//   - bodies and trailers, if the filter sends them: CONTINUE unchanged, one
//     answer per message; in FULL_DUPLEX_STREAMED mode the body is echoed back
//     in streamed_response;
//   - observability-mode messages are not answered; the end of the stream
//     (EOF or cancellation, Envoy's reset) is normal.
package baseline

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync/atomic"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	filterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// DefaultHeader is the header added when the configuration names none.
var DefaultHeader = Header{Name: "x-wasm-callout", Value: "basic"}

// Header is one configured response header.
type Header struct {
	Name, Value string
}

// ParseConfig parses the plugin configuration. An empty result means "use
// DefaultHeader".
func ParseConfig(config string) ([]Header, error) {
	var hs []Header
	for i, line := range strings.Split(config, "\n") {
		line = strings.Trim(line, " \t\r")
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, value, ok := strings.Cut(line, ":")
		name = strings.Trim(name, " \t")
		if !ok || name == "" {
			return nil, fmt.Errorf("invalid configuration line %d %s: want \"name: value\"", i+1, strconv.Quote(line))
		}
		hs = append(hs, Header{Name: name, Value: strings.Trim(value, " \t")})
	}
	return hs, nil
}

// Server implements envoy.service.ext_proc.v3.ExternalProcessor.
type Server struct {
	extprocv3.UnimplementedExternalProcessorServer

	headers  []Header
	requests atomic.Uint64

	// Answers are immutable and shared by all streams.
	reqHeadersResp  *extprocv3.ProcessingResponse
	respHeadersResp *extprocv3.ProcessingResponse
	reqBodyResp     *extprocv3.ProcessingResponse
	respBodyResp    *extprocv3.ProcessingResponse
	reqTrailerResp  *extprocv3.ProcessingResponse
	respTrailerResp *extprocv3.ProcessingResponse
}

// New returns a server for the given plugin configuration.
func New(config string) (*Server, error) {
	hs, err := ParseConfig(config)
	if err != nil {
		return nil, err
	}
	if len(hs) == 0 {
		hs = []Header{DefaultHeader}
	}
	s := &Server{headers: hs}
	set := make([]*corev3.HeaderValueOption, 0, len(hs))
	for _, h := range hs {
		set = append(set, &corev3.HeaderValueOption{
			Header:       &corev3.HeaderValue{Key: h.Name, RawValue: []byte(h.Value)},
			Append:       wrapperspb.Bool(true),
			AppendAction: corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD,
		})
	}
	s.reqHeadersResp = &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestHeaders{
		RequestHeaders: &extprocv3.HeadersResponse{}}}
	s.respHeadersResp = &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseHeaders{
		ResponseHeaders: &extprocv3.HeadersResponse{Response: &extprocv3.CommonResponse{
			HeaderMutation: &extprocv3.HeaderMutation{SetHeaders: set}}}}}
	s.reqBodyResp = &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestBody{
		RequestBody: &extprocv3.BodyResponse{}}}
	s.respBodyResp = &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseBody{
		ResponseBody: &extprocv3.BodyResponse{}}}
	s.reqTrailerResp = &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestTrailers{
		RequestTrailers: &extprocv3.TrailersResponse{}}}
	s.respTrailerResp = &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseTrailers{
		ResponseTrailers: &extprocv3.TrailersResponse{}}}
	return s, nil
}

// Headers returns the configured response headers.
func (s *Server) Headers() []Header { return append([]Header(nil), s.headers...) }

// Requests returns the number of request headers seen (the plugin's
// basic_requests_total counter).
func (s *Server) Requests() uint64 { return s.requests.Load() }

// Register registers s on g.
func (s *Server) Register(g *grpc.Server) { extprocv3.RegisterExternalProcessorServer(g, s) }

// Process implements ExternalProcessorServer.
func (s *Server) Process(stream extprocv3.ExternalProcessor_ProcessServer) error {
	var reqFullDuplex, respFullDuplex bool
	for {
		req, err := stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) || status.Code(err) == codes.Canceled {
				return nil
			}
			return err
		}
		if pc := req.GetProtocolConfig(); pc != nil {
			reqFullDuplex = pc.GetRequestBodyMode() == filterv3.ProcessingMode_FULL_DUPLEX_STREAMED
			respFullDuplex = pc.GetResponseBodyMode() == filterv3.ProcessingMode_FULL_DUPLEX_STREAMED
		}
		var resp *extprocv3.ProcessingResponse
		switch r := req.GetRequest().(type) {
		case *extprocv3.ProcessingRequest_RequestHeaders:
			s.requests.Add(1)
			resp = s.reqHeadersResp
		case *extprocv3.ProcessingRequest_ResponseHeaders:
			resp = s.respHeadersResp
		case *extprocv3.ProcessingRequest_RequestBody:
			resp = s.reqBodyResp
			if reqFullDuplex {
				resp = &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestBody{
					RequestBody: echo(r.RequestBody)}}
			}
		case *extprocv3.ProcessingRequest_ResponseBody:
			resp = s.respBodyResp
			if respFullDuplex {
				resp = &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseBody{
					ResponseBody: echo(r.ResponseBody)}}
			}
		case *extprocv3.ProcessingRequest_RequestTrailers:
			resp = s.reqTrailerResp
		case *extprocv3.ProcessingRequest_ResponseTrailers:
			resp = s.respTrailerResp
		default:
			continue // nothing to answer (e.g. flow-control-only messages)
		}
		if req.GetObservabilityMode() {
			continue
		}
		if err := stream.Send(resp); err != nil {
			return nil // the client went away; Recv reports nothing new
		}
	}
}

// echo returns a FULL_DUPLEX_STREAMED body answer carrying b unchanged.
func echo(b *extprocv3.HttpBody) *extprocv3.BodyResponse {
	return &extprocv3.BodyResponse{Response: &extprocv3.CommonResponse{BodyMutation: &extprocv3.BodyMutation{
		Mutation: &extprocv3.BodyMutation_StreamedResponse{StreamedResponse: &extprocv3.StreamedBodyResponse{
			Body: b.GetBody(), EndOfStream: b.GetEndOfStream()}}}}}
}
