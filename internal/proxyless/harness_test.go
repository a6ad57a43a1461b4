package proxyless

// The parent's side of the harness: the backend, the wasm-callout server,
// the xDS management server and the child process that runs the client.

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extprocfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	xdsserver "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	testgrpc "google.golang.org/grpc/interop/grpc_testing"

	"github.com/wasm-callout/wasm-callout/host"
	"github.com/wasm-callout/wasm-callout/internal/testhost"
	"github.com/wasm-callout/wasm-callout/internal/testplugins"
	"github.com/wasm-callout/wasm-callout/internal/testutil"
	"github.com/wasm-callout/wasm-callout/server"
)

// Names the xDS resources use; the client dials xds:///listenerName.
const (
	nodeID       = "wasm-callout-proxyless"
	listenerName = "backend"
	routeName    = "backend-route"
	clusterName  = "backend-cluster"
)

// Environment of the child process.
const (
	childEnv      = "WASM_CALLOUT_PROXYLESS_CHILD" // "1" in the child
	childTarget   = "WASM_CALLOUT_PROXYLESS_TARGET"
	extProcEnv    = "GRPC_EXPERIMENTAL_XDS_EXT_PROC_ON_CLIENT"
	bootstrapEnv  = "GRPC_XDS_BOOTSTRAP_CONFIG"
	callHeader    = "x-call-id" // names the call in the backend's records
	childDeadline = 10 * time.Second
)

// ---- what parent and child exchange (one JSON object per line) ----

// callSpec is one RPC for the child to make.
type callSpec struct {
	ID string `json:"id"`
	// Kind is "unary" (the generated stub; headers and trailers through
	// the grpc.Header and grpc.Trailer call options), "unary-stream" (the
	// same method through ClientConn.NewStream; headers and trailers from
	// the stream) or "bidi" (FullDuplexCall: every message sent is echoed).
	Kind     string            `json:"kind"`
	Metadata map[string]string `json:"metadata,omitempty"`
	// Sizes are the request messages' payload sizes: unary uses Sizes[0].
	// A negative size sends a message with no payload at all, which
	// marshals to zero bytes. Text makes payloads lower-case ASCII letters
	// instead of random bytes.
	Sizes []int `json:"sizes,omitempty"`
	Text  bool  `json:"text,omitempty"`
	// RespSize is the unary response's payload size.
	RespSize int `json:"resp_size,omitempty"`
	// FailCode makes the backend end a unary call with this status code
	// and no headers or trailers (a trailers-only response).
	FailCode int `json:"fail_code,omitempty"`
	// TimeoutMS is the call's deadline; 0 means childDeadline.
	TimeoutMS int `json:"timeout_ms,omitempty"`
}

// digest stands for a message's payload: its length and a hash.
type digest struct {
	Len int    `json:"len"`
	SHA string `json:"sha"`
}

func digestOf(b []byte) digest {
	h := sha256.Sum256(b)
	return digest{len(b), hex.EncodeToString(h[:8])}
}

// callResult is what the child saw of one RPC.
type callResult struct {
	ID        string              `json:"id"`
	Code      string              `json:"code"` // codes.Code.String(); "OK" on success
	Message   string              `json:"message"`
	Header    map[string][]string `json:"header"`
	HeaderErr string              `json:"header_err,omitempty"`
	Trailer   map[string][]string `json:"trailer"`
	SendErr   string              `json:"send_err,omitempty"`
	Received  []digest            `json:"received"` // response payloads
	Millis    int64               `json:"millis"`
	Error     string              `json:"error,omitempty"` // the child could not make the call
}

// payload is the deterministic payload of message i of call id: n random
// bytes, or n lower-case letters when text is set.
func payload(id string, i, n int, text bool) []byte {
	if n < 0 {
		return nil
	}
	r := rand.NewChaCha8(sha256.Sum256(fmt.Appendf(nil, "%s/%d", id, i)))
	b := make([]byte, n)
	r.Read(b)
	if text {
		for j := range b {
			b[j] = 'a' + b[j]%26
		}
	}
	return b
}

