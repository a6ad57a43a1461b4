package server

// This file holds the GRPC body mode of proxyless gRPC clients (gRFC A93,
// grpc-go's xDS ext_proc filter): each body message is one deframed gRPC
// message. A plugin in Envoy sees a gRPC body as HTTP/2 data, the messages
// length-prefixed, so the server hands it exactly that and splits what the
// plugin leaves back into messages. Answers are M:N, as in
// FULL_DUPLEX_STREAMED: one streamed_response per message.

import (
	"encoding/binary"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/wasm-callout/wasm-callout/abi"
)

// grpcFrameHeader is a gRPC message's prefix on the wire: a compressed
// flag byte and the length as a big-endian u32.
const grpcFrameHeader = 5

// grpcIn frames one received message as the plugin sees it on the wire,
// and counts its bytes against the client's flow-control window. A
// half-close without a message is no bytes.
func (st *stream) grpcIn(d *direction, b *extprocv3.HttpBody) []byte {
	if b.GetEndOfStreamWithoutMessage() {
		return nil
	}
	msg := b.GetBody()
	d.unconsumed += int64(len(msg))
	out := make([]byte, grpcFrameHeader+len(msg))
	if b.GetGrpcMessageCompressed() {
		out[0] = 1
	}
	binary.BigEndian.PutUint32(out[1:grpcFrameHeader], uint32(len(msg)))
	copy(out[grpcFrameHeader:], msg)
	return out
}

// sendGRPC answers GRPC-mode body data: out must be whole framed messages;
// each goes back in a streamed_response of its own. eos echoes the
// request's half-close (end_of_stream with end_of_stream_without_message);
// a response body never ends the stream (its trailers do).
func (st *stream) sendGRPC(d *direction, out []byte, eos bool) error {
	msgs, err := splitGRPC(out)
	if err != nil {
		st.log.Warn("plugin left a gRPC body that is not whole messages; failing the stream", "direction", d.name, "err", err)
		return status.Errorf(codes.Internal, "wasm-callout: the plugin left the %s body as %v", d.name, err)
	}
	eos = eos && d.typ == abi.StreamHTTPRequest
	for _, m := range msgs {
		if err := st.sendBody(d, &extprocv3.StreamedBodyResponse{Body: m.body, GrpcMessageCompressed: m.compressed}); err != nil {
			return err
		}
	}
	if eos {
		return st.sendBody(d, &extprocv3.StreamedBodyResponse{EndOfStream: true, EndOfStreamWithoutMessage: true})
	}
	return nil
}

func (st *stream) sendBody(d *direction, sr *extprocv3.StreamedBodyResponse) error {
	br := &extprocv3.BodyResponse{Response: &extprocv3.CommonResponse{BodyMutation: &extprocv3.BodyMutation{
		Mutation: &extprocv3.BodyMutation_StreamedResponse{StreamedResponse: sr}}}}
	resp := &extprocv3.ProcessingResponse{}
	if d.typ == abi.StreamHTTPRequest {
		resp.Response = &extprocv3.ProcessingResponse_RequestBody{RequestBody: br}
	} else {
		resp.Response = &extprocv3.ProcessingResponse_ResponseBody{ResponseBody: br}
	}
	return st.sendWindowed(d, resp, int64(len(sr.GetBody())))
}

// The client's window: what the server may send it in one direction.
// A gRPC client that sent flow_control_init gives the server a window per
// direction and returns bytes with client_window_update as it consumes
// them; as the client does with its own, a body is sent while the window is
// positive (it may go below zero) and waits otherwise. What waits stays in
// order: a direction's trailers answer waits behind its bodies.

// windowed is an answer waiting for the client's window: n body bytes
// (0 for anything but a body).
type windowed struct {
	resp *extprocv3.ProcessingResponse
	n    int64
}

// sendWindowed sends resp, which carries n body bytes of direction d, or
// queues it until the client's window allows.
func (st *stream) sendWindowed(d *direction, resp *extprocv3.ProcessingResponse, n int64) error {
	if !d.windowed {
		return st.send(resp)
	}
	if len(d.outq) > 0 || n > 0 && d.window <= 0 {
		d.outq = append(d.outq, windowed{resp, n})
		return nil
	}
	d.window -= n
	return st.send(resp)
}

