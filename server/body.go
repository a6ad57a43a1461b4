package server

// This file holds the body and trailers answers of every body mode: a
// plugin pause in each mode, content-length upkeep, FULL_DUPLEX_STREAMED
// chunks, and the body bytes still held when the trailers arrive.

import (
	"bytes"
	"strconv"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"

	"github.com/wasm-callout/wasm-callout/abi"
	"github.com/wasm-callout/wasm-callout/host"
)

// maxStreamedChunk bounds the body of one FULL_DUPLEX_STREAMED answer; a
// larger output is split (Envoy's gRPC client may limit message size).
const maxStreamedChunk = 64 << 10

// ---- body ----

func (st *stream) onBody(d *direction, chunk []byte, eos bool) error {
	r := host.Result{Action: abi.ActionContinue, Body: chunk}
	if st.hs != nil {
		if d.typ == abi.StreamHTTPRequest {
			r = st.hs.RequestBody(chunk, eos)
		} else {
			r = st.hs.ResponseBody(chunk, eos)
		}
	}
	if stop, err := st.settle(d, r); stop || err != nil {
		return err
	}
	if r.Action == abi.ActionContinue {
		d.hostHeld = 0
		return st.answerBody(d, chunk, r.Body, eos)
	}
	d.hostHeld += int64(len(chunk))
	mode := d.bodyMode()
	switch {
	case eos:
		// Wait for the plugin to resume; the bytes stay in the host.
		d.blocked, d.blockedIn = phaseBody, chunk
		return st.extendTimeout(d)
	case mode.duplex():
		// Answers are M:N: nothing is owed until the plugin releases bytes.
		return nil
	case mode == modeBuffered || mode == modePartial:
		// This was the only body message (trailers follow, or the rest of
		// a partial body passes unprocessed): the plugin cannot get more,
		// and Envoy holds the trailers until this answer, so release what
		// the plugin has now.
		out, _ := st.takeBody(d)
		st.log.Debug("plugin paused the only body message of its direction; releasing it",
			"direction", d.name, "mode", mode)
		return st.answerBody(d, chunk, out, false)
	default:
		// STREAMED: a pause is emulated by clearing the chunk at Envoy; the
		// host keeps the bytes and they go out with the chunk that
		// continues.
		return st.answerBody(d, chunk, nil, false)
	}
}

// answerBody answers one body message: in is what Envoy sent, out what
// must replace it.
func (st *stream) answerBody(d *direction, in, out []byte, eos bool) error {
	if len(d.released) > 0 {
		out = append(d.released, out...)
		d.released = nil
	}
	mode := d.bodyMode()
	if mode.duplex() {
		return st.sendStreamed(d, out, eos)
	}
	var hm *extprocv3.HeaderMutation
	var bm *extprocv3.BodyMutation
	changed := !bytes.Equal(in, out)
	if d.headersOpen {
		if changed && (mode == modeBuffered || mode == modeUnknown) {
			st.fixContentLength(d, len(out))
		}
		hm = st.takeMutation(d.headersMap, kindHeaders, st.skipContentLength(d))
		d.headersOpen = false
	}
	if changed {
		bm = bodyMutation(out)
	}
	resp := bodyAnswer(d.typ, st.common(d, hm, bm))
	st.answered(d, httpPhase(d.typ, phaseBody))
	return st.send(resp)
}

// fixContentLength keeps content-length equal to the new body length in
// BUFFERED mode, where Envoy keeps the header and refuses a body mutation
// of another length. The change goes out with the body answer.
func (st *stream) fixContentLength(d *direction, n int) {
	if st.hs == nil {
		return
	}
	want := strconv.Itoa(n)
	st.hs.WithHeaders(d.headersMap, func(hm *host.HeaderMap) {
		if cl, ok := hm.Get("content-length"); ok && cl != want {
			hm.Replace("content-length", want)
		}
	})
}

