package deploy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	networking "istio.io/api/networking/v1alpha3"
	istionet "istio.io/client-go/pkg/apis/networking/v1alpha3"
	"sigs.k8s.io/yaml"

	// The typed_config types the shipped configurations use; protojson
	// resolves Any values through the global registry.
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/ext_proc/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
)

// envoyBootstraps are the whole Envoy bootstraps shipped in docs: files, and
// the ```yaml blocks of Markdown guides that hold one.
var envoyBootstraps = []struct {
	file  string
	fence int // index of the yaml block in a .md file; -1 for a .yaml file
}{
	{"docs/configs/envoy/envoy-http.yaml", -1},
	{"docs/network.md", 0},
}

func bootstrapDoc(t *testing.T, file string, fence int) []byte {
	t.Helper()
	b := readFile(t, file)
	if fence < 0 {
		return b
	}
	f := yamlFences(b)
	if fence >= len(f) {
		t.Fatalf("%s: no yaml block %d", file, fence)
	}
	return f[fence]
}

// decodeBootstrap decodes an Envoy bootstrap strictly (see protoYAML).
func decodeBootstrap(doc []byte) (*bootstrapv3.Bootstrap, error) {
	bs := &bootstrapv3.Bootstrap{}
	return bs, protoYAML(doc, bs)
}

// extProcFilters returns the ext_proc HTTP filters of a bootstrap's static
// listeners.
func extProcFilters(t *testing.T, bs *bootstrapv3.Bootstrap) []*extprocv3.ExternalProcessor {
	t.Helper()
	var out []*extprocv3.ExternalProcessor
	for _, l := range bs.GetStaticResources().GetListeners() {
		for _, fc := range l.GetFilterChains() {
			for _, f := range fc.GetFilters() {
				hcm := &hcmv3.HttpConnectionManager{}
				if f.GetTypedConfig().MessageIs(hcm) {
					if err := f.GetTypedConfig().UnmarshalTo(hcm); err != nil {
						t.Fatal(err)
					}
					for _, hf := range hcm.GetHttpFilters() {
						ep := &extprocv3.ExternalProcessor{}
						if hf.GetTypedConfig().MessageIs(ep) {
							if err := hf.GetTypedConfig().UnmarshalTo(ep); err != nil {
								t.Fatal(err)
							}
							out = append(out, ep)
						}
					}
				}
			}
		}
	}
	return out
}

// checkExtProc checks the settings of an ext_proc filter that must agree
// with wasm-callout's flags in deploy/kubernetes.
func checkExtProc(t *testing.T, where string, ep *extprocv3.ExternalProcessor, messageTimeout time.Duration) {
	t.Helper()
	if got := ep.GetMessageTimeout().AsDuration(); got != messageTimeout {
		t.Errorf("%s: message_timeout %v, want %v (wasm-callout's --message-timeout)", where, got, messageTimeout)
	}
	if !ep.GetAllowModeOverride() {
		t.Errorf("%s: allow_mode_override is off: wasm-callout's --mode-override would be ignored", where)
	}
	if ns := ep.GetMetadataOptions().GetReceivingNamespaces().GetUntyped(); len(ns) != 1 || ns[0] != "envoy.filters.http.wasm" {
		t.Errorf("%s: receiving_namespaces %q, want [envoy.filters.http.wasm] (--metadata-namespace)", where, ns)
	}
}

// TestEnvoyBootstraps decodes every shipped Envoy bootstrap into
// go-control-plane's Bootstrap with protojson (unknown fields and Any types
// fail), validates it and every typed_config inside it, and checks that the
// HTTP one's ext_proc filter matches the flags of deploy/kubernetes.
func TestEnvoyBootstraps(t *testing.T) {
	mt := deploymentMessageTimeout(t)
	for _, c := range envoyBootstraps {
		t.Run(fmt.Sprintf("%s#%d", c.file, c.fence), func(t *testing.T) {
			bs, err := decodeBootstrap(bootstrapDoc(t, c.file, c.fence))
			if err != nil {
				t.Fatal(err)
			}
			if len(bs.GetStaticResources().GetListeners()) == 0 || len(bs.GetStaticResources().GetClusters()) == 0 {
				t.Fatal("not a whole bootstrap: no static listeners or clusters")
			}
			for _, ep := range extProcFilters(t, bs) {
				checkExtProc(t, c.file, ep, mt)
			}
		})
	}
	bs, _ := decodeBootstrap(bootstrapDoc(t, envoyBootstraps[0].file, -1))
	if n := len(extProcFilters(t, bs)); n != 1 {
		t.Errorf("%s: %d ext_proc HTTP filters, want 1", envoyBootstraps[0].file, n)
	}
}