// setWindows starts the client's windows from its flow_control_init; a
// direction without one (zero) is not limited.
func (st *stream) setWindows(fc *extprocv3.ProcessingRequest_FlowControlInit) {
	for _, x := range []struct {
		d *direction
		w int64
	}{
		{st.dirs[abi.StreamHTTPRequest], fc.GetInitialWindowSidestreamToUpstream()},
		{st.dirs[abi.StreamHTTPResponse], fc.GetInitialWindowSidestreamToDownstream()},
	} {
		x.d.window, x.d.windowed = x.w, x.w > 0
	}
}

// windowUpdate adds the client's returned bytes and sends what waited for
// them.
func (st *stream) windowUpdate(u *extprocv3.ProcessingRequest_ClientWindowUpdate) error {
	st.dirs[abi.StreamHTTPRequest].window += u.GetWindowIncrementSidestreamToUpstream()
	st.dirs[abi.StreamHTTPResponse].window += u.GetWindowIncrementSidestreamToDownstream()
	for _, d := range st.dirs {
		for len(d.outq) > 0 && (d.outq[0].n == 0 || d.window > 0) {
			q := d.outq[0]
			d.outq[0] = windowed{}
			d.outq = d.outq[1:]
			d.window -= q.n
			if err := st.send(q.resp); err != nil {
				return err
			}
		}
	}
	return nil
}

// flushWindowed sends everything that waits for the client's window: a
// client that has half-closed the stream can return no more, and would
// otherwise wait for answers that wait for it.
func (st *stream) flushWindowed() error {
	for _, d := range st.dirs {
		d.windowed = false
		for _, q := range d.outq {
			if err := st.send(q.resp); err != nil {
				return err
			}
		}
		d.outq = nil
	}
	return nil
}

// outqBytes is the body bytes waiting for the client's window.
func (d *direction) outqBytes() int64 {
	var n int64
	for _, q := range d.outq {
		n += q.n
	}
	return n
}

// grantWindow returns to a client that sent flow_control_init the window
// of the body bytes received in direction d, as soon as the plugin has
// seen them: a plugin that holds messages until the end of the stream (as
// a buffering plugin does in Envoy) must get them all, and the client
// stops sending when its window is used up. What a stream may hold is
// bounded by --max-stream-buffer instead, as for Envoy's bodies.
func (st *stream) grantWindow(d *direction) error {
	if !st.flow || d.unconsumed == 0 {
		return nil
	}
	w := &extprocv3.ProcessingResponse_ServerWindowUpdate{}
	if d.typ == abi.StreamHTTPRequest {
		w.WindowIncrementDownstreamToSidestream = d.unconsumed
	} else {
		w.WindowIncrementUpstreamToSidestream = d.unconsumed
	}
	d.unconsumed = 0
	return st.send(&extprocv3.ProcessingResponse{ServerWindowUpdate: w})
}

type grpcMessage struct {
	body       []byte
	compressed bool
}

// splitGRPC splits wire-framed gRPC data into its messages. It fails on a
// partial message or an unknown flag byte.
func splitGRPC(b []byte) ([]grpcMessage, error) {
	var msgs []grpcMessage
	for len(b) > 0 {
		if len(b) < grpcFrameHeader {
			return nil, errFraming("a truncated message prefix")
		}
		if b[0] > 1 {
			return nil, errFraming("a message prefix with an unknown flag")
		}
		n := binary.BigEndian.Uint32(b[1:grpcFrameHeader])
		if uint64(n) > uint64(len(b)-grpcFrameHeader) {
			return nil, errFraming("a message shorter than its prefix says")
		}
		msgs = append(msgs, grpcMessage{body: b[grpcFrameHeader : grpcFrameHeader+int(n)], compressed: b[0] == 1})
		b = b[grpcFrameHeader+int(n):]
	}
	return msgs, nil
}

type errFraming string

func (e errFraming) Error() string { return string(e) }
