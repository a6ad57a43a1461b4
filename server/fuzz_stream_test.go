package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	filterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/wasm-callout/wasm-callout/host"
)

// FuzzStreamStateMachine plays random sequences of valid and invalid
// ProcessingRequest messages on one ext_proc stream through the edge plugin
// (testdata/edge.wat) and checks that
//
//   - the server never panics (a recovered panic ends the stream with
//     Internal) and never hangs (every stream ends within fzStreamTimeout);
//   - the stream ends cleanly (EOF) or with a status whose code is one the
//     server uses for a protocol problem, with a message; fzModel predicts
//     which, from the server's validation rules (which are Envoy's
//     protocol): a stream of legal messages is never rejected, the first
//     illegal one ends it with its code;
//   - nothing leaks: the server's active streams and the plugin's live HTTP
//     contexts return to zero (waitIdle);
//   - every answer fits the protocol: per direction headers, then bodies,
//     then trailers, each answering a message that was accepted, never more
//     answers than accepted messages (FULL_DUPLEX_STREAMED aside, which is
//     M:N and bounded by bytes), body mutations of the kind the body mode
//     needs, mode_override only where the server may send it, nothing after
//     an immediate response and nothing at all in observability mode; and,
//     since the edge plugin never withholds an answer, every accepted
//     message answered before the stream ends.
//
// Input layout (see fzDecode): byte 0 chooses the body modes, whether
// protocol_config is sent and observability mode; byte 1 the plugin action
// (request header x-act), content-length, send_body_without_waiting, the
// server's DisableModeOverride and noise (a protocol_config on later
// messages, which the server must ignore); then each byte pair is one
// operation (a message, CloseSend or cancel). The first operation's high
// bit runs the stream through a chain of two edge plugins instead of one
// (chain.go), which must answer by the same protocol.
func FuzzStreamStateMachine(f *testing.F) {
	p := plugin(f, "edge", host.FailClosed, "fuzz") // a plugin of its own: its live streams are ours
	p2 := loader.Load(f, "edge|fuzz-chain", "testdata/edge.wasm", host.Config{
		Name: "edge2", Instances: 2, FailStatus: 500, PluginConfig: []byte("fuzz")})
	twoEdges := Chains{Chains: map[string][]string{DefaultChain: {"edge", "edge2"}}}
	harnesses := [4]*harness{
		start(f, Options{Plugin: p}),
		start(f, Options{Plugin: p, DisableModeOverride: true}),
		start(f, Options{Plugins: []*host.Plugin{p, p2}, Chains: twoEdges}),
		start(f, Options{Plugins: []*host.Plugin{p, p2}, Chains: twoEdges, DisableModeOverride: true}),
	}
	for _, s := range fzSeeds {
		f.Add(s.encode())
		s.chain = true
		f.Add(s.encode())
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c := fzDecode(data)
		i := 0
		if c.noOverride {
			i = 1
		}
		if c.chain {
			i += 2
		}
		h := harnesses[i]
		r := c.play(t, h)
		c.check(t, r)
		waitIdle(t, h)
	})
}

// fzStreamTimeout bounds one stream: the edge plugin answers at once, so
// a stream still open after it hangs.
const fzStreamTimeout = 5 * time.Second

// fzMaxOps bounds the messages of one stream.
const fzMaxOps = 64

// Operations.
const (
	fzReqHeaders = iota
	fzReqBody
	fzReqTrailers
	fzRespHeaders
	fzRespBody
	fzRespTrailers
	fzEmpty     // a ProcessingRequest that sets no request
	fzCloseSend // half-close now; later operations are not played
	fzCancel    // cancel the stream now; later operations are not played
)

// fzKinds maps an operation byte (low 4 bits) to an operation, weighting
// messages over stream ends.
var fzKinds = [16]int{
	fzReqHeaders, fzReqHeaders, fzReqBody, fzReqBody, fzReqBody, fzReqTrailers,
	fzRespHeaders, fzRespHeaders, fzRespBody, fzRespBody, fzRespBody, fzRespTrailers,
	fzEmpty, fzCloseSend, fzCancel, fzReqBody,
}

