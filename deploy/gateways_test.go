package deploy

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/compute/apiv1/computepb"
	"cloud.google.com/go/networkservices/apiv1/networkservicespb"
	egv1a1 "github.com/envoyproxy/gateway/api/v1alpha1"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
)

// The Envoy Gateway configurations of docs/configs/envoy-gateway.
var envoyGatewayFiles = []string{
	"docs/configs/envoy-gateway/envoy-extension-policy.yaml",
	"docs/configs/envoy-gateway/backend.yaml",
}

// egAttribute is the pattern Envoy Gateway's CRD puts on extProc attributes
// (ProcessingModeOptions.Attributes); the Go type does not enforce it.
var egAttribute = regexp.MustCompile(`^(connection\.|source\.|destination\.|request\.|response\.|upstream\.|xds\.route_)[a-z_1-9]*$`)

// TestEnvoyGateway decodes the Envoy Gateway objects strictly into
// github.com/envoyproxy/gateway/api/v1alpha1 and checks what the Go types
// leave to the CRD's OpenAPI schema (enums, patterns) for the fields used,
// and that the extProc settings match deploy/kubernetes.
func TestEnvoyGateway(t *testing.T) {
	mt := deploymentMessageTimeout(t)
	_, kobjs := kubernetesObjects(t)
	svc := only[*corev1.Service](t, kobjs)
	bodyModes := []egv1a1.ExtProcBodyProcessingMode{egv1a1.StreamedExtProcBodyProcessingMode, egv1a1.BufferedExtProcBodyProcessingMode,
		egv1a1.BufferedPartialExtBodyHeaderProcessingMode, egv1a1.FullDuplexStreamedExtBodyProcessingMode}
	backends := map[string]bool{}
	for _, file := range envoyGatewayFiles {
		objs, err := decodeObjects(readFile(t, file))
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		for _, o := range objs {
			if b, ok := o.(*egv1a1.Backend); ok {
				backends[b.Name] = true
			}
		}
		for _, o := range objs {
			p, ok := o.(*egv1a1.EnvoyExtensionPolicy)
			if !ok {
				continue
			}
			if len(p.Spec.TargetRefs) == 0 || len(p.Spec.ExtProc) != 1 {
				t.Fatalf("%s: %s: want targetRefs and one extProc", file, p.Name)
			}
			ep := p.Spec.ExtProc[0]
			if ep.MessageTimeout == nil {
				t.Errorf("%s: no messageTimeout (Envoy Gateway's default is 200ms)", file)
			} else if d, err := time.ParseDuration(string(*ep.MessageTimeout)); err != nil || d != mt {
				t.Errorf("%s: messageTimeout %s, want %v (wasm-callout's --message-timeout)", file, *ep.MessageTimeout, mt)
			}
			if ep.ProcessingMode == nil || !ep.ProcessingMode.AllowModeOverride {
				t.Errorf("%s: allowModeOverride is off: wasm-callout's --mode-override would be ignored", file)
			}
			for _, o := range []*egv1a1.ProcessingModeOptions{ep.ProcessingMode.Request, ep.ProcessingMode.Response} {
				if o == nil {
					continue
				}
				if o.Body != nil && !slices.Contains(bodyModes, *o.Body) {
					t.Errorf("%s: body %q, want one of %q", file, *o.Body, bodyModes)
				}
				for _, a := range o.Attributes {
					if !egAttribute.MatchString(a) {
						t.Errorf("%s: attribute %q does not match the CRD's pattern %s", file, a, egAttribute)
					}
				}
			}
			for _, ref := range ep.BackendRefs {
				kind := ""
				if ref.Kind != nil {
					kind = string(*ref.Kind)
				}
				switch kind {
				case "Service":
					var port *corev1.ServicePort
					for i := range svc.Spec.Ports {
						if ref.Port != nil && svc.Spec.Ports[i].Port == int32(*ref.Port) {
							port = &svc.Spec.Ports[i]
						}
					}
					if string(ref.Name) != svc.Name || port == nil || port.AppProtocol == nil || *port.AppProtocol != "kubernetes.io/h2c" {
						t.Errorf("%s: backendRef %s:%v is not the h2c port of deploy/kubernetes' Service %s", file, ref.Name, ref.Port, svc.Name)
					}
				case "Backend":
					if !backends[string(ref.Name)] {
						t.Errorf("%s: backendRef Backend %s is not defined alongside", file, ref.Name)
					}
				default:
					t.Errorf("%s: backendRef kind %q: Envoy Gateway takes Service, ServiceImport or Backend", file, kind)
				}
			}
		}
	}
}

