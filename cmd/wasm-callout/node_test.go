package main

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// nodePlugin refuses proxy_on_vm_start without node.id and
// proxy_on_configure without node, node.metadata, node.id and
// node.metadata.NAME, as Istio's stats plugin does.
const nodePlugin = "../../host/testdata/node_configure.wasm"

// TestNodeMetadataFlag: a plugin that needs the bootstrap node refuses to
// start without --node-metadata, a bad file is refused before anything
// loads with a message naming the flag, the file and the problem, and a
// good one serves.
func TestNodeMetadataFlag(t *testing.T) {
	dir := t.TempDir()
	file := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return "@" + p
	}
	good := file("node.yaml", "id: sidecar~10.0.0.7~pod.default~default.svc.cluster.local\n"+
		"cluster: productpage.default\nmetadata:\n  NAME: productpage-v1-abc\n  NAMESPACE: default\n  LABELS: {app: productpage}\n")
	base := []string{"serve", "--plugin", nodePlugin, "--addr", "127.0.0.1:0", "--tls-addr", "", "--health-addr", "127.0.0.1:0", "--admin-addr", "",
		"--log-level", "error", "--instances", "1"}

	refused := []struct {
		name string
		args []string
		want []string
	}{
		{"no node", nil, []string{"refused"}},
		{"unknown field", []string{"--node-metadata", file("typo.yaml", "id: n1\nmetdata: {NAME: p}\n")},
			[]string{"--node-metadata @", "typo.yaml", `unknown field "metdata"`}},
		{"a whole bootstrap", []string{"--node-metadata", file("bootstrap.yaml", "node: {id: n1}\nadmin: {}\n")},
			[]string{"give its node: section"}},
		{"missing file", []string{"--node-metadata", "@" + filepath.Join(dir, "nope.yaml")}, []string{"--node-metadata", "nope.yaml"}},
		{"inline JSON of the wrong shape", []string{"--node-metadata", `{"id": 7}`}, []string{"--node-metadata (inline)", "envoy.config.core.v3.Node"}},
		{"bad direction", []string{"--node-metadata", good, "--listener-direction", "up"}, []string{"--listener-direction", "inbound, outbound"}},
		{"bad listener metadata", []string{"--node-metadata", good, "--listener-metadata", `{"istio": {}}`}, []string{"--listener-metadata", "envoy.config.core.v3.Metadata"}},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			err := run(context.Background(), withoutAdmin(append(append([]string{}, base...), tc.args...)), io.Discard, io.Discard)
			if err == nil {
				t.Fatal("served")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}

	addrs, stop := started(t, []string{"grpc", "health"}, append(base, "--node-metadata", good, "--listener-direction", "outbound",
		"--listener-metadata", "filter_metadata: {istio: {mode: sidecar}}")...)
	if got := httpStatus(t, "http://"+addrs["health"]+"/readyz"); got != 200 {
		t.Errorf("/readyz: %d", got)
	}
	if err := stop(); err != nil {
		t.Errorf("run: %v", err)
	}
}

func TestLocalInfoFlags(t *testing.T) {
	fs, c := serveFlags(io.Discard)
	if err := fs.Parse([]string{"--plugin", "x.wasm"}); err != nil {
		t.Fatal(err)
	}
	if hc, err := c.hostConfig(); err != nil || hc.Local != nil {
		t.Fatalf("no flags: Local = %v, %v", hc.Local, err)
	}
	fs, c = serveFlags(io.Discard)
	if err := fs.Parse([]string{"--plugin", "x.wasm", "--node-metadata", `{"id": "n1", "metadata": {"NAME": "p"}}`,
		"--listener-direction", "INBOUND", "--cluster-name", "backend", "--cluster-metadata", "filter_metadata: {istio: {workload: w}}"}); err != nil {
		t.Fatal(err)
	}
	hc, err := c.hostConfig()
	if err != nil {
		t.Fatal(err)
	}
	l := hc.Local
	if l == nil || l.Node.GetId() != "n1" || l.ListenerDirection == nil || *l.ListenerDirection != corev3.TrafficDirection_INBOUND ||
		l.ClusterName != "backend" || l.ClusterMetadata.GetFilterMetadata()["istio"].GetFields()["workload"].GetStringValue() != "w" {
		t.Errorf("Local = %v", l)
	}
}
