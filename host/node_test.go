package host

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/wasm-callout/wasm-callout/abi"
)

// istioNode is a node as Istio's agent writes it into the sidecar's
// bootstrap, trimmed.
const istioNode = `
id: sidecar~10.0.0.7~productpage-v1-6b746f74dc-9stvs.default~default.svc.cluster.local
cluster: productpage.default
locality:
  region: us-east1
  zone: us-east1-b
user_agent_build_version:
  version: {major_number: 1, minor_number: 30}
client_features: [envoy.lb.does_not_support_overprovisioning, "envoy.lrs.supports_send_all_clusters"]
listening_addresses:
- socket_address: {address: 10.0.0.7, port_value: 9080, protocol: UDP}
extensions:
- {name: envoy.filters.http.wasm, category: envoy.filters.http, disabled: true}
metadata:
  NAME: productpage-v1-6b746f74dc-9stvs
  NAMESPACE: default
  WORKLOAD_NAME: productpage-v1
  MESH_ID: cluster.local
  CLUSTER_ID: Kubernetes
  ISTIO_VERSION: "1.30.0"
  LABELS:
    app: productpage
    service.istio.io/canonical-name: productpage
  APP_CONTAINERS: productpage
  INSTANCE_IPS: 10.0.0.7,fe80::1
  PORTS: [9080, 15090]
  PROXY_CONFIG: {concurrency: 2, holdApplicationUntilProxyStarts: true}
  UNSET: null
`

