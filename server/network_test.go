package server

import (
	"context"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	netprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/network_ext_proc/v3"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/wasm-callout/wasm-callout/host"
	"github.com/wasm-callout/wasm-callout/server/envoytest"
)

// tcpEdge loads testdata/tcpedge.wasm (see its .wat for what each first
// byte does) with its own pool, closed when the test ends.
func tcpEdge(t *testing.T, policy host.FailurePolicy, config string, callTimeout time.Duration) *host.Plugin {
	t.Helper()
	p, err := host.Load(context.Background(), mustRead(t, filepath.Join("testdata", "tcpedge.wasm")), host.Config{
		Name: "tcpedge", PluginConfig: []byte(config), Instances: 2, FailurePolicy: policy,
		CallTimeout: callTimeout, Logger: testLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close(context.Background()) })
	return p
}

// doL4 plays one connection through the emulated network filter.
func (h *harness) doL4(t testing.TB, cfg envoytest.L4Config, c *envoytest.Connection) *envoytest.L4Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := envoytest.DoL4(ctx, h.conn, cfg, c)
	if err != nil {
		t.Fatalf("envoytest.DoL4: %v", err)
	}
	return res
}

// l4Want is what one connection must produce.
type l4Want struct {
	up, down       string
	upEOS, downEOS bool
	close          envoytest.ConnClose
	// statuses are the answers' data_processing_status (U, M) and
	// connection_status (C close, R reset), one letter pair per answer in
	// order, e.g. "U U M MC".
	statuses string
}

func (w l4Want) check(t *testing.T, res *envoytest.L4Result) {
	t.Helper()
	if string(res.Upstream) != w.up || res.UpstreamEOS != w.upEOS {
		t.Errorf("upstream got %q (eos %v), want %q (eos %v)", res.Upstream, res.UpstreamEOS, w.up, w.upEOS)
	}
	if string(res.Downstream) != w.down || res.DownstreamEOS != w.downEOS {
		t.Errorf("client got %q (eos %v), want %q (eos %v)", res.Downstream, res.DownstreamEOS, w.down, w.downEOS)
	}
	if res.Close != w.close {
		t.Errorf("connection %v (%s), want %v", res.Close, res.CloseReason, w.close)
	}
	if len(res.Violations) > 0 {
		t.Errorf("protocol violations: %q", res.Violations)
	}
	if s := res.Stats; s.MessageTimeouts+s.StreamsGrpcError+s.SpuriousMessages+s.EmptyResponses > 0 {
		t.Errorf("Envoy saw errors: %+v", s)
	}
	if w.statuses != "" {
		if got := answerStatuses(res.Transcript); got != w.statuses {
			t.Errorf("answers %q, want %q", got, w.statuses)
		}
	}
	if t.Failed() {
		t.Logf("transcript:\n%s", res.Transcript.MarshalText())
	}
}

func answerStatuses(tr envoytest.L4Transcript) string {
	var out []string
	for _, r := range tr.Responses() {
		s := ""
		if r.GetReadData() != nil || r.GetWriteData() != nil {
			s = map[netprocv3.ProcessingResponse_DataProcessedStatus]string{
				netprocv3.ProcessingResponse_UNMODIFIED: "U", netprocv3.ProcessingResponse_MODIFIED: "M"}[r.GetDataProcessingStatus()]
		}
		switch r.GetConnectionStatus() {
		case netprocv3.ProcessingResponse_CLOSE:
			s += "C"
		case netprocv3.ProcessingResponse_CLOSE_RST:
			s += "R"
		}
		out = append(out, s)
	}
	return strings.Join(out, " ")
}

func goldenL4(t *testing.T, res *envoytest.L4Result) {
	t.Helper()
	name := strings.ReplaceAll(t.Name(), "/", "__")
	envoytest.CompareGolden(t, filepath.Join("testdata", goldenDir, name+".txt"), res.Transcript)
}

func metric(p *host.Plugin, name string) float64 {
	for _, m := range p.Metrics().Snapshot() {
		if m.Name == name {
			return float64(m.Counter)
		}
	}
	return -1
}

