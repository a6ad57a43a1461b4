// Package deploy checks the deployment artefacts against the tools that read
// them: the Dockerfile at the repository root (its build steps are run as
// written, see dockerfile_test.go), the Kubernetes manifests in
// deploy/kubernetes, the gateway configurations in docs/configs, and the
// Envoy configuration blocks of docs/network.md and README.md. Each test
// decodes a shipped file strictly into the published schema of its consumer
// (go-control-plane's Envoy protos, k8s.io/api, Istio's and Envoy Gateway's
// API types, Google Cloud's networkservices and compute protos), so a
// misspelt or invented field fails go test ./...
//
// The package has no code of its own; its dependencies are test-only and do
// not reach the wasm-callout binary.
package deploy