// fzModes maps 3 bits to a body mode; 7 is an unknown value. GRPC mode
// (gRPC clients' deframed messages) has tests of its own (grpc_test.go):
// the edge plugin's body edits are not gRPC framing.
var fzModes = [8]filterv3.ProcessingMode_BodySendMode{none, streamed, buffered, partial, fullDuplex, streamed, buffered, fzUnknownMode}

const fzUnknownMode = filterv3.ProcessingMode_BodySendMode(42)

// fzActs are the edge plugin's actions (request header x-act).
var fzActs = [8]string{"", "b", "r", "c", "p", "f", "l", "z"}

// fzBigBody is the size an argument byte of 0xfe or 0xff selects: more
// than one FULL_DUPLEX_STREAMED answer can carry.
const fzBigBody = maxStreamedChunk + 100

type fzOp struct {
	kind int
	eos  bool
	size int // body bytes
}

type fzCase struct {
	reqMode, respMode filterv3.ProcessingMode_BodySendMode
	protocolConfig    bool
	observability     bool
	act               string
	contentLength     bool
	withoutWaiting    bool
	noOverride        bool
	noise             bool
	chain             bool
	ops               []fzOp
}

func fzDecode(data []byte) *fzCase {
	var b0, b1 byte
	if len(data) > 0 {
		b0 = data[0]
	}
	if len(data) > 1 {
		b1 = data[1]
	}
	c := &fzCase{
		reqMode: fzModes[b0&7], respMode: fzModes[b0>>3&7],
		protocolConfig: b0&0x40 == 0, observability: b0&0x80 != 0,
		act: fzActs[b1&7], contentLength: b1&0x08 != 0, withoutWaiting: b1&0x10 != 0,
		noOverride: b1&0x20 != 0, noise: b1&0x40 != 0,
		chain: len(data) > 2 && data[2]&0x80 != 0,
	}
	for i := 2; i+1 < len(data) && len(c.ops) < fzMaxOps; i += 2 {
		op := fzOp{kind: fzKinds[data[i]&15], eos: data[i+1]&1 != 0, size: int(data[i+1] >> 1)}
		if op.size == 0x7f {
			op.size = fzBigBody
		} else {
			op.size &= 0x3f
		}
		c.ops = append(c.ops, op)
	}
	return c
}

// encode is fzDecode's inverse, for the seeds.
func (c *fzCase) encode() []byte {
	sel := func(m filterv3.ProcessingMode_BodySendMode) byte {
		for i, x := range fzModes {
			if x == m {
				return byte(i)
			}
		}
		panic("no selector for mode " + m.String())
	}
	bit := func(b bool, v byte) byte {
		if b {
			return v
		}
		return 0
	}
	b0 := sel(c.reqMode) | sel(c.respMode)<<3 | bit(!c.protocolConfig, 0x40) | bit(c.observability, 0x80)
	act := byte(0)
	for i, a := range fzActs {
		if a == c.act {
			act = byte(i)
			break
		}
	}
	b1 := act | bit(c.contentLength, 0x08) | bit(c.withoutWaiting, 0x10) | bit(c.noOverride, 0x20) | bit(c.noise, 0x40) |
		bit(c.reqMode == fzUnknownMode || c.respMode == fzUnknownMode, 0x80)
	data := []byte{b0, b1}
	for _, op := range c.ops {
		k := 0
		for k < len(fzKinds) && fzKinds[k] != op.kind {
			k++
		}
		arg := bit(op.eos, 1)
		if op.size == fzBigBody {
			arg |= 0xfe
		} else {
			arg |= byte(op.size&0x3f) << 1
		}
		data = append(data, byte(k), arg)
	}
	if c.chain && len(data) > 2 {
		data[2] |= 0x80
	}
	return data
}

// Seed shorthands.
func fzH(req, eos bool) fzOp {
	if req {
		return fzOp{kind: fzReqHeaders, eos: eos}
	}
	return fzOp{kind: fzRespHeaders, eos: eos}
}

func fzB(req bool, size int, eos bool) fzOp {
	if req {
		return fzOp{kind: fzReqBody, size: size, eos: eos}
	}
	return fzOp{kind: fzRespBody, size: size, eos: eos}
}

func fzT(req bool) fzOp {
	if req {
		return fzOp{kind: fzReqTrailers}
	}
	return fzOp{kind: fzRespTrailers}
}

