package server

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"

	"github.com/wasm-callout/wasm-callout/host"
)

func hdrs(kv ...string) *corev3.HeaderMap {
	m := &corev3.HeaderMap{}
	for i := 0; i+1 < len(kv); i += 2 {
		m.Headers = append(m.Headers, &corev3.HeaderValue{Key: kv[i], RawValue: []byte(kv[i+1])})
	}
	return m
}

// BenchmarkProcessHeaders is one headers-only ext_proc stream (request and
// response headers) over loopback gRPC, eight at a time, through
// plugins/basic and through the zero-work plugin (host/testdata/zero.wat),
// which leaves the host's and the server's own cost. The client runs in the same process, so compare runs of this
// benchmark with each other, and use make bench for the server alone.
func BenchmarkProcessHeaders(b *testing.B) {
	for _, name := range []string{"basic", "zero"} {
		b.Run(name, func(b *testing.B) { benchProcessHeaders(b, name) })
	}
}

func benchProcessHeaders(b *testing.B, name string) {
	benchHeaders(b, []*harness{start(b, Options{Plugin: plugin(b, name, host.FailClosed, "")})})
}

// BenchmarkChain compares a chain of N zero-work plugins (one ext_proc
// stream, one round trip per phase) with N separate callouts (N streams
// per request, one plugin each, as N ext_proc filters in Envoy would make):
// what a chain saves is the N-1 extra round trips, gRPC framing and
// stream set-ups per request.
func BenchmarkChain(b *testing.B) {
	zero := func(b *testing.B, i int) *host.Plugin {
		name := fmt.Sprintf("zero%d", i)
		return loader.Load(b, "bench|"+name, filepath.Join("..", "host", "testdata", "zero.wasm"),
			host.Config{Name: name, Instances: 2, FailStatus: 500})
	}
	for _, n := range []int{1, 2, 4} {
		b.Run(fmt.Sprintf("chain=%d", n), func(b *testing.B) {
			var ps []*host.Plugin
			var names []string
			for i := range n {
				ps = append(ps, zero(b, i))
				names = append(names, ps[i].Config().Name)
			}
			h := start(b, Options{Plugins: ps, Chains: Chains{Chains: map[string][]string{DefaultChain: names}}})
			benchHeaders(b, []*harness{h})
		})
	}
	for _, n := range []int{2, 4} {
		b.Run(fmt.Sprintf("separate=%d", n), func(b *testing.B) {
			var hs []*harness
			for i := range n {
				hs = append(hs, start(b, Options{Plugin: zero(b, i)}))
			}
			benchHeaders(b, hs)
		})
	}
}

// benchHeaders plays, per operation, one headers-only request through each
// of hs in turn, eight operations at a time, and reports the process's CPU
// time per operation (cpu-ns/op).
func benchHeaders(b *testing.B, hs []*harness) {
	var cs []extprocv3.ExternalProcessorClient
	for _, h := range hs {
		cs = append(cs, extprocv3.NewExternalProcessorClient(h.conn))
	}
	req := &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{
		Headers: hdrs(":method", "GET", ":path", "/", ":authority", "x", ":scheme", "http"), EndOfStream: true}}}
	resp := &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extprocv3.HttpHeaders{
		Headers: hdrs(":status", "200"), EndOfStream: true}}}
	b.ReportAllocs()
	b.SetParallelism(8)
	// CPU time, not wall time, is the cost: the machine may be shared.
	// It includes the in-process client's, which N callouts pay N times
	// as Envoy would.
	cpu0 := cpuTime()
	defer func() { b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op") }()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			for _, c := range cs {
				s, err := c.Process(context.Background())
				if err != nil {
					b.Fatal(err)
				}
				s.Send(req)
				if _, err := s.Recv(); err != nil {
					b.Fatal(err)
				}
				s.Send(resp)
				if _, err := s.Recv(); err != nil {
					b.Fatal(err)
				}
				s.CloseSend()
				if _, err := s.Recv(); err != io.EOF {
					b.Fatal(err)
				}
			}
		}
	})
}