// The example TCP plugins, built with the Go SDK, through the emulated
// network filter; each transcript is a golden file.
func TestNetworkPlugins(t *testing.T) {
	tests := []struct {
		name, plugin, config string
		conn                 envoytest.Connection
		want                 l4Want
		metrics              map[string]float64 // increments
	}{
		{
			name: "count", plugin: "tcp-count",
			conn: envoytest.Connection{Read: envoytest.Frames(true, "hello ", "world"), Write: envoytest.Frames(true, "ok")},
			want: l4Want{up: "hello world", down: "ok", upEOS: true, downEOS: true, statuses: "U U U"},
			metrics: map[string]float64{"tcp_count_connections_total": 1,
				"tcp_count_downstream_bytes_total": 11, "tcp_count_upstream_bytes_total": 2},
		},
		{
			name: "rewrite tokens split across frames", plugin: "tcp-rewrite", config: "foo: bar\n\"GET /old\": \"GET /new\"\n",
			conn: envoytest.Connection{Read: envoytest.Frames(false, "say fo", "o and GET /o", "ld!\n"),
				Write: envoytest.Frames(false, "foo"), WriteAfterRead: true},
			want:    l4Want{up: "say bar and GET /new!\n", down: "foo", statuses: "M M M U"},
			metrics: map[string]float64{"tcp_rewrite_replacements_total": 2},
		},
		{
			name: "rewrite releases a partial token at the end", plugin: "tcp-rewrite", config: "foo: bar",
			conn: envoytest.Connection{Read: envoytest.Frames(true, "a fo")},
			want: l4Want{up: "a fo", upEOS: true, statuses: "U"},
		},
		{
			name: "deny closes after the first bytes", plugin: "tcp-deny", config: "deny: \"CONNECT \"\ndeny: \"\\x16\\x03\"",
			conn:    envoytest.Connection{Read: envoytest.Frames(false, "CONN", "ECT example.com:443 HTTP/1.1\r\n")},
			want:    l4Want{close: envoytest.ClosedFlushWrite, statuses: "M MC"},
			metrics: map[string]float64{"tcp_deny_denied_total": 1},
		},
		{
			name: "deny resets", plugin: "tcp-deny", config: "deny: \"\\x16\\x03\"\naction: reset",
			conn: envoytest.Connection{Read: []envoytest.Frame{{Data: []byte{0x16, 0x03, 0x01}}}},
			want: l4Want{close: envoytest.ClosedReset, statuses: "MR"},
		},
		{
			name: "deny lets other traffic through", plugin: "tcp-deny", config: "deny: \"CONNECT \"",
			conn:    envoytest.Connection{Read: envoytest.Frames(true, "CO", "PY x\r\n"), Write: envoytest.Frames(true, "OK\r\n"), WriteAfterRead: true},
			want:    l4Want{up: "COPY x\r\n", down: "OK\r\n", upEOS: true, downEOS: true, statuses: "M M U"},
			metrics: map[string]float64{"tcp_deny_allowed_total": 1},
		},
		{
			name: "deny decides at the end of the stream", plugin: "tcp-deny", config: "deny: \"CONNECT \"",
			conn: envoytest.Connection{Read: envoytest.Frames(true, "CON")},
			want: l4Want{up: "CON", upEOS: true, statuses: "U"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := plugin(t, tc.plugin, host.FailClosed, tc.config)
			h := start(t, Options{Plugin: p})
			before := map[string]float64{}
			for name := range tc.metrics {
				before[name] = metric(p, name)
			}
			res := h.doL4(t, envoytest.L4Config{MessageTimeout: 5 * time.Second}, &tc.conn)
			tc.want.check(t, res)
			for name, inc := range tc.metrics {
				if got := metric(p, name) - max(before[name], 0); got != inc {
					t.Errorf("metric %s grew by %v, want %v", name, got, inc)
				}
			}
			goldenL4(t, res)
		})
	}
}