// ---- the backend ----

// backend is grpc.testing.TestService on 127.0.0.1. UnaryCall answers a
// payload of the requested size (payload(id, 1000, size)) with header
// x-backend: unary (and x-backend-del: yes) and trailer x-backend-trailer:
// unary; FullDuplexCall echoes every message, with header x-backend: bidi
// and trailer x-backend-trailer: bidi. Both record, under the x-call-id
// header, the request metadata and the digest of every payload received.
type backend struct {
	testgrpc.UnimplementedTestServiceServer
	addr string

	mu    sync.Mutex
	calls map[string]*backendCall
}

type backendCall struct {
	md       metadata.MD
	received []digest
	ended    bool // the handler returned
}

func startBackend(t *testing.T) *backend {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{addr: lis.Addr().String(), calls: map[string]*backendCall{}}
	g := grpc.NewServer(grpc.MaxRecvMsgSize(64<<20), grpc.MaxSendMsgSize(64<<20))
	testgrpc.RegisterTestServiceServer(g, b)
	go g.Serve(lis)
	t.Cleanup(g.Stop)
	return b
}

func (b *backend) begin(ctx context.Context) (string, *backendCall) {
	md, _ := metadata.FromIncomingContext(ctx)
	id := ""
	if v := md.Get(callHeader); len(v) > 0 {
		id = v[0]
	}
	c := &backendCall{md: md.Copy()}
	b.mu.Lock()
	b.calls[id] = c
	b.mu.Unlock()
	return id, c
}

func (b *backend) record(c *backendCall, p *testgrpc.Payload) {
	b.mu.Lock()
	c.received = append(c.received, digestOf(p.GetBody()))
	b.mu.Unlock()
}

func (b *backend) end(c *backendCall) {
	b.mu.Lock()
	c.ended = true
	b.mu.Unlock()
}

// call returns a copy of what the backend recorded for id, or nil.
func (b *backend) call(id string) *backendCall {
	b.mu.Lock()
	defer b.mu.Unlock()
	c := b.calls[id]
	if c == nil {
		return nil
	}
	return &backendCall{md: c.md.Copy(), received: append([]digest(nil), c.received...), ended: c.ended}
}

func (b *backend) UnaryCall(ctx context.Context, req *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	id, c := b.begin(ctx)
	defer b.end(c)
	b.record(c, req.GetPayload())
	if code := req.GetResponseStatus().GetCode(); code != 0 {
		return nil, status.Error(codes.Code(code), req.GetResponseStatus().GetMessage())
	}
	if err := grpc.SetHeader(ctx, metadata.Pairs("x-backend", "unary", "x-backend-del", "yes")); err != nil {
		return nil, err
	}
	if err := grpc.SetTrailer(ctx, metadata.Pairs("x-backend-trailer", "unary")); err != nil {
		return nil, err
	}
	return &testgrpc.SimpleResponse{Payload: &testgrpc.Payload{Body: payload(id, 1000, int(req.GetResponseSize()), false)}}, nil
}

func (b *backend) FullDuplexCall(s testgrpc.TestService_FullDuplexCallServer) error {
	_, c := b.begin(s.Context())
	defer b.end(c)
	if err := s.SetHeader(metadata.Pairs("x-backend", "bidi")); err != nil {
		return err
	}
	for {
		req, err := s.Recv()
		if err == io.EOF {
			s.SetTrailer(metadata.Pairs("x-backend-trailer", "bidi"))
			return nil
		}
		if err != nil {
			return err
		}
		b.record(c, req.GetPayload())
		if err := s.Send(&testgrpc.StreamingOutputCallResponse{Payload: req.GetPayload()}); err != nil {
			return err
		}
	}
}

// ---- the wasm-callout server ----

var loader *testhost.Loader

func testLogger() *slog.Logger { return testhost.Logger() }

