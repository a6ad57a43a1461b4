package envoytest

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	netprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/network_ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// In-test network_ext_proc servers for testing the L4 emulator.

type l4Func func(netprocv3.NetworkExternalProcessor_ProcessServer) error

type l4Fake struct {
	netprocv3.UnimplementedNetworkExternalProcessorServer
	fn l4Func
}

func (f *l4Fake) Process(s netprocv3.NetworkExternalProcessor_ProcessServer) error { return f.fn(s) }

func startL4Fake(t *testing.T, fn l4Func) *grpc.ClientConn {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	netprocv3.RegisterNetworkExternalProcessorServer(srv, &l4Fake{fn: fn})
	go func() { _ = srv.Serve(lis) }()
	conn, err := Dial(lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		srv.Stop()
	})
	return conn
}

// answerer answers frame n (counting from 1) of a stream; nil sends nothing.
type answerer func(n int, req *netprocv3.ProcessingRequest) *netprocv3.ProcessingResponse

// serveEach answers every frame with fn until the stream ends.
func serveEach(fn answerer) l4Func {
	return func(s netprocv3.NetworkExternalProcessor_ProcessServer) error {
		for n := 1; ; n++ {
			req, err := s.Recv()
			if err != nil {
				return nil
			}
			if resp := fn(n, req); resp != nil {
				if err := s.Send(resp); err != nil {
					return nil
				}
			}
		}
	}
}

// reply answers req in its own direction with data, MODIFIED when it
// differs.
func l4Reply(req *netprocv3.ProcessingRequest, data []byte) *netprocv3.ProcessingResponse {
	in := req.GetReadData()
	if in == nil {
		in = req.GetWriteData()
	}
	d := &netprocv3.Data{Data: data, EndOfStream: in.GetEndOfStream()}
	resp := &netprocv3.ProcessingResponse{DataProcessingStatus: netprocv3.ProcessingResponse_UNMODIFIED}
	if !bytes.Equal(data, in.GetData()) {
		resp.DataProcessingStatus = netprocv3.ProcessingResponse_MODIFIED
	}
	if req.GetReadData() != nil {
		resp.ReadData = d
	} else {
		resp.WriteData = d
	}
	return resp
}

func l4Echo(_ int, req *netprocv3.ProcessingRequest) *netprocv3.ProcessingResponse {
	in := req.GetReadData()
	if in == nil {
		in = req.GetWriteData()
	}
	return l4Reply(req, in.GetData())
}

func l4Upper(_ int, req *netprocv3.ProcessingRequest) *netprocv3.ProcessingResponse {
	in := req.GetReadData()
	if in == nil {
		in = req.GetWriteData()
	}
	return l4Reply(req, bytes.ToUpper(in.GetData()))
}