func mustNode(t *testing.T, src string) *corev3.Node {
	t.Helper()
	n, err := ParseNode([]byte(src))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func mustMetadata(t *testing.T, src string) *corev3.Metadata {
	t.Helper()
	md, err := ParseMetadata([]byte(src))
	if err != nil {
		t.Fatal(err)
	}
	return md
}

func marshal(t *testing.T, m proto.Message) []byte {
	t.Helper()
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestLocalInfoEncodings checks every kind of value below node,
// listener_metadata and cluster_metadata against what Envoy's getProperty
// gives (source/extensions/common/wasm/context.cc, RATIONALE.md "Node and
// listener properties in every context"): messages serialized, Struct and
// map fields as pairs, repeated fields as lists, strings raw, integers and
// enums 8 bytes, Struct numbers doubles.
func TestLocalInfoEncodings(t *testing.T) {
	node := mustNode(t, istioNode)
	inbound := corev3.TrafficDirection_INBOUND
	local := &LocalInfo{
		Node:              node,
		ListenerDirection: &inbound,
		ListenerMetadata:  mustMetadata(t, `filter_metadata: {envoy.filters.http.wasm: {tag: blue, n: 2}, istio: {}}`),
		ClusterName:       "outbound|9080||reviews.default.svc.cluster.local",
		ClusterMetadata:   mustMetadata(t, `{"filter_metadata": {"istio": {"workload": "reviews-v1;default;reviews;v1;Kubernetes"}}}`),
	}
	labels := abi.EncodeMap(kv("app", "productpage", "service.istio.io/canonical-name", "productpage"))
	ports := abi.EncodeList([]string{string(abi.EncodeDouble(9080)), string(abi.EncodeDouble(15090))})
	proxyConfig := abi.EncodeMap(kv("concurrency", string(abi.EncodeDouble(2)), "holdApplicationUntilProxyStarts", "\x01"))
	metadata := abi.EncodeMap(kv(
		"APP_CONTAINERS", "productpage",
		"CLUSTER_ID", "Kubernetes",
		"INSTANCE_IPS", "10.0.0.7,fe80::1",
		"ISTIO_VERSION", "1.30.0",
		"LABELS", string(labels),
		"MESH_ID", "cluster.local",
		"NAME", "productpage-v1-6b746f74dc-9stvs",
		"NAMESPACE", "default",
		"PORTS", string(ports),
		"PROXY_CONFIG", string(proxyConfig),
		// UNSET (null) is left out: Envoy could not serialize it.
		"WORKLOAD_NAME", "productpage-v1",
	))
	wasmNS := abi.EncodeMap(kv("n", string(abi.EncodeDouble(2)), "tag", "blue"))
	tests := []struct {
		path     string // dotted; "|" separates segments that contain dots
		inStream bool
		want     []byte // nil: NOT_FOUND
	}{
		{"node", false, marshal(t, node)},
		{"xds|node", false, marshal(t, node)},
		{"node|id", false, []byte(node.Id)},
		{"node|cluster", false, []byte("productpage.default")},
		{"node|metadata", false, metadata},
		{"xds|node|metadata", true, metadata},
		{"node|metadata|NAME", false, []byte("productpage-v1-6b746f74dc-9stvs")},
		{"node|metadata|LABELS", false, labels},
		{"node|metadata|LABELS|service.istio.io/canonical-name", false, []byte("productpage")},
		{"node|metadata|PORTS", false, ports},
		{"node|metadata|PORTS|1", false, abi.EncodeDouble(15090)},
		{"node|metadata|PORTS|2", false, nil},
		{"node|metadata|PROXY_CONFIG|holdApplicationUntilProxyStarts", false, abi.EncodeBool(true)},
		{"node|metadata|UNSET", false, nil},
		{"node|metadata|MISSING", false, nil},
		{"node|metadata|NAME|deeper", false, nil},
		{"node|locality", false, marshal(t, node.Locality)},
		{"node|locality|zone", false, []byte("us-east1-b")},
		{"node|locality|sub_zone", false, []byte{}}, // unset string: there, empty
		{"node|user_agent_name", false, []byte{}},
		{"node|user_agent_version", false, []byte{}}, // the other member of its oneof is set
		{"node|user_agent_build_version|version|minor_number", false, abi.EncodeUint64(30)},
		{"node|client_features", false, abi.EncodeList(node.ClientFeatures)},
		{"node|client_features|1", false, []byte("envoy.lrs.supports_send_all_clusters")},
		{"node|client_features|-1", false, nil},
		{"node|client_features|x", false, nil},
		{"node|extensions", false, abi.EncodeList([]string{string(marshal(t, node.Extensions[0]))})},
		{"node|extensions|0|name", false, []byte("envoy.filters.http.wasm")},
		{"node|extensions|0|disabled", false, abi.EncodeBool(true)},
		{"node|listening_addresses|0|socket_address|port_value", false, abi.EncodeUint64(9080)},
		{"node|listening_addresses|0|socket_address|protocol", false, abi.EncodeInt64(int64(corev3.SocketAddress_UDP))},
		{"node|userAgentName", false, nil}, // fields go by their proto names
		{"node|id|x", false, nil},
		{"node|dynamic_parameters", false, []byte{0, 0, 0, 0}}, // an empty map
		{"listener_direction", false, abi.EncodeInt64(1)},
		{"xds|listener_direction", true, abi.EncodeInt64(1)},
		{"listener_direction|x", false, nil},
		{"listener_metadata", false, marshal(t, local.ListenerMetadata)},
		{"listener_metadata|filter_metadata", false, abi.EncodeMap(kv("envoy.filters.http.wasm", string(wasmNS), "istio", "\x00\x00\x00\x00"))},
		{"listener_metadata|filter_metadata|envoy.filters.http.wasm", false, wasmNS},
		{"listener_metadata|filter_metadata|envoy.filters.http.wasm|tag", false, []byte("blue")},
		{"listener_metadata|filter_metadata|nope", false, nil},
		{"cluster_name", true, []byte(local.ClusterName)},
		{"cluster_metadata|filter_metadata|istio|workload", true, []byte("reviews-v1;default;reviews;v1;Kubernetes")},
		// Envoy knows the upstream cluster only for a request.
		{"cluster_name", false, nil},
		{"xds|cluster_metadata", false, nil},
		{"route_name", true, nil},
		{"xds", false, nil},
	}
	for _, tc := range tests {
		path := strings.Split(tc.path, "|")
		got, ok := local.property(abi.CanonicalPath(path), tc.inStream)
		if tc.want == nil {
			if ok {
				t.Errorf("%s (stream %v) = %q, want NOT_FOUND", tc.path, tc.inStream, got)
			}
			continue
		}
		if !ok || !bytes.Equal(got, tc.want) || got == nil {
			t.Errorf("%s (stream %v) = %q %v, want %q", tc.path, tc.inStream, got, ok, tc.want)
		}
	}

	// What a plugin that parses the whole node (getMessageValue<Node>)
	// gets back, and what one that walks LABELS as pairs reads.
	var back corev3.Node
	b, _ := local.property([]string{"xds", "node"}, false)
	if err := proto.Unmarshal(b, &back); err != nil || !proto.Equal(&back, node) {
		t.Errorf("node does not parse back as the Node: %v", err)
	}
	if pairs, err := abi.DecodePairs(labels); err != nil || len(pairs) != 2 || pairs[0] != (abi.Pair{Key: "app", Value: "productpage"}) {
		t.Errorf("LABELS pairs = %q, %v", pairs, err)
	}

	var none *LocalInfo
	if _, ok := none.property([]string{"xds", "node"}, false); ok {
		t.Error("a nil LocalInfo answers")
	}
	if _, ok := (&LocalInfo{}).property([]string{"xds", "listener_direction"}, false); ok {
		t.Error("listener_direction answered without one")
	}
}

// TestWellKnownTypes checks the unwrapping CEL does before Envoy encodes.
func TestWellKnownTypes(t *testing.T) {
	anyStr, _ := anypb.New(wrapperspb.String("inside"))
	anyLoc, _ := anypb.New(&corev3.Locality{Region: "r"})
	tests := []struct {
		name string
		m    proto.Message
		rest []string
		want []byte
	}{
		{"timestamp", timestamppb.New(timestamppb.Now().AsTime().Truncate(0)), nil, nil}, // filled below
		{"duration", durationpb.New(1500_000_000), nil, abi.EncodeInt64(1_500_000_000)},
		{"int32 wrapper is int64", wrapperspb.Int32(-3), nil, abi.EncodeInt64(-3)},
		{"uint32 wrapper is uint64", wrapperspb.UInt32(3), nil, abi.EncodeUint64(3)},
		{"float wrapper is double", wrapperspb.Float(0.5), nil, abi.EncodeDouble(0.5)},
		{"string wrapper", wrapperspb.String("s"), nil, []byte("s")},
		{"bytes wrapper", wrapperspb.Bytes([]byte{0, 1}), nil, []byte{0, 1}},
		{"any holding a wrapper", anyStr, nil, []byte("inside")},
		{"any holding a message, walked", anyLoc, []string{"region"}, []byte("r")},
		{"value", structpb.NewStringValue("v"), nil, []byte("v")},
		{"list value", &structpb.ListValue{Values: []*structpb.Value{structpb.NewBoolValue(false)}}, nil, abi.EncodeList([]string{"\x00"})},
		{"empty struct", &structpb.Struct{}, nil, []byte{0, 0, 0, 0}},
		{"type with a field", &typev3.Percent{Value: 12.5}, []string{"value"}, abi.EncodeDouble(12.5)},
	}
	ts := timestamppb.New(timestamppb.Now().AsTime())
	tests[0].m, tests[0].want = ts, abi.EncodeInt64(ts.AsTime().UnixNano())
	for _, tc := range tests {
		got, ok := messageProperty(tc.m.ProtoReflect(), tc.rest)
		if !ok || !bytes.Equal(got, tc.want) {
			t.Errorf("%s = %q %v, want %q", tc.name, got, ok, tc.want)
		}
	}
	// An unset wrapper field is null for CEL: NOT_FOUND.
	if _, ok := messageProperty((&corev3.RuntimeFeatureFlag{}).ProtoReflect(), []string{"default_value"}); ok {
		t.Error("unset wrapper field answered")
	}
	if got, ok := messageProperty((&corev3.RuntimeFeatureFlag{DefaultValue: wrapperspb.Bool(true)}).ProtoReflect(), []string{"default_value"}); !ok || !bytes.Equal(got, []byte{1}) {
		t.Errorf("set wrapper field = %q %v", got, ok)
	}
}

func TestParseNodeAndMetadata(t *testing.T) {
	good := map[string]string{
		"yaml":       "id: n1\ncluster: c\nmetadata: {NAME: pod}\n",
		"json":       `{"id": "n1", "cluster": "c", "metadata": {"NAME": "pod"}}`,
		"json names": `{"id": "n1", "userAgentName": "envoy"}`,
	}
	for name, src := range good {
		if n, err := ParseNode([]byte(src)); err != nil || n.Id != "n1" {
			t.Errorf("%s: %v %v", name, n, err)
		}
	}
	bad := map[string]struct{ src, want string }{
		"unknown field":      {"id: n1\nmetdata: {NAME: pod}\n", `unknown field "metdata"`},
		"whole bootstrap":    {"node: {id: n1}\nstatic_resources: {}\n", "give its node: section"},
		"wrong type":         {"id: [1, 2]\n", "envoy.config.core.v3.Node"},
		"not yaml":           {"id: n1\n  - x: [\n", "not YAML or JSON"},
		"empty":              {"", "empty"},
		"validation refuses": {"id: n1\nlistening_addresses: [{socket_address: {address: 1.2.3.4, port_value: 70000}}]\n", "PortValue"},
	}
	for name, tc := range bad {
		_, err := ParseNode([]byte(tc.src))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want it to mention %q", name, err, tc.want)
		}
	}
	// YAML scalars get the types Envoy's YAML loader gives them; JSON
	// keeps its own.
	n, err := ParseNode([]byte("metadata: {Q: '7', B: yes, off: Off, I: 7, BIG: 3000000000, HEX: 0x10, F: 0.5, V: 1.30, N: ~, S: plain, L: [1, two]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	want, _ := structpb.NewStruct(map[string]any{"Q": "7", "B": true, "off": false, "I": 7, "BIG": "3000000000", "HEX": 16,
		"F": "0.5", "V": "1.30", "N": nil, "S": "plain", "L": []any{1, "two"}})
	if !proto.Equal(n.Metadata, want) {
		t.Errorf("YAML metadata = %v, want %v", n.Metadata, want)
	}
	if n, err := ParseNode([]byte(`{"metadata": {"F": 0.5, "B": "yes"}}`)); err != nil || n.Metadata.Fields["F"].GetNumberValue() != 0.5 || n.Metadata.Fields["B"].GetStringValue() != "yes" {
		t.Errorf("JSON metadata = %v, %v", n, err)
	}
	if n, err := ParseNode([]byte("locality: {region: r}\nlistening_addresses: [{socket_address: {address: 1.2.3.4, port_value: 80}}]\n")); err != nil || n.ListeningAddresses[0].GetSocketAddress().GetPortValue() != 80 {
		t.Errorf("typed fields from YAML: %v, %v", n, err)
	}
	if _, err := ParseMetadata([]byte("filter_metadata: {ns: {k: v}}\n")); err != nil {
		t.Error(err)
	}
	if _, err := ParseMetadata([]byte("ns: {k: v}\n")); err == nil || !strings.Contains(err.Error(), "envoy.config.core.v3.Metadata") {
		t.Errorf("metadata without filter_metadata: %v", err)
	}
	for in, want := range map[string]corev3.TrafficDirection{"inbound": 1, "OUTBOUND": 2, "unspecified": 0} {
		if got, err := ParseTrafficDirection(in); err != nil || got != want {
			t.Errorf("ParseTrafficDirection(%q) = %v, %v", in, got, err)
		}
	}
	if _, err := ParseTrafficDirection("sideways"); err == nil {
		t.Error("sideways accepted")
	}
}

// TestGetPropertyLocal drives proxy_get_property with Config.Local: the
// node and the listener answer in the root context (vm start, configure,
// ticks), the cluster only in a stream, and what a stream's Envoy sent
// comes first.
func TestGetPropertyLocal(t *testing.T) {
	outbound := corev3.TrafficDirection_OUTBOUND
	local := &LocalInfo{
		Node:              mustNode(t, "id: n1\nmetadata: {NAME: pod, LABELS: {app: a}}\n"),
		ListenerDirection: &outbound,
		ClusterName:       "static-cluster",
	}
	h := newHostcall(t, "proxy_get_property", Config{Name: "p", Local: local})
	s, err := h.p.NewHTTPStream(props{"xds.node.id": []byte("from-envoy")})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	tests := []struct {
		name string
		s    *HTTPStream
		path []string
		want []byte // nil: NOT_FOUND
	}{
		{"node.id in the root context", nil, []string{"node", "id"}, []byte("n1")},
		{"node.metadata.NAME in the root context", nil, []string{"node", "metadata", "NAME"}, []byte("pod")},
		{"xds.node.metadata.LABELS", nil, []string{"xds", "node", "metadata", "LABELS"}, abi.EncodeMap(kv("app", "a"))},
		{"listener_direction in the root context", nil, []string{"listener_direction"}, abi.EncodeInt64(2)},
		{"cluster_name not in the root context", nil, []string{"cluster_name"}, nil},
		{"plugin_name still first", nil, []string{"plugin_name"}, []byte("p")},
		{"what Envoy sent wins in a stream", s, []string{"node", "id"}, []byte("from-envoy")},
		{"the node answers the rest in a stream", s, []string{"node", "metadata", "NAME"}, []byte("pod")},
		{"cluster_name in a stream", s, []string{"xds", "cluster_name"}, []byte("static-cluster")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, n := h.put(argA, abi.JoinPath(tc.path...))
			st := h.run(tc.s, phaseRequestHeaders, p, n, retP, retL)
			if tc.want == nil {
				if st != abi.StatusNotFound {
					t.Fatalf("status = %v, want NOT_FOUND", st)
				}
				return
			}
			if got := h.out(retP, retL); st != abi.StatusOK || !bytes.Equal(got, tc.want) {
				t.Fatalf("%v %q, want %q", st, got, tc.want)
			}
		})
	}
}

// TestNodeInConfigure loads a plugin that, like Istio's stats plugin,
// refuses its configuration without the bootstrap node.
func TestNodeInConfigure(t *testing.T) {
	wasm := mustRead(t, "testdata/node_configure.wasm")
	_, err := Load(context.Background(), wasm, Config{Logger: quietLogger(), Instances: 1, Shared: NewSharedState()})
	if err == nil || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("without a node: %v, want the plugin to refuse", err)
	}
	rec := &recorder{level: slog.LevelInfo}
	cfg := Config{Logger: slog.New(rec), Instances: 1, Shared: NewSharedState(),
		Local: &LocalInfo{Node: mustNode(t, istioNode)}}
	p, err := Load(context.Background(), wasm, cfg)
	if err != nil {
		t.Fatalf("with a node: %v", err)
	}
	defer p.Close(context.Background())
	found := false
	for _, m := range rec.messages() {
		found = found || strings.HasSuffix(m, "productpage-v1-6b746f74dc-9stvs")
	}
	if !found {
		t.Errorf("node.metadata.NAME not logged: %q", rec.messages())
	}
}
