package server

import (
	"context"
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	netprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/network_ext_proc/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/wasm-callout/wasm-callout/host"
	"github.com/wasm-callout/wasm-callout/internal/testplugins"
	"github.com/wasm-callout/wasm-callout/server/envoytest"
)

// tagged returns a shared testbed plugin named tag that marks the chain
// order (testbed's tag setting), reads its actions from x-testbed-TAG and
// resumes pause-headers on a 5 ms tick.
func tagged(t testing.TB, tag string, policy host.FailurePolicy) *host.Plugin {
	t.Helper()
	config := fmt.Sprintf("tag: %s\naction_header: x-testbed-%s\ntick_ms: 5", tag, tag)
	return loader.Load(t, fmt.Sprintf("tagged|%s|%v", tag, policy), testplugins.Path(t, "testbed"), host.Config{
		Name: tag, RootID: "root-" + tag, VMID: "vm-" + tag,
		PluginConfig: []byte(config), Instances: 2, FailurePolicy: policy, FailStatus: 500,
	})
}

// chainOf starts a server whose default chain is plugins, in order.
func chainOf(t *testing.T, plugins ...*host.Plugin) *harness {
	t.Helper()
	names := make([]string, len(plugins))
	for i, p := range plugins {
		names[i] = p.Config().Name
	}
	return start(t, Options{Plugins: plugins, Chains: Chains{Chains: map[string][]string{DefaultChain: names}}})
}