func l4ctx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestL4Emulator(t *testing.T) {
	fast := 80 * time.Millisecond
	tests := []struct {
		name string
		cfg  L4Config
		srv  l4Func
		conn Connection

		up, down         string
		upEOS, downEOS   bool
		close            ConnClose
		reason           string
		violations       []string // substrings, in order
		check            func(t *testing.T, r *L4Result)
		wantTranscriptOK bool
	}{
		{
			name: "l4Echo both directions, pipelined",
			srv:  serveEach(l4Echo),
			conn: Connection{Read: Frames(true, "GET ", "/ HTTP/1.0\r\n", "\r\n"), Write: Frames(true, "HTTP/1.0 200 OK\r\n", "\r\nok")},
			up:   "GET / HTTP/1.0\r\n\r\n", down: "HTTP/1.0 200 OK\r\n\r\nok", upEOS: true, downEOS: true,
			check: func(t *testing.T, r *L4Result) {
				if r.Stats.ReadDataSent != 3 || r.Stats.WriteDataSent != 2 || r.Stats.ReadDataInjected != 3 || r.Stats.StreamsStarted != 1 {
					t.Errorf("stats %+v", r.Stats)
				}
			},
		},
		{
			name: "modify",
			srv:  serveEach(l4Upper),
			conn: Connection{Read: Frames(false, "hello"), Write: Frames(false, "world"), WriteAfterRead: true},
			up:   "HELLO", down: "WORLD",
		},
		{
			name: "several frames outstanding before the first answer",
			srv: func(s netprocv3.NetworkExternalProcessor_ProcessServer) error {
				var reqs []*netprocv3.ProcessingRequest
				for range 3 {
					r, err := s.Recv()
					if err != nil {
						return err
					}
					reqs = append(reqs, r)
				}
				for _, r := range reqs {
					if err := s.Send(l4Echo(0, r)); err != nil {
						return err
					}
				}
				<-s.Context().Done()
				return nil
			},
			conn: Connection{Read: Frames(true, "a", "b", "c")},
			up:   "abc", upEOS: true,
		},
		{
			name: "CLOSE closes after flushing and drops later frames",
			srv: serveEach(func(n int, req *netprocv3.ProcessingRequest) *netprocv3.ProcessingResponse {
				if n == 2 {
					r := l4Reply(req, nil)
					r.ConnectionStatus = netprocv3.ProcessingResponse_CLOSE
					return r
				}
				return l4Echo(n, req)
			}),
			conn:  Connection{Read: []Frame{{Data: []byte("ok ")}, {Data: []byte("DENY")}, {Data: []byte("more"), Delay: 50 * time.Millisecond}}},
			up:    "ok ",
			close: ClosedFlushWrite, reason: "ext_proc_close_requested",
		},
		{
			name: "CLOSE_RST resets",
			srv: serveEach(func(n int, req *netprocv3.ProcessingRequest) *netprocv3.ProcessingResponse {
				r := l4Reply(req, nil)
				r.ConnectionStatus = netprocv3.ProcessingResponse_CLOSE_RST
				return r
			}),
			conn:  Connection{Read: Frames(false, "x")},
			close: ClosedReset, reason: "ext_proc_reset_requested",
			check: func(t *testing.T, r *L4Result) {
				if r.Stats.ConnectionsReset != 1 || r.Stats.ConnectionsClosed != 1 {
					t.Errorf("stats %+v", r.Stats)
				}
			},
		},
		{
			name: "a data-less CLOSE closes without a violation",
			srv: func(s netprocv3.NetworkExternalProcessor_ProcessServer) error {
				if _, err := s.Recv(); err != nil {
					return err
				}
				_ = s.Send(&netprocv3.ProcessingResponse{ConnectionStatus: netprocv3.ProcessingResponse_CLOSE})
				<-s.Context().Done()
				return nil
			},
			conn:  Connection{Read: Frames(false, "x")},
			close: ClosedFlushWrite, reason: "ext_proc_close_requested",
		},
		{
			name:  "message timeout closes",
			cfg:   L4Config{MessageTimeout: fast},
			srv:   serveEach(func(int, *netprocv3.ProcessingRequest) *netprocv3.ProcessingResponse { return nil }),
			conn:  Connection{Read: Frames(false, "lost")},
			close: ClosedFlushWrite, reason: "ext_proc_message_timeout",
			check: func(t *testing.T, r *L4Result) {
				if r.Stats.MessageTimeouts != 1 || r.Stats.LostBytes != 4 {
					t.Errorf("stats %+v", r.Stats)
				}
			},
		},
		{
			name: "message timeout with failure_mode_allow loses what was out and passes the rest",
			cfg:  L4Config{MessageTimeout: fast, FailureModeAllow: true},
			srv:  serveEach(func(int, *netprocv3.ProcessingRequest) *netprocv3.ProcessingResponse { return nil }),
			conn: Connection{Read: []Frame{{Data: []byte("lost")}, {Data: []byte("passes"), EndOfStream: true, Delay: 3 * fast}}},
			up:   "passes", upEOS: true,
			check: func(t *testing.T, r *L4Result) {
				if r.Stats.FailureModeAllowed != 1 || r.Stats.PassedThrough != 1 || r.Stats.LostBytes != 4 {
					t.Errorf("stats %+v", r.Stats)
				}
			},
		},
		{
			name: "gRPC error closes",
			srv: func(netprocv3.NetworkExternalProcessor_ProcessServer) error {
				return status.Error(codes.Internal, "boom")
			},
			conn:  Connection{Read: Frames(false, "x")},
			close: ClosedFlushWrite, reason: "ext_proc_grpc_error",
		},
		{
			name: "gRPC error with failure_mode_allow passes",
			cfg:  L4Config{FailureModeAllow: true},
			srv: func(netprocv3.NetworkExternalProcessor_ProcessServer) error {
				return status.Error(codes.Internal, "boom")
			},
			conn: Connection{Read: []Frame{{Data: []byte("x")}, {Data: []byte("y"), Delay: fast}}},
			up:   "y",
		},
		{
			name: "server ending with OK ends processing, data passes",
			srv: func(s netprocv3.NetworkExternalProcessor_ProcessServer) error {
				r, err := s.Recv()
				if err != nil {
					return err
				}
				return s.Send(l4Upper(1, r))
			},
			conn: Connection{Read: []Frame{{Data: []byte("a")}, {Data: []byte("b"), Delay: fast}}},
			up:   "Ab",
		},
		{
			name: "close_stream_to_ext_proc_server bypasses later frames",
			srv: serveEach(func(n int, req *netprocv3.ProcessingRequest) *netprocv3.ProcessingResponse {
				r := l4Upper(n, req)
				r.CloseStreamToExtProcServer = true
				return r
			}),
			conn: Connection{Read: []Frame{{Data: []byte("hello")}, {Data: []byte(" world"), EndOfStream: true, Delay: fast}}},
			up:   "HELLO world", upEOS: true,
		},
		{
			name: "SKIP write",
			cfg:  L4Config{SkipWrite: true},
			srv:  serveEach(l4Upper),
			conn: Connection{Read: Frames(true, "r"), Write: Frames(true, "w")},
			up:   "R", down: "w", upEOS: true, downEOS: true,
			check: func(t *testing.T, r *L4Result) {
				if r.Stats.WriteDataSent != 0 || r.Stats.PassedThrough != 1 {
					t.Errorf("stats %+v", r.Stats)
				}
			},
		},
		{
			name: "violations: lying status, an answer to nothing, wrong end_of_stream",
			srv: func(s netprocv3.NetworkExternalProcessor_ProcessServer) error {
				for n := 1; ; n++ {
					req, err := s.Recv()
					if err != nil {
						return nil
					}
					var out []*netprocv3.ProcessingResponse
					switch n {
					case 1:
						r := l4Reply(req, []byte("X"))
						r.DataProcessingStatus = netprocv3.ProcessingResponse_UNMODIFIED
						out = append(out, r)
					case 2:
						out = append(out, &netprocv3.ProcessingResponse{WriteData: &netprocv3.Data{Data: []byte("?")},
							DataProcessingStatus: netprocv3.ProcessingResponse_MODIFIED}, l4Echo(n, req))
					default:
						r := l4Echo(n, req)
						r.ReadData.EndOfStream = true
						out = append(out, r)
					}
					for _, r := range out {
						if s.Send(r) != nil {
							return nil
						}
					}
				}
			},
			conn: Connection{Read: Frames(false, "a", "b", "c")},
			up:   "Xbc", down: "?", upEOS: true,
			violations: []string{"says UNMODIFIED", "write_data answer with no write_data frame outstanding", "end_of_stream true, its frame false"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			conn := startL4Fake(t, tc.srv)
			res, err := DoL4(l4ctx(t, 10*time.Second), conn, tc.cfg, &tc.conn)
			if err != nil {
				t.Fatalf("DoL4: %v (partial %+v)", err, res)
			}
			if string(res.Upstream) != tc.up || string(res.Downstream) != tc.down || res.UpstreamEOS != tc.upEOS || res.DownstreamEOS != tc.downEOS {
				t.Errorf("upstream %q eos %v, downstream %q eos %v", res.Upstream, res.UpstreamEOS, res.Downstream, res.DownstreamEOS)
			}
			if res.Close != tc.close || res.CloseReason != tc.reason {
				t.Errorf("close %v %q, want %v %q", res.Close, res.CloseReason, tc.close, tc.reason)
			}
			if len(res.Violations) != len(tc.violations) {
				t.Errorf("violations %q, want %q", res.Violations, tc.violations)
			} else {
				for i, v := range tc.violations {
					if !strings.Contains(res.Violations[i], v) {
						t.Errorf("violation %d %q lacks %q", i, res.Violations[i], v)
					}
				}
			}
			if tc.check != nil {
				tc.check(t, res)
			}
			if t.Failed() {
				t.Logf("transcript:\n%s", res.Transcript.MarshalText())
			}
		})
	}
}

