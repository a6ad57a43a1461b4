package envoytest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"sync"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Emulator plays HTTP exchanges through an emulated Envoy ext_proc filter
// against one ExternalProcessor server. It is safe for concurrent use: every
// Do opens its own side stream, as Envoy does per HTTP request.
type Emulator struct {
	client extprocv3.ExternalProcessorClient
	cfg    *compiledConfig
}

// New returns an Emulator that talks to the server behind conn with the given
// filter configuration. It fails on configurations Envoy would reject or the
// emulator cannot emulate.
func New(conn grpc.ClientConnInterface, cfg Config) (*Emulator, error) {
	if conn == nil {
		return nil, errors.New("envoytest: nil connection")
	}
	cc, err := cfg.compile()
	if err != nil {
		return nil, err
	}
	return &Emulator{client: extprocv3.NewExternalProcessorClient(conn), cfg: cc}, nil
}

// Do is New followed by Emulator.Do, for one-off exchanges.
func Do(ctx context.Context, conn grpc.ClientConnInterface, cfg Config, req *Request) (*Result, error) {
	e, err := New(conn, cfg)
	if err != nil {
		return nil, err
	}
	return e.Do(ctx, req)
}

// ErrStalled is returned (wrapped) by Do when the emulated Envoy would wait
// forever: nothing is outstanding on the side stream, no timer runs and the
// exchange is not finished. It indicates a bug in the emulator, or an Envoy
// behaviour that would hang the request until Envoy's stream idle timeout.
var ErrStalled = errors.New("envoytest: exchange stalled")

// Do plays req through the emulated filter and returns what Envoy would have
// forwarded upstream and sent downstream. Protocol failures of the server
// (spurious messages, timeouts, errors) are part of the Result, not errors;
// Do returns an error only for invalid requests, when ctx ends first (with
// the partial Result), or when the exchange stalls (ErrStalled, with the
// partial Result).
func (e *Emulator) Do(ctx context.Context, req *Request) (*Result, error) {
	if req == nil {
		return nil, errors.New("envoytest: nil request")
	}
	if len(req.Headers) == 0 {
		return nil, errors.New("envoytest: request without headers")
	}
	resp := req.Response
	if resp == nil {
		resp = &Response{Headers: H(":status", "200")}
	}
	if !resp.Headers.Has(":status") {
		return nil, errors.New("envoytest: upstream response without :status")
	}
	x := newExchange(ctx, e, req, resp)
	defer x.shutdown()
	err := x.run()
	x.res.Stats = x.stats
	return x.res, err
}

// Dial connects to an ext_proc server at addr (plaintext, like a cluster
// without transport_socket) with message size limits large enough for
// BUFFERED bodies.
func Dial(addr string, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	all := append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(math.MaxInt32), grpc.MaxCallSendMsgSize(math.MaxInt32)),
	}, opts...)
	return grpc.NewClient(addr, all...)
}

type eventKind int

const (
	evMessage eventKind = iota
	evStreamEnd
	evTimer
	evDeferredClose
)

type event struct {
	kind eventKind
	resp *extprocv3.ProcessingResponse
	err  error
	dir  *dirState
	gen  uint64
}

// sideStream is the Process stream plus the goroutines that feed it.
type sideStream struct {
	st     extprocv3.ExternalProcessor_ProcessClient
	cancel context.CancelFunc
	ctx    context.Context

	mu    sync.Mutex
	queue []*extprocv3.ProcessingRequest
	wake  chan struct{}
}

