package baseline

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	filterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	"google.golang.org/grpc"

	"github.com/wasm-callout/wasm-callout/server/envoytest"
)

func TestParseConfig(t *testing.T) {
	for _, tc := range []struct {
		name, config string
		want         []Header
		wantErr      string
	}{
		{name: "empty", config: ""},
		{name: "comments and blanks", config: "\n  # x: y\n\t\r\n"},
		{name: "one", config: "x-a: 1", want: []Header{{"x-a", "1"}}},
		{name: "trimming and CRLF", config: " x-a :\t v 1 \r\nx-b:2\r\n", want: []Header{{"x-a", "v 1"}, {"x-b", "2"}}},
		{name: "split at first colon", config: "x-url: http://a:8080", want: []Header{{"x-url", "http://a:8080"}}},
		{name: "empty value", config: "x-e:", want: []Header{{"x-e", ""}}},
		{name: "no colon", config: "x-a: 1\nbogus", wantErr: `line 2 "bogus"`},
		{name: "empty name", config: " : v", wantErr: "line 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseConfig(tc.config)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("got %v, want %v", got, tc.want)
				}
			}
		})
	}
	if _, err := New("bogus"); err == nil {
		t.Fatal("New accepted a bad configuration")
	}
}

func start(t *testing.T, config string) (*grpc.ClientConn, *Server) {
	t.Helper()
	srv, err := New(config)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	srv.Register(g)
	go func() { _ = g.Serve(lis) }()
	conn, err := envoytest.Dial(lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(); g.Stop() })
	return conn, srv
}

func TestWithEmulator(t *testing.T) {
	sendTrailers := filterv3.ProcessingMode_SEND
	for _, tc := range []struct {
		name     string
		config   string
		mode     *filterv3.ProcessingMode
		body     []string
		trailers bool
	}{
		{name: "headers only, default header"},
		{name: "configured headers", config: "x-a: 1\nx-wasm-callout: two"},
		{name: "streamed", mode: &filterv3.ProcessingMode{RequestBodyMode: filterv3.ProcessingMode_STREAMED,
			ResponseBodyMode: filterv3.ProcessingMode_STREAMED}, body: []string{"ab", "cd"}},
		{name: "buffered with trailers", mode: &filterv3.ProcessingMode{RequestBodyMode: filterv3.ProcessingMode_BUFFERED,
			RequestTrailerMode: sendTrailers, ResponseBodyMode: filterv3.ProcessingMode_BUFFERED},
			body: []string{"ab", "cd"}, trailers: true},
		{name: "buffered partial", mode: &filterv3.ProcessingMode{RequestBodyMode: filterv3.ProcessingMode_BUFFERED_PARTIAL},
			body: []string{"ab"}},
		{name: "full duplex", mode: &filterv3.ProcessingMode{RequestBodyMode: filterv3.ProcessingMode_FULL_DUPLEX_STREAMED,
			RequestTrailerMode: sendTrailers, ResponseBodyMode: filterv3.ProcessingMode_FULL_DUPLEX_STREAMED,
			ResponseTrailerMode: sendTrailers}, body: []string{"ab", "cd"}, trailers: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, srv := start(t, tc.config)
			req := &envoytest.Request{
				Headers: envoytest.H(":method", "POST", ":path", "/", ":authority", "a", ":scheme", "http"),
				Response: &envoytest.Response{
					Headers: envoytest.H(":status", "200", "x-wasm-callout", "upstream"),
				},
			}
			for _, c := range tc.body {
				req.Body = append(req.Body, []byte(c))
				req.Response.Body = append(req.Response.Body, []byte(c))
			}
			if tc.trailers {
				req.Trailers = envoytest.H("x-t", "1")
				req.Response.Trailers = envoytest.H("x-t", "2")
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			res, err := envoytest.Do(ctx, conn, envoytest.Config{ProcessingMode: tc.mode, MessageTimeout: 10 * time.Second}, req)
			if err != nil {
				t.Fatal(err)
			}
			if res.LocalReply != nil || res.Stats.SpuriousMessages != 0 {
				t.Fatalf("local reply %+v, stats %+v\n%s", res.LocalReply, res.Stats, res.Transcript.MarshalText())
			}
			body := strings.Join(tc.body, "")
			if string(res.Request.Body) != body || string(res.Response.Body) != body || !res.Response.Complete {
				t.Errorf("bodies %q %q", res.Request.Body, res.Response.Body)
			}
			if tc.trailers && (!res.Request.Trailers.Has("x-t") || !res.Response.Trailers.Has("x-t")) {
				t.Errorf("trailers lost")
			}
			// Every configured header is appended to what the upstream sent.
			for _, h := range srv.Headers() {
				vs := res.Response.Headers.Values(h.Name)
				if len(vs) == 0 || vs[len(vs)-1] != h.Value {
					t.Errorf("%s = %q, want last value %q", h.Name, vs, h.Value)
				}
			}
			if vs := res.Response.Headers.Values("x-wasm-callout"); vs[0] != "upstream" {
				t.Errorf("existing value not kept: %q", vs)
			}
			if srv.Requests() != 1 {
				t.Errorf("requests = %d", srv.Requests())
			}
		})
	}
}

func TestObservabilityModeIsNotAnswered(t *testing.T) {
	conn, srv := start(t, "")
	res, err := envoytest.Do(context.Background(), conn, envoytest.Config{
		ObservabilityMode: true, DeferredCloseTimeout: 500 * time.Millisecond,
	}, &envoytest.Request{Headers: envoytest.H(":method", "GET", ":path", "/", ":authority", "a", ":scheme", "http")})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(res.Transcript.Responses()); n != 0 {
		t.Fatalf("%d answers in observability mode", n)
	}
	if srv.Requests() != 1 {
		t.Fatalf("requests = %d", srv.Requests())
	}
}
