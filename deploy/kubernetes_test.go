package deploy

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	egv1a1 "github.com/envoyproxy/gateway/api/v1alpha1"
	jsonpatch "github.com/evanphx/json-patch"
	istionet "istio.io/client-go/pkg/apis/networking/v1alpha3"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

// kubeTypes maps apiVersion and kind to the published Go type the object
// must decode into.
var kubeTypes = map[string]func() any{
	"v1/ConfigMap":                           func() any { return &corev1.ConfigMap{} },
	"v1/Service":                             func() any { return &corev1.Service{} },
	"apps/v1/Deployment":                     func() any { return &appsv1.Deployment{} },
	"policy/v1/PodDisruptionBudget":          func() any { return &policyv1.PodDisruptionBudget{} },
	"autoscaling/v2/HorizontalPodAutoscaler": func() any { return &autoscalingv2.HorizontalPodAutoscaler{} },
	"gateway.envoyproxy.io/v1alpha1/EnvoyExtensionPolicy": func() any { return &egv1a1.EnvoyExtensionPolicy{} },
	"gateway.envoyproxy.io/v1alpha1/Backend":              func() any { return &egv1a1.Backend{} },
	"networking.istio.io/v1alpha3/EnvoyFilter":            func() any { return &istionet.EnvoyFilter{} },
}

// decodeObjects strictly decodes every document of a Kubernetes manifest
// into its published Go type. Istio's EnvoyFilter spec gets the extra
// checks of checkEnvoyFilter, since Istio's own JSON decoding of the spec
// ignores unknown fields.
func decodeObjects(b []byte) ([]any, error) {
	var objs []any
	for i, doc := range splitYAML(b) {
		av, kind, err := typeMeta(doc)
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i+1, err)
		}
		newObj, ok := kubeTypes[av+"/"+kind]
		if !ok {
			return nil, fmt.Errorf("document %d: %s %s: no schema known to this test", i+1, av, kind)
		}
		obj := newObj()
		if err := strictYAML(doc, obj); err != nil {
			return nil, fmt.Errorf("document %d (%s): %w", i+1, kind, err)
		}
		if ef, ok := obj.(*istionet.EnvoyFilter); ok {
			if err := checkEnvoyFilter(doc, ef); err != nil {
				return nil, fmt.Errorf("document %d (%s): %w", i+1, kind, err)
			}
		}
		objs = append(objs, obj)
	}
	return objs, nil
}

// kustomization is the part of kustomize's Kustomization
// (kustomize.config.k8s.io/v1beta1, sigs.k8s.io/kustomize/api/types) that
// deploy/kubernetes uses, field for field; decoding strictly into it fails
// on any other field, so a new one must be added here, checked against
// kustomize's published type. The kustomize module itself is not imported
// for its weight.
type kustomization struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Labels     []struct {
		Pairs            map[string]string `json:"pairs"`
		IncludeSelectors bool              `json:"includeSelectors,omitempty"`
		IncludeTemplates bool              `json:"includeTemplates,omitempty"`
	} `json:"labels,omitempty"`
	Resources []string `json:"resources"`
	Images    []struct {
		Name    string `json:"name"`
		NewName string `json:"newName,omitempty"`
		NewTag  string `json:"newTag,omitempty"`
		Digest  string `json:"digest,omitempty"`
	} `json:"images,omitempty"`
	Patches []struct {
		Target *struct {
			Kind string `json:"kind,omitempty"`
			Name string `json:"name,omitempty"`
		} `json:"target,omitempty"`
		Patch string `json:"patch,omitempty"`
	} `json:"patches,omitempty"`
}

var (
	binaryOnce sync.Once
	binaryPath string
	binaryErr  error
)

