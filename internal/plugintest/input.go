package plugintest

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"

	"github.com/wasm-callout/wasm-callout/abi"
	"github.com/wasm-callout/wasm-callout/internal/plugintest/specpb"
)

// HeaderInput turns a phase's input into the header list the plugin sees:
// the header list as given, or HTTP/1 text (content or file) turned into
// HTTP/2-style pseudo-headers and lower-case fields, as Envoy presents
// them. A nil input gives no headers.
func HeaderInput(in *specpb.Input, request bool, resolve func(string) string) ([]abi.Pair, error) {
	switch {
	case in.GetFile() != "":
		data, err := os.ReadFile(resolve(in.GetFile()))
		if err != nil {
			return nil, fmt.Errorf("input file: %v", err)
		}
		return ParseHTTP1(data, request)
	case len(in.GetContent()) > 0:
		return ParseHTTP1(in.GetContent(), request)
	}
	pairs := make([]abi.Pair, 0, len(in.GetHeader()))
	for _, h := range in.GetHeader() {
		pairs = append(pairs, abi.Pair{Key: h.GetKey(), Value: string(h.GetValue())})
	}
	return pairs, nil
}

// BodyInput is a body phase's input: content, or a file's bytes.
func BodyInput(in *specpb.Input, resolve func(string) string) ([]byte, error) {
	if in.GetFile() != "" {
		data, err := os.ReadFile(resolve(in.GetFile()))
		if err != nil {
			return nil, fmt.Errorf("input file: %v", err)
		}
		return data, nil
	}
	return in.GetContent(), nil
}

// ParseHTTP1 parses an HTTP/1 request line (request) or status line and
// header lines, ended by a blank line or the end of the text. Lines may end
// in CRLF or LF. A request becomes :method, :path and, from an absolute
// URI or the Host header (which is then dropped), :scheme and :authority;
// a response becomes :status. Field names are lower-cased; repeated fields
// stay separate.
func ParseHTTP1(text []byte, request bool) ([]abi.Pair, error) {
	lines := strings.Split(string(text), "\n")
	for len(lines) > 0 && strings.TrimRight(lines[0], "\r") == "" {
		lines = lines[1:] // leading blank lines are tolerated, as in HTTP/1
	}
	if len(lines) == 0 {
		return nil, errors.New("HTTP/1 input: no start line")
	}
	start := strings.TrimRight(lines[0], "\r")
	var fields []abi.Pair
	for i, l := range lines[1:] {
		l = strings.TrimRight(l, "\r")
		if l == "" {
			break
		}
		if l[0] == ' ' || l[0] == '\t' {
			return nil, fmt.Errorf("HTTP/1 input line %d: obsolete line folding is not allowed", i+2)
		}
		k, v, ok := strings.Cut(l, ":")
		if !ok || k == "" || strings.ContainsAny(k, " \t") {
			return nil, fmt.Errorf("HTTP/1 input line %d: want \"Name: value\", got %q", i+2, l)
		}
		fields = append(fields, abi.Pair{Key: strings.ToLower(k), Value: strings.Trim(v, " \t")})
	}
	parts := strings.Fields(start)
	if !request {
		if len(parts) < 2 || !strings.HasPrefix(parts[0], "HTTP/") {
			return nil, fmt.Errorf("HTTP/1 input: want a status line like \"HTTP/1.1 200 OK\", got %q", start)
		}
		if code, err := strconv.Atoi(parts[1]); err != nil || code < 100 || code > 999 {
			return nil, fmt.Errorf("HTTP/1 input: bad status code %q", parts[1])
		}
		return append([]abi.Pair{{Key: ":status", Value: parts[1]}}, fields...), nil
	}
	if len(parts) != 3 || !strings.HasPrefix(parts[2], "HTTP/") {
		return nil, fmt.Errorf("HTTP/1 input: want a request line like \"GET /path HTTP/1.1\", got %q", start)
	}
	method, target := parts[0], parts[1]
	out := []abi.Pair{{Key: ":method", Value: method}}
	host, hasHost := "", false
	var rest []abi.Pair
	for _, f := range fields {
		if f.Key == "host" && !hasHost {
			host, hasHost = f.Value, true
			continue
		}
		if f.Key == "host" {
			continue
		}
		rest = append(rest, f)
	}
	switch {
	case strings.Contains(target, "://"):
		u, err := url.Parse(target)
		if err != nil || u.Host == "" {
			return nil, fmt.Errorf("HTTP/1 input: invalid URI %q", target)
		}
		out = append(out, abi.Pair{Key: ":scheme", Value: u.Scheme}, abi.Pair{Key: ":path", Value: u.RequestURI()},
			abi.Pair{Key: ":authority", Value: u.Host})
	case strings.HasPrefix(target, "/") || (target == "*" && method == "OPTIONS"):
		if _, err := url.ParseRequestURI(target); err != nil && target != "*" {
			return nil, fmt.Errorf("HTTP/1 input: invalid URI %q", target)
		}
		out = append(out, abi.Pair{Key: ":path", Value: target})
		if hasHost {
			out = append(out, abi.Pair{Key: ":authority", Value: host})
		}
	default:
		return nil, fmt.Errorf("HTTP/1 input: invalid URI %q", target)
	}
	return append(out, rest...), nil
}

// Chunks splits body by the test's chunking plan: num_chunks pieces of
// len/num_chunks bytes with the remainder in the last, or pieces of
// chunk_size bytes. Without a plan, or for an empty body, it is one chunk.
func Chunks(body []byte, t *specpb.Test) [][]byte {
	switch plan := t.GetBodyChunkingPlan().(type) {
	case *specpb.Test_NumChunks:
		return splitN(body, int(plan.NumChunks))
	case *specpb.Test_ChunkSize:
		return splitSize(body, plan.ChunkSize)
	}
	return [][]byte{body}
}

func splitN(body []byte, n int) [][]byte {
	if n <= 1 || len(body) == 0 {
		return [][]byte{body}
	}
	size := len(body) / n
	if size == 0 {
		// Fewer bytes than chunks: one byte per chunk.
		return splitSize(body, 1)
	}
	out := make([][]byte, 0, n)
	for i := 0; i < n-1; i++ {
		out = append(out, body[i*size:(i+1)*size])
	}
	return append(out, body[(n-1)*size:])
}

func splitSize(body []byte, size int64) [][]byte {
	if size <= 0 || len(body) == 0 {
		return [][]byte{body}
	}
	var out [][]byte
	for int64(len(body)) > size {
		out = append(out, body[:size])
		body = body[size:]
	}
	return append(out, body)
}