// TestChain plays a chain of three testbed plugins (a, b, c) through the
// emulated Envoy and compares the side-stream transcripts with
// testdata/golden: one round trip per phase, whatever the chain does.
func TestChain(t *testing.T) {
	a, b, c := tagged(t, "a", host.FailClosed), tagged(t, "b", host.FailClosed), tagged(t, "c", host.FailClosed)
	abc := chainOf(t, a, b, c)
	openB := chainOf(t, a, tagged(t, "b", host.FailOpen), c)

	tests := []struct {
		name  string
		h     *harness
		cfg   envoytest.Config
		req   *envoytest.Request
		check func(t *testing.T, res *envoytest.Result)
	}{
		{
			// Request callbacks in chain order, response callbacks in
			// reverse; each plugin sees the headers as the one before
			// left them.
			name: "headers_in_order", h: abc, req: get(""),
			check: func(t *testing.T, res *envoytest.Result) {
				header(t, res.Request.Headers, "x-chain", "a,b,c")
				header(t, res.Response.Headers, "x-saw-a", "-")
				header(t, res.Response.Headers, "x-saw-b", "a")
				header(t, res.Response.Headers, "x-saw-c", "a,b")
				header(t, res.Response.Headers, "x-chain-resp", "c,b,a")
				header(t, res.Response.Headers, "x-saw-resp-c", "-")
				header(t, res.Response.Headers, "x-saw-resp-b", "c")
				header(t, res.Response.Headers, "x-saw-resp-a", "c,b")
			},
		},
		{
			// b pauses; c runs only once b resumes (on its tick, which
			// also sets x-testbed-resumed), and sees b's change.
			name: "pause_in_the_middle", h: abc, req: withHeader(get(""), "x-testbed-b", "pause-headers"),
			check: func(t *testing.T, res *envoytest.Result) {
				header(t, res.Request.Headers, "x-chain", "a,b,c")
				header(t, res.Request.Headers, "x-testbed-resumed", "tick")
				header(t, res.Response.Headers, "x-saw-c", "a,b")
			},
		},
		{
			// a replies: b and c never see the request, and no plugin
			// sees the reply (none ran before a).
			name: "local_reply_first", h: abc, req: withHeader(get(""), "x-testbed-a", "local-reply"),
			check: func(t *testing.T, res *envoytest.Result) {
				if lr := res.LocalReply; lr == nil || lr.Status != 403 || !lr.Immediate {
					t.Fatalf("local reply %+v, want an immediate 403", lr)
				}
				header(t, res.Response.Headers, "x-testbed-reply", "local")
				noHeader(t, res.Response.Headers, "x-chain-resp")
				noHeader(t, res.Response.Headers, "x-saw-b")
			},
		},
		{
			// c replies: its reply passes through the response callbacks
			// of b, then a (Envoy encodes a local reply through the filters
			// that saw the request), but not c's own.
			name: "local_reply_last", h: abc, req: withHeader(get(""), "x-testbed-c", "local-reply"),
			check: func(t *testing.T, res *envoytest.Result) {
				if lr := res.LocalReply; lr == nil || lr.Status != 403 || !lr.Immediate {
					t.Fatalf("local reply %+v, want an immediate 403", lr)
				}
				header(t, res.Response.Headers, "x-testbed-reply", "local")
				header(t, res.Response.Headers, "x-chain-resp", "b,a")
				header(t, res.Response.Headers, "x-saw-resp-a", "b")
				header(t, res.Response.Headers, "x-saw-a", "-")
				header(t, res.Response.Headers, "x-saw-b", "a")
				noHeader(t, res.Response.Headers, "x-saw-c")
				body(t, "response", res.Response.Body, "denied by testbed\n")
			},
		},
		{
			// b traps, fail-closed: the request gets b's fail status.
			name: "fault_fail_closed", h: abc, req: withHeader(get(""), "x-testbed-b", "trap"),
			check: func(t *testing.T, res *envoytest.Result) {
				if lr := res.LocalReply; lr == nil || lr.Status != 500 || lr.Details != detailsFailStream {
					t.Fatalf("local reply %+v, want 500 %s", lr, detailsFailStream)
				}
			},
		},
		{
			// b traps, fail-open: b is skipped for the rest of the stream,
			// a and c run.
			name: "fault_fail_open", h: openB, req: withHeader(get(""), "x-testbed-b", "trap"),
			check: func(t *testing.T, res *envoytest.Result) {
				if res.LocalReply != nil {
					t.Fatalf("local reply %+v, want none", res.LocalReply)
				}
				if got, _ := res.Request.Headers.Get("x-chain"); !strings.HasSuffix(got, ",c") {
					t.Errorf("x-chain = %q, want c last", got)
				}
				header(t, res.Response.Headers, "x-chain-resp", "c,a")
				noHeader(t, res.Response.Headers, "x-saw-resp-b")
			},
		},
		{
			// Bodies in BUFFERED mode through the chain: b upper-cases
			// the request body, c appends to it, in that order.
			name: "buffered_body", h: abc, req: withHeader(withHeader(post("", "abc"),
				"x-testbed-b", "buffer-body"), "x-testbed-c", "append-body"),
			cfg: envoytest.Config{ProcessingMode: mode(buffered, none, false)},
			check: func(t *testing.T, res *envoytest.Result) {
				body(t, "request", res.Request.Body, "ABC+appended")
			},
		},
		{
			// STREAMED: b holds the chunks until the end (each is
			// answered with a cleared body meanwhile), then c appends.
			name: "streamed_body_held_in_the_middle", h: abc, req: withHeader(withHeader(post("", "abc", "def"),
				"x-testbed-b", "buffer-body"), "x-testbed-c", "append-body"),
			cfg: envoytest.Config{ProcessingMode: mode(streamed, none, false)},
			check: func(t *testing.T, res *envoytest.Result) {
				body(t, "request", res.Request.Body, "ABCDEF+appended")
			},
		},
		{
			// FULL_DUPLEX_STREAMED: the same, answered M:N.
			name: "full_duplex_body_held_in_the_middle", h: abc, req: withHeader(withHeader(post("", "abc", "def"),
				"x-testbed-b", "buffer-body"), "x-testbed-c", "append-body"),
			cfg: envoytest.Config{ProcessingMode: mode(fullDuplex, none, true)},
			check: func(t *testing.T, res *envoytest.Result) {
				body(t, "request", res.Request.Body, "ABCDEF+appended")
			},
		},
		{
			// With trailers the body never ends for b: what it holds goes
			// on, unchanged, when the trailers pass it, before them.
			name: "full_duplex_body_released_by_trailers", h: abc, req: withTrailers(withHeader(withHeader(post("", "abc", "def"),
				"x-testbed-b", "buffer-body"), "x-testbed-c", "trailers")),
			cfg: envoytest.Config{ProcessingMode: mode(fullDuplex, none, true)},
			check: func(t *testing.T, res *envoytest.Result) {
				body(t, "request", res.Request.Body, "abcdef")
				header(t, res.Request.Trailers, "x-testbed-trailer", "req")
			},
		},
		{
			// The response body runs c, b, a: b replaces it.
			name: "response_body", h: abc, req: withHeader(post(""), "x-testbed-b", "replace-resp-body"),
			cfg: envoytest.Config{ProcessingMode: mode(none, buffered, false)},
			check: func(t *testing.T, res *envoytest.Result) {
				body(t, "response", res.Response.Body, "replaced by testbed\n")
			},
		},
		{
			// b replies in the response: the reply goes out as it is
			// (Envoy sends it straight to the codec), after c's response
			// callback ran and before a's.
			name: "local_reply_in_the_response", h: abc, req: withHeader(get(""), "x-testbed-b", "local-reply-resp"),
			check: func(t *testing.T, res *envoytest.Result) {
				if lr := res.LocalReply; lr == nil || lr.Status != 403 || !lr.Immediate {
					t.Fatalf("local reply %+v, want an immediate 403", lr)
				}
				header(t, res.Response.Headers, "x-testbed-reply", "local-resp")
				noHeader(t, res.Response.Headers, "x-saw-resp-a")
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := tt.h.do(t, tt.cfg, tt.req)
			clean(t, res)
			tt.check(t, res)
			golden(t, res)
		})
	}
}