// Pauses, asynchronous resumes and closes, properties and failures, with
// the tcpedge fixture.
func TestNetworkEdge(t *testing.T) {
	after := func(d time.Duration, data string) envoytest.Frame {
		return envoytest.Frame{Data: []byte(data), Delay: d}
	}
	tests := []struct {
		name        string
		policy      host.FailurePolicy
		config      string
		callTimeout time.Duration
		cfg         envoytest.L4Config
		conn        envoytest.Connection
		want        l4Want
		check       func(t *testing.T, res *envoytest.L4Result)
	}{
		{
			name: "pause holds, continue releases everything",
			conn: envoytest.Connection{Read: envoytest.Frames(false, "P1", "2", "3."), Write: envoytest.Frames(true, "Pa", "b.")},
			want: l4Want{up: "P123.", down: "Pab.", downEOS: true, statuses: "M M M M M"},
		},
		{
			name: "a pause at the end of the stream flushes",
			conn: envoytest.Connection{Read: envoytest.Frames(true, "P1"), Write: envoytest.Frames(true, "Pa", "b")},
			want: l4Want{up: "P1", down: "Pab", upEOS: true, downEOS: true, statuses: "U M M"},
		},
		{
			name: "asynchronous continue: the next answer carries the held bytes",
			conn: envoytest.Connection{Read: []envoytest.Frame{{Data: []byte("A1")}, after(150*time.Millisecond, "x"), after(0, "y")}},
			want: l4Want{up: "A1xy", statuses: "M M U"},
		},
		{
			name: "asynchronous close without a frame to answer",
			conn: envoytest.Connection{Read: envoytest.Frames(false, "X"), Linger: 2 * time.Second},
			want: l4Want{close: envoytest.ClosedFlushWrite, statuses: "M C"},
		},
		{
			name: "close", conn: envoytest.Connection{Read: envoytest.Frames(false, "ok ", "C", "never")},
			want: l4Want{up: "ok ", close: envoytest.ClosedFlushWrite, statuses: "U MC"},
		},
		{
			name: "local response resets", conn: envoytest.Connection{Read: envoytest.Frames(false, "R")},
			want: l4Want{close: envoytest.ClosedReset, statuses: "MR"},
		},
		{
			name: "trap fails closed", conn: envoytest.Connection{Read: envoytest.Frames(false, "ok ", "T", "never")},
			want: l4Want{up: "ok ", close: envoytest.ClosedFlushWrite, statuses: "U MC"},
		},
		{
			name: "trap fails open", policy: host.FailOpen,
			conn: envoytest.Connection{Read: envoytest.Frames(true, "T1", "C2"), Write: envoytest.Frames(true, "w")},
			want: l4Want{up: "T1C2", down: "w", upEOS: true, downEOS: true, statuses: "U U U"},
		},
		{
			name: "held bytes pass when the plugin fails open", policy: host.FailOpen,
			conn: envoytest.Connection{Read: []envoytest.Frame{{Data: []byte("P1")}, after(150*time.Millisecond, "x")},
				Write: []envoytest.Frame{after(50*time.Millisecond, "T")}},
			want: l4Want{up: "P1x", down: "T", statuses: "M U M"},
		},
		{
			name: "call deadline fails closed", callTimeout: 100 * time.Millisecond,
			conn: envoytest.Connection{Read: envoytest.Frames(false, "L")},
			want: l4Want{close: envoytest.ClosedFlushWrite, statuses: "MC"},
		},
		{
			name: "new connection paused until a tick", config: "N",
			conn: envoytest.Connection{Read: []envoytest.Frame{{Data: []byte("a")}, after(150*time.Millisecond, "b")}},
			want: l4Want{up: "ab", statuses: "M M"},
		},
		{
			name: "properties from attributes, writes as dynamic metadata",
			cfg: envoytest.L4Config{
				ConnectionAttributes: map[string]*structpb.Value{"source.address": structpb.NewStringValue("10.1.2.3:5555")},
				ReceivingNamespaces:  []string{DefaultMetadataNamespace},
			},
			conn: envoytest.Connection{Read: envoytest.Frames(true, "S")},
			want: l4Want{up: "10.1.2.3:5555", upEOS: true, statuses: "M"},
			check: func(t *testing.T, res *envoytest.L4Result) {
				if got := res.DynamicMetadata[DefaultMetadataNamespace].GetFields()["note"].GetStringValue(); got != "hi" {
					t.Errorf("dynamic metadata %v", res.DynamicMetadata)
				}
			},
		},
		{
			name: "a missing property reads as absent",
			conn: envoytest.Connection{Read: envoytest.Frames(true, "S")},
			want: l4Want{up: "none", upEOS: true, statuses: "M"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := tcpEdge(t, tc.policy, tc.config, tc.callTimeout)
			h := start(t, Options{Plugin: p})
			cfg := tc.cfg
			cfg.MessageTimeout = 5 * time.Second
			res := h.doL4(t, cfg, &tc.conn)
			tc.want.check(t, res)
			if tc.check != nil {
				tc.check(t, res)
			}
			waitNoStreams(t, p)
		})
	}
}