// gcpFiles are the GCP resources of docs/configs/gcp and their published
// protos (the JSON names of the REST API, which gcloud's import YAML uses).
var gcpFiles = []struct {
	file string
	msg  func() proto.Message
}{
	{"docs/configs/gcp/health-check.json", func() proto.Message { return &computepb.HealthCheck{} }},
	{"docs/configs/gcp/backend-service.yaml", func() proto.Message { return &computepb.BackendService{} }},
	{"docs/configs/gcp/lb-traffic-extension.yaml", func() proto.Message { return &networkservicespb.LbTrafficExtension{} }},
	{"docs/configs/gcp/lb-route-extension.yaml", func() proto.Message { return &networkservicespb.LbRouteExtension{} }},
}

// decodeGCP decodes a GCP resource strictly with protojson (unknown fields
// fail; enums of networkservices must be known names). protojson also
// accepts the snake_case proto names, but gcloud's import YAML (like its
// export) uses the REST API's camelCase JSON names, so those fail too.
func decodeGCP(b []byte, m proto.Message) error {
	if err := protoYAML(b, m); err != nil {
		return err
	}
	if f := regexp.MustCompile(`(?m)^\s*-?\s*"?([a-z]+_[a-z_]+)"?:`).FindSubmatch(b); f != nil {
		return fmt.Errorf("field %s: use the camelCase JSON name", f[1])
	}
	return nil
}

// TestGCPServiceExtensions decodes the Service Extensions resources into
// Google Cloud's networkservices and compute protos and checks that they
// reference each other, that the compute enums (strings in the compute
// API) are valid names, and that they match the binary and deploy/kubernetes.
func TestGCPServiceExtensions(t *testing.T) {
	mt := deploymentMessageTimeout(t)
	msgs := map[string]proto.Message{}
	for _, f := range gcpFiles {
		m := f.msg()
		if err := decodeGCP(readFile(t, f.file), m); err != nil {
			t.Fatalf("%s: %v", f.file, err)
		}
		msgs[f.file] = m
	}
	hc := msgs[gcpFiles[0].file].(*computepb.HealthCheck)
	bs := msgs[gcpFiles[1].file].(*computepb.BackendService)
	enum := func(what, v string, names map[string]int32) {
		if _, ok := names[v]; !ok || v == "" {
			t.Errorf("%s %q is not a value of the compute API", what, v)
		}
	}
	enum("healthCheck.type", hc.GetType(), computepb.HealthCheck_Type_value)
	enum("httpHealthCheck.portSpecification", hc.GetHttpHealthCheck().GetPortSpecification(), computepb.HTTPHealthCheck_PortSpecification_value)
	enum("backendService.protocol", bs.GetProtocol(), computepb.BackendService_Protocol_value)
	enum("backendService.loadBalancingScheme", bs.GetLoadBalancingScheme(), computepb.BackendService_LoadBalancingScheme_value)
	for _, b := range bs.GetBackends() {
		enum("backends[].balancingMode", b.GetBalancingMode(), computepb.Backend_BalancingMode_value)
	}
	if bs.GetProtocol() != "HTTP2" {
		t.Errorf("backend service protocol %s: Service Extensions callouts use HTTP2", bs.GetProtocol())
	}
	if hc.GetType() != "HTTP" || hc.GetHttpHealthCheck().GetRequestPath() != "/readyz" {
		t.Errorf("health check: want HTTP GET /readyz")
	}
	bin := wasmCalloutBinary(t)
	if got, want := fmt.Sprint(hc.GetHttpHealthCheck().GetPort()), defaultPorts(t, bin)[0]; got != want {
		t.Errorf("health check port %s, want the binary's --health-addr port %s", got, want)
	}
	if hcs := bs.GetHealthChecks(); len(hcs) != 1 || !strings.HasSuffix(hcs[0], "/healthChecks/"+hc.GetName()) {
		t.Errorf("backend service health checks %q do not name %s", hcs, hc.GetName())
	}

	type chain interface {
		GetExtensionChains() []*networkservicespb.ExtensionChain
		GetLoadBalancingScheme() networkservicespb.LoadBalancingScheme
	}
	for _, f := range gcpFiles[2:] {
		ext := msgs[f.file].(chain)
		if ext.GetLoadBalancingScheme().String() != bs.GetLoadBalancingScheme() {
			t.Errorf("%s: loadBalancingScheme %v, backend service %s", f.file, ext.GetLoadBalancingScheme(), bs.GetLoadBalancingScheme())
		}
		for _, c := range ext.GetExtensionChains() {
			for _, e := range c.GetExtensions() {
				if !strings.HasSuffix(e.GetService(), "/backendServices/"+bs.GetName()) {
					t.Errorf("%s: extension %s calls %s, not the backend service %s", f.file, e.GetName(), e.GetService(), bs.GetName())
				}
				if e.GetAuthority() == "" {
					t.Errorf("%s: extension %s: authority is required for callouts", f.file, e.GetName())
				}
				if d := e.GetTimeout().AsDuration(); d != mt {
					t.Errorf("%s: timeout %v, want %v (wasm-callout's --message-timeout)", f.file, d, mt)
				}
			}
		}
	}
}