const fzReq, fzResp = true, false

var fzSeeds = []fzCase{
	// A GET: headers only, both ways.
	{reqMode: none, respMode: none, protocolConfig: true, act: "p",
		ops: []fzOp{fzH(fzReq, true), fzH(fzResp, true)}},
	// BUFFERED bodies, replaced by the plugin (content-length fixed).
	{reqMode: buffered, respMode: buffered, protocolConfig: true, act: "b", contentLength: true,
		ops: []fzOp{fzH(fzReq, false), fzB(fzReq, 5, true), fzH(fzResp, false), fzB(fzResp, 5, true)}},
	// STREAMED bodies, the response paused until its end.
	{reqMode: streamed, respMode: streamed, protocolConfig: true, act: "r",
		ops: []fzOp{fzH(fzReq, false), fzB(fzReq, 3, false), fzB(fzReq, 0, false), fzB(fzReq, 4, true),
			fzH(fzResp, false), fzB(fzResp, 7, false), fzB(fzResp, 2, true)}},
	// FULL_DUPLEX_STREAMED with held bytes flushed before trailers, a
	// repeated end of stream and a body larger than one answer.
	{reqMode: fullDuplex, respMode: fullDuplex, protocolConfig: true, act: "b",
		ops: []fzOp{fzH(fzReq, false), fzB(fzReq, 9, false), fzB(fzReq, 1, true), fzB(fzReq, 1, true),
			fzH(fzResp, false), fzB(fzResp, fzBigBody, false), fzB(fzResp, 2, false), fzT(fzResp)}},
	// Body before headers (header mode SKIP), then a body-first response
	// in BUFFERED mode.
	{reqMode: streamed, respMode: buffered, protocolConfig: true,
		ops: []fzOp{fzB(fzReq, 1, true), fzB(fzResp, 5, true)}},
	// Headers twice.
	{reqMode: none, respMode: none, protocolConfig: true, noOverride: true,
		ops: []fzOp{fzH(fzReq, false), fzH(fzReq, false)}},
	// Trailers after an end_of_stream body.
	{reqMode: streamed, respMode: none, protocolConfig: true,
		ops: []fzOp{fzH(fzReq, false), fzB(fzReq, 1, true), fzT(fzReq)}},
	// An empty message after a good start.
	{reqMode: buffered, respMode: none, protocolConfig: true,
		ops: []fzOp{fzH(fzReq, false), {kind: fzEmpty}}},
	// An unsupported body mode.
	{reqMode: fzUnknownMode, respMode: none, protocolConfig: true, ops: []fzOp{fzH(fzReq, false)}},
	// The plugin closes the stream; the illegal messages after it are
	// never read.
	{reqMode: none, respMode: none, protocolConfig: true, act: "c",
		ops: []fzOp{fzH(fzReq, false), fzH(fzReq, false), {kind: fzEmpty}}},
	// NONE bodies accepted after mode_override asked for BUFFERED, with
	// BUFFERED_PARTIAL-like trailers after the one body message.
	{reqMode: none, respMode: none, protocolConfig: true, act: "b",
		ops: []fzOp{fzH(fzReq, false), fzB(fzReq, 4, false), fzT(fzReq), fzH(fzResp, false), fzB(fzResp, 2, true)}},
	// BUFFERED_PARTIAL: one message, then trailers.
	{reqMode: partial, respMode: partial, protocolConfig: true, act: "b", noOverride: true,
		ops: []fzOp{fzH(fzReq, false), fzB(fzReq, 8, false), fzT(fzReq), fzH(fzResp, false), fzB(fzResp, 3, false), fzB(fzResp, 3, false)}},
	// Envoy before 1.35 (no protocol_config), noise on later messages.
	{noise: true, act: "b",
		ops: []fzOp{fzH(fzReq, false), fzB(fzReq, 2, false), fzB(fzReq, 2, true), fzH(fzResp, false), fzB(fzResp, 1, false), fzT(fzResp)}},
	// Observability mode: nothing is answered.
	{reqMode: streamed, respMode: streamed, protocolConfig: true, observability: true, act: "b",
		ops: []fzOp{fzH(fzReq, false), fzB(fzReq, 2, false), fzT(fzReq), fzH(fzResp, false), fzB(fzResp, 1, false), fzT(fzResp)}},
	// STREAMED body held by the plugin until trailers: undeliverable.
	{reqMode: streamed, respMode: none, protocolConfig: true, act: "b",
		ops: []fzOp{fzH(fzReq, false), fzB(fzReq, 3, false), fzT(fzReq)}},
	// Half-close mid-body, and cancel mid-body.
	{reqMode: streamed, respMode: none, protocolConfig: true, withoutWaiting: true,
		ops: []fzOp{fzH(fzReq, false), fzB(fzReq, 3, false), {kind: fzCloseSend}, fzB(fzReq, 3, true)}},
	{reqMode: buffered, respMode: streamed, protocolConfig: true, act: "f",
		ops: []fzOp{fzH(fzReq, false), {kind: fzCancel}, fzB(fzReq, 3, true)}},
}