// waitNoStreams checks that every plugin context was closed.
func waitNoStreams(t *testing.T, p *host.Plugin) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); p.Stats().LiveStreams != 0; {
		if time.Now().After(deadline) {
			t.Fatalf("%d plugin contexts still open", p.Stats().LiveStreams)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A trap closes only its own connection: another connection, on the other
// instance, carries on; the failed instance is replaced.
func TestNetworkTrapIsolated(t *testing.T) {
	p := tcpEdge(t, host.FailClosed, "", 0)
	h := start(t, Options{Plugin: p})
	var wg sync.WaitGroup
	var long *envoytest.L4Result
	wg.Add(1)
	go func() {
		defer wg.Done()
		long = h.doL4(t, envoytest.L4Config{MessageTimeout: 5 * time.Second}, &envoytest.Connection{
			Read: []envoytest.Frame{{Data: []byte("one ")}, {Data: []byte("two"), EndOfStream: true, Delay: 400 * time.Millisecond}},
		})
	}()
	time.Sleep(150 * time.Millisecond) // the long connection's context exists
	trapped := h.doL4(t, envoytest.L4Config{MessageTimeout: 5 * time.Second}, &envoytest.Connection{Read: envoytest.Frames(false, "T")})
	wg.Wait()
	l4Want{close: envoytest.ClosedFlushWrite, statuses: "MC"}.check(t, trapped)
	l4Want{up: "one two", upEOS: true, statuses: "U U"}.check(t, long)
	waitNoStreams(t, p)
	for deadline := time.Now().Add(5 * time.Second); p.Stats().Healthy != 2; {
		if time.Now().After(deadline) {
			t.Fatalf("instances not replaced: %+v", p.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if s := h.srv.Stats(); s.PluginFailures != 1 {
		t.Errorf("plugin failures %d, want 1", s.PluginFailures)
	}
}

// A connection still on a replaced plugin generation when its drain
// timeout runs out gets the failure policy: fail-closed closes it, fail-open
// passes the rest of its data; the old generation then closes.
func TestNetworkDrainExpiry(t *testing.T) {
	load := func(policy host.FailurePolicy) *host.Plugin {
		p, err := host.Load(context.Background(), mustRead(t, filepath.Join("testdata", "tcpedge.wasm")),
			host.Config{Name: "tcpedge", Instances: 1, FailurePolicy: policy, Logger: testLogger()})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		policy host.FailurePolicy
		want   l4Want
	}{
		{host.FailClosed, l4Want{up: "a", close: envoytest.ClosedFlushWrite, statuses: "U C"}},
		{host.FailOpen, l4Want{up: "ab", upEOS: true, statuses: "U U"}},
	} {
		old := load(tc.policy)
		h := start(t, Options{Plugin: old, DrainTimeout: 100 * time.Millisecond})
		done := make(chan *envoytest.L4Result)
		go func() {
			done <- h.doL4(t, envoytest.L4Config{MessageTimeout: 5 * time.Second}, &envoytest.Connection{
				Read: []envoytest.Frame{{Data: []byte("a")}, {Data: []byte("b"), EndOfStream: true, Delay: 600 * time.Millisecond}},
			})
		}()
		time.Sleep(100 * time.Millisecond) // the connection runs on the first generation
		next := load(tc.policy)
		t.Cleanup(func() { next.Close(context.Background()) })
		if _, err := h.srv.Swap(next); err != nil {
			t.Fatal(err)
		}
		tc.want.check(t, <-done)
		if s := h.srv.Stats(); s.DrainExpired != 1 {
			t.Errorf("%v: drain expired %d, want 1", tc.policy, s.DrainExpired)
		}
		waitNoStreams(t, old)
	}
}

// Without a healthy instance the failure policy applies to the first frame.
func TestNetworkNoInstance(t *testing.T) {
	for _, tc := range []struct {
		policy host.FailurePolicy
		want   l4Want
	}{
		{host.FailClosed, l4Want{close: envoytest.ClosedFlushWrite, statuses: "MC"}},
		{host.FailOpen, l4Want{up: "data", upEOS: true, statuses: "U"}},
	} {
		p := tcpEdge(t, tc.policy, "", 0)
		h := start(t, Options{Plugin: p})
		p.Close(context.Background())
		res := h.doL4(t, envoytest.L4Config{MessageTimeout: 5 * time.Second}, &envoytest.Connection{Read: envoytest.Frames(true, "data")})
		tc.want.check(t, res)
	}
}

// Malformed frames end their stream with a precise gRPC status; other
// connections are unaffected.
func TestNetworkProtocolErrors(t *testing.T) {
	p := tcpEdge(t, host.FailClosed, "", 0)
	h := start(t, Options{Plugin: p})
	data := func(s string, eos bool) *netprocv3.Data { return &netprocv3.Data{Data: []byte(s), EndOfStream: eos} }
	for _, tc := range []struct {
		name   string
		frames []*netprocv3.ProcessingRequest
		code   codes.Code
		msg    string
	}{
		{"both directions", []*netprocv3.ProcessingRequest{{ReadData: data("a", false), WriteData: data("b", false)}},
			codes.InvalidArgument, "sets both read_data and write_data"},
		{"no direction", []*netprocv3.ProcessingRequest{{}}, codes.InvalidArgument, "sets neither read_data nor write_data"},
		{"data after the end", []*netprocv3.ProcessingRequest{{WriteData: data("a", true)}, {WriteData: data("b", false)}},
			codes.FailedPrecondition, "write_data after its end_of_stream"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			st, err := netprocv3.NewNetworkExternalProcessorClient(h.conn).Process(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range tc.frames {
				if err := st.Send(f); err != nil {
					break
				}
			}
			for {
				_, err = st.Recv()
				if err != nil {
					break
				}
			}
			if s := status.Convert(err); s.Code() != tc.code || !strings.Contains(s.Message(), tc.msg) {
				t.Errorf("ended with %v %q, want %v %q", s.Code(), s.Message(), tc.code, tc.msg)
			}
			res := h.doL4(t, envoytest.L4Config{MessageTimeout: 5 * time.Second}, &envoytest.Connection{Read: envoytest.Frames(true, "fine")})
			l4Want{up: "fine", upEOS: true, statuses: "U"}.check(t, res)
		})
	}
	if h.srv.Stats().ProtocolErrors != 3 {
		t.Errorf("protocol errors %d, want 3", h.srv.Stats().ProtocolErrors)
	}
	waitNoStreams(t, p)
	// Three good connections and three refused ones; the frames of a
	// known direction are counted, and the answered ones timed.
	waitFor(t, func() bool { return h.srv.Stats().StreamsActive == 0 })
	st := h.srv.Stats()
	if sv := st.Services[ServiceNetworkExtProc]; sv.StreamsStarted != 6 || sv.Finished[OutcomeProtocolError] != 3 || sv.Finished[OutcomeOK] != 3 {
		t.Errorf("network_ext_proc: %+v", sv)
	}
	if st.Services[ServiceExtProc].StreamsStarted != 0 {
		t.Errorf("ext_proc: %+v", st.Services[ServiceExtProc])
	}
	if st.Messages[PhaseRead] != 3 || st.Messages[PhaseWrite] != 2 {
		t.Errorf("messages read %d write %d, want 3 and 2", st.Messages[PhaseRead], st.Messages[PhaseWrite])
	}
	if lat := h.srv.Latency(); lat[PhaseRead].Count != 3 || lat[PhaseWrite].Count != 1 {
		t.Errorf("answers timed: read %d write %d, want 3 and 1", lat[PhaseRead].Count, lat[PhaseWrite].Count)
	}
}

// The gRPC health service answers for the network service too.
func TestNetworkHealth(t *testing.T) {
	h := start(t, Options{Plugin: tcpEdge(t, host.FailClosed, "", 0)})
	resp, err := healthpb.NewHealthClient(h.conn).Check(context.Background(), &healthpb.HealthCheckRequest{Service: NetworkServiceName})
	if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health of %s: %v %v", NetworkServiceName, resp, err)
	}
}