// The connection's attributes go on the first message only, forwarded
// metadata on every one, and only receiving namespaces of the answers'
// dynamic metadata are stored.
func TestL4AttributesAndMetadata(t *testing.T) {
	conn := startL4Fake(t, serveEach(func(n int, req *netprocv3.ProcessingRequest) *netprocv3.ProcessingResponse {
		r := l4Echo(n, req)
		md, _ := structpb.NewStruct(map[string]any{"mine": map[string]any{"n": float64(n)}, "other": map[string]any{"x": "y"}})
		r.DynamicMetadata = md
		return r
	}))
	md := &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"ns": {Fields: map[string]*structpb.Value{"k": structpb.NewStringValue("v")}}}}
	res, err := DoL4(l4ctx(t, 10*time.Second), conn, L4Config{
		ConnectionAttributes: map[string]*structpb.Value{"source.address": structpb.NewStringValue("10.0.0.1:1234")},
		Metadata:             md,
		ReceivingNamespaces:  []string{"mine"},
	}, &Connection{Read: Frames(true, "a", "b"), Write: Frames(true, "c"), WriteAfterRead: true})
	if err != nil {
		t.Fatal(err)
	}
	reqs := res.Transcript.Requests()
	if len(reqs) != 3 {
		t.Fatalf("%d requests", len(reqs))
	}
	for i, r := range reqs {
		if got := r.GetAttributes()[L4AttributesKey].GetFields()["source.address"].GetStringValue(); (got != "") != (i == 0) {
			t.Errorf("request %d attributes %v", i, r.GetAttributes())
		}
		if !proto.Equal(r.GetMetadata(), md) {
			t.Errorf("request %d metadata %v", i, r.GetMetadata())
		}
	}
	if len(res.DynamicMetadata) != 1 || res.DynamicMetadata["mine"].GetFields()["n"].GetNumberValue() != 3 {
		t.Errorf("dynamic metadata %v", res.DynamicMetadata)
	}
	if len(res.Violations) != 0 {
		t.Errorf("violations %q", res.Violations)
	}
}

