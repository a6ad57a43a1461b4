package plugintest

import (
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	filterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/wasm-callout/wasm-callout/abi"
	"github.com/wasm-callout/wasm-callout/host"
	"github.com/wasm-callout/wasm-callout/internal/plugintest/specpb"
	"github.com/wasm-callout/wasm-callout/server"
	"github.com/wasm-callout/wasm-callout/server/envoytest"
)

// extProcTimeout bounds one test's exchange through the emulator.
const extProcTimeout = 30 * time.Second

// runExtProc plays the test as one request through wasm-callout's ext_proc
// server, served on a loopback port, and the Envoy emulator. The request
// carries the request_headers input and every request_body invocation's
// chunks; the emulated upstream answers with the response_headers input
// and the response_body chunks. Phases the spec leaves out are not sent
// to the server (their processing mode is SKIP or NONE). Expectations are
// checked against what Envoy would forward: the upstream's request for
// the request phases, the client's response for the response phases, or
// the local reply. Logs go to the phase whose callback wrote them.
func (tr *testRun) runExtProc() {
	t := tr.test
	h := tr.load(true)
	if h == nil {
		return
	}
	defer h.Close()

	req, cfg, err := tr.extProcRequest()
	if err != nil {
		tr.fail("input", "%v", err)
		return
	}
	recs := map[string]*Record{}
	for _, p := range []string{"stream_init", "request_headers", "request_body", "response_headers", "response_body", "stream_destroy"} {
		recs[p] = &Record{Phase: p}
	}
	h.Route(map[string]*Record{
		"proxy_on_context_create":   recs["stream_init"],
		"proxy_on_request_headers":  recs["request_headers"],
		"proxy_on_request_body":     recs["request_body"],
		"proxy_on_response_headers": recs["response_headers"],
		"proxy_on_response_body":    recs["response_body"],
		"proxy_on_log":              recs["stream_destroy"],
		"proxy_on_done":             recs["stream_destroy"],
		"proxy_on_delete":           recs["stream_destroy"],
	})
	res, err := exchange(tr, h.Plugin, cfg, req)
	if err != nil {
		tr.fail("ext_proc", "%v", err)
		return
	}
	// The server closes its host stream once the gRPC stream ends, which
	// may be after the emulator has its answer: wait for stream_destroy.
	for wait := time.Now().Add(5 * time.Second); h.Plugin.Stats().LiveStreams > 0 && time.Now().Before(wait); {
		time.Sleep(time.Millisecond)
	}
	h.Route(nil)
	failed := h.Plugin.Stats().Failures > 0
	// A local reply or a failure ends the stream, so it came from the last
	// phase whose callback ran.
	var last *Record
	for _, p := range []string{"request_headers", "request_body", "response_headers", "response_body"} {
		if len(recs[p].Calls) > 0 {
			last = recs[p]
		}
	}

	var local *host.LocalResponse
	if lr := res.LocalReply; lr != nil {
		local = &host.LocalResponse{Status: uint32(lr.Status), Details: lr.Details, Body: lr.Body,
			Headers: pairsOf(res.Response.Headers), GRPCStatus: int32(lr.GRPCStatus)}
		if last != nil {
			last.Local = local
		}
	}
	for _, p := range []string{"stream_init", "request_headers", "request_body", "response_headers", "response_body", "stream_destroy"} {
		tr.res.Phases = append(tr.res.Phases, *recs[p])
	}
	tr.checkLogs("stream_init", t.GetStreamInit(), recs["stream_init"].Logs)
	if failed {
		phase := "ext_proc"
		if last != nil {
			phase = last.Phase
		}
		tr.fail(phase, "the plugin failed%s", logTail(last.logs()))
		return
	}
	ended := false // a local reply ends the stream
	check := func(phase string, inv *specpb.Invocation, headers []abi.Pair, body []byte) {
		rec := recs[phase]
		e := inv.GetResult()
		if ended {
			tr.skipped(phase, e, last)
			return
		}
		if rec.Local != nil {
			ended = true
			headers, body = rec.Local.Headers, rec.Local.Body
		}
		for _, f := range CheckExpectation(e, headers, body, rec.Local, rec.Logs, tr.spec.Resolve) {
			tr.fail(phase, "%s", f)
		}
		if rec.Local == nil && e.GetImmediate() != nil {
			tr.fail(phase, "want an immediate reply, the request went on")
		}
	}
	if inv := t.GetRequestHeaders(); inv != nil {
		check("request_headers", inv, pairsOf(res.Request.Headers), nil)
	}
	switch invs := t.GetRequestBody(); {
	case len(invs) == 1:
		check("request_body", invs[0], nil, res.Request.Body)
	case len(invs) > 1:
		tr.fail("request_body", "through ext_proc the body is one stream: %d request_body invocations cannot be checked one by one", len(invs))
	}
	if inv := t.GetResponseHeaders(); inv != nil {
		check("response_headers", inv, pairsOf(res.Response.Headers), nil)
	}
	switch invs := t.GetResponseBody(); {
	case len(invs) == 1:
		check("response_body", invs[0], nil, res.Response.Body)
	case len(invs) > 1:
		tr.fail("response_body", "through ext_proc the body is one stream: %d response_body invocations cannot be checked one by one", len(invs))
	}
	tr.checkLogs("stream_destroy", t.GetStreamDestroy(), recs["stream_destroy"].Logs)
}