// wasmCalloutBinary builds cmd/wasm-callout once for the package's tests.
func wasmCalloutBinary(t *testing.T) string {
	t.Helper()
	binaryOnce.Do(func() {
		dir, err := os.MkdirTemp("", "deploytest")
		if err != nil {
			binaryErr = err
			return
		}
		binaryPath = filepath.Join(dir, "wasm-callout")
		out, err := exec.Command("go", "build", "-o", binaryPath, "../cmd/wasm-callout").CombinedOutput()
		if err != nil {
			binaryErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binaryErr != nil {
		t.Fatal(binaryErr)
	}
	return binaryPath
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binaryPath != "" {
		os.RemoveAll(filepath.Dir(binaryPath))
	}
	os.Exit(code)
}

// checkFlags runs the binary with args and -h: the flag package parses args
// in order and stops at -h, so an unknown flag or a bad value fails.
func checkFlags(t *testing.T, args []string) {
	t.Helper()
	bin := wasmCalloutBinary(t)
	if out, err := exec.Command(bin, append(slices.Clone(args), "-h")...).CombinedOutput(); err != nil {
		t.Errorf("wasm-callout %q: %v\n%s", args, err, lastLines(out, 3))
	}
}

func lastLines(b []byte, n int) string {
	l := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(l[max(0, len(l)-n):], "\n")
}

// flagValue returns the value of --name=VALUE in args.
func flagValue(args []string, name string) (string, bool) {
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v, true
		}
	}
	return "", false
}

// kubernetesObjects reads deploy/kubernetes through its kustomization.
func kubernetesObjects(t *testing.T) (kustomization, []any) {
	t.Helper()
	dir := "deploy/kubernetes"
	var k kustomization
	if err := strictYAML(readFile(t, dir+"/kustomization.yaml"), &k); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	if k.APIVersion != "kustomize.config.k8s.io/v1beta1" || k.Kind != "Kustomization" {
		t.Errorf("kustomization.yaml: %s %s", k.APIVersion, k.Kind)
	}
	files, _ := filepath.Glob(filepath.Join(repoRoot, dir, "*.yaml"))
	var want []string
	for _, f := range files {
		if b := filepath.Base(f); b != "kustomization.yaml" {
			want = append(want, b)
		}
	}
	if got := sortedCopy(k.Resources); !slices.Equal(got, want) {
		t.Errorf("kustomization.yaml resources %q, want every manifest of the directory %q", got, want)
	}
	var objs []any
	for _, r := range k.Resources {
		o, err := decodeObjects(readFile(t, dir+"/"+r))
		if err != nil {
			t.Fatalf("%s: %v", r, err)
		}
		objs = append(objs, o...)
	}
	return k, objs
}

func only[T any](t *testing.T, objs []any) T {
	t.Helper()
	var found []T
	for _, o := range objs {
		if v, ok := o.(T); ok {
			found = append(found, v)
		}
	}
	if len(found) != 1 {
		var zero T
		t.Fatalf("want one %T, found %d", zero, len(found))
	}
	return found[0]
}

// TestKubernetesManifests decodes deploy/kubernetes strictly into the
// k8s.io/api types and checks that its objects fit together and fit the
// binary: selectors match the pods, ports and probes name real ports at
// the binary's defaults, the arguments are flags the binary accepts, the
// ConfigMap and the cache directory are mounted where the flags point.
func TestKubernetesManifests(t *testing.T) {
	k, objs := kubernetesObjects(t)
	dep := only[*appsv1.Deployment](t, objs)
	svc := only[*corev1.Service](t, objs)
	cm := only[*corev1.ConfigMap](t, objs)
	pdb := only[*policyv1.PodDisruptionBudget](t, objs)
	hpa := only[*autoscalingv2.HorizontalPodAutoscaler](t, objs)

	pod := dep.Spec.Template
	if len(pod.Spec.Containers) != 1 {
		t.Fatalf("want one container, got %d", len(pod.Spec.Containers))
	}
	c := pod.Spec.Containers[0]
	labels := pod.Labels
	matches := func(what string, sel map[string]string) {
		if len(sel) == 0 {
			t.Errorf("%s: empty selector", what)
		}
		for k, v := range sel {
			if labels[k] != v {
				t.Errorf("%s: selector %s=%s does not match the pod labels %v", what, k, v, labels)
			}
		}
	}
	matches("Deployment", dep.Spec.Selector.MatchLabels)
	matches("Service", svc.Spec.Selector)
	matches("PodDisruptionBudget", pdb.Spec.Selector.MatchLabels)
	if ref := hpa.Spec.ScaleTargetRef; ref.Kind != "Deployment" || ref.Name != dep.Name || ref.APIVersion != "apps/v1" {
		t.Errorf("HorizontalPodAutoscaler targets %+v, want the Deployment %s", ref, dep.Name)
	}
	if dep.Spec.Replicas != nil {
		t.Errorf("Deployment sets replicas: every kubectl apply would reset what the HorizontalPodAutoscaler chose")
	}
	if _, ok := c.Resources.Requests[corev1.ResourceCPU]; !ok {
		t.Errorf("no CPU request: the HorizontalPodAutoscaler's CPU utilization needs one")
	}
	if _, ok := c.Resources.Limits[corev1.ResourceMemory]; !ok {
		t.Errorf("no memory limit")
	}

	// The image is the one the kustomization sets.
	if len(k.Images) != 1 || strings.SplitN(c.Image, ":", 2)[0] != k.Images[0].Name {
		t.Errorf("container image %q is not the kustomization's images[].name", c.Image)
	}

	// Security: what the restricted Pod Security Standard asks for, and a
	// read-only root.
	psc, sc := pod.Spec.SecurityContext, c.SecurityContext
	if psc == nil || sc == nil {
		t.Fatal("no pod or container securityContext")
	}
	if psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("pod securityContext %+v: want runAsNonRoot and the RuntimeDefault seccomp profile", psc)
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Errorf("container securityContext %+v: want readOnlyRootFilesystem, no privilege escalation, capabilities drop ALL", sc)
	}

	// Ports: the container's are the binary's defaults, the Service's target
	// them by name, and the probes use the health port.
	bin := wasmCalloutBinary(t)
	defaults := defaultPorts(t, bin) // 8000 8080 8443
	cports := map[string]int32{}
	for _, p := range c.Ports {
		cports[p.Name] = p.ContainerPort
	}
	for name, want := range map[string]string{"grpc": defaults[1], "tls-grpc": defaults[2], "health": defaults[0]} {
		if got := fmt.Sprint(cports[name]); got != want {
			t.Errorf("container port %s = %s, want %s (the binary's default)", name, got, want)
		}
	}
	for _, p := range svc.Spec.Ports {
		if p.TargetPort.Type != intstr.String || cports[p.TargetPort.StrVal] == 0 {
			t.Errorf("Service port %s: targetPort %v is not a named container port", p.Name, p.TargetPort.String())
		}
		if p.Name == "grpc" && (p.AppProtocol == nil || *p.AppProtocol != "kubernetes.io/h2c") {
			t.Errorf("Service port grpc: appProtocol %v, want kubernetes.io/h2c (plaintext HTTP/2)", p.AppProtocol)
		}
	}
	for name, pr := range map[string]*corev1.Probe{"startupProbe": c.StartupProbe, "livenessProbe": c.LivenessProbe, "readinessProbe": c.ReadinessProbe} {
		want := map[string]string{"startupProbe": "/readyz", "livenessProbe": "/healthz", "readinessProbe": "/readyz"}[name]
		if pr == nil || pr.HTTPGet == nil || pr.HTTPGet.Path != want || pr.HTTPGet.Port.StrVal != "health" {
			t.Errorf("%s: want an HTTP GET of %s on the health port", name, want)
		}
	}

	// The image is the Dockerfile's basic target: its plugin and its user.
	stages, err := parseDockerfile(string(readFile(t, "Dockerfile")))
	if err != nil {
		t.Fatal(err)
	}
	basic := findStage(t, stages, "basic")
	if plugin, _ := flagValue(c.Args, "plugin"); !slices.ContainsFunc(basic.copies, func(c dcopy) bool { return c.dst == plugin }) {
		t.Errorf("--plugin=%s is not the plugin the Dockerfile's basic stage copies", plugin)
	}
	if psc.RunAsUser == nil || psc.RunAsGroup == nil {
		t.Errorf("pod securityContext sets no runAsUser and runAsGroup")
	} else if user := fmt.Sprintf("%d:%d", *psc.RunAsUser, *psc.RunAsGroup); user != basic.user {
		t.Errorf("pod runs as %s, the image as %s", user, basic.user)
	}

	// Arguments: flags the binary knows, files where the volumes are.
	checkFlags(t, c.Args)
	mounts := map[string]string{} // volume name -> mount path
	for _, m := range c.VolumeMounts {
		mounts[m.Name] = m.MountPath
	}
	volumes := map[string]corev1.Volume{}
	for _, v := range pod.Spec.Volumes {
		volumes[v.Name] = v
	}
	cfg, _ := flagValue(c.Args, "plugin-config")
	cfgPath := strings.TrimPrefix(cfg, "@")
	found := false
	for name, v := range volumes {
		if v.ConfigMap != nil && v.ConfigMap.Name == cm.Name && strings.HasPrefix(cfgPath, mounts[name]+"/") {
			key := strings.TrimPrefix(cfgPath, mounts[name]+"/")
			if _, ok := cm.Data[key]; !ok {
				t.Errorf("--plugin-config=%s: ConfigMap %s has no key %s", cfg, cm.Name, key)
			}
			found = true
		}
	}
	if !found {
		t.Errorf("--plugin-config=%s is not in a mounted volume of ConfigMap %s", cfg, cm.Name)
	}
	if w, _ := flagValue(c.Args, "watch"); w == "" {
		t.Errorf("no --watch: ConfigMap updates would not reach the plugin")
	}
	cache, _ := flagValue(c.Args, "compilation-cache")
	cacheVol := ""
	for name, path := range mounts {
		if path == cache {
			cacheVol = name
		}
	}
	if v, ok := volumes[cacheVol]; cache == "" || !ok || v.EmptyDir == nil {
		t.Errorf("--compilation-cache=%s is not an emptyDir mount (the root filesystem is read-only)", cache)
	}
	if st, _ := flagValue(c.Args, "shutdown-timeout"); st != "" {
		d, err := time.ParseDuration(st)
		if err != nil || pod.Spec.TerminationGracePeriodSeconds == nil || d >= time.Duration(*pod.Spec.TerminationGracePeriodSeconds)*time.Second {
			t.Errorf("--shutdown-timeout=%s must end before terminationGracePeriodSeconds %v", st, pod.Spec.TerminationGracePeriodSeconds)
		}
	}
}