// plugin loads plugins/NAME once per test binary and variant (fail-closed,
// status 500, empty configuration); a variant is a separate pool of
// instances, for a test that breaks instances.
func plugin(t *testing.T, name, variant string) *host.Plugin {
	t.Helper()
	return loader.Load(t, name+"/"+variant, testplugins.Path(t, name), host.Config{
		Name: name, RootID: "root-" + name, VMID: "vm-" + name,
		Instances: 2, FailurePolicy: host.FailClosed, FailStatus: 500,
	})
}

// startExtProc serves wasm-callout with p on 127.0.0.1, as cmd/wasm-callout
// does: server.New, GRPCServerOptions, Register.
func startExtProc(t *testing.T, p *host.Plugin) (*server.Server, string) {
	t.Helper()
	srv, err := server.New(server.Options{Plugin: p, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	addr, stop := testutil.Serve(t, srv)
	t.Cleanup(stop)
	return srv, addr
}

// ---- the xDS management server ----

// modes is the filter's processing_mode.
func modes(reqBody, respBody extprocfilterv3.ProcessingMode_BodySendMode, respTrailers extprocfilterv3.ProcessingMode_HeaderSendMode) *extprocfilterv3.ProcessingMode {
	return &extprocfilterv3.ProcessingMode{
		RequestHeaderMode:   extprocfilterv3.ProcessingMode_SEND,
		ResponseHeaderMode:  extprocfilterv3.ProcessingMode_SEND,
		RequestBodyMode:     reqBody,
		ResponseBodyMode:    respBody,
		ResponseTrailerMode: respTrailers,
	}
}

// extProcFilter is the ext_proc HTTP filter config: google_grpc to target
// (the only GrpcService grpc-go takes), failure_mode_allow false.
func extProcFilter(target string, pm *extprocfilterv3.ProcessingMode) *extprocfilterv3.ExternalProcessor {
	return &extprocfilterv3.ExternalProcessor{
		GrpcService: &corev3.GrpcService{TargetSpecifier: &corev3.GrpcService_GoogleGrpc_{
			GoogleGrpc: &corev3.GrpcService_GoogleGrpc{TargetUri: target, StatPrefix: "wasm_callout"},
		}},
		ProcessingMode: pm,
	}
}

func mustAny(t *testing.T, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// resources are the client's xDS resources: an API listener (HCM with
// filter, then the router; routes from RDS), one route to the cluster, an
// EDS cluster and its one endpoint, backendAddr.
func resources(t *testing.T, filter *extprocfilterv3.ExternalProcessor, backendAddr string) map[resource.Type][]types.Resource {
	t.Helper()
	ip, portStr, err := net.SplitHostPort(backendAddr)
	if err != nil {
		t.Fatal(err)
	}
	var port uint32
	fmt.Sscan(portStr, &port)
	ads := &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}
	hcm := &hcmv3.HttpConnectionManager{
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{ConfigSource: ads, RouteConfigName: routeName}},
		HttpFilters: []*hcmv3.HttpFilter{
			{Name: "envoy.filters.http.ext_proc", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(t, filter)}},
			{Name: "envoy.filters.http.router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(t, &routerv3.Router{})}},
		},
	}
	lis := &listenerv3.Listener{
		Name:        listenerName,
		ApiListener: &listenerv3.ApiListener{ApiListener: mustAny(t, hcm)},
	}
	route := &routev3.RouteConfiguration{
		Name: routeName,
		VirtualHosts: []*routev3.VirtualHost{{
			Name:    "all",
			Domains: []string{"*"},
			Routes: []*routev3.Route{{
				Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
				Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: clusterName}}},
			}},
		}},
	}
	cluster := &clusterv3.Cluster{
		Name:                 clusterName,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: ads, ServiceName: clusterName},
		LbPolicy:             clusterv3.Cluster_ROUND_ROBIN,
	}
	endpoints := &endpointv3.ClusterLoadAssignment{
		ClusterName: clusterName,
		Endpoints: []*endpointv3.LocalityLbEndpoints{{
			Locality:            &corev3.Locality{Region: "local"},
			LoadBalancingWeight: wrapperspb.UInt32(1), // grpc-go ignores localities without a weight
			LbEndpoints: []*endpointv3.LbEndpoint{{
				HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
					Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
						Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
					}}},
				}},
			}},
		}},
	}
	return map[resource.Type][]types.Resource{
		resource.ListenerType: {lis},
		resource.RouteType:    {route},
		resource.ClusterType:  {cluster},
		resource.EndpointType: {endpoints},
	}
}