func (r *Record) logs() []LogLine {
	if r == nil {
		return nil
	}
	return r.Logs
}

// extProcRequest builds the emulated request and filter configuration.
func (tr *testRun) extProcRequest() (*envoytest.Request, envoytest.Config, error) {
	t := tr.test
	mode := &filterv3.ProcessingMode{
		RequestHeaderMode:  filterv3.ProcessingMode_SKIP,
		ResponseHeaderMode: filterv3.ProcessingMode_SKIP,
	}
	req := &envoytest.Request{
		Headers:  envoytest.H(":method", "GET", ":path", "/", ":authority", "example.com", ":scheme", "http"),
		Response: &envoytest.Response{Headers: envoytest.H(":status", "200")},
	}
	if inv := t.GetRequestHeaders(); inv != nil {
		pairs, err := HeaderInput(inv.GetInput(), true, tr.spec.Resolve)
		if err != nil {
			return nil, envoytest.Config{}, fmt.Errorf("request_headers: %v", err)
		}
		req.Headers = headersOf(pairs)
		mode.RequestHeaderMode = filterv3.ProcessingMode_SEND
	}
	if inv := t.GetResponseHeaders(); inv != nil {
		pairs, err := HeaderInput(inv.GetInput(), false, tr.spec.Resolve)
		if err != nil {
			return nil, envoytest.Config{}, fmt.Errorf("response_headers: %v", err)
		}
		req.Response.Headers = headersOf(pairs)
		mode.ResponseHeaderMode = filterv3.ProcessingMode_SEND
	}
	for _, inv := range t.GetRequestBody() {
		data, err := BodyInput(inv.GetInput(), tr.spec.Resolve)
		if err != nil {
			return nil, envoytest.Config{}, fmt.Errorf("request_body: %v", err)
		}
		req.Body = append(req.Body, Chunks(data, t)...)
		mode.RequestBodyMode = filterv3.ProcessingMode_STREAMED
	}
	for _, inv := range t.GetResponseBody() {
		data, err := BodyInput(inv.GetInput(), tr.spec.Resolve)
		if err != nil {
			return nil, envoytest.Config{}, fmt.Errorf("response_body: %v", err)
		}
		req.Response.Body = append(req.Response.Body, Chunks(data, t)...)
		mode.ResponseBodyMode = filterv3.ProcessingMode_STREAMED
	}
	cfg := envoytest.Config{ProcessingMode: mode, MessageTimeout: 10 * time.Second}
	if props := t.GetProperties(); len(props) > 0 {
		cfg.RequestAttributes = map[string]*structpb.Value{}
		for _, p := range props {
			cfg.RequestAttributes[p.GetPath()] = structpb.NewStringValue(string(p.GetValue()))
		}
	}
	return req, cfg, nil
}

// exchange serves p on a loopback gRPC port and plays req through the
// emulator.
func exchange(tr *testRun, p *host.Plugin, cfg envoytest.Config, req *envoytest.Request) (*envoytest.Result, error) {
	srv, err := server.New(server.Options{Plugin: p, Logger: slog.New(slog.DiscardHandler), DisableModeOverride: true})
	if err != nil {
		return nil, err
	}
	defer srv.Close()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	g := grpc.NewServer()
	srv.Register(g)
	go g.Serve(lis)
	defer g.Stop()
	conn, err := envoytest.Dial(lis.Addr().String())
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	ctx, cancel := contextWithTimeout(tr.ctx, extProcTimeout)
	defer cancel()
	return envoytest.Do(ctx, conn, cfg, req)
}

func headersOf(pairs []abi.Pair) envoytest.Headers {
	h := make(envoytest.Headers, 0, len(pairs))
	for _, p := range pairs {
		h = append(h, envoytest.Header{Key: strings.ToLower(p.Key), Value: p.Value})
	}
	return h
}

func pairsOf(h envoytest.Headers) []abi.Pair {
	out := make([]abi.Pair, len(h))
	for i, x := range h {
		out[i] = abi.Pair{Key: x.Key, Value: x.Value}
	}
	return out
}
