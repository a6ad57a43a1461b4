package plugintest

import (
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/wasm-callout/wasm-callout/abi"
	"github.com/wasm-callout/wasm-callout/host"
	"github.com/wasm-callout/wasm-callout/internal/plugintest/specpb"
)

// hostLocal shortens test tables.
type hostLocal = host.LocalResponse

func kv(s ...string) []abi.Pair {
	var out []abi.Pair
	for i := 0; i+1 < len(s); i += 2 {
		out = append(out, abi.Pair{Key: s[i], Value: s[i+1]})
	}
	return out
}

func TestParseHTTP1(t *testing.T) {
	tests := []struct {
		name    string
		text    string
		request bool
		want    []abi.Pair
		err     string
	}{
		{name: "origin form with host", request: true,
			text: "GET /my/path?foo=bar HTTP/1.1\nHost: myhost.com\nMyHeader: MyVal1\nMyHeader: MyVal2\n",
			want: kv(":method", "GET", ":path", "/my/path?foo=bar", ":authority", "myhost.com", "myheader", "MyVal1", "myheader", "MyVal2")},
		{name: "absolute form drops host", request: true,
			text: "POST https://example.com:8080/x HTTP/1.1\r\nHost: other\r\nA: b\r\n\r\nignored: body",
			want: kv(":method", "POST", ":scheme", "https", ":path", "/x", ":authority", "example.com:8080", "a", "b")},
		{name: "no host", request: true, text: "GET / HTTP/1.0", want: kv(":method", "GET", ":path", "/")},
		{name: "response", text: "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\n",
			want: kv(":status", "403", "content-type", "text/plain")},
		{name: "bad request line", request: true, text: "GET /\n", err: "want a request line"},
		{name: "bad uri", request: true, text: "GET nope HTTP/1.1\n", err: "invalid URI"},
		{name: "bad header", request: true, text: "GET / HTTP/1.1\nno colon\n", err: `line 2: want "Name: value"`},
		{name: "folding", request: true, text: "GET / HTTP/1.1\nA: b\n c\n", err: "line folding"},
		{name: "bad status", text: "HTTP/1.1 abc\n", err: "bad status code"},
		{name: "empty", text: "\r\n", err: "no start line"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseHTTP1([]byte(tc.text), tc.request)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("(-want +got)\n%s", d)
			}
		})
	}
}

func TestChunks(t *testing.T) {
	body := []byte("1234567890")
	tests := []struct {
		plan any
		want string
	}{
		{nil, "[1234567890]"},
		{&specpb.Test_NumChunks{NumChunks: 5}, "[12 34 56 78 90]"},
		{&specpb.Test_NumChunks{NumChunks: 3}, "[123 456 7890]"}, // remainder in the last
		{&specpb.Test_NumChunks{NumChunks: 20}, "[1 2 3 4 5 6 7 8 9 0]"},
		{&specpb.Test_ChunkSize{ChunkSize: 4}, "[1234 5678 90]"},
		{&specpb.Test_ChunkSize{ChunkSize: 100}, "[1234567890]"},
	}
	for _, tc := range tests {
		tt := &specpb.Test{}
		switch p := tc.plan.(type) {
		case *specpb.Test_NumChunks:
			tt.BodyChunkingPlan = p
		case *specpb.Test_ChunkSize:
			tt.BodyChunkingPlan = p
		}
		if got := fmt.Sprintf("%s", Chunks(body, tt)); got != tc.want {
			t.Errorf("%v: got %s, want %s", tc.plan, got, tc.want)
		}
	}
	if got := Chunks(nil, &specpb.Test{BodyChunkingPlan: &specpb.Test_ChunkSize{ChunkSize: 2}}); len(got) != 1 || len(got[0]) != 0 {
		t.Errorf("empty body: %q, want one empty chunk", got)
	}
}
