// Package specpb holds the Go types of the plugin test format (see
// spec.proto). spec.pb.go is generated and committed, so building and
// testing need no protoc; regenerating it needs protoc and protoc-gen-go
// v1.36.12 (the google.golang.org/protobuf version in go.mod) on PATH.
package specpb

//go:generate protoc --go_out=. --go_opt=paths=source_relative spec.proto
