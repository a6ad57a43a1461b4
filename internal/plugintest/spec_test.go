package plugintest

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/wasm-callout/wasm-callout/internal/plugintest/specpb"
)

// The YAML twin of a text spec parses to the same TestSuite.
func TestYAMLMatchesText(t *testing.T) {
	text := `
env { log_level: DEBUG time_secs: 123456789 }
test {
  name: "T"
  num_chunks: 5
  properties { path: "request.id" value: "abc" }
  request_headers {
    input { header { key: ":path" value: "/" } }
    result {
      has_header { key: ":status" value: "200" }
      headers { regex: ":scheme:.*" invert: true }
      immediate { http_status: 500 grpc_status: 0 details: "why" }
      log { exact: "true" }
    }
  }
  request_body { input { content: "12345" } result { body { file: "x.data" } } }
}`
	yml := `
env:
  log_level: DEBUG
  time_secs: 123456789
test:
- name: T
  num_chunks: '5'
  properties:
  - path: request.id
    value: abc
  request_headers:
    input:
      header:
      - key: :path
        value: /
    result:
      has_header:
      - key: :status
        value: 200
      headers:
      - regex: :scheme:.*
        invert: 'true'
      immediate:
        http_status: 500
        grpc_status: 0
        details: why
      log:
      - exact: true
  request_body:
  - input:
      content: 12345
    result:
      body:
      - file: x.data
`
	a, err := ParseText([]byte(text))
	if err != nil {
		t.Fatal(err)
	}
	b, err := ParseYAML([]byte(yml))
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(a, b, protocmp.Transform()); d != "" {
		t.Errorf("text and YAML differ (-text +yaml)\n%s", d)
	}
	if err := Validate(a); err != nil {
		t.Error(err)
	}
}

func TestSpecErrors(t *testing.T) {
	tests := []struct {
		name, yaml, text, want string
	}{
		{name: "text unknown field", text: `test { name: "a" bogus: 1 }`, want: `unknown field: bogus`},
		{name: "yaml unknown field", yaml: "test:\n- name: a\n  bogus: 1\n", want: `test[0].bogus (line 3): unknown field "bogus" in Test`},
		{name: "yaml unknown top", yaml: "runtime: {}\n", want: `unknown field "runtime" in TestSuite`},
		{name: "yaml bad bool", yaml: "test:\n- benchmark: yes please\n", want: `want true or false`},
		{name: "yaml bad enum", yaml: "env:\n  log_level: LOUD\n", want: `"LOUD" is not a LogLevel`},
		{name: "yaml bad number", yaml: "test:\n- num_chunks: many\n", want: `want an integer`},
		{name: "yaml list wanted", yaml: "test:\n  name: a\n", want: `test (line 2): want a list`},
		{name: "yaml mapping wanted", yaml: "env: 3\n", want: `want a mapping for Env`},
		{name: "yaml syntax", yaml: "test: [\n", want: `yaml spec`},
		{name: "chunking with two bodies", text: `test { name: "c" chunk_size: 2 request_body {} request_body {} }`, want: `test c: a chunking plan`},
		{name: "zero chunks", text: `test { name: "z" num_chunks: 0 }`, want: `num_chunks must be positive`},
		{name: "two inputs", text: `test { name: "i" request_headers { input { content: "GET / HTTP/1.1" file: "f" } } }`, want: `input takes one of header, content and file`},
		{name: "bad regex", text: `test { name: "r" stream_init { log { regex: "(" } } }`, want: `bad regex "("`},
		{name: "empty matcher", text: `test { name: "m" request_headers { result { body { invert: true } } } }`, want: `needs one of exact, regex and file`},
		{name: "header key", text: `test { name: "k" request_headers { result { no_header { value: "x" } } } }`, want: `without a key`},
		{name: "body header input", text: `test { name: "b" request_body { input { header { key: "a" } } } }`, want: `a body input takes content or file`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			if tc.yaml != "" {
				var s = mustNot(ParseYAML([]byte(tc.yaml)))
				err = s.err
				if err == nil {
					err = Validate(s.suite)
				}
			} else {
				var s = mustNot(ParseText([]byte(tc.text)))
				err = s.err
				if err == nil {
					err = Validate(s.suite)
				}
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

type specSuite = specpb.TestSuite

type parsed struct {
	suite *specSuite
	err   error
}

func mustNot(s *specSuite, err error) parsed { return parsed{s, err} }

// Empty YAML is an empty suite; aliases expand, but not without bound.
func TestYAMLEdges(t *testing.T) {
	if s, err := ParseYAML(nil); err != nil || len(s.GetTest()) != 0 {
		t.Errorf("empty: %v, %v", s, err)
	}
	s, err := ParseYAML([]byte("x: &h {key: a, value: b}\n"))
	if err == nil {
		t.Errorf("unknown anchor holder accepted: %v", s)
	}
	s, err = ParseYAML([]byte("test:\n- &t {name: a}\n- *t\n"))
	if err != nil || len(s.GetTest()) != 2 || s.GetTest()[1].GetName() != "a" {
		t.Errorf("alias: %v, %v", s, err)
	}
	// Aliases nest through the schema: 200 tests of 200 invocations of
	// 200 matchers would be 8 million matchers.
	var b strings.Builder
	b.WriteString("test:\n- &t\n  name: x\n  request_body:\n  - &i\n    result:\n      body:\n      - &m {exact: a}\n")
	b.WriteString(strings.Repeat("      - *m\n", 199))
	b.WriteString(strings.Repeat("  - *i\n", 199))
	b.WriteString(strings.Repeat("- *t\n", 199))
	if _, err := ParseYAML([]byte(b.String())); err == nil || !strings.Contains(err.Error(), "spec too large") {
		t.Errorf("alias bomb: %v", err)
	}
}

func FuzzParseText(f *testing.F) {
	f.Add([]byte(`test { name: "a" num_chunks: 2 request_body { input { content: "x" } result { body { regex: "x" } } } }`))
	f.Add([]byte(`env { log_level: DEBUG time_secs: 1 } test { request_headers { input { content: "GET / HTTP/1.1\nHost: a\n" } } }`))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := ParseText(data)
		if err != nil {
			return
		}
		_ = Validate(s)
		for _, tt := range s.GetTest() {
			if in := tt.GetRequestHeaders().GetInput(); len(in.GetContent()) > 0 {
				ParseHTTP1(in.GetContent(), true)
			}
			for _, b := range tt.GetRequestBody() {
				Chunks(b.GetInput().GetContent(), tt)
			}
		}
	})
}

func FuzzParseYAML(f *testing.F) {
	f.Add([]byte("test:\n- name: a\n  chunk_size: 2\n  request_body:\n  - input:\n      content: xyz\n"))
	f.Add([]byte("env:\n  log_level: 2\n  time_secs: '7'\ntest: [{name: b, benchmark: 'true'}]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := ParseYAML(data)
		if err != nil {
			return
		}
		_ = Validate(s)
		for _, tt := range s.GetTest() {
			for _, b := range tt.GetResponseBody() {
				Chunks(b.GetInput().GetContent(), tt)
			}
		}
	})
}
