package host

import (
	"context"
	"os"
	"testing"

	"github.com/wasm-callout/wasm-callout/abi"
)

func TestSmoke(t *testing.T) {
	wasm, err := os.ReadFile("testdata/smoke.wasm")
	if err != nil {
		t.Fatal(err)
	}
	p, err := Load(context.Background(), wasm, Config{Name: "smoke", Instances: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(context.Background())
	s, err := p.NewHTTPStream(nil)
	if err != nil {
		t.Fatal(err)
	}
	r := s.RequestHeaders(kv(":path", "/ok"), false)
	if r.Action != abi.ActionContinue || r.LocalResponse != nil {
		t.Fatalf("headers: %+v", r)
	}
	if r := s.RequestBody([]byte("ab"), false); r.Action != abi.ActionPause {
		t.Fatalf("body 1: %+v", r)
	}
	if r := s.RequestBody([]byte("cd"), true); r.Action != abi.ActionContinue || string(r.Body) != "abcd" {
		t.Fatalf("body 2: %+v", r)
	}
	r = s.ResponseHeaders(kv(":status", "200"), true)
	ch := s.Headers(abi.MapHTTPResponseHeaders).Changes()
	if len(ch) != 1 || ch[0].Key != "x-smoke" || ch[0].Values[0] != "yes" {
		t.Fatalf("changes %+v", ch)
	}
	s.Close()

	s2, _ := p.NewHTTPStream(nil)
	r = s2.RequestHeaders(kv(":path", "/deny"), true)
	if r.LocalResponse == nil || r.LocalResponse.Status != 403 || r.Action != abi.ActionPause {
		t.Fatalf("deny: %+v", r)
	}
	s2.Close()
}

// kv builds pairs from alternating keys and values.
func kv(s ...string) []abi.Pair {
	out := make([]abi.Pair, 0, len(s)/2)
	for i := 0; i+1 < len(s); i += 2 {
		out = append(out, abi.Pair{Key: s[i], Value: s[i+1]})
	}
	return out
}