// sendStreamed answers FULL_DUPLEX_STREAMED body data: out in chunks of at
// most maxStreamedChunk; nothing when out is empty unless eos must go.
func (st *stream) sendStreamed(d *direction, out []byte, eos bool) error {
	if d.bodyMode() == modeGRPC {
		return st.sendGRPC(d, out, eos)
	}
	for {
		n := min(len(out), maxStreamedChunk)
		last := n == len(out)
		if n == 0 && !eos {
			return nil
		}
		br := &extprocv3.BodyResponse{Response: &extprocv3.CommonResponse{BodyMutation: streamedBody(out[:n], eos && last)}}
		resp := &extprocv3.ProcessingResponse{}
		if d.typ == abi.StreamHTTPRequest {
			resp.Response = &extprocv3.ProcessingResponse_RequestBody{RequestBody: br}
		} else {
			resp.Response = &extprocv3.ProcessingResponse_ResponseBody{ResponseBody: br}
		}
		if err := st.send(resp); err != nil {
			return err
		}
		if last {
			return nil
		}
		out = out[n:]
	}
}

func (st *stream) takeBody(d *direction) ([]byte, bool) {
	d.hostHeld = 0
	if st.hs == nil {
		return nil, false
	}
	return st.hs.TakeBody(d.typ)
}

// holding is what the stream keeps across messages (Limits.MaxStreamBuffer
// counts it): paused body bytes in the host, resumed bytes waiting for the
// next answer, and queued messages.
func (st *stream) holding() int64 {
	var n int64
	for _, d := range st.dirs {
		n += d.hostHeld + d.queued + int64(len(d.released)) + d.outqBytes()
	}
	return n
}

// ---- trailers ----

func (st *stream) onTrailers(d *direction, pairs []abi.Pair) error {
	r := host.Result{Action: abi.ActionContinue}
	if st.hs != nil {
		if d.typ == abi.StreamHTTPRequest {
			r = st.hs.RequestTrailers(pairs)
		} else {
			r = st.hs.ResponseTrailers(pairs)
		}
	}
	if stop, err := st.settle(d, r); stop || err != nil {
		return err
	}
	if r.Action == abi.ActionPause {
		d.blocked = phaseTrailers
		return st.extendTimeout(d)
	}
	return st.answerTrailers(d)
}

// answerTrailers answers the trailers, after the body bytes the plugin
// still held: Envoy forwards a paused body when the trailers continue.
// Only FULL_DUPLEX_STREAMED can still carry them; in the other modes
// Envoy already has every body answer, so the request fails rather than
// lose data silently.
func (st *stream) answerTrailers(d *direction) error {
	held := d.released
	d.released = nil
	if b, _ := st.takeBody(d); len(b) > 0 {
		held = append(held, b...)
	}
	if len(held) > 0 && !st.observability {
		if !d.bodyMode().duplex() {
			return st.undeliverable(d, len(held))
		}
		if err := st.sendStreamed(d, held, false); err != nil {
			return err
		}
	}
	tr := &extprocv3.TrailersResponse{HeaderMutation: st.takeMutation(d.trailersMap, kindTrailers, false)}
	resp := &extprocv3.ProcessingResponse{}
	if d.typ == abi.StreamHTTPRequest {
		resp.Response = &extprocv3.ProcessingResponse_RequestTrailers{RequestTrailers: tr}
	} else {
		resp.Response = &extprocv3.ProcessingResponse_ResponseTrailers{ResponseTrailers: tr}
	}
	d.trailersAnswered = true
	st.answered(d, httpPhase(d.typ, phaseTrailers))
	if err := st.sendWindowed(d, resp, 0); err != nil {
		return err
	}
	return st.drain(d)
}

func (st *stream) undeliverable(d *direction, n int) error {
	st.srv.stats.lostBodyBytes.Add(int64(n))
	st.log.Warn("plugin held body bytes until the trailers; STREAMED ext_proc cannot deliver them, failing the request "+
		"(use BUFFERED or FULL_DUPLEX_STREAMED for plugins that buffer)", "direction", d.name, "bytes", n)
	return st.immediate(&host.LocalResponse{
		Status: st.plugin.Config().FailStatus, Details: detailsUndelivered, GRPCStatus: grpcStatusInternal,
	})
}