// Envoy's timer is per direction, restarted by each frame and stopped by
// any answer: a frame sent before the answer to an earlier one arrives is
// not timed, and the connection waits for it as long as it stays open.
func TestL4AnswerStopsTheTimer(t *testing.T) {
	timeout := 300 * time.Millisecond
	conn := startL4Fake(t, func(s netprocv3.NetworkExternalProcessor_ProcessServer) error {
		first, err := s.Recv()
		if err != nil {
			return nil
		}
		if _, err := s.Recv(); err != nil { // both frames are out
			return nil
		}
		_ = s.Send(l4Echo(1, first))
		<-s.Context().Done()
		return nil
	})
	res, err := DoL4(l4ctx(t, 3*timeout), conn, L4Config{MessageTimeout: timeout}, &Connection{Read: Frames(false, "a", "b")})
	if !errors.Is(err, context.DeadlineExceeded) || string(res.Upstream) != "a" || res.Stats.MessageTimeouts != 0 || res.Close != ClosedNormally {
		t.Fatalf("err %v, result %+v", err, res)
	}
}

// A server that never answers, with no message timer, keeps the connection
// open: Do returns the context's error with what happened so far.
func TestL4NoTimeoutWaitsForTheContext(t *testing.T) {
	conn := startL4Fake(t, serveEach(func(int, *netprocv3.ProcessingRequest) *netprocv3.ProcessingResponse { return nil }))
	res, err := DoL4(l4ctx(t, 300*time.Millisecond), conn, L4Config{MessageTimeout: NoMessageTimeout},
		&Connection{Read: Frames(false, "x")})
	if !errors.Is(err, context.DeadlineExceeded) || res == nil || res.Stats.MessagesSent != 1 || res.Stats.MessageTimeouts != 0 {
		t.Fatalf("err %v, result %+v", err, res)
	}
}

func TestL4InvalidInput(t *testing.T) {
	conn := startL4Fake(t, serveEach(l4Echo))
	if _, err := NewL4(conn, L4Config{SkipRead: true, SkipWrite: true}); err == nil {
		t.Error("both directions SKIP accepted")
	}
	if _, err := NewL4(conn, L4Config{MessageTimeout: -5}); err == nil {
		t.Error("negative timeout accepted")
	}
	if _, err := NewL4(nil, L4Config{}); err == nil {
		t.Error("nil connection accepted")
	}
	e, _ := NewL4(conn, L4Config{})
	for _, c := range []*Connection{
		nil,
		{Read: []Frame{{EndOfStream: true}, {Data: []byte("x")}}},
		{Write: []Frame{{Delay: -1}}},
		{Linger: -1},
	} {
		if _, err := e.Do(context.Background(), c); err == nil {
			t.Errorf("connection %+v accepted", c)
		}
	}
}

// L4 transcripts round-trip through the golden file format and compare
// with CompareGolden.
func TestL4TranscriptGolden(t *testing.T) {
	conn := startL4Fake(t, serveEach(l4Upper))
	res, err := DoL4(l4ctx(t, 10*time.Second), conn, L4Config{},
		&Connection{Read: Frames(true, "ping"), Write: Frames(true, "pong"), WriteAfterRead: true})
	if err != nil {
		t.Fatal(err)
	}
	text := res.Transcript.MarshalText()
	back, err := UnmarshalL4Transcript(text)
	if err != nil {
		t.Fatal(err)
	}
	if d := DiffL4(res.Transcript, back); d != "" {
		t.Errorf("round trip:\n%s", d)
	}
	if d := DiffL4(res.Transcript, back[:len(back)-1]); !strings.Contains(d, "envoy-close") {
		t.Errorf("the diff of a shorter transcript does not show the missing entry: %q", d)
	}
	CompareGolden(t, "testdata/l4_ping.golden", res.Transcript)
	if _, err := UnmarshalL4Transcript([]byte("### 1 bogus\n")); err == nil {
		t.Error("unknown kind accepted")
	}
}
