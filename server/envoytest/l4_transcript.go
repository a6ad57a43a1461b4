package envoytest

import (
	"bytes"
	"fmt"
	"strings"

	netprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/network_ext_proc/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Golden is a transcript a golden file can hold (see CompareGolden): a
// Transcript of the HTTP filter or an L4Transcript of the network filter.
type Golden interface {
	// MarshalText renders the transcript in the golden file format.
	MarshalText() []byte
	// goldenDiff compares the transcript with a golden file's contents.
	goldenDiff(data []byte) (string, error)
}

func (t Transcript) goldenDiff(data []byte) (string, error) {
	want, err := UnmarshalTranscript(data)
	if err != nil {
		return "", err
	}
	return Diff(want, t), nil
}

// L4Entry is one event on a network_ext_proc side stream. Kind, Code and
// Message mean what they mean in Entry.
type L4Entry struct {
	Kind     Kind
	Request  *netprocv3.ProcessingRequest  // KindSent
	Response *netprocv3.ProcessingResponse // KindReceived
	Code     codes.Code                    // KindServerClosed
	Message  string                        // KindServerClosed, KindEnvoyClosed
}

// L4Transcript is the ordered list of side-stream events of one connection.
// It has the golden file format and helpers of Transcript.
type L4Transcript []L4Entry

// Requests returns the ProcessingRequests in order.
func (t L4Transcript) Requests() []*netprocv3.ProcessingRequest {
	var rs []*netprocv3.ProcessingRequest
	for _, e := range t {
		if e.Kind == KindSent {
			rs = append(rs, e.Request)
		}
	}
	return rs
}

// Responses returns the ProcessingResponses in order.
func (t L4Transcript) Responses() []*netprocv3.ProcessingResponse {
	var rs []*netprocv3.ProcessingResponse
	for _, e := range t {
		if e.Kind == KindReceived {
			rs = append(rs, e.Response)
		}
	}
	return rs
}

// Normalize returns a deep copy of t with the named fields cleared wherever
// they occur (see Transcript.Normalize).
func (t L4Transcript) Normalize(fields ...protoreflect.FullName) L4Transcript {
	drop := map[protoreflect.FullName]bool{}
	for _, f := range fields {
		drop[f] = true
	}
	out := make(L4Transcript, len(t))
	for i, e := range t {
		out[i] = e
		if e.Request != nil {
			out[i].Request = proto.Clone(e.Request).(*netprocv3.ProcessingRequest)
			clearFields(out[i].Request.ProtoReflect(), drop)
		}
		if e.Response != nil {
			out[i].Response = proto.Clone(e.Response).(*netprocv3.ProcessingResponse)
			clearFields(out[i].Response.ProtoReflect(), drop)
		}
	}
	return out
}

// Equal reports whether two transcripts are equal (protos compared with
// proto.Equal).
func (t L4Transcript) Equal(u L4Transcript) bool {
	if len(t) != len(u) {
		return false
	}
	for i := range t {
		if !t[i].equal(u[i]) {
			return false
		}
	}
	return true
}

func (e L4Entry) equal(f L4Entry) bool {
	return e.Kind == f.Kind && e.Code == f.Code && e.Message == f.Message &&
		proto.Equal(e.Request, f.Request) && proto.Equal(e.Response, f.Response)
}

func (e L4Entry) message() proto.Message {
	if e.Kind == KindReceived {
		return e.Response
	}
	return e.Request
}

// MarshalText renders t in the golden file format of Transcript, the
// messages being network_ext_proc ones.
func (t L4Transcript) MarshalText() []byte {
	var b bytes.Buffer
	b.WriteString("# envoytest L4 transcript: \"### N send|recv\" + network_ext_proc ProcessingRequest/ProcessingResponse in text format;\n")
	b.WriteString("# \"### N server-close CODE message\", \"### N envoy-close reason\".\n")
	for i, e := range t {
		e.writeText(&b, i+1)
	}
	return b.Bytes()
}

func (e L4Entry) writeText(b *bytes.Buffer, n int) {
	switch e.Kind {
	case KindSent, KindReceived:
		fmt.Fprintf(b, "%s%d %s\n", entryPrefix, n, e.Kind)
		out, err := prototext.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(e.message())
		if err != nil {
			fmt.Fprintf(b, "# marshal error: %v\n", err)
		}
		b.Write(out)
	case KindServerClosed:
		fmt.Fprintf(b, "%s%d %s %s %s\n", entryPrefix, n, e.Kind, e.Code, oneLine(e.Message))
	default:
		fmt.Fprintf(b, "%s%d %s %s\n", entryPrefix, n, e.Kind, oneLine(e.Message))
	}
}

// UnmarshalL4Transcript parses the MarshalText format of an L4Transcript.
func UnmarshalL4Transcript(data []byte) (L4Transcript, error) {
	var t L4Transcript
	var cur *L4Entry
	var body bytes.Buffer
	flush := func() error {
		if cur == nil {
			return nil
		}
		switch cur.Kind {
		case KindSent:
			cur.Request = &netprocv3.ProcessingRequest{}
			if err := prototext.Unmarshal(body.Bytes(), cur.Request); err != nil {
				return fmt.Errorf("envoytest: L4 transcript entry %d: %w", len(t)+1, err)
			}
		case KindReceived:
			cur.Response = &netprocv3.ProcessingResponse{}
			if err := prototext.Unmarshal(body.Bytes(), cur.Response); err != nil {
				return fmt.Errorf("envoytest: L4 transcript entry %d: %w", len(t)+1, err)
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
					return nil, fmt.Errorf("envoytest: L4 transcript: text before the first entry: %q", s)
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
			return nil, fmt.Errorf("envoytest: L4 transcript: bad entry line %q", line)
		}
		e := &L4Entry{}
		switch f[1] {
		case "send":
			e.Kind = KindSent
		case "recv":
			e.Kind = KindReceived
		case "server-close":
			e.Kind = KindServerClosed
			c, ok := codes.Code(0), false
			if len(f) >= 3 {
				c, ok = parseCode(f[2])
			}
			if !ok {
				return nil, fmt.Errorf("envoytest: L4 transcript: bad code in %q", line)
			}
			e.Code = c
			if len(f) == 4 {
				e.Message = unOneLine(f[3])
			}
		case "envoy-close":
			e.Kind = KindEnvoyClosed
			e.Message = unOneLine(strings.Join(f[2:], " "))
		default:
			return nil, fmt.Errorf("envoytest: L4 transcript: unknown entry kind in %q", line)
		}
		cur = e
	}
	if err := flush(); err != nil {
		return nil, err
	}
	return t, nil
}

// DiffL4 returns a human-readable description of the first differences
// between want and got, or "" if they are equal.
func DiffL4(want, got L4Transcript) string {
	if want.Equal(got) {
		return ""
	}
	text := func(e L4Entry, n int) string {
		var b bytes.Buffer
		e.writeText(&b, n)
		return b.String()
	}
	var b strings.Builder
	shown := 0
	for i := 0; i < max(len(want), len(got)) && shown < 5; i++ {
		switch {
		case i >= len(want):
			fmt.Fprintf(&b, "entry %d: unexpected %s", i+1, text(got[i], i+1))
			shown++
		case i >= len(got):
			fmt.Fprintf(&b, "entry %d: missing %s", i+1, text(want[i], i+1))
			shown++
		case !want[i].equal(got[i]):
			fmt.Fprintf(&b, "entry %d:\n--- want\n%s+++ got\n%s", i+1, text(want[i], i+1), text(got[i], i+1))
			shown++
		}
	}
	if len(want) != len(got) {
		fmt.Fprintf(&b, "(want %d entries, got %d)\n", len(want), len(got))
	}
	return b.String()
}

func (t L4Transcript) goldenDiff(data []byte) (string, error) {
	want, err := UnmarshalL4Transcript(data)
	if err != nil {
		return "", err
	}
	return DiffL4(want, t), nil
}
