package plugintest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wasm-callout/wasm-callout/abi"
	"github.com/wasm-callout/wasm-callout/internal/plugintest/specpb"
)

func exact(s string) *specpb.StringMatcher {
	return &specpb.StringMatcher{Matcher: &specpb.StringMatcher_Exact{Exact: []byte(s)}}
}

func regex(s string) *specpb.StringMatcher {
	return &specpb.StringMatcher{Matcher: &specpb.StringMatcher_Regex{Regex: s}}
}

func file(s string) *specpb.StringMatcher {
	return &specpb.StringMatcher{Matcher: &specpb.StringMatcher_File{File: s}}
}

func inverted(m *specpb.StringMatcher) *specpb.StringMatcher { m.Invert = true; return m }

func TestMatcher(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "want.txt"), []byte("hello world"), 0o644); err != nil {
		t.Fatal(err)
	}
	resolve := func(p string) string { return filepath.Join(dir, p) }
	tests := []struct {
		name    string
		m       *specpb.StringMatcher
		values  []string
		ok      bool
		wantMsg string // part of the failure message
	}{
		{"exact hit", exact("b"), []string{"a", "b"}, true, ""},
		{"exact miss shows first difference", exact("hello world"), []string{"hello_world"}, false,
			`found "hello_world"; first difference at byte 5: want " world", got "_world"`},
		{"exact shorter", exact("hello world"), []string{"hello"}, false, `got 5 bytes, 6 fewer than wanted, missing from byte 5 on: " world"`},
		{"exact longer", exact("hello"), []string{"hello world"}, false, `got 11 bytes, 6 more than wanted, from byte 5 on: " world"`},
		{"exact among many", exact("z"), []string{"a", "b"}, false, "found 2:\n    \"a\"\n    \"b\""},
		{"exact nothing", exact("z"), nil, false, "found no log line"},
		{"empty exact matches empty", exact(""), []string{""}, true, ""},
		{"regex full match", regex("ab+c"), []string{"abbbc"}, true, ""},
		{"regex is anchored", regex("b+"), []string{"abbbc"}, false, `want a log line matching regex "b+", found "abbbc"`},
		{"regex alternation anchored as a whole", regex("a|bc"), []string{"abc"}, false, ""},
		{"file", file("want.txt"), []string{"hello world"}, true, ""},
		{"file miss", file("want.txt"), []string{"hello"}, false, `matching file "want.txt"`},
		{"invert absent", inverted(regex("x.*")), []string{"a", "b"}, true, ""},
		{"invert present", inverted(exact("b")), []string{"a", "b"}, false, `want no log line matching exact "b", found "b"`},
		{"invert nothing", inverted(regex(".*")), nil, true, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, err := CompileMatcher(tc.m, resolve)
			if err != nil {
				t.Fatal(err)
			}
			vals := make([][]byte, len(tc.values))
			for i, v := range tc.values {
				vals[i] = []byte(v)
			}
			ok, why := m.Check("log line", vals)
			if ok != tc.ok {
				t.Fatalf("ok = %v, want %v (%s)", ok, tc.ok, why)
			}
			if !strings.Contains(why, tc.wantMsg) {
				t.Errorf("message %q lacks %q", why, tc.wantMsg)
			}
			if ok && why != "" {
				t.Errorf("a match says %q", why)
			}
		})
	}
}

func TestMatcherErrors(t *testing.T) {
	for _, tc := range []struct {
		m    *specpb.StringMatcher
		want string
	}{
		{regex("("), "bad regex"},
		{file("missing.txt"), "matcher file"},
		{&specpb.StringMatcher{}, "needs one of exact, regex and file"},
	} {
		if _, err := CompileMatcher(tc.m, func(p string) string { return filepath.Join(t.TempDir(), p) }); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("CompileMatcher(%v) = %v, want %q", tc.m, err, tc.want)
		}
	}
}

func TestHeaderChecks(t *testing.T) {
	pairs := []abi.Pair{{Key: ":status", Value: "200"}, {Key: "MyHeader", Value: "v1"}, {Key: "myheader", Value: "v2"}, {Key: "x-a", Value: "1"}}
	h := func(k, v string) *specpb.Header { return &specpb.Header{Key: k, Value: []byte(v)} }
	tests := []struct {
		name string
		has  bool // has_header, else no_header
		h    *specpb.Header
		ok   bool
		msg  string
	}{
		{"has folds repeats, any case", true, h("MYHEADER", "v1, v2"), true, ""},
		{"has wrong value", true, h("x-a", "2"), false, `header "x-a": want "2", found "1"`},
		{"has missing", true, h("x-b", "1"), false, `header "x-b": want "1", found no such header (headers: :status, MyHeader, myheader, x-a)`},
		{"no absent", false, h("x-b", ""), true, ""},
		{"no present", false, h("X-A", ""), false, `header "X-A": want it absent, found "1"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			check := CheckNoHeader
			if tc.has {
				check = CheckHasHeader
			}
			ok, msg := check(pairs, tc.h)
			if ok != tc.ok || msg != tc.msg {
				t.Errorf("got (%v, %q), want (%v, %q)", ok, msg, tc.ok, tc.msg)
			}
		})
	}
	lines := headerLines(pairs)
	want := []string{":status: 200", "MyHeader: v1, v2", "x-a: 1"}
	if len(lines) != len(want) {
		t.Fatalf("headerLines = %q, want %q", lines, want)
	}
	for i := range want {
		if string(lines[i]) != want[i] {
			t.Errorf("headerLines[%d] = %q, want %q", i, lines[i], want[i])
		}
	}
}

func TestCheckExpectationImmediate(t *testing.T) {
	u := func(v uint32) *uint32 { return &v }
	s := func(v string) *string { return &v }
	local := &hostLocal{Status: 403, Details: "denied", GRPCStatus: -1}
	tests := []struct {
		name string
		e    *specpb.Expectation
		want []string
	}{
		{"status matches", &specpb.Expectation{Immediate: &specpb.Expectation_Immediate{HttpStatus: u(403)}}, nil},
		{"status differs", &specpb.Expectation{Immediate: &specpb.Expectation_Immediate{HttpStatus: u(401)}},
			[]string{"immediate reply: want HTTP status 401, got 403"}},
		{"grpc none", &specpb.Expectation{Immediate: &specpb.Expectation_Immediate{GrpcStatus: u(7)}},
			[]string{"immediate reply: want gRPC status 7, got none"}},
		{"details", &specpb.Expectation{Immediate: &specpb.Expectation_Immediate{Details: s("other")}},
			[]string{`immediate reply: want details "other", got "denied"`}},
		{"unexpected reply", &specpb.Expectation{}, []string{`want no immediate reply, the plugin replied 403 (details "denied")`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := CheckExpectation(tc.e, nil, nil, local, nil, nil)
			if strings.Join(got, "|") != strings.Join(tc.want, "|") {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
	l := *local
	l.GRPCStatus = 7
	if got := CheckExpectation(&specpb.Expectation{Immediate: &specpb.Expectation_Immediate{GrpcStatus: u(7)}}, nil, nil, &l, nil, nil); got != nil {
		t.Errorf("matching gRPC status: %q", got)
	}
}