// deploymentMessageTimeout is the --message-timeout of the Deployment, which
// the gateway configurations must match.
func deploymentMessageTimeout(t *testing.T) time.Duration {
	t.Helper()
	_, objs := kubernetesObjects(t)
	dep := only[*appsv1.Deployment](t, objs)
	v, ok := flagValue(dep.Spec.Template.Spec.Containers[0].Args, "message-timeout")
	if !ok {
		return 200 * time.Millisecond // the flag's default
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// overlayDeployment applies an overlay kustomization's JSON patches
// (RFC 6902, as kustomize does for a patch that is a list of operations)
// to the base Deployment and decodes the result strictly.
func overlayDeployment(b []byte, dep *appsv1.Deployment) (*appsv1.Deployment, error) {
	var k kustomization
	if err := strictYAML(b, &k); err != nil {
		return nil, err
	}
	if !slices.Equal(k.Resources, []string{".."}) || len(k.Patches) == 0 {
		return nil, fmt.Errorf("want resources [..] and patches, got %q and %d patches", k.Resources, len(k.Patches))
	}
	doc, err := json.Marshal(dep)
	if err != nil {
		return nil, err
	}
	for i, p := range k.Patches {
		if p.Target == nil || p.Target.Kind != "Deployment" || p.Target.Name != dep.Name {
			return nil, fmt.Errorf("patch %d: target %+v, want the Deployment %s", i, p.Target, dep.Name)
		}
		ops, err := yaml.YAMLToJSONStrict([]byte(p.Patch))
		if err != nil {
			return nil, fmt.Errorf("patch %d: %w", i, err)
		}
		patch, err := jsonpatch.DecodePatch(ops)
		if err != nil {
			return nil, fmt.Errorf("patch %d: %w", i, err)
		}
		if doc, err = patch.Apply(doc); err != nil {
			return nil, fmt.Errorf("patch %d: %w", i, err)
		}
	}
	patched := &appsv1.Deployment{}
	if err := strictJSON(doc, patched); err != nil {
		return nil, fmt.Errorf("patched Deployment: %w", err)
	}
	return patched, nil
}

// TestKubernetesTLSOverlay checks deploy/kubernetes/tls: the patched
// Deployment's certificate and key flags point into the mounted Secret, and
// the binary accepts its arguments.
func TestKubernetesTLSOverlay(t *testing.T) {
	_, objs := kubernetesObjects(t)
	patched, err := overlayDeployment(readFile(t, "deploy/kubernetes/tls/kustomization.yaml"), only[*appsv1.Deployment](t, objs))
	if err != nil {
		t.Fatalf("deploy/kubernetes/tls: %v", err)
	}
	c := patched.Spec.Template.Spec.Containers[0]
	checkFlags(t, c.Args)
	secrets := map[string]string{} // mount path -> Secret
	for _, m := range c.VolumeMounts {
		for _, v := range patched.Spec.Template.Spec.Volumes {
			if v.Name == m.Name && v.Secret != nil {
				secrets[m.MountPath] = v.Secret.SecretName
			}
		}
	}
	for flag, key := range map[string]string{"cert": corev1.TLSCertKey, "key": corev1.TLSPrivateKeyKey} {
		v, _ := flagValue(c.Args, flag)
		dir, file := filepath.Split(v)
		if secrets[strings.TrimSuffix(dir, "/")] == "" || file != key {
			t.Errorf("--%s=%s is not the %s of a mounted kubernetes.io/tls Secret", flag, v, key)
		}
	}
}
