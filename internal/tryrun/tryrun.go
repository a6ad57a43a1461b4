// Package tryrun pushes one HTTP request, or one TCP exchange, through a
// plugin on wasm-callout's host and reports every phase: what the plugin
// received, what it changed, its local reply, its logs, the host calls it
// made, the metrics it moved and the time its callbacks took. It backs
// `wasm-callout run`.
package tryrun

import (
	"context"
	"time"

	"github.com/wasm-callout/wasm-callout/abi"
	"github.com/wasm-callout/wasm-callout/internal/plugintest"
	"github.com/wasm-callout/wasm-callout/internal/plugintest/specpb"
)

// Body delivery modes, named after ext_proc's body send modes.
const (
	ModeHeaders  = "headers"  // bodies are not shown to the plugin
	ModeBuffered = "buffered" // the whole body in one callback
	ModeStreamed = "streamed" // the body in chunks, one callback each
	// ModeDuplex delivers chunks like ModeStreamed: on the host the two
	// differ only in ext_proc's flow control, which a direct run has none
	// of.
	ModeDuplex = "duplex"
)

// HTTP is one request and the upstream's answer.
type HTTP struct {
	Headers []abi.Pair
	Body    []byte
	// Response is what the emulated upstream answers, if the request
	// gets there.
	ResponseHeaders []abi.Pair
	ResponseBody    []byte
	// Mode is one of the Mode constants; Chunks or ChunkSize split bodies
	// in streamed and duplex modes.
	Mode      string
	Chunks    int
	ChunkSize int
	// Wait bounds how long a paused phase waits for the plugin to resume
	// it (an outbound call's answer, a timer).
	Wait time.Duration
}

// TCP is one connection: Read is what the client sends, Write what the
// upstream answers.
type TCP struct {
	Read, Write []byte
}

// Outcome says how the exchange ended; Code is the exit status.
type Outcome struct {
	// Kind is "upstream" (the request went upstream and the response
	// back), "local_reply" (the plugin answered or closed the stream),
	// "paused" (the plugin paused a phase and did not resume it within the
	// wait) or "failure" (the plugin failed).
	Kind   string `json:"kind"`
	Detail string `json:"detail,omitempty"`
	Code   int    `json:"exit_code"`
}

// Report is a run's whole story.
type Report struct {
	Phases  []plugintest.Record
	Outcome Outcome
}

func (r *Report) add(rec plugintest.Record) { r.Phases = append(r.Phases, rec) }

func (r *Report) end(rec *plugintest.Record) bool {
	switch {
	case rec.Failure != nil:
		r.Outcome = Outcome{Kind: "failure", Detail: rec.Phase + ": " + rec.Failure.Error(), Code: 2}
	case rec.Local != nil:
		r.Outcome = Outcome{Kind: "local_reply", Detail: rec.Phase, Code: 1}
	default:
		return false
	}
	return true
}

// load loads the plugin, recording plugin_init; a nil Harness means it
// failed to start, and the report says so.
func load(ctx context.Context, cfg plugintest.HarnessConfig) (*Report, *plugintest.Harness) {
	rep := &Report{}
	h, err := plugintest.Load(ctx, cfg)
	rep.add(h.Init)
	if err != nil {
		rep.end(&h.Init)
		return rep, nil
	}
	return rep, h
}

// RunHTTP loads the plugin and plays req through it.
func RunHTTP(ctx context.Context, cfg plugintest.HarnessConfig, props plugintest.Properties, req HTTP) *Report {
	rep, h := load(ctx, cfg)
	if h == nil {
		return rep
	}
	defer h.Close()
	st, rec, err := h.OpenHTTP(props)
	rep.add(rec)
	if err != nil || rep.end(&rec) {
		if err != nil {
			rep.Outcome = Outcome{Kind: "failure", Detail: "stream_init: " + err.Error(), Code: 2}
		}
		return rep
	}
	defer func() { rep.add(st.Close()) }()
	for _, request := range []bool{true, false} {
		headers, body := req.Headers, req.Body
		if !request {
			headers, body = req.ResponseHeaders, req.ResponseBody
		}
		hasBody := len(body) > 0 && req.Mode != ModeHeaders
		rec = st.Headers(request, headers, !hasBody)
		if rep.phase(st, &rec, request, req.Wait) {
			return rep
		}
		if hasBody {
			rec = st.Body(request, split(body, req), true)
			if rep.phase(st, &rec, request, req.Wait) {
				return rep
			}
		}
	}
	rep.Outcome = Outcome{Kind: "upstream", Code: 0}
	return rep
}

// phase waits for a paused phase, records it, and reports whether the
// stream ended there.
func (r *Report) phase(st *plugintest.Stream, rec *plugintest.Record, request bool, wait time.Duration) bool {
	st.Await(rec, request, wait)
	r.add(*rec)
	return r.end(rec) || paused(r, rec, st)
}

// paused ends the run when a phase is still paused after the wait or the
// plugin closed the stream.
func paused(rep *Report, rec *plugintest.Record, st *plugintest.Stream) bool {
	switch {
	case st.Replied != nil:
		rep.Outcome = Outcome{Kind: "local_reply", Detail: rec.Phase + ": the plugin closed the stream", Code: 1}
	case rec.Action == abi.ActionPause && !rec.IsBody:
		rep.Outcome = Outcome{Kind: "paused", Detail: rec.Phase, Code: 1}
	default:
		return false
	}
	return true
}

// split cuts a body as the mode and chunking flags say, the way the
// test format's chunking plans do.
func split(body []byte, req HTTP) [][]byte {
	t := &specpb.Test{}
	switch {
	case req.Mode == ModeBuffered || req.Mode == "":
	case req.Chunks > 0:
		t.BodyChunkingPlan = &specpb.Test_NumChunks{NumChunks: int32(min(req.Chunks, 1<<30))}
	case req.ChunkSize > 0:
		t.BodyChunkingPlan = &specpb.Test_ChunkSize{ChunkSize: int64(req.ChunkSize)}
	}
	return plugintest.Chunks(body, t)
}

// RunTCP loads the plugin and plays one connection through it: the
// client's bytes, the upstream's answer, then the client closes.
func RunTCP(ctx context.Context, cfg plugintest.HarnessConfig, props plugintest.Properties, conn TCP) *Report {
	rep, h := load(ctx, cfg)
	if h == nil {
		return rep
	}
	defer h.Close()
	c, recs, err := h.OpenTCP(props)
	for _, r := range recs {
		rep.add(r)
	}
	if err != nil {
		rep.Outcome = Outcome{Kind: "failure", Detail: "stream_init: " + err.Error(), Code: 2}
		return rep
	}
	defer func() { rep.add(c.Close()) }()
	if closed(rep, c) {
		return rep
	}
	rep.add(c.Data(true, conn.Read, false))
	if closed(rep, c) {
		return rep
	}
	rep.add(c.Data(false, conn.Write, false))
	if closed(rep, c) {
		return rep
	}
	rep.Outcome = Outcome{Kind: "upstream", Detail: "tcp", Code: 0}
	return rep
}

func closed(rep *Report, c *plugintest.TCP) bool {
	if c.Closed == nil {
		return false
	}
	if c.Closed.Failure != nil {
		rep.Outcome = Outcome{Kind: "failure", Detail: c.Closed.Phase + ": " + c.Closed.Failure.Error(), Code: 2}
	} else {
		rep.Outcome = Outcome{Kind: "local_reply", Detail: c.Closed.Phase + ": the plugin closed the connection", Code: 1}
	}
	return true
}
