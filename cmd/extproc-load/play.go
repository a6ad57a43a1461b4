package main

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"

	"google.golang.org/grpc"

	"github.com/wasm-callout/wasm-callout/server/envoytest"
)

// player plays one request of the scenario on worker w (an HTTP exchange,
// or an L4 connection), the fault request (-fault-header, -fault-data) if
// fault is true, and says how it ended.
type player func(ctx context.Context, w int, fault bool) outcome

// outcome is how one request ended.
type outcome struct {
	// failure says why the request failed, or is "".
	failure string
	// policy is true when the failure is the server's failure policy: an
	// ImmediateResponse of -policy-status (HTTP), or a CLOSE the server
	// asked for (L4). A fault request should end so; a good one does when
	// it was a bystander on the instance that failed.
	policy bool
}

// player returns the scenario's player over conns (worker w uses
// conns[w%len(conns)]) and the payload bytes of one request.
func (c *loadConfig) player(conns []*grpc.ClientConn) (player, int, error) {
	if c.scenario == "l4" {
		return c.l4Player(conns)
	}
	cfg, req, bodyBytes := c.scenarioRequest()
	faultReq := req
	if c.faultHeader != "" {
		name, value, _ := strings.Cut(c.faultHeader, ":")
		faultReq = &envoytest.Request{Headers: append(slices.Clone(req.Headers),
			envoytest.Header{Key: strings.ToLower(strings.TrimSpace(name)), Value: strings.TrimSpace(value)}),
			Body: req.Body, Response: req.Response}
	}
	emus := make([]*envoytest.Emulator, len(conns))
	for i, conn := range conns {
		var err error
		if emus[i], err = envoytest.New(conn, cfg); err != nil {
			return nil, 0, err
		}
	}
	return func(ctx context.Context, w int, fault bool) outcome {
		r := req
		if fault {
			r = faultReq
		}
		res, err := emus[w%len(emus)].Do(ctx, r)
		switch {
		case err != nil:
			return outcome{failure: err.Error()}
		case res.LocalReply != nil:
			lr := res.LocalReply
			return outcome{failure: fmt.Sprintf("local reply %d %s", lr.Status, lr.Details),
				policy: lr.Immediate && lr.Status == c.policyStatus}
		case c.expectHeader != "" && !res.Response.Headers.Has(c.expectHeader):
			return outcome{failure: "response without " + c.expectHeader}
		}
		return outcome{}
	}, bodyBytes, nil
}

// l4Player plays the l4 scenario: one TCP connection through Envoy's network
// ext_proc filter (envoytest.L4Emulator), -chunks frames of -chunk-bytes from
// the client and as many back from the upstream, both directions at once and
// each frame sent without waiting for answers, as Envoy does; both sides end
// their streams. A connection fails unless each side received exactly what
// the other sent, the connection ended normally and every answer followed
// the protocol: the scenario measures a pass-through filter (tcp-count, or
// the native echo).
func (c *loadConfig) l4Player(conns []*grpc.ClientConn) (player, int, error) {
	cfg := envoytest.L4Config{NoTranscript: true, MessageTimeout: c.msgTimeout}
	emus := make([]*envoytest.L4Emulator, len(conns))
	for i, conn := range conns {
		var err error
		if emus[i], err = envoytest.NewL4(conn, cfg); err != nil {
			return nil, 0, err
		}
	}
	frames := func(b byte) ([]envoytest.Frame, []byte) {
		chunk := bytes.Repeat([]byte{b}, c.chunkBytes)
		fs := make([]envoytest.Frame, c.chunks)
		for i := range fs {
			fs[i].Data = chunk
		}
		fs[len(fs)-1].EndOfStream = true
		return fs, bytes.Repeat(chunk, c.chunks)
	}
	read, up := frames('r')
	write, down := frames('w')
	conn := &envoytest.Connection{Read: read, Write: write}
	faultConn := conn
	if c.faultData != "" {
		// The first frame carries the fault instead of its data.
		fr := slices.Clone(read)
		fr[0].Data = []byte(c.faultData)
		faultConn = &envoytest.Connection{Read: fr, Write: write}
	}
	return func(ctx context.Context, w int, fault bool) outcome {
		cn := conn
		if fault {
			cn = faultConn
		}
		res, err := emus[w%len(emus)].Do(ctx, cn)
		switch {
		case err != nil:
			return outcome{failure: err.Error()}
		case res.Close != envoytest.ClosedNormally:
			// The failure policy (fail-closed) is a CLOSE from the server;
			// Envoy's own closes (gRPC error, message timeout) are not.
			return outcome{failure: fmt.Sprintf("connection closed by Envoy: %v %s", res.Close, res.CloseReason),
				policy: res.Close == envoytest.ClosedFlushWrite && res.CloseReason == "ext_proc_close_requested"}
		case len(res.Violations) > 0:
			return outcome{failure: "protocol violation: " + res.Violations[0]}
		case !bytes.Equal(res.Upstream, up) || !res.UpstreamEOS:
			return outcome{failure: fmt.Sprintf("upstream received %d bytes (end %v), want %d", len(res.Upstream), res.UpstreamEOS, len(up))}
		case !bytes.Equal(res.Downstream, down) || !res.DownstreamEOS:
			return outcome{failure: fmt.Sprintf("client received %d bytes (end %v), want %d", len(res.Downstream), res.DownstreamEOS, len(down))}
		}
		return outcome{}
	}, len(up) + len(down), nil
}
