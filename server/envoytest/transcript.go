package envoytest

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/testing/protocmp"
)

// Kind says what a transcript Entry records.
type Kind int

const (
	// KindSent is a ProcessingRequest the emulated Envoy sent.
	KindSent Kind = iota
	// KindReceived is a ProcessingResponse Envoy received (including those
	// it then ignored or found spurious). Messages arriving after Envoy
	// closed the stream are not recorded: Envoy never sees them.
	KindReceived
	// KindServerClosed is the server ending the stream (Code, Message).
	KindServerClosed
	// KindEnvoyClosed is Envoy resetting the stream (Message is the reason).
	KindEnvoyClosed
)

var kindNames = [...]string{"send", "recv", "server-close", "envoy-close"}

func (k Kind) String() string {
	if k >= 0 && int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// LogEntry is one event on a side stream of either service; Entry and
// L4Entry are its ext_proc and network_ext_proc forms. Entries compare with
// cmp.Diff(want, got, protocmp.Transform()).
type LogEntry[Req, Resp proto.Message] struct {
	Kind     Kind
	Request  Req        // KindSent
	Response Resp       // KindReceived
	Code     codes.Code // KindServerClosed
	Message  string     // KindServerClosed, KindEnvoyClosed
}

// Log is the ordered list of events on one side stream; Transcript and
// L4Transcript are its ext_proc and network_ext_proc forms, sharing the
// golden file format and helpers.
type Log[Req, Resp proto.Message] []LogEntry[Req, Resp]

// Entry is one event on an ext_proc side stream.
type Entry = LogEntry[*extprocv3.ProcessingRequest, *extprocv3.ProcessingResponse]

// Transcript is the ordered list of side-stream events of one exchange.
type Transcript = Log[*extprocv3.ProcessingRequest, *extprocv3.ProcessingResponse]

// present reports whether a message field of an entry is set.
func present(m proto.Message) bool { return m != nil && m.ProtoReflect().IsValid() }

// newMessage returns a new, empty message of M's type.
func newMessage[M proto.Message]() M {
	var zero M
	return zero.ProtoReflect().Type().New().Interface().(M)
}

// Requests returns the ProcessingRequests in order.
func (t Log[Req, Resp]) Requests() []Req {
	var rs []Req
	for _, e := range t {
		if e.Kind == KindSent {
			rs = append(rs, e.Request)
		}
	}
	return rs
}

// Responses returns the ProcessingResponses in order.
func (t Log[Req, Resp]) Responses() []Resp {
	var rs []Resp
	for _, e := range t {
		if e.Kind == KindReceived {
			rs = append(rs, e.Response)
		}
	}
	return rs
}

// Normalize returns a deep copy of t in which the named fields are cleared
// wherever they occur in a request or response (for example
// "envoy.service.ext_proc.v3.ProcessingRequest.metadata_context", or a
// field of a server's own messages that carries a timestamp or an id), so
// that golden files stay stable. Envoy-close reasons are kept.
func (t Log[Req, Resp]) Normalize(fields ...protoreflect.FullName) Log[Req, Resp] {
	drop := map[protoreflect.FullName]bool{}
	for _, f := range fields {
		drop[f] = true
	}
	out := make(Log[Req, Resp], len(t))
	for i, e := range t {
		out[i] = e
		if present(e.Request) {
			out[i].Request = proto.Clone(e.Request).(Req)
			clearFields(out[i].Request.ProtoReflect(), drop)
		}
		if present(e.Response) {
			out[i].Response = proto.Clone(e.Response).(Resp)
			clearFields(out[i].Response.ProtoReflect(), drop)
		}
	}
	return out
}

func clearFields(m protoreflect.Message, drop map[protoreflect.FullName]bool) {
	if len(drop) == 0 {
		return
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if drop[fd.FullName()] {
			m.Clear(fd)
			return true
		}
		switch {
		case fd.IsList() && fd.Message() != nil:
			l := v.List()
			for i := 0; i < l.Len(); i++ {
				clearFields(l.Get(i).Message(), drop)
			}
		case fd.IsMap() && fd.MapValue().Message() != nil:
			v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
				clearFields(mv.Message(), drop)
				return true
			})
		case !fd.IsList() && !fd.IsMap() && fd.Message() != nil:
			clearFields(v.Message(), drop)
		}
		return true
	})
}