// startXDS serves the resources over ADS on 127.0.0.1 and returns its
// address.
func startXDS(t *testing.T, res map[resource.Type][]types.Resource) string {
	t.Helper()
	snapshots := cache.NewSnapshotCache(true, cache.IDHash{}, nil)
	snap, err := cache.NewSnapshot("1", res)
	if err != nil {
		t.Fatal(err)
	}
	if err := snapshots.SetSnapshot(context.Background(), nodeID, snap); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	xds := xdsserver.NewServer(ctx, snapshots, nil)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	discoverygrpc.RegisterAggregatedDiscoveryServiceServer(g, xds)
	go g.Serve(lis)
	t.Cleanup(func() {
		cancel()
		g.Stop()
	})
	return lis.Addr().String()
}

// bootstrap is the client's xDS bootstrap: the management server (not
// trusted_xds_server, so the GrpcService's own credentials are not used)
// and extProcTarget in allowed_grpc_services with insecure credentials,
// without which grpc-go rejects the filter (gRFC A102).
func bootstrap(t *testing.T, xdsAddr, extProcTarget string) string {
	t.Helper()
	insecure := []map[string]string{{"type": "insecure"}}
	b, err := json.Marshal(map[string]any{
		"xds_servers": []map[string]any{{
			"server_uri":    "passthrough:///" + xdsAddr,
			"channel_creds": insecure,
		}},
		"node": map[string]any{"id": nodeID},
		"allowed_grpc_services": map[string]any{
			extProcTarget: map[string]any{"channel_creds": insecure},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// ---- the child ----

// child is the client process: the test binary run with childEnv set.
type child struct {
	in      io.WriteCloser
	results chan callResult
	stderr  *testutil.SyncBuffer
}

// startChild runs the client with bootstrap and dials target. The process
// is ended when the test ends: stdin closes (the child exits), and after
// two seconds it is killed.
func startChild(t *testing.T, bootstrapJSON, target string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(),
		childEnv+"=1",
		childTarget+"="+target,
		extProcEnv+"=true",
		bootstrapEnv+"="+bootstrapJSON,
	)
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	c := &child{in: in, results: make(chan callResult), stderr: &testutil.SyncBuffer{}}
	cmd.Stderr = c.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() {
		defer close(c.results)
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
		for sc.Scan() {
			var r callResult
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
				r = callResult{Error: fmt.Sprintf("child printed %q: %v", sc.Text(), err)}
			}
			c.results <- r
		}
	}()
	go func() {
		cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		in.Close()
		select {
		case <-exited:
		case <-time.After(2 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("client stderr:\n%s", c.stderr.String())
		}
	})
	return c
}

// call has the child make one RPC and returns what it saw.
func (c *child) call(t *testing.T, spec callSpec) callResult {
	t.Helper()
	r := c.calls(t, spec)[0]
	t.Logf("call %s (%s): %s %q in %d ms; header %v; trailer %v", r.ID, spec.Kind, r.Code, r.Message, r.Millis, r.Header, r.Trailer)
	return r
}

// calls has the child make the RPCs at once, each on its own goroutine,
// and returns what it saw of each, in the order of specs. IDs must differ.
func (c *child) calls(t *testing.T, specs ...callSpec) []callResult {
	t.Helper()
	index := map[string]int{}
	var lines []byte
	for i, spec := range specs {
		if _, dup := index[spec.ID]; dup {
			t.Fatalf("two calls with ID %q", spec.ID)
		}
		index[spec.ID] = i
		line, err := json.Marshal(spec)
		if err != nil {
			t.Fatal(err)
		}
		lines = append(append(lines, line...), '\n')
	}
	if _, err := c.in.Write(lines); err != nil {
		t.Fatalf("writing to the client: %v\nclient stderr:\n%s", err, c.stderr.String())
	}
	out := make([]callResult, len(specs))
	deadline := time.After(childDeadline + 5*time.Second) // the child's deadlines end every call before
	for range specs {
		select {
		case r, ok := <-c.results:
			if !ok {
				t.Fatalf("the client exited\nclient stderr:\n%s", c.stderr.String())
			}
			if r.Error != "" {
				t.Fatalf("call %s: the client could not make it: %s", r.ID, r.Error)
			}
			i, known := index[r.ID]
			if !known {
				t.Fatalf("the client answered for call %q, not asked for", r.ID)
			}
			out[i] = r
		case <-deadline:
			t.Fatalf("calls %v: not all answered by the client\nclient stderr:\n%s", index, c.stderr.String())
		}
	}
	return out
}

// ---- a test's setup ----

// env is one test's world: backend, wasm-callout with one plugin, the xDS
// server describing both, and the client.
type env struct {
	backend *backend
	srv     *server.Server
	client  *child
}

// setup starts a test's world with p and the filter config edit makes to
// the default one (extProcFilter with pm); edit may be nil.
func setup(t *testing.T, p *host.Plugin, pm *extprocfilterv3.ProcessingMode, edit func(*extprocfilterv3.ExternalProcessor)) *env {
	t.Helper()
	b := startBackend(t)
	srv, extProcAddr := startExtProc(t, p)
	f := extProcFilter(extProcAddr, pm)
	if edit != nil {
		edit(f)
	}
	xdsAddr := startXDS(t, resources(t, f, b.addr))
	c := startChild(t, bootstrap(t, xdsAddr, extProcAddr), "xds:///"+listenerName)
	return &env{backend: b, srv: srv, client: c}
}

// waitIdle waits until the wasm-callout server has no stream open, and
// fails the test if that takes more than five seconds.
func (e *env) waitIdle(t *testing.T) server.Stats {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		st := e.srv.Stats()
		if st.StreamsActive == 0 {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("wasm-callout still has %d ext_proc stream(s) open 5 s after the calls ended", st.StreamsActive)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ---- assertions ----

func header(md map[string][]string, key string) []string { return md[strings.ToLower(key)] }

func wantValues(t *testing.T, what string, md map[string][]string, key string, want ...string) {
	t.Helper()
	got := header(md, key)
	if len(want) == 0 {
		if got != nil {
			t.Errorf("%s %s = %q, want absent", what, key, got)
		}
		return
	}
	if strings.Join(got, "\x00") != strings.Join(want, "\x00") || len(got) != len(want) {
		t.Errorf("%s %s = %q, want %q", what, key, got, want)
	}
}

func wantCode(t *testing.T, r callResult, code codes.Code, msg string) {
	t.Helper()
	if r.Code != code.String() || r.Message != msg {
		t.Errorf("call %s ended with %s %q, want %s %q", r.ID, r.Code, r.Message, code, msg)
	}
	if code == codes.OK && (r.SendErr != "" || r.HeaderErr != "") {
		t.Errorf("call %s ended OK but a send or Header() failed: %q %q", r.ID, r.SendErr, r.HeaderErr)
	}
}

func wantDigests(t *testing.T, what string, got, want []digest) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: %d messages %v, want %d %v", what, len(got), got, len(want), want)
		return
	}
	for i := range got {
		if got[i] != want[i] {
			t.Errorf("%s: message %d is %v, want %v", what, i, got[i], want[i])
		}
	}
}

// sent is the digests of the messages spec sends.
func sent(spec callSpec) []digest {
	var d []digest
	for i, n := range spec.Sizes {
		d = append(d, digestOf(payload(spec.ID, i, n, spec.Text)))
	}
	return d
}
