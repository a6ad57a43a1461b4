package envoytest

import (
	netprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/network_ext_proc/v3"
)

// Golden is a transcript a golden file can hold (see CompareGolden): a
// Transcript of the HTTP filter or an L4Transcript of the network filter.
type Golden interface {
	// MarshalText renders the transcript in the golden file format.
	MarshalText() []byte
	// goldenDiff compares the transcript with a golden file's contents.
	goldenDiff(data []byte) (string, error)
}

// L4Entry is one event on a network_ext_proc side stream. Kind, Code and
// Message mean what they mean in Entry.
type L4Entry = LogEntry[*netprocv3.ProcessingRequest, *netprocv3.ProcessingResponse]

// L4Transcript is the ordered list of side-stream events of one connection.
// It has the golden file format and helpers of Transcript.
type L4Transcript = Log[*netprocv3.ProcessingRequest, *netprocv3.ProcessingResponse]

// UnmarshalL4Transcript parses the MarshalText format of an L4Transcript.
func UnmarshalL4Transcript(data []byte) (L4Transcript, error) {
	return unmarshalLog[*netprocv3.ProcessingRequest, *netprocv3.ProcessingResponse](data)
}

// DiffL4 is Diff for L4 transcripts.
func DiffL4(want, got L4Transcript) string { return diffLog(want, got) }
