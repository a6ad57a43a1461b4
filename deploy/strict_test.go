package deploy

import (
	"bytes"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	"google.golang.org/protobuf/proto"
	appsv1 "k8s.io/api/apps/v1"
)

// TestValidatorsAreStrict proves that each decoder the manifest tests use
// rejects what its consumer would: it corrupts one thing in a shipped file
// (a misspelt field at the top, deep inside, or inside a typed_config; an
// invalid value; an unknown type or enum) and expects the decoder to fail.
func TestValidatorsAreStrict(t *testing.T) {
	kube := func(b []byte) error { _, err := decodeObjects(b); return err }
	kust := func(b []byte) error { return strictYAML(b, &kustomization{}) }
	_, kobjs := kubernetesObjects(t)
	base := only[*appsv1.Deployment](t, kobjs)
	overlay := func(b []byte) error { _, err := overlayDeployment(b, base); return err }
	envoy := func(b []byte) error { return protoYAML(b, &bootstrapv3.Bootstrap{}) }
	gcp := func(m func() proto.Message) func([]byte) error {
		return func(b []byte) error { return decodeGCP(b, m()) }
	}
	fence := func(file string, i int) func(*testing.T) []byte {
		return func(t *testing.T) []byte { return bootstrapDoc(t, file, i) }
	}
	for _, c := range []struct {
		name     string
		file     string
		read     func(*testing.T) []byte // instead of the file, if set
		decode   func([]byte) error
		old, new string
	}{
		{"Deployment container field", "deploy/kubernetes/deployment.yaml", nil, kube, "readinessProbe:", "readinessProbes:"},
		{"Deployment securityContext field", "deploy/kubernetes/deployment.yaml", nil, kube, "readOnlyRootFilesystem:", "readOnlyRootFileSystem:"},
		{"Deployment duplicate key", "deploy/kubernetes/deployment.yaml", nil, kube, "          periodSeconds: 1\n", "          periodSeconds: 1\n          periodSeconds: 2\n"},
		{"Service port field", "deploy/kubernetes/service.yaml", nil, kube, "appProtocol:", "appProtocols:"},
		{"ConfigMap field", "deploy/kubernetes/configmap.yaml", nil, kube, "data:", "datas:"},
		{"PodDisruptionBudget field", "deploy/kubernetes/poddisruptionbudget.yaml", nil, kube, "minAvailable:", "minAvailble:"},
		{"HorizontalPodAutoscaler field", "deploy/kubernetes/horizontalpodautoscaler.yaml", nil, kube, "averageUtilization:", "averageUtilisation:"},
		{"HorizontalPodAutoscaler apiVersion", "deploy/kubernetes/horizontalpodautoscaler.yaml", nil, kube, "autoscaling/v2", "autoscaling/v3"},
		{"Kustomization field", "deploy/kubernetes/kustomization.yaml", nil, kust, "resources:", "resource:"},
		{"TLS overlay patch value field", "deploy/kubernetes/tls/kustomization.yaml", nil, overlay, "mountPath:", "mountPth:"},
		{"TLS overlay patch path", "deploy/kubernetes/tls/kustomization.yaml", nil, overlay, "/volumeMounts/-", "/volumeMount/-"},
		{"Envoy bootstrap field", "docs/configs/envoy/envoy-http.yaml", nil, envoy, "connect_timeout:", "connect_timout:"},
		{"Envoy field inside typed_config", "docs/configs/envoy/envoy-http.yaml", nil, envoy, "allow_mode_override:", "allow_mode_overide:"},
		{"Envoy typed_config type", "docs/configs/envoy/envoy-http.yaml", nil, envoy, "v3.ExternalProcessor", "v3.ExternalProcesor"},
		{"Envoy ValidateAll rule", "docs/configs/envoy/envoy-http.yaml", nil, envoy, "port_value: 8080", "port_value: 80800"},
		{"Envoy ValidateAll rule inside typed_config", "docs/configs/envoy/envoy-http.yaml", nil, envoy, "cluster_name: wasm_callout }", "cluster_name: \"\" }"},
		{"Envoy L4 bootstrap in docs/network.md", "docs/network.md", fence("docs/network.md", 0), envoy, "process_read:", "proces_read:"},
		{"README fragment field", "README.md", fence("README.md", 0), decodeFragment, "allow_mode_override:", "allow_mode_overide:"},
		{"README fragment rule", "README.md", fence("README.md", 0), decodeFragment, "port_value: 8080", "port_value: 80800"},
		{"README fragment key", "README.md", fence("README.md", 1), decodeFragment, "filter_chains:", "filter_chain:"},
		{"EnvoyExtensionPolicy field", "docs/configs/envoy-gateway/envoy-extension-policy.yaml", nil, kube, "messageTimeout:", "messageTimout:"},
		{"Backend field", "docs/configs/envoy-gateway/backend.yaml", nil, kube, "caCertificateRefs:", "caCertRefs:"},
		{"EnvoyFilter metadata field", "docs/configs/istio/envoyfilter.yaml", nil, kube, "metadata:\n  name:", "metadata:\n  nmae:"},
		{"EnvoyFilter spec field", "docs/configs/istio/envoyfilter.yaml", nil, kube, "workloadSelector:", "workloadSelectors:"},
		{"EnvoyFilter enum", "docs/configs/istio/envoyfilter.yaml", nil, kube, "INSERT_BEFORE", "INSERT_BEFOR"},
		{"EnvoyFilter patch value field", "docs/configs/istio/envoyfilter.yaml", nil, kube, "allow_mode_override:", "allow_mode_overide:"},
		{"EnvoyFilter patch value rule", "docs/configs/istio/envoyfilter.yaml", nil, kube, "name: envoy.filters.http.ext_proc", "name: \"\""},
		{"HealthCheck field", "docs/configs/gcp/health-check.json", nil, gcp(gcpFiles[0].msg), `"requestPath"`, `"requestPth"`},
		{"HealthCheck proto name", "docs/configs/gcp/health-check.json", nil, gcp(gcpFiles[0].msg), `"requestPath"`, `"request_path"`},
		{"BackendService field", "docs/configs/gcp/backend-service.yaml", nil, gcp(gcpFiles[1].msg), "maxRatePerEndpoint:", "maxRatePerEndpt:"},
		{"LbTrafficExtension field", "docs/configs/gcp/lb-traffic-extension.yaml", nil, gcp(gcpFiles[2].msg), "supportedEvents:", "supportedEvent:"},
		{"LbTrafficExtension enum", "docs/configs/gcp/lb-traffic-extension.yaml", nil, gcp(gcpFiles[2].msg), "RESPONSE_HEADERS]", "RESPONSE_HEADER]"},
		{"LbRouteExtension field", "docs/configs/gcp/lb-route-extension.yaml", nil, gcp(gcpFiles[3].msg), "celExpression:", "celExpresion:"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var b []byte
			if c.read != nil {
				b = c.read(t)
			} else {
				b = readFile(t, c.file)
			}
			if err := c.decode(b); err != nil {
				t.Fatalf("%s as shipped: %v", c.file, err)
			}
			if bytes.Count(b, []byte(c.old)) == 0 {
				t.Fatalf("%s has no %q to corrupt", c.file, c.old)
			}
			bad := bytes.Replace(b, []byte(c.old), []byte(c.new), 1)
			err := c.decode(bad)
			if err == nil {
				t.Fatalf("%s with %q for %q decoded without error", c.file, c.new, c.old)
			}
			t.Logf("%v", err)
		})
	}
}
