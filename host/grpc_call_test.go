package host

import (
	"io"
	"net"
	"reflect"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/wasm-callout/wasm-callout/abi"
)

// grpcEcho is a real gRPC server on loopback that serves any method: Fail
// answers PERMISSION_DENIED, anything else echoes each message as
// "echo:MSG", with the request's x-md metadata echoed in the headers and a
// trailer.
func grpcEcho(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.ForceServerCodecV2(rawCodec{}), grpc.UnknownServiceHandler(func(_ any, ss grpc.ServerStream) error {
		method, _ := grpc.MethodFromServerStream(ss)
		if method == "/test.Echo/Fail" {
			return grpcstatus.Error(codes.PermissionDenied, "nope")
		}
		md, _ := metadata.FromIncomingContext(ss.Context())
		ss.SetHeader(metadata.Pairs("x-echo-md", md.Get("x-md")[0]))
		ss.SetTrailer(metadata.Pairs("x-trailer", "t"))
		for {
			var msg []byte
			if err := ss.RecvMsg(&msg); err == io.EOF {
				return nil
			} else if err != nil {
				return err
			}
			reply := append([]byte("echo:"), msg...)
			if err := ss.SendMsg(&reply); err != nil {
				return err
			}
		}
	}))
	go srv.Serve(l)
	t.Cleanup(srv.Stop)
	return l.Addr().String()
}

func TestGRPCCalls(t *testing.T) {
	addr := grpcEcho(t)
	us := upstreams(t, Upstream{Name: "grpc", URL: "h2c://" + addr})
	p := loadFile(t, "grpc", Config{Instances: 1, Upstreams: us})
	in := p.pool.slots[0].Load()
	tests := []struct {
		mode     string
		want     []HeaderChange
		metadata bool
	}{
		{"", []HeaderChange{{"x-grpc-reply", []string{"echo:ping"}}}, false},
		{"fail", []HeaderChange{{"x-grpc-status", []string{"7"}}}, false},
		{"stream", []HeaderChange{{"x-grpc-reply", []string{"echo:ping", "echo:pong"}}, {"x-grpc-status", []string{"0"}}}, true},
	}
	for _, tc := range tests {
		t.Run("mode="+tc.mode, func(t *testing.T) {
			s, _ := p.NewHTTPStream(nil)
			defer s.Close()
			hdrs := kv(":path", "/")
			if tc.mode != "" {
				hdrs = kv(":path", "/", "x-grpc", tc.mode)
			}
			if r := s.RequestHeaders(hdrs, true); r.Action != abi.ActionPause {
				t.Fatalf("the call did not start: %+v", r)
			}
			select {
			case <-s.Notify():
			case <-time.After(20 * time.Second):
				t.Fatal("never resumed")
			}
			if ev := s.TakeEvents(); len(ev) != 1 || ev[0].Kind != EventContinue {
				t.Fatalf("events = %+v", ev)
			}
			if got := s.Headers(abi.MapHTTPRequestHeaders).Changes(); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("changes = %+v, want %+v", got, tc.want)
			}
			if tc.metadata {
				in.mu.Lock()
				initial, _ := in.mem.ReadUint32Le(612)
				trailing, _ := in.mem.ReadUint32Le(616)
				in.mu.Unlock()
				if initial == 0 || trailing == 0 {
					t.Errorf("metadata callbacks: initial %d, trailing %d pairs", initial, trailing)
				}
			}
			in.mu.Lock()
			left := len(in.calls)
			in.mu.Unlock()
			if left != 0 {
				t.Errorf("%d calls still registered", left)
			}
		})
	}
}

func TestGRPCCluster(t *testing.T) {
	// A cluster name as bytes, and a serialized GrpcService naming one
	// (field 1 envoy_grpc { field 1 cluster_name }).
	if got := grpcCluster([]byte("plain")); got != "plain" {
		t.Errorf("plain name = %q", got)
	}
	svc := []byte{0x0a, 0x06, 0x0a, 0x04, 'a', 'u', 't', 'h'}
	if got := grpcCluster(svc); got != "auth" {
		t.Errorf("GrpcService = %q", got)
	}
}