// message builds the ProcessingRequest for op; first is the stream's first
// message, which carries the stream's configuration.
func (c *fzCase) message(op fzOp, first bool) *extprocv3.ProcessingRequest {
	var m *extprocv3.ProcessingRequest
	switch op.kind {
	case fzReqHeaders:
		kv := []string{":method", "POST", ":path", "/fuzz", ":authority", "example.com", ":scheme", "https"}
		if c.act != "" {
			kv = append(kv, "x-act", c.act)
		}
		if c.contentLength {
			kv = append(kv, "content-length", "5")
		}
		m = reqHeaders(op.eos, kv...)
	case fzRespHeaders:
		kv := []string{":status", "200"}
		if c.contentLength {
			kv = append(kv, "content-length", "5")
		}
		m = reqHeaders(op.eos, kv...)
		m.Request = &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: m.GetRequestHeaders()}
	case fzReqBody, fzRespBody:
		m = reqBody(strings.Repeat("abcdefgh", op.size/8+1)[:op.size], op.eos)
		if op.kind == fzRespBody {
			m.Request = &extprocv3.ProcessingRequest_ResponseBody{ResponseBody: m.GetRequestBody()}
		}
	case fzReqTrailers, fzRespTrailers:
		m = reqTrailers()
		if op.kind == fzRespTrailers {
			m.Request = &extprocv3.ProcessingRequest_ResponseTrailers{ResponseTrailers: m.GetRequestTrailers()}
		}
	default:
		m = &extprocv3.ProcessingRequest{}
	}
	switch {
	case first:
		m.ObservabilityMode = c.observability
		if c.protocolConfig {
			withConfig(m, c.reqMode, c.respMode).ProtocolConfig.SendBodyWithoutWaitingForHeaderResponse = c.withoutWaiting
		}
	case c.noise:
		// Only the first message configures the stream.
		withConfig(m, filterv3.ProcessingMode_GRPC, fzUnknownMode)
		m.ObservabilityMode = !c.observability
	}
	return m
}

// fzRun is what one stream did.
type fzRun struct {
	sent      []fzOp // messages sent (or attempted), in order
	cancelled bool
	answers   []*extprocv3.ProcessingResponse
	end       error // what Recv returned last
}

// play sends c's messages on one stream while reading the answers, then
// half-closes (or cancels) and reads until the server ends the stream.
func (c *fzCase) play(t *testing.T, h *harness) *fzRun {
	ctx, cancel := context.WithTimeout(context.Background(), fzStreamTimeout)
	defer cancel()
	sctx, scancel := context.WithCancel(ctx)
	defer scancel()
	st, err := extprocv3.NewExternalProcessorClient(h.conn).Process(sctx)
	if err != nil {
		t.Fatalf("opening the stream: %v", err)
	}
	r := &fzRun{}
	var answers []*extprocv3.ProcessingResponse
	var end error
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			a, err := st.Recv()
			if err != nil {
				end = err
				return
			}
			answers = append(answers, a)
		}
	}()