// Equal reports whether two transcripts are equal (protos compared with
// proto.Equal).
func (t Log[Req, Resp]) Equal(u Log[Req, Resp]) bool {
	if len(t) != len(u) {
		return false
	}
	for i := range t {
		a, b := t[i], u[i]
		if a.Kind != b.Kind || a.Code != b.Code || a.Message != b.Message ||
			!proto.Equal(a.Request, b.Request) || !proto.Equal(a.Response, b.Response) {
			return false
		}
	}
	return true
}

const entryPrefix = "### "

// isL4 reports whether the log holds network_ext_proc messages.
func (t Log[Req, Resp]) isL4() bool {
	var zero Req
	return zero.ProtoReflect().Descriptor().ParentFile().Package() == "envoy.service.network_ext_proc.v3"
}

// MarshalText renders t in the golden file format: one "### N kind" line
// per entry followed by the message in protobuf text format.
func (t Log[Req, Resp]) MarshalText() []byte {
	var b bytes.Buffer
	if t.isL4() {
		b.WriteString("# envoytest L4 transcript: \"### N send|recv\" + network_ext_proc ProcessingRequest/ProcessingResponse in text format;\n")
	} else {
		b.WriteString("# envoytest transcript: \"### N send|recv\" + ProcessingRequest/ProcessingResponse in text format;\n")
	}
	b.WriteString("# \"### N server-close CODE message\", \"### N envoy-close reason\".\n")
	mo := prototext.MarshalOptions{Multiline: true, Indent: "  "}
	for i, e := range t {
		switch e.Kind {
		case KindSent, KindReceived:
			fmt.Fprintf(&b, "%s%d %s\n", entryPrefix, i+1, e.Kind)
			var m proto.Message = e.Request
			if e.Kind == KindReceived {
				m = e.Response
			}
			out, err := mo.Marshal(m)
			if err != nil {
				fmt.Fprintf(&b, "# marshal error: %v\n", err)
			}
			b.Write(out)
		case KindServerClosed:
			fmt.Fprintf(&b, "%s%d %s %s %s\n", entryPrefix, i+1, e.Kind, e.Code, oneLine(e.Message))
		default:
			fmt.Fprintf(&b, "%s%d %s %s\n", entryPrefix, i+1, e.Kind, oneLine(e.Message))
		}
	}
	return b.Bytes()
}

func oneLine(s string) string {
	return strings.NewReplacer("\n", `\n`, "\r", `\r`).Replace(s)
}

// UnmarshalTranscript parses the MarshalText format.
func UnmarshalTranscript(data []byte) (Transcript, error) {
	return unmarshalLog[*extprocv3.ProcessingRequest, *extprocv3.ProcessingResponse](data)
}

// unmarshalLog parses the MarshalText format of either service.
func unmarshalLog[Req, Resp proto.Message](data []byte) (Log[Req, Resp], error) {
	var t Log[Req, Resp]
	var cur *LogEntry[Req, Resp]
	var body bytes.Buffer
	flush := func() error {
		if cur == nil {
			return nil
		}
		switch cur.Kind {
		case KindSent:
			cur.Request = newMessage[Req]()
			if err := prototext.Unmarshal(body.Bytes(), cur.Request); err != nil {
				return fmt.Errorf("entry %d: %w", len(t)+1, err)
			}
		case KindReceived:
			cur.Response = newMessage[Resp]()
			if err := prototext.Unmarshal(body.Bytes(), cur.Response); err != nil {
				return fmt.Errorf("entry %d: %w", len(t)+1, err)
			}
		}
		t = append(t, *cur)
		cur = nil
		body.Reset()
		return nil
	}
	for _, line := range strings.SplitAfter(string(data), "\n") {
		if !strings.HasPrefix(line, entryPrefix) {
			if cur == nil {
				if s := strings.TrimSpace(line); s != "" && !strings.HasPrefix(s, "#") {
					return nil, fmt.Errorf("envoytest: transcript: text before the first entry: %q", s)
				}
				continue
			}
			body.WriteString(line)
			continue
		}
		if err := flush(); err != nil {
			return nil, err
		}
		f := strings.SplitN(strings.TrimRight(strings.TrimPrefix(line, entryPrefix), "\r\n"), " ", 4)
		if len(f) < 2 {
			return nil, fmt.Errorf("envoytest: transcript: bad entry line %q", line)
		}
		e := &LogEntry[Req, Resp]{}
		switch f[1] {
		case "send":
			e.Kind = KindSent
		case "recv":
			e.Kind = KindReceived
		case "server-close":
			e.Kind = KindServerClosed
			if len(f) < 3 {
				return nil, fmt.Errorf("envoytest: transcript: bad entry line %q", line)
			}
			c, ok := parseCode(f[2])
			if !ok {
				return nil, fmt.Errorf("envoytest: transcript: bad code in %q", line)
			}
			e.Code = c
			if len(f) == 4 {
				e.Message = unOneLine(f[3])
			}
		case "envoy-close":
			e.Kind = KindEnvoyClosed
			e.Message = unOneLine(strings.Join(f[2:], " "))
		default:
			return nil, fmt.Errorf("envoytest: transcript: unknown entry kind in %q", line)
		}
		cur = e
	}
	if err := flush(); err != nil {
		return nil, err
	}
	return t, nil
}