// checkEnvoyFilter re-decodes an EnvoyFilter's spec strictly: Istio's
// generated JSON decoding of the spec (used by its client-go type) allows
// unknown fields, so protojson decodes it again into istio.io/api's
// message, and every patch value that is an HTTP filter is decoded into
// Envoy's HttpFilter and validated with its typed_config.
func checkEnvoyFilter(doc []byte, _ *istionet.EnvoyFilter) error {
	var obj struct {
		Spec any `json:"spec"`
	}
	if err := yaml.Unmarshal(doc, &obj); err != nil {
		return err
	}
	specJSON, err := yaml.Marshal(obj.Spec)
	if err != nil {
		return err
	}
	spec := &networking.EnvoyFilter{}
	if err := protoYAML(specJSON, spec); err != nil {
		return fmt.Errorf("spec: %w", err)
	}
	for i, p := range spec.GetConfigPatches() {
		if p.GetApplyTo() != networking.EnvoyFilter_HTTP_FILTER {
			continue
		}
		value, err := protojson.Marshal(p.GetPatch().GetValue())
		if err != nil {
			return err
		}
		hf := &hcmv3.HttpFilter{}
		if err := protoYAML(value, hf); err != nil {
			return fmt.Errorf("configPatches[%d].patch.value as an Envoy HttpFilter: %w", i, err)
		}
	}
	return nil
}

// TestIstioEnvoyFilter checks the EnvoyFilter's patch against the flags of
// deploy/kubernetes (decodeObjects has validated it).
func TestIstioEnvoyFilter(t *testing.T) {
	const file = "docs/configs/istio/envoyfilter.yaml"
	objs, err := decodeObjects(readFile(t, file))
	if err != nil {
		t.Fatal(err)
	}
	ef := only[*istionet.EnvoyFilter](t, objs)
	n := 0
	for _, p := range ef.Spec.GetConfigPatches() {
		value, err := protojson.Marshal(p.GetPatch().GetValue())
		if err != nil {
			t.Fatal(err)
		}
		hf := &hcmv3.HttpFilter{}
		if err := protojson.Unmarshal(value, hf); err != nil {
			t.Fatal(err)
		}
		ep := &extprocv3.ExternalProcessor{}
		if hf.GetTypedConfig().MessageIs(ep) {
			if err := hf.GetTypedConfig().UnmarshalTo(ep); err != nil {
				t.Fatal(err)
			}
			checkExtProc(t, file, ep, deploymentMessageTimeout(t))
			if got, want := ep.GetGrpcService().GetEnvoyGrpc().GetClusterName(), "outbound|8080||wasm-callout.wasm-callout.svc.cluster.local"; got != want {
				t.Errorf("cluster %q, want Istio's cluster for the Service's grpc port %q", got, want)
			}
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d ext_proc patches, want 1", n)
	}
}

// fragmentParents are the Envoy messages whose repeated fields the README's
// configuration fragments list at their top level (http_filters,
// clusters, filter_chains).
var fragmentParents = []func() proto.Message{
	func() proto.Message { return &hcmv3.HttpConnectionManager{} },
	func() proto.Message { return &bootstrapv3.Bootstrap_StaticResources{} },
	func() proto.Message { return &listenerv3.Listener{} },
}

// decodeFragment decodes a configuration fragment: each top-level key must
// be a repeated message field of one of fragmentParents; its elements are
// decoded strictly with protojson and validated like a whole bootstrap
// (the parent itself is not: a fragment lacks its required fields).
func decodeFragment(doc []byte) error {
	var top map[string]any
	if err := yaml.UnmarshalStrict(doc, &top); err != nil {
		return err
	}
	if len(top) == 0 {
		return errors.New("empty fragment")
	}
	for key, v := range top {
		var parent proto.Message
		var fd protoreflect.FieldDescriptor
		for _, newParent := range fragmentParents {
			p := newParent()
			if f := p.ProtoReflect().Descriptor().Fields().ByName(protoreflect.Name(key)); f != nil && f.IsList() && f.Message() != nil {
				parent, fd = p, f
				break
			}
		}
		if parent == nil {
			return fmt.Errorf("%s: not a list of Envoy messages this test knows", key)
		}
		j, err := json.Marshal(map[string]any{key: v})
		if err != nil {
			return err
		}
		if err := protojson.Unmarshal(j, parent); err != nil {
			return fmt.Errorf("%s: %w", key, err)
		}
		list := parent.ProtoReflect().Get(fd).List()
		for i := range list.Len() {
			if err := validateProto(list.Get(i).Message().Interface()); err != nil {
				return fmt.Errorf("%s[%d]: %w", key, i, err)
			}
		}
	}
	return nil
}

// TestReadmeEnvoyFragments decodes the Envoy configuration fragments of
// README.md with decodeFragment: every yaml block that names an Envoy type
// (type.googleapis.com/envoy.), so that a block of another tool's
// configuration is left alone.
func TestReadmeEnvoyFragments(t *testing.T) {
	n := 0
	for i, f := range yamlFences(readFile(t, "README.md")) {
		if !bytes.Contains(f, []byte("type.googleapis.com/envoy.")) {
			continue
		}
		n++
		if err := decodeFragment(f); err != nil {
			t.Errorf("README.md yaml block %d: %v", i, err)
		}
	}
	if n == 0 {
		t.Fatal("README.md has no Envoy configuration block")
	}
}
