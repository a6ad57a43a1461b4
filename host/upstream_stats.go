package host

import (
	"context"
	"errors"
	"io"
	"sort"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"
)

// Outbound call counts, kept on each Upstream (which a server shares
// across reloads) and read by a metrics exporter through Upstreams.Stats.

// CallOutcome is how an outbound call ended.
type CallOutcome uint8

// Call outcomes.
const (
	// CallOK: an HTTP response (of any status) or a gRPC OK.
	CallOK CallOutcome = iota
	// CallError: the connection failed, the response was too large, or
	// the gRPC status was an error other than the two below.
	CallError
	// CallTimeout: the call's own timeout ran out (gRPC DEADLINE_EXCEEDED).
	CallTimeout
	// CallCancelled: the plugin cancelled it, or its context went away
	// (gRPC CANCELLED).
	CallCancelled
	// NumCallOutcomes is the number of outcomes.
	NumCallOutcomes
)

var callOutcomeNames = [NumCallOutcomes]string{"ok", "error", "timeout", "cancelled"}

// String returns "ok", "error", "timeout" or "cancelled".
func (o CallOutcome) String() string {
	if o < NumCallOutcomes {
		return callOutcomeNames[o]
	}
	return "unknown"
}

// callKind tells HTTP calls from gRPC calls and streams.
type callKind uint8

const (
	kindHTTP callKind = iota
	kindGRPC
	numCallKinds
)

var callKindNames = [numCallKinds]string{"http", "grpc"}

// callStats counts one upstream's calls by kind and outcome, with their
// durations by kind.
type callStats struct {
	calls    [numCallKinds][NumCallOutcomes]atomic.Int64
	duration [numCallKinds]Histogram
}

// observe records a call of kind that started at start and ended with err
// (nil for success).
func (u *upstream) observe(kind callKind, start time.Time, err error) {
	u.stats.calls[kind][callOutcome(err)].Add(1)
	u.stats.duration[kind].Observe(time.Since(start))
}

func callOutcome(err error) CallOutcome {
	switch {
	case err == nil, errors.Is(err, io.EOF):
		return CallOK
	case errors.Is(err, context.DeadlineExceeded):
		return CallTimeout
	case errors.Is(err, context.Canceled):
		return CallCancelled
	}
	if st, ok := grpcstatus.FromError(err); ok {
		switch st.Code() {
		case codes.OK:
			return CallOK
		case codes.DeadlineExceeded:
			return CallTimeout
		case codes.Canceled:
			return CallCancelled
		}
	}
	return CallError
}

// lookup is get, counting the names that are not configured.
func (us *Upstreams) lookup(name string) *upstream {
	up := us.get(name)
	if up == nil && us != nil {
		us.unknown.Add(1)
	}
	return up
}

// UpstreamStats counts the outbound calls of one kind to one cluster.
type UpstreamStats struct {
	// Cluster is the upstream's name.
	Cluster string
	// Kind is "http" (proxy_http_call) or "grpc" (proxy_grpc_call and
	// proxy_grpc_stream).
	Kind string
	// Calls counts finished calls by outcome (index: CallOutcome).
	Calls [NumCallOutcomes]int64
	// Duration is the time from the call's start to its end, in seconds.
	Duration HistogramSnapshot
}

// Stats returns the calls made to each cluster, by cluster then kind, with
// every configured cluster's HTTP and gRPC kinds present (zero until
// used).
func (us *Upstreams) Stats() []UpstreamStats {
	if us == nil {
		return nil
	}
	names := us.Names()
	sort.Strings(names)
	out := make([]UpstreamStats, 0, 2*len(names))
	for _, n := range names {
		u := us.byName[n]
		for k := range numCallKinds {
			s := UpstreamStats{Cluster: n, Kind: callKindNames[k], Duration: u.stats.duration[k].Snapshot()}
			for o := range NumCallOutcomes {
				s.Calls[o] = u.stats.calls[k][o].Load()
			}
			out = append(out, s)
		}
	}
	return out
}

// UnknownClusterCalls counts the calls plugins made to cluster names that
// no upstream has (each refused with BAD_ARGUMENT or PARSE_FAILURE).
func (us *Upstreams) UnknownClusterCalls() int64 {
	if us == nil {
		return 0
	}
	return us.unknown.Load()
}