func (s *sideStream) enqueue(r *extprocv3.ProcessingRequest) {
	s.mu.Lock()
	s.queue = append(s.queue, r)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// sendLoop sends queued messages in order without ever blocking the
// exchange loop (Envoy's sends are asynchronous too).
func (s *sideStream) sendLoop() {
	for {
		s.mu.Lock()
		q := s.queue
		s.queue = nil
		s.mu.Unlock()
		for _, r := range q {
			if err := s.st.Send(r); err != nil {
				// The stream is gone; Recv reports why.
				return
			}
		}
		select {
		case <-s.wake:
		case <-s.ctx.Done():
			return
		}
	}
}

// exchange is one HTTP request through the filter: Envoy's Filter object.
type exchange struct {
	e    *Emulator
	cfg  *compiledConfig
	ctx  context.Context
	req  *Request
	resp *Response

	events chan event
	done   chan struct{}
	wg     sync.WaitGroup

	stream       *sideStream
	streamClosed bool

	processingComplete bool
	protocolConfigSent bool
	sentImmediate      bool
	upstreamStarted    bool
	finished           bool
	deferredClosing    bool

	dec, enc *dirState

	res   *Result
	stats Stats
}

func newExchange(ctx context.Context, e *Emulator, req *Request, resp *Response) *exchange {
	x := &exchange{
		e: e, cfg: e.cfg, ctx: ctx, req: req, resp: resp,
		events: make(chan event, 16),
		done:   make(chan struct{}),
		res:    &Result{},
	}
	x.dec = newDirState(x, true, &x.res.Request)
	x.enc = newDirState(x, false, &x.res.Response)
	return x
}

// post hands an event to the exchange loop unless the exchange is over.
func (x *exchange) post(ev event) {
	select {
	case x.events <- ev:
	case <-x.done:
	}
}

func (x *exchange) shutdown() {
	x.dec.stopTimer()
	x.enc.stopTimer()
	if x.stream != nil {
		x.stream.cancel()
	}
	close(x.done)
	x.wg.Wait()
}

func (x *exchange) run() error {
	x.dec.start(x.req.Headers, x.req.Body, x.req.Trailers)
	x.pump()
	for !x.finished {
		if !x.waiting() {
			return fmt.Errorf("%w: %s", ErrStalled, x.describe())
		}
		if err := x.next(); err != nil {
			return err
		}
		x.pump()
	}
	// Filter::onDestroy.
	x.dec.stopTimer()
	x.enc.stopTimer()
	x.processingComplete = true
	if x.cfg.ObservabilityMode && x.stream != nil && !x.streamClosed {
		// Deferred close: the stream stays open for deferred_close_timeout
		// so that the server can receive everything; then it is reset.
		x.deferredClosing = true
		t := time.AfterFunc(x.cfg.deferedClose, func() { x.post(event{kind: evDeferredClose}) })
		defer t.Stop()
		for !x.streamClosed {
			if err := x.next(); err != nil {
				return err
			}
		}
		return nil
	}
	x.closeStream("request complete")
	return nil
}

// next waits for and handles one event.
func (x *exchange) next() error {
	select {
	case ev := <-x.events:
		// When the caller's context ends, the stream ends with it: both
		// may be ready, and the stream's end must not pass for the
		// server's doing.
		if err := x.ctx.Err(); err != nil {
			return err
		}
		x.handle(ev)
		return nil
	case <-x.ctx.Done():
		return x.ctx.Err()
	}
}

// waiting reports whether something can still produce an event that the
// exchange needs.
func (x *exchange) waiting() bool {
	if x.dec.timerOn || x.enc.timerOn {
		return true
	}
	if x.stream == nil || x.streamClosed {
		return false
	}
	return x.dec.cb != cbIdle || x.enc.cb != cbIdle
}

func (x *exchange) describe() string {
	return fmt.Sprintf("request{%s} response{%s} stream_open=%v processing_complete=%v",
		x.dec.describe(), x.enc.describe(), x.stream != nil && !x.streamClosed, x.processingComplete)
}

// pump delivers downstream/upstream events until nothing more can happen
// without an event from the side stream or a timer.
func (x *exchange) pump() {
	for progress := true; progress && !x.finished; {
		progress = false
		for _, d := range []*dirState{x.dec, x.enc} {
			if x.finished {
				return
			}
			if d.started && d.next < len(d.input) && d.canDeliver() {
				d.deliver()
				progress = true
			}
		}
		if x.finished {
			return
		}
		if !x.upstreamStarted && (x.dec.out.Complete || (x.req.EarlyResponse && x.dec.out.Sent)) {
			x.upstreamStarted = true
			x.enc.start(x.resp.Headers, x.resp.Body, x.resp.Trailers)
			progress = true
		}
		if x.enc.out.Complete || x.enc.out.Reset {
			x.finished = true
		}
	}
}

func (x *exchange) handle(ev event) {
	switch ev.kind {
	case evMessage:
		if x.stream == nil || x.streamClosed {
			return // arrived after Envoy reset the stream: never seen
		}
		x.record(Entry{Kind: KindReceived, Response: ev.resp})
		x.onReceiveMessage(ev.resp)
	case evStreamEnd:
		if x.stream == nil || x.streamClosed {
			return
		}
		st := status.Convert(ev.err)
		if errors.Is(ev.err, io.EOF) {
			st = status.New(codes.OK, "")
		}
		x.record(Entry{Kind: KindServerClosed, Code: st.Code(), Message: st.Message()})
		if st.Code() == codes.OK {
			x.onGrpcClose()
		} else {
			x.onGrpcError(st)
		}
	case evTimer:
		d := ev.dir
		if ev.gen != d.timerGen || !d.timerOn {
			return
		}
		d.timerOn = false
		x.onMessageTimeout()
	case evDeferredClose:
		x.closeStream("deferred close")
	}
}

func (x *exchange) record(en Entry) {
	if x.cfg.NoTranscript {
		return
	}
	x.res.Transcript = append(x.res.Transcript, en)
}

// streamOpenState is Filter::StreamOpenState.
type streamOpenState int

const (
	streamOK streamOpenState = iota
	streamError
	streamIgnoreError
)

// openStream is Filter::openStream.
func (x *exchange) openStream() streamOpenState {
	if x.processingComplete {
		return streamIgnoreError
	}
	if x.stream != nil {
		return streamOK
	}
	ctx, cancel := context.WithCancel(x.ctx)
	if md := x.cfg.InitialMetadata; len(md) > 0 {
		ctx = metadata.NewOutgoingContext(ctx, metadata.New(md))
	}
	st, err := x.e.client.Process(ctx)
	if err != nil {
		cancel()
		x.stream = &sideStream{cancel: cancel, ctx: ctx}
		x.streamClosed = true
		x.stats.StreamsFailed++
		x.record(Entry{Kind: KindServerClosed, Code: status.Code(err), Message: status.Convert(err).Message()})
		x.failStream(status.Convert(err))
		if x.sentImmediate {
			return streamError
		}
		return streamIgnoreError
	}
	s := &sideStream{st: st, cancel: cancel, ctx: ctx, wake: make(chan struct{}, 1)}
	x.stream = s
	x.stats.StreamsStarted++
	x.wg.Add(2)
	go func() {
		defer x.wg.Done()
		s.sendLoop()
	}()
	go func() {
		defer x.wg.Done()
		for {
			r, err := st.Recv()
			if err != nil {
				x.post(event{kind: evStreamEnd, err: err})
				return
			}
			x.post(event{kind: evMessage, resp: r})
		}
	}()
	return streamOK
}

// send hands a request to the side stream.
func (x *exchange) send(r *extprocv3.ProcessingRequest) {
	x.stats.MessagesSent++
	x.record(Entry{Kind: KindSent, Request: r})
	x.stream.enqueue(r)
}

// closeStream resets the side stream (Envoy's default, non-graceful close).
func (x *exchange) closeStream(reason string) {
	if x.stream == nil || x.streamClosed {
		return
	}
	x.streamClosed = true
	x.stats.StreamsClosed++
	x.record(Entry{Kind: KindEnvoyClosed, Message: reason})
	x.stream.cancel()
}

// closeStreamMaybeGraceful is Filter::closeStreamMaybeGraceful.
func (x *exchange) closeStreamMaybeGraceful(reason string) {
	x.processingComplete = true
	x.closeStream(reason)
}

// onGrpcClose is Filter::onGrpcClose: the server ended the stream with OK.
func (x *exchange) onGrpcClose() {
	x.stats.StreamsClosed++
	x.streamClosed = true
	x.stream.cancel()
	if x.processingComplete {
		return
	}
	x.processingComplete = true
	x.clearAsyncState()
}

// onGrpcError is Filter::onGrpcError.
func (x *exchange) onGrpcError(st *status.Status) {
	x.stats.StreamsFailed++
	x.streamClosed = true
	x.stream.cancel()
	x.failStream(st)
}

func (x *exchange) failStream(st *status.Status) {
	if x.processingComplete {
		return
	}
	if x.failureModeAllow() {
		x.stats.FailureModeAllowed++
		x.processingComplete = true
		x.clearAsyncState()
		return
	}
	x.processingComplete = true
	x.dec.finishCall(cbIdle)
	x.enc.finishCall(cbIdle)
	x.sendLocalReply(x.cfg.statusOnErr, nil, nil, -1,
		fmt.Sprintf("ext_proc_error_gRPC_error_%d{%s}", int(st.Code()), st.Message()), false)
}

// onMessageTimeout is Filter::onMessageTimeout.
func (x *exchange) onMessageTimeout() {
	x.stats.MessageTimeouts++
	if x.failureModeAllow() {
		x.processingComplete = true
		x.closeStream("message timeout (failure_mode_allow)")
		x.stats.FailureModeAllowed++
		x.clearAsyncState()
		return
	}
	x.processingComplete = true
	x.closeStream("message timeout")
	x.dec.finishCall(cbIdle)
	x.enc.finishCall(cbIdle)
	x.sendLocalReply(504, nil, nil, -1, "ext_proc_error_per-message_timeout_exceeded", false)
}

// failureModeAllow is Filter::failureModeAllow: FULL_DUPLEX_STREAMED data
// already handed to the server cannot be recovered, so failing open is off.
func (x *exchange) failureModeAllow() bool {
	for _, d := range []*dirState{x.dec, x.enc} {
		if d.bodyMode == modeFullDuplex && d.bodyReceived {
			return false
		}
	}
	return x.cfg.FailureModeAllow
}

// clearAsyncState is Filter::clearAsyncState: stop waiting, release what is
// held, continue.
func (x *exchange) clearAsyncState() {
	x.dec.clearAsyncState()
	x.enc.clearAsyncState()
}