// parseCode parses codes.Code.String() output.
func parseCode(s string) (codes.Code, bool) {
	for c := codes.OK; c <= codes.Unauthenticated; c++ {
		if c.String() == s {
			return c, true
		}
	}
	return 0, false
}

func unOneLine(s string) string {
	return strings.NewReplacer(`\n`, "\n", `\r`, "\r").Replace(s)
}

// Diff returns the differences between want and got as a protocmp diff
// (messages compared field by field, in protobuf's own terms), or "" if
// they are equal.
func Diff(want, got Transcript) string { return diffLog(want, got) }

func diffLog[Req, Resp proto.Message](want, got Log[Req, Resp]) string {
	if want.Equal(got) {
		return ""
	}
	// Bodies can be megabytes: compare bytes whole rather than element by
	// element, which cmp would otherwise diff quadratically.
	return cmp.Diff(want, got, protocmp.Transform(), cmp.Comparer(bytes.Equal))
}

func (t Log[Req, Resp]) goldenDiff(data []byte) (string, error) {
	want, err := unmarshalLog[Req, Resp](data)
	if err != nil {
		return "", err
	}
	return diffLog(want, t), nil
}

// updateFlag is -update: rewrite golden files instead of comparing. It is
// registered by this package in test binaries only; test packages importing
// envoytest must not define their own -update flag (use Update instead).
var updateFlag = func() *bool {
	if !testing.Testing() || flag.Lookup("update") != nil {
		return nil
	}
	return flag.Bool("update", false, "envoytest: rewrite golden files")
}()

// Update reports whether golden files should be rewritten: the -update flag
// or the environment variable ENVOYTEST_UPDATE=1.
func Update() bool {
	if os.Getenv("ENVOYTEST_UPDATE") == "1" {
		return true
	}
	if updateFlag != nil {
		return *updateFlag
	}
	if f := flag.Lookup("update"); f != nil {
		return f.Value.String() == "true"
	}
	return false
}

// CompareGolden compares t with the golden file at path (conventionally
// under testdata/), or rewrites the file when Update() is true. Normalize
// the transcript first if it carries volatile fields. t is a Transcript or
// an L4Transcript.
func CompareGolden(tb testing.TB, path string, t Golden) {
	tb.Helper()
	if Update() {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			tb.Fatalf("envoytest: %v", err)
		}
		if err := os.WriteFile(path, t.MarshalText(), 0o644); err != nil {
			tb.Fatalf("envoytest: %v", err)
		}
		return
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		tb.Fatalf("envoytest: golden file %s missing; run the test with -update to create it", path)
	}
	if err != nil {
		tb.Fatalf("envoytest: %v", err)
	}
	d, err := t.goldenDiff(data)
	if err != nil {
		tb.Fatalf("envoytest: golden file %s: %v", path, err)
	}
	if d != "" {
		tb.Errorf("transcript differs from %s (rerun with -update if the change is intended):\n%s", path, d)
	}
}