send:
	for _, op := range c.ops {
		switch op.kind {
		case fzCloseSend:
			break send
		case fzCancel:
			scancel()
			r.cancelled = true
			break send
		}
		m := c.message(op, len(r.sent) == 0)
		r.sent = append(r.sent, op)
		if err := st.Send(m); err != nil {
			break // the server ended the stream; Recv says how
		}
	}
	if !r.cancelled {
		st.CloseSend()
	}
	select {
	case <-done:
	case <-time.After(2 * fzStreamTimeout):
		t.Fatal("Recv did not return after the stream's deadline")
	}
	r.answers, r.end = answers, end
	if status.Code(end) == codes.DeadlineExceeded {
		t.Fatalf("stream hung: no end within %v (sent %v, %d answers)", fzStreamTimeout, r.sent, len(answers))
	}
	return r
}

// fzDir is fzModel's view of one direction.
type fzDir struct {
	mode     filterv3.ProcessingMode_BodySendMode
	known    bool // from protocol_config
	override bool // NONE, but the server asked for BUFFERED in mode_override

	headers, headersEOS, trailers, bodyEOS, ended bool
	bodies, bodyBytes                             int // body messages accepted (repeated ends excluded)
	// skipped: a body or trailers came first (header mode SKIP); the
	// server runs the plugin's headers callback and answers nothing.
	skipped bool
}

// effective is the body mode bodies are handled in; known is false
// without protocol_config (bodies are then taken as they come).
func (d *fzDir) effective() (filterv3.ProcessingMode_BodySendMode, bool) {
	if d.known && d.mode == none && d.override {
		return buffered, true
	}
	return d.mode, d.known
}

func (d *fzDir) fullDuplex() bool {
	m, known := d.effective()
	return known && m == fullDuplex
}

// fzModel is the outcome the protocol predicts for the messages sent.
type fzModel struct {
	code     codes.Code // OK: every message is legal
	at       int        // the index of the message rejected (code != OK)
	finished bool       // the plugin ended the stream (x-act c)
	dirs     [2]fzDir   // what was accepted, by direction (0 request)
}

// model walks the messages sent as the server validates them: the first
// message configures the stream; per direction headers come first and
// once, then (unless headers ended it) bodies as the body mode allows
// (none in NONE, one in BUFFERED and BUFFERED_PARTIAL, any number
// otherwise; a repeated end of stream is ignored in FULL_DUPLEX_STREAMED,
// envoyproxy/envoy#46237), then trailers once, unless a body ended it.
// ovDir/ov is the mode_override the client saw on a headers answer: it
// applies from that headers message on. x-act c makes the plugin end the
// stream at the request headers: later messages are never read.
func (c *fzCase) model(sent []fzOp, ovDir int, ov *filterv3.ProcessingMode) fzModel {
	var fm fzModel
	reject := func(i int, code codes.Code) fzModel {
		fm.code, fm.at = code, i
		return fm
	}
	for i, op := range sent {
		if i == 0 && c.protocolConfig {
			for dir, m := range []filterv3.ProcessingMode_BodySendMode{c.reqMode, c.respMode} {
				switch m {
				case none, streamed, buffered, partial, fullDuplex:
				default:
					return reject(i, codes.Unimplemented)
				}
				fm.dirs[dir].mode, fm.dirs[dir].known = m, true
			}
		}
		dir := 0
		switch op.kind {
		case fzRespHeaders, fzRespBody, fzRespTrailers:
			dir = 1
		case fzEmpty:
			return reject(i, codes.InvalidArgument)
		}
		d := &fm.dirs[dir]
		switch op.kind {
		case fzReqHeaders, fzRespHeaders:
			if d.headers {
				return reject(i, codes.FailedPrecondition)
			}
			d.headers = true
			d.headersEOS, d.ended = op.eos, op.eos
			if dir == 0 && c.act == "c" {
				fm.finished = true
				return fm
			}
			if ov != nil && ovDir == dir {
				for x, m := range []filterv3.ProcessingMode_BodySendMode{ov.RequestBodyMode, ov.ResponseBodyMode} {
					if dx := &fm.dirs[x]; dx.known && dx.mode == none && m == buffered {
						dx.override = true
					}
				}
			}
		case fzReqBody, fzRespBody:
			if !d.headers {
				d.headers, d.skipped = true, true
			}
			if d.ended {
				if d.bodyEOS && op.eos && d.fullDuplex() {
					continue
				}
				return reject(i, codes.FailedPrecondition)
			}
			if m, known := d.effective(); known {
				switch {
				case m == none:
					return reject(i, codes.FailedPrecondition)
				case (m == buffered || m == partial) && d.bodies > 0:
					return reject(i, codes.FailedPrecondition)
				}
			}
			d.bodies++
			d.bodyBytes += op.size
			d.bodyEOS, d.ended = op.eos, op.eos
		case fzReqTrailers, fzRespTrailers:
			if !d.headers {
				d.headers, d.skipped = true, true
			}
			if d.trailers || d.ended {
				return reject(i, codes.FailedPrecondition)
			}
			d.trailers, d.ended = true, true
		}
	}
	return fm
}

