package main

import (
	"bytes"
	"context"
	"fmt"

	"google.golang.org/grpc"

	"github.com/wasm-callout/wasm-callout/server/envoytest"
)

// player plays one request of the scenario on worker w (an HTTP exchange,
// or an L4 connection) and returns why it failed, or "".
type player func(ctx context.Context, w int) (failure string)

// player returns the scenario's player over conns (worker w uses
// conns[w%len(conns)]) and the payload bytes of one request.
func (c *loadConfig) player(conns []*grpc.ClientConn) (player, int, error) {
	if c.scenario == "l4" {
		return c.l4Player(conns)
	}
	cfg, req, bodyBytes := c.scenarioRequest()
	emus := make([]*envoytest.Emulator, len(conns))
	for i, conn := range conns {
		var err error
		if emus[i], err = envoytest.New(conn, cfg); err != nil {
			return nil, 0, err
		}
	}
	return func(ctx context.Context, w int) string {
		res, err := emus[w%len(emus)].Do(ctx, req)
		switch {
		case err != nil:
			return err.Error()
		case res.LocalReply != nil:
			return fmt.Sprintf("local reply %d %s", res.LocalReply.Status, res.LocalReply.Details)
		case c.expectHeader != "" && !res.Response.Headers.Has(c.expectHeader):
			return "response without " + c.expectHeader
		}
		return ""
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
	return func(ctx context.Context, w int) string {
		res, err := emus[w%len(emus)].Do(ctx, conn)
		switch {
		case err != nil:
			return err.Error()
		case res.Close != envoytest.ClosedNormally:
			return fmt.Sprintf("connection closed by Envoy: %v %s", res.Close, res.CloseReason)
		case len(res.Violations) > 0:
			return "protocol violation: " + res.Violations[0]
		case !bytes.Equal(res.Upstream, up) || !res.UpstreamEOS:
			return fmt.Sprintf("upstream received %d bytes (end %v), want %d", len(res.Upstream), res.UpstreamEOS, len(up))
		case !bytes.Equal(res.Downstream, down) || !res.DownstreamEOS:
			return fmt.Sprintf("client received %d bytes (end %v), want %d", len(res.Downstream), res.DownstreamEOS, len(down))
		}
		return ""
	}, len(up) + len(down), nil
}
