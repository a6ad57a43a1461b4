package plugintest

import (
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"

	"github.com/wasm-callout/wasm-callout/abi"
	"github.com/wasm-callout/wasm-callout/internal/plugintest/specpb"
)

// Matcher is a compiled StringMatcher.
type Matcher struct {
	invert bool
	exact  []byte         // exact and file matchers
	re     *regexp.Regexp // regex matchers, anchored for a full match
	desc   string         // how the spec wrote it, for messages
}

// CompileMatcher compiles m; file paths are resolved with resolve.
func CompileMatcher(m *specpb.StringMatcher, resolve func(string) string) (*Matcher, error) {
	out := &Matcher{invert: m.GetInvert()}
	switch x := m.GetMatcher().(type) {
	case *specpb.StringMatcher_Exact:
		out.exact = x.Exact
		out.desc = "exact " + quote(x.Exact)
	case *specpb.StringMatcher_Regex:
		re, err := regexp.Compile(`^(?:` + x.Regex + `)$`)
		if err != nil {
			return nil, fmt.Errorf("bad regex %q: %v", x.Regex, err)
		}
		out.re = re
		out.desc = "regex " + strconv.Quote(x.Regex)
	case *specpb.StringMatcher_File:
		data, err := os.ReadFile(resolve(x.File))
		if err != nil {
			return nil, fmt.Errorf("matcher file: %v", err)
		}
		out.exact = data
		out.desc = "file " + strconv.Quote(x.File)
	default:
		return nil, fmt.Errorf("a matcher needs one of exact, regex and file")
	}
	return out, nil
}

func (m *Matcher) matches(v []byte) bool {
	if m.re != nil {
		return m.re.Match(v)
	}
	return string(v) == string(m.exact)
}

// Check reports whether some value matches (none, when inverted), and when
// not, says why: what was wanted, what there was, and for an exact match
// against one value where they first differ. what names the values ("log
// line", "body", "header line").
func (m *Matcher) Check(what string, values [][]byte) (ok bool, why string) {
	var hit = -1
	for i, v := range values {
		if m.matches(v) {
			hit = i
			break
		}
	}
	if m.invert {
		if hit < 0 {
			return true, ""
		}
		return false, fmt.Sprintf("want no %s matching %s, found %s", what, m.desc, quote(values[hit]))
	}
	if hit >= 0 {
		return true, ""
	}
	var b strings.Builder
	fmt.Fprintf(&b, "want a %s matching %s", what, m.desc)
	switch {
	case len(values) == 0:
		fmt.Fprintf(&b, ", found no %s", what)
	case len(values) == 1:
		fmt.Fprintf(&b, ", found %s", quote(values[0]))
		if m.re == nil {
			b.WriteString("; " + firstDiff(m.exact, values[0]))
		}
	default:
		fmt.Fprintf(&b, ", found %d:", len(values))
		for _, v := range values {
			b.WriteString("\n    " + quote(v))
		}
	}
	return false, b.String()
}

// firstDiff describes where got first differs from want.
func firstDiff(want, got []byte) string {
	n := min(len(want), len(got))
	for i := 0; i < n; i++ {
		if want[i] != got[i] {
			return fmt.Sprintf("first difference at byte %d: want %s, got %s", i, quote(want[i:min(i+16, len(want))]), quote(got[i:min(i+16, len(got))]))
		}
	}
	if len(want) > len(got) {
		return fmt.Sprintf("got %d bytes, %d fewer than wanted, missing from byte %d on: %s", len(got), len(want)-len(got), n, quote(want[n:min(n+16, len(want))]))
	}
	return fmt.Sprintf("got %d bytes, %d more than wanted, from byte %d on: %s", len(got), len(got)-len(want), n, quote(got[n:min(n+16, len(got))]))
}

// maxQuote bounds how much of a value a message shows.
const maxQuote = 256

func quote(b []byte) string {
	if len(b) > maxQuote {
		return strconv.Quote(string(b[:maxQuote])) + fmt.Sprintf("…(%d bytes)", len(b))
	}
	return strconv.Quote(string(b))
}

// headerValue is the value a has_header expectation compares: every value
// of key (case-insensitive), joined by ", " as HTTP folds repeated fields.
func headerValue(pairs []abi.Pair, key string) (string, bool) {
	var vals []string
	for _, p := range pairs {
		if strings.EqualFold(p.Key, key) {
			vals = append(vals, p.Value)
		}
	}
	return strings.Join(vals, ", "), len(vals) > 0
}

// headerLines are the "key: value" lines a headers matcher reads, one per
// header name in order of first appearance, repeated values folded.
func headerLines(pairs []abi.Pair) [][]byte {
	var order []string
	seen := map[string]bool{}
	for _, p := range pairs {
		k := strings.ToLower(p.Key)
		if !seen[k] {
			seen[k] = true
			order = append(order, p.Key)
		}
	}
	out := make([][]byte, 0, len(order))
	for _, k := range order {
		v, _ := headerValue(pairs, k)
		out = append(out, []byte(k+": "+v))
	}
	return out
}

// CheckHasHeader checks one has_header expectation.
func CheckHasHeader(pairs []abi.Pair, want *specpb.Header) (bool, string) {
	got, ok := headerValue(pairs, want.GetKey())
	if !ok {
		return false, fmt.Sprintf("header %q: want %s, found no such header (headers: %s)", want.GetKey(), quote(want.GetValue()), headerList(pairs))
	}
	if got != string(want.GetValue()) {
		return false, fmt.Sprintf("header %q: want %s, found %s", want.GetKey(), quote(want.GetValue()), quote([]byte(got)))
	}
	return true, ""
}

// CheckNoHeader checks one no_header expectation.
func CheckNoHeader(pairs []abi.Pair, want *specpb.Header) (bool, string) {
	if got, ok := headerValue(pairs, want.GetKey()); ok {
		return false, fmt.Sprintf("header %q: want it absent, found %s", want.GetKey(), quote([]byte(got)))
	}
	return true, ""
}

func headerList(pairs []abi.Pair) string {
	if len(pairs) == 0 {
		return "none"
	}
	keys := make([]string, len(pairs))
	for i, p := range pairs {
		keys[i] = p.Key
	}
	return strings.Join(keys, ", ")
}