// fzProtocolCodes are the codes a stream may end with for a malformed
// stream: the server's InvalidArgument, FailedPrecondition and
// Unimplemented, and gRPC's ResourceExhausted for a message over its limit.
var fzProtocolCodes = map[codes.Code]bool{
	codes.InvalidArgument: true, codes.FailedPrecondition: true, codes.Unimplemented: true, codes.ResourceExhausted: true,
}

// check holds one stream against the protocol and the model.
func (c *fzCase) check(t *testing.T, r *fzRun) {
	t.Helper()

	// The stream's end.
	code, msg := codes.OK, ""
	if r.end != nil && !errors.Is(r.end, io.EOF) {
		s := status.Convert(r.end)
		code, msg = s.Code(), s.Message()
	}
	switch {
	case code == codes.OK:
	case code == codes.Internal:
		t.Fatalf("stream ended with Internal (a recovered server panic?): %q", msg)
	case code == codes.Canceled && r.cancelled:
	case !fzProtocolCodes[code]:
		t.Fatalf("stream ended with %v %q, not a protocol status", code, msg)
	case msg == "":
		t.Errorf("stream ended with %v and no message", code)
	}

	// The mode_override seen, which the model needs.
	ovDir, ov := -1, (*filterv3.ProcessingMode)(nil)
	for _, a := range r.answers {
		if a.ModeOverride == nil {
			continue
		}
		switch a.Response.(type) {
		case *extprocv3.ProcessingResponse_RequestHeaders:
			ovDir = 0
		case *extprocv3.ProcessingResponse_ResponseHeaders:
			ovDir = 1
		}
		ov = a.ModeOverride
		break
	}
	fm := c.model(r.sent, ovDir, ov)
	t.Logf("modes %v/%v config %v obs %v act %q: sent %d, cancelled %v; %d answers %s; ended %v %q; model %v at %d finished %v",
		c.reqMode, c.respMode, c.protocolConfig, c.observability, c.act, len(r.sent), r.cancelled,
		len(r.answers), fzKindsOf(r.answers), code, msg, fm.code, fm.at, fm.finished)

	// Each answer in order.
	var (
		eosAnswered                 [2]bool
		headersAnswered, trAnswered [2]bool
		bodyAnswers                 [2]int
		overrides                   int
		sawImmediate                bool
	)
	for i, a := range r.answers {
		where := func() string { return fmt.Sprintf(" (answer %d of %d)", i, len(r.answers)) }
		if c.observability {
			t.Errorf("answer %T in observability mode%s", a.Response, where())
		}
		if sawImmediate {
			t.Errorf("answer %T after the immediate response%s", a.Response, where())
		}
		if a.OverrideMessageTimeout != nil {
			t.Errorf("override_message_timeout sent without MaxMessageTimeout%s", where())
		}
		if a.ModeOverride != nil {
			overrides++
			c.checkOverride(t, a, overrides)
		}
		switch x := a.Response.(type) {
		case *extprocv3.ProcessingResponse_RequestHeaders, *extprocv3.ProcessingResponse_ResponseHeaders:
			dir := fzAnswerDir(a)
			if headersAnswered[dir] {
				t.Errorf("%s headers answered twice%s", fzDirName[dir], where())
			}
			headersAnswered[dir] = true
			if !fm.dirs[dir].headers {
				t.Errorf("%s headers answered but never accepted%s", fzDirName[dir], where())
			}
			if fm.dirs[dir].skipped {
				t.Errorf("%s headers answered, but Envoy sent none (header mode SKIP)%s", fzDirName[dir], where())
			}
		case *extprocv3.ProcessingResponse_RequestBody, *extprocv3.ProcessingResponse_ResponseBody:
			dir := fzAnswerDir(a)
			d := &fm.dirs[dir]
			var br *extprocv3.BodyResponse
			if dir == 0 {
				br = a.GetRequestBody()
			} else {
				br = a.GetResponseBody()
			}
			switch {
			case !headersAnswered[dir] && !d.skipped:
				t.Errorf("%s body answered before its headers%s", fzDirName[dir], where())
			case trAnswered[dir]:
				t.Errorf("%s body answered after its trailers%s", fzDirName[dir], where())
			case eosAnswered[dir]:
				t.Errorf("%s body answered after its end_of_stream%s", fzDirName[dir], where())
			}
			bm := br.GetResponse().GetBodyMutation()
			hm := br.GetResponse().GetHeaderMutation()
			if d.fullDuplex() {
				// Envoy takes only streamed_response in this mode, and has
				// forwarded the headers.
				sr := bm.GetStreamedResponse()
				switch {
				case sr == nil:
					t.Errorf("FULL_DUPLEX_STREAMED %s body answer without streamed_response: %v%s", fzDirName[dir], br, where())
				case len(sr.GetBody()) > maxStreamedChunk:
					t.Errorf("FULL_DUPLEX_STREAMED %s body answer of %d bytes%s", fzDirName[dir], len(sr.GetBody()), where())
				case sr.GetEndOfStream():
					eosAnswered[dir] = true
					if !d.bodyEOS {
						t.Errorf("%s body answered with end_of_stream that was never sent%s", fzDirName[dir], where())
					}
				}
				if hm != nil {
					t.Errorf("header mutation in a FULL_DUPLEX_STREAMED %s body answer%s", fzDirName[dir], where())
				}
			} else {
				if bm.GetStreamedResponse() != nil {
					t.Errorf("streamed_response in a %v %s body answer%s", d.mode, fzDirName[dir], where())
				}
				// Envoy still holds the headers only until the first body
				// answer, and only when it buffers.
				if m, known := d.effective(); hm != nil && (bodyAnswers[dir] > 0 || known && m == streamed) {
					t.Errorf("header mutation in %s body answer %d (mode %v)%s", fzDirName[dir], bodyAnswers[dir], m, where())
				}
			}
			bodyAnswers[dir]++
		case *extprocv3.ProcessingResponse_RequestTrailers, *extprocv3.ProcessingResponse_ResponseTrailers:
			dir := fzAnswerDir(a)
			switch {
			case trAnswered[dir]:
				t.Errorf("%s trailers answered twice%s", fzDirName[dir], where())
			case !headersAnswered[dir] && !fm.dirs[dir].skipped:
				t.Errorf("%s trailers answered before its headers%s", fzDirName[dir], where())
			case !fm.dirs[dir].trailers:
				t.Errorf("%s trailers answered but never accepted%s", fzDirName[dir], where())
			}
			trAnswered[dir] = true
		case *extprocv3.ProcessingResponse_ImmediateResponse:
			sawImmediate = true
			if sc := x.ImmediateResponse.GetStatus().GetCode(); sc < 200 || sc > 599 {
				t.Errorf("immediate response with HTTP status %d%s", sc, where())
			}
		default:
			t.Errorf("answer sets no response: %v%s", a, where())
		}
	}

	// Never more body answers than bodies accepted, except in
	// FULL_DUPLEX_STREAMED, where each message's output goes in chunks of
	// at most maxStreamedChunk (none for an empty non-final one) and one
	// more answer may flush held bytes before the trailers; the edge plugin
	// outputs at most the input plus its 8-byte "replaced".
	for dir := range fm.dirs {
		d := &fm.dirs[dir]
		limit := d.bodies
		if d.fullDuplex() {
			limit = d.bodies + (d.bodyBytes+8)/maxStreamedChunk + 1
		}
		if bodyAnswers[dir] > limit {
			t.Errorf("%d %s body answers for %d body messages (limit %d)", bodyAnswers[dir], fzDirName[dir], d.bodies, limit)
		}
	}

	if r.cancelled {
		return // the end is ours; what was answered is a prefix
	}

	// The end the model predicts. An immediate response ends the stream
	// cleanly wherever it came (the plugin, or bytes it held that STREAMED
	// mode cannot deliver).
	want := fm.code
	if sawImmediate {
		want = codes.OK
	}
	if code != want {
		at := ""
		if fm.code != codes.OK {
			at = fmt.Sprintf(", the model rejects message %d", fm.at)
		}
		t.Fatalf("stream ended with %v %q, want %v%s\nsent %+v\n%d answers", code, msg, want, at, r.sent, len(r.answers))
	}

	// Every accepted message answered: the edge plugin never withholds an
	// answer, and the server processes messages in order, so even a
	// rejected stream answered what came before.
	if c.observability || sawImmediate || fm.finished {
		return
	}
	for dir := range fm.dirs {
		d := &fm.dirs[dir]
		if headersAnswered[dir] != (d.headers && !d.skipped) {
			t.Errorf("%s headers: accepted %v, answered %v", fzDirName[dir], d.headers, headersAnswered[dir])
		}
		if trAnswered[dir] != d.trailers {
			t.Errorf("%s trailers: accepted %v, answered %v", fzDirName[dir], d.trailers, trAnswered[dir])
		}
		if d.fullDuplex() {
			if eosAnswered[dir] != d.bodyEOS {
				t.Errorf("FULL_DUPLEX_STREAMED %s end_of_stream: sent %v, answered %v", fzDirName[dir], d.bodyEOS, eosAnswered[dir])
			}
		} else if bodyAnswers[dir] != d.bodies {
			t.Errorf("%s: %d body messages accepted, %d answered", fzDirName[dir], d.bodies, bodyAnswers[dir])
		}
	}
}