// TestChainSelection picks chains per stream by gRPC initial metadata (what
// ExtProcPerRoute's grpc_initial_metadata sends) and by metadata_context.
func TestChainSelection(t *testing.T) {
	a, c := tagged(t, "a", host.FailClosed), tagged(t, "c", host.FailClosed)
	h := start(t, Options{Plugins: []*host.Plugin{a, c}, Chains: Chains{
		Default: "only-a",
		Chains:  map[string][]string{"only-a": {"a"}, "ca": {"c", "a"}},
	}})
	byMetadata := func(name string) envoytest.Config {
		return envoytest.Config{InitialMetadata: map[string]string{ChainMetadataKey: name}}
	}
	t.Run("default", func(t *testing.T) {
		res := h.do(t, envoytest.Config{}, get(""))
		clean(t, res)
		header(t, res.Request.Headers, "x-chain", "a")
	})
	t.Run("initial_metadata", func(t *testing.T) {
		res := h.do(t, byMetadata("ca"), get(""))
		clean(t, res)
		header(t, res.Request.Headers, "x-chain", "c,a")
		golden(t, res)
	})
	t.Run("metadata_context", func(t *testing.T) {
		res := h.do(t, envoytest.Config{MetadataContext: chainMetadata("ca")}, get(""))
		clean(t, res)
		header(t, res.Request.Headers, "x-chain", "c,a")
	})
	t.Run("initial_metadata_wins", func(t *testing.T) {
		cfg := byMetadata("only-a")
		cfg.MetadataContext = chainMetadata("ca")
		res := h.do(t, cfg, get(""))
		clean(t, res)
		header(t, res.Request.Headers, "x-chain", "a")
	})
	t.Run("unknown_chain", func(t *testing.T) {
		res := h.do(t, byMetadata("nope"), get(""))
		tr := res.Transcript
		last := tr[len(tr)-1]
		if last.Kind != envoytest.KindServerClosed || last.Code != codes.NotFound ||
			!strings.Contains(last.Message, `no chain named "nope"`) || !strings.Contains(last.Message, "ca, only-a") {
			t.Fatalf("last entry %+v, want NOT_FOUND naming the chains", last)
		}
		// Envoy then applies failure_mode_allow (false: a 500 local reply).
		if lr := res.LocalReply; lr == nil || lr.Immediate {
			t.Errorf("local reply %+v, want Envoy's own", lr)
		}
		golden(t, res)
	})
	// Every stream above was counted under the chain it took.
	want := ChainStats{Streams: map[string]int64{"only-a": 2, "ca": 2}, Unknown: 1}
	if got := h.srv.ChainStats(); !reflect.DeepEqual(got, want) {
		t.Errorf("ChainStats() = %+v, want %+v", got, want)
	}
}

// chainMetadata is forwarded dynamic metadata naming a chain.
func chainMetadata(name string) *corev3.Metadata {
	return &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
		ChainNamespace: {Fields: map[string]*structpb.Value{ChainField: structpb.NewStringValue(name)}},
	}}
}

// TestChainL4: a TCP connection picks its chain by initial metadata too;
// an unknown one is NOT_FOUND.
func TestChainL4(t *testing.T) {
	t1 := tcpEdgeNamed(t, "t1", host.FailClosed, "")
	t2 := tcpEdgeNamed(t, "t2", host.FailClosed, "")
	h := start(t, Options{Plugins: []*host.Plugin{t1, t2}, Chains: Chains{Chains: map[string][]string{
		DefaultChain: {"t1"}, "only-t2": {"t2"}, "both": {"t1", "t2"},
	}}})
	for _, tt := range []struct {
		chain string
		want  codes.Code
	}{{"", codes.OK}, {"only-t2", codes.OK}, {"both", codes.OK}, {"nope", codes.NotFound}} {
		t.Run("chain="+tt.chain, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if tt.chain != "" {
				ctx = metadata.AppendToOutgoingContext(ctx, ChainMetadataKey, tt.chain)
			}
			st, err := netprocv3.NewNetworkExternalProcessorClient(h.conn).Process(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if err := st.Send(&netprocv3.ProcessingRequest{ReadData: &netprocv3.Data{Data: []byte("hello")}}); err != nil {
				t.Fatal(err)
			}
			r, err := st.Recv()
			if got := status.Code(err); got != tt.want {
				t.Fatalf("code %v (%v), want %v", got, err, tt.want)
			}
			if err == nil && string(r.GetReadData().GetData()) != "hello" {
				t.Errorf("answer %v", r)
			}
			st.CloseSend()
		})
	}
}