// checkOverride: mode_override goes once, on a headers answer, only where
// Envoy can honour it (protocol_config said the modes, not observability,
// no FULL_DUPLEX_STREAMED, no send_body_without_waiting, not disabled),
// and only turns NONE into BUFFERED; header and trailer modes stay DEFAULT.
func (c *fzCase) checkOverride(t *testing.T, a *extprocv3.ProcessingResponse, n int) {
	t.Helper()
	ov := a.ModeOverride
	switch {
	case n > 1:
		t.Errorf("mode_override sent %d times", n)
	case a.GetRequestHeaders() == nil && a.GetResponseHeaders() == nil:
		t.Errorf("mode_override on a %T answer", a.Response)
	case c.noOverride || !c.protocolConfig || c.observability || c.withoutWaiting ||
		c.reqMode == fullDuplex || c.respMode == fullDuplex:
		t.Errorf("mode_override %v sent, but Envoy cannot take it here (case %+v)", ov, *c)
	}
	for _, x := range []struct {
		configured, got filterv3.ProcessingMode_BodySendMode
	}{
		{c.reqMode, ov.RequestBodyMode}, {c.respMode, ov.ResponseBodyMode},
	} {
		if x.got != x.configured && !(x.configured == none && x.got == buffered) {
			t.Errorf("mode_override body mode %v for a direction configured %v", x.got, x.configured)
		}
	}
	if ov.RequestHeaderMode != headerDflt || ov.ResponseHeaderMode != headerDflt ||
		ov.RequestTrailerMode != headerDflt || ov.ResponseTrailerMode != headerDflt {
		t.Errorf("mode_override changes header or trailer modes: %v", ov)
	}
}

var fzDirName = [2]string{"request", "response"}

func fzAnswerDir(a *extprocv3.ProcessingResponse) int {
	switch a.Response.(type) {
	case *extprocv3.ProcessingResponse_ResponseHeaders, *extprocv3.ProcessingResponse_ResponseBody,
		*extprocv3.ProcessingResponse_ResponseTrailers:
		return 1
	}
	return 0
}

// fzKindsOf summarises answers for logs.
func fzKindsOf(answers []*extprocv3.ProcessingResponse) string {
	var b strings.Builder
	for _, a := range answers {
		name := fmt.Sprintf("%T", a.Response)
		name = name[strings.LastIndex(name, "_")+1:]
		if a.ModeOverride != nil {
			name += "+override"
		}
		b.WriteString(" " + name)
	}
	return "[" + strings.TrimSpace(b.String()) + "]"
}