// tcpEdgeNamed is tcpEdge with a plugin name of its own.
func tcpEdgeNamed(t *testing.T, name string, policy host.FailurePolicy, config string) *host.Plugin {
	t.Helper()
	p, err := host.Load(context.Background(), mustRead(t, filepath.Join("testdata", "tcpedge.wasm")), host.Config{
		Name: name, PluginConfig: []byte(config), Instances: 1, FailurePolicy: policy, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close(context.Background()) })
	return p
}

// TestChainL4Edge runs connections through a chain of two tcpedge plugins
// (read data first to second, write data second to first) through the
// emulated network filter.
func TestChainL4Edge(t *testing.T) {
	after := func(d time.Duration, data string) envoytest.Frame {
		return envoytest.Frame{Data: []byte(data), Delay: d}
	}
	tests := []struct {
		name             string
		policy1, policy2 host.FailurePolicy
		config2          string
		conn             envoytest.Connection
		want             l4Want
	}{
		{
			name: "pass through both ways",
			conn: envoytest.Connection{Read: envoytest.Frames(true, "hello"), Write: envoytest.Frames(true, "ok"), WriteAfterRead: true},
			want: l4Want{up: "hello", down: "ok", upEOS: true, downEOS: true, statuses: "U U"},
		},
		{
			// The first holds the read data until '.', the second then
			// sees it whole; the write data is held by the second first.
			name: "a pause in each direction",
			conn: envoytest.Connection{Read: envoytest.Frames(false, "P1", "2", "3."), Write: envoytest.Frames(true, "Pa", "b.")},
			want: l4Want{up: "P123.", down: "Pab.", downEOS: true, statuses: "M M M M M"},
		},
		{
			// Each resumes on its own tick; the second only sees the data
			// once the first released it.
			name: "asynchronous continues in turn",
			conn: envoytest.Connection{Read: []envoytest.Frame{{Data: []byte("A1")}, after(300*time.Millisecond, "x"), after(0, "y")}},
			want: l4Want{up: "A1xy", statuses: "M M U"},
		},
		{
			// The first rewrites the data; the second sees the rewrite.
			name: "the second sees the first's edit",
			conn: envoytest.Connection{Read: envoytest.Frames(true, "S")},
			want: l4Want{up: "none", upEOS: true, statuses: "M"},
		},
		{
			// The first traps and fails open; the second traps on the same
			// data and fails closed.
			name: "each plugin its own failure policy", policy1: host.FailOpen,
			conn: envoytest.Connection{Read: envoytest.Frames(false, "T1", "never")},
			want: l4Want{close: envoytest.ClosedFlushWrite, statuses: "MC"},
		},
		{
			name: "both fail open", policy1: host.FailOpen, policy2: host.FailOpen,
			conn: envoytest.Connection{Read: envoytest.Frames(true, "T1", "C2"), Write: envoytest.Frames(true, "w")},
			want: l4Want{up: "T1C2", down: "w", upEOS: true, downEOS: true, statuses: "U U U"},
		},
		{
			name: "the second pauses the new connection until a tick", config2: "N",
			conn: envoytest.Connection{Read: []envoytest.Frame{{Data: []byte("a")}, after(150*time.Millisecond, "b")}},
			want: l4Want{up: "ab", statuses: "M M"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t1 := tcpEdgeNamed(t, "t1", tc.policy1, "")
			t2 := tcpEdgeNamed(t, "t2", tc.policy2, tc.config2)
			h := start(t, Options{Plugins: []*host.Plugin{t1, t2}, Chains: Chains{Chains: map[string][]string{DefaultChain: {"t1", "t2"}}}})
			res := h.doL4(t, envoytest.L4Config{MessageTimeout: 5 * time.Second}, &tc.conn)
			tc.want.check(t, res)
			if n := h.srv.Stats().PluginFailures; (tc.policy1 == host.FailOpen || tc.policy2 == host.FailOpen) != (n == 1) {
				t.Errorf("%d plugin failures counted", n)
			}
			waitNoStreams(t, t1)
			waitNoStreams(t, t2)
		})
	}
}
