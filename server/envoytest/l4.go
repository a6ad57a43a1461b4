package envoytest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	netprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/network_ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// L4 emulation: Envoy's network ext_proc filter (envoy.filters.network.ext_proc,
// NetworkExtProcFilter in source/extensions/filters/network/ext_proc of
// Envoy ≈1.36–1.39, with the v1.40.0 protos) as a client of an
// envoy.service.network_ext_proc.v3.NetworkExternalProcessor server.
//
// What it reproduces:
//
//   - one Process stream per connection, opened on the first frame of a
//     processed direction; every frame Envoy reads from a socket becomes one
//     ProcessingRequest at once, without waiting for earlier answers, so
//     several frames of a direction can be outstanding;
//   - answers matched to a direction by which of read_data and write_data
//     they set, their bytes injected into the filter chain as they are
//     (whatever data_processing_status says, as the filter's code does);
//   - connection_status applied before the data: CLOSE closes the connection
//     after flushing (FlushWrite), CLOSE_RST resets it, and processing ends;
//   - close_stream_to_ext_proc_server (v1.39): the side stream is closed and
//     later frames bypass the server, bytes it still had being lost;
//   - the per-direction message timer (message_timeout, 200 ms by default,
//     0 none): restarted by every frame sent in that direction and stopped
//     by any answer of that direction, exactly as the filter does, so a
//     frame sent before an answer arrives is not timed;
//   - timeouts, gRPC errors and a stream that cannot be opened close the
//     connection (FlushWrite) unless failure_mode_allow, after which frames
//     bypass the server; a server ending the stream with OK ends processing
//     without closing the connection;
//   - processing_mode SKIP per direction; dynamic_metadata applied only for
//     receiving namespaces and Struct values; metadata on every message when
//     forwarding namespaces select any; the connection's attributes (v1.40).
//
// Beyond Envoy, which checks none of this, every answer is checked against
// the frames outstanding in its direction: an answer to a direction with
// nothing outstanding, both directions set, an end_of_stream that differs
// from the frame's, a data_processing_status that is UNKNOWN or does not
// say whether the bytes changed, and a data-less CONTINUE answer are all
// recorded in L4Result.Violations. A well-behaved server has none.
//
// Not emulated: the new_connection message of Envoy versions newer than the
// v1.40 API, typed metadata, watermarks and the connection's own buffers
// (bytes are delivered to the other side as soon as Envoy injects them).

// L4AttributesKey is the attributes key under which the emulated filter
// sends L4Config.ConnectionAttributes. The v1.40 API does not name it; this
// is the filter's name, as the HTTP filter uses its own.
const L4AttributesKey = "envoy.filters.network.ext_proc"

// NoMessageTimeout as L4Config.MessageTimeout is message_timeout: 0s, which
// turns the network filter's message timer off.
const NoMessageTimeout time.Duration = -1

// L4Config is the emulated network filter's configuration (the subset of
// envoy.extensions.filters.network.ext_proc.v3.NetworkExternalProcessor
// that changes what the server sees or how its answers are applied). The
// zero value is Envoy's default.
type L4Config struct {
	// SkipRead and SkipWrite are processing_mode.process_read and
	// process_write set to SKIP (the default is STREAMED). Envoy rejects
	// both, and so does the emulator.
	SkipRead, SkipWrite bool
	// MessageTimeout is message_timeout: 0 means DefaultMessageTimeout,
	// NoMessageTimeout means 0s (no timer).
	MessageTimeout time.Duration
	// FailureModeAllow is failure_mode_allow.
	FailureModeAllow bool
	// ConnectionAttributes are the values Envoy would compute for
	// connection_attributes, keyed by expression ("source.address"), sent
	// in attributes[L4AttributesKey] on the first message. Use Envoy's
	// encoding: bool_value for booleans, number_value for integers,
	// string_value for everything else.
	ConnectionAttributes map[string]*structpb.Value
	// Metadata is what metadata_options.forwarding_namespaces selects of the
	// connection's dynamic metadata; Envoy sets it on every message when it
	// is not empty.
	Metadata *corev3.Metadata
	// ReceivingNamespaces is metadata_options.receiving_namespaces.untyped.
	ReceivingNamespaces []string
	// NoTranscript skips recording the transcript (load generation).
	NoTranscript bool
}

// Frame is one read of a socket: the bytes Envoy's onData (client side) or
// onWrite (upstream side) receives.
type Frame struct {
	Data        []byte
	EndOfStream bool
	// Delay is how long after the previous frame of its direction (or the
	// direction's start) the frame arrives.
	Delay time.Duration
}

// Frames returns one frame per chunk, the last with end_of_stream when eos
// (a single empty frame carries it when there are no chunks).
func Frames(eos bool, chunks ...string) []Frame {
	fs := make([]Frame, 0, len(chunks)+1)
	for _, c := range chunks {
		fs = append(fs, Frame{Data: []byte(c)})
	}
	if eos {
		if len(fs) == 0 {
			fs = append(fs, Frame{})
		}
		fs[len(fs)-1].EndOfStream = true
	}
	return fs
}

// Connection is one TCP connection to play through the emulated filter.
type Connection struct {
	// Read is what the client sends (read_data), Write what the upstream
	// sends back (write_data). Only the last frame of a direction may carry
	// end_of_stream.
	Read, Write []Frame
	// WriteAfterRead makes the upstream start writing only once it has
	// received all of Read (every read frame answered and injected), like the
	// server of a request/response protocol; otherwise both directions start
	// at once.
	WriteAfterRead bool
	// Linger is how long the connection stays open once every frame has been
	// answered, before the client closes it (so that the server can still
	// close it asynchronously); 0 closes it at once. A connection whose
	// directions both ended closes at once.
	Linger time.Duration
}

// ConnClose says how the emulated connection ended.
type ConnClose int

const (
	// ClosedNormally: both sides ended their streams, or the client closed
	// the connection after its last frame.
	ClosedNormally ConnClose = iota
	// ClosedFlushWrite: Envoy closed the connection after flushing what it
	// had written (connection_status CLOSE, or a failure).
	ClosedFlushWrite
	// ClosedReset: Envoy reset the connection (connection_status CLOSE_RST).
	ClosedReset
)

func (c ConnClose) String() string {
	switch c {
	case ClosedNormally:
		return "normal"
	case ClosedFlushWrite:
		return "close"
	case ClosedReset:
		return "reset"
	}
	return fmt.Sprintf("ConnClose(%d)", int(c))
}

// L4Stats are the filter's counters for one connection (Envoy's
// network_ext_proc.<stat_prefix>.* stats, plus a few more).
type L4Stats struct {
	StreamsStarted     int // streams_started
	StreamOpenFailures int // stream_open_failures
	MessagesSent       int // stream_msgs_sent
	MessagesReceived   int // stream_msgs_received
	ReadDataSent       int // read_data_sent
	WriteDataSent      int // write_data_sent
	ReadDataInjected   int // read_data_injected
	WriteDataInjected  int // write_data_injected
	EmptyResponses     int // empty_response_received
	SpuriousMessages   int // spurious_msgs_received (after processing ended)
	MessageTimeouts    int // message_timeouts
	FailureModeAllowed int // failure_mode_allowed
	StreamsClosed      int // streams_closed (by Envoy)
	StreamsGrpcError   int // streams_grpc_error
	StreamsGrpcClose   int // streams_grpc_close (the server ended with OK)
	ConnectionsClosed  int // connections_closed (by the filter)
	ConnectionsReset   int // connections_reset
	// PassedThrough counts frames that bypassed the server (SKIP, or after
	// processing ended).
	PassedThrough int
	// LostBytes counts bytes handed to the server that never came back:
	// outstanding when processing ended.
	LostBytes int
}

// L4Result is the outcome of one connection.
type L4Result struct {
	// Upstream is what the upstream received, UpstreamEOS whether the
	// client's end of stream reached it.
	Upstream    []byte
	UpstreamEOS bool
	// Downstream is what the client received, DownstreamEOS whether the
	// upstream's end of stream reached it. With ClosedReset, Envoy may not
	// have written all of it to the socket.
	Downstream    []byte
	DownstreamEOS bool

	// Close is how the connection ended; CloseReason is Envoy's close
	// reason when the filter closed it (ext_proc_close_requested,
	// ext_proc_reset_requested, ext_proc_message_timeout,
	// ext_proc_grpc_error, ext_proc_stream_error).
	Close       ConnClose
	CloseReason string

	// DynamicMetadata is the dynamic metadata the filter stored, per
	// namespace (only receiving namespaces).
	DynamicMetadata map[string]*structpb.Struct

	// Violations are answers that break the protocol as a portable server
	// must follow it (see the L4 emulation notes); Envoy accepts them
	// silently or misbehaves.
	Violations []string

	Stats L4Stats

	// Transcript is every message on the side stream, in order (nil with
	// L4Config.NoTranscript).
	Transcript L4Transcript
}

// L4Emulator plays TCP connections through an emulated Envoy network
// ext_proc filter against one NetworkExternalProcessor server. It is safe for
// concurrent use: every Do opens its own side stream, as Envoy does per
// connection.
type L4Emulator struct {
	client    netprocv3.NetworkExternalProcessorClient
	cfg       L4Config
	timeout   time.Duration // 0: none
	attrs     *structpb.Struct
	receiving map[string]bool
}

// NewL4 returns an L4Emulator that talks to the server behind conn.
func NewL4(conn grpc.ClientConnInterface, cfg L4Config) (*L4Emulator, error) {
	if conn == nil {
		return nil, errors.New("envoytest: nil connection")
	}
	if cfg.SkipRead && cfg.SkipWrite {
		return nil, errors.New("envoytest: processing_mode with both process_read and process_write SKIP (Envoy rejects it)")
	}
	e := &L4Emulator{client: netprocv3.NewNetworkExternalProcessorClient(conn), cfg: cfg, receiving: map[string]bool{}}
	switch {
	case cfg.MessageTimeout == NoMessageTimeout:
	case cfg.MessageTimeout == 0:
		e.timeout = DefaultMessageTimeout
	case cfg.MessageTimeout < 0:
		return nil, errors.New("envoytest: negative message_timeout")
	default:
		e.timeout = cfg.MessageTimeout
	}
	if len(cfg.ConnectionAttributes) > 0 {
		e.attrs = &structpb.Struct{Fields: cfg.ConnectionAttributes}
	}
	for _, ns := range cfg.ReceivingNamespaces {
		e.receiving[ns] = true
	}
	return e, nil
}

// DoL4 is NewL4 followed by L4Emulator.Do, for one-off connections.
func DoL4(ctx context.Context, conn grpc.ClientConnInterface, cfg L4Config, c *Connection) (*L4Result, error) {
	e, err := NewL4(conn, cfg)
	if err != nil {
		return nil, err
	}
	return e.Do(ctx, c)
}

// Do plays c through the emulated filter and returns what each side
// received. Server misbehaviour, timeouts and closes are part of the
// result; Do returns an error only for an invalid Connection, or when ctx
// ends first (with the partial result: a server that never answers while
// no timer runs keeps the connection open, as in Envoy).
func (e *L4Emulator) Do(ctx context.Context, c *Connection) (*L4Result, error) {
	if c == nil {
		return nil, errors.New("envoytest: nil connection")
	}
	for _, fs := range [][]Frame{c.Read, c.Write} {
		for i, f := range fs {
			if f.EndOfStream && i != len(fs)-1 {
				return nil, errors.New("envoytest: a frame after end_of_stream")
			}
			if f.Delay < 0 {
				return nil, errors.New("envoytest: negative frame delay")
			}
		}
	}
	if c.Linger < 0 {
		return nil, errors.New("envoytest: negative linger")
	}
	x := &l4Exchange{e: e, ctx: ctx, conn: c, res: &L4Result{}, events: make(chan l4Event, 16), done: make(chan struct{})}
	x.dirs[0] = &l4Dir{read: true, name: "read_data", frames: c.Read, skip: e.cfg.SkipRead}
	x.dirs[1] = &l4Dir{name: "write_data", frames: c.Write, skip: e.cfg.SkipWrite}
	defer x.shutdown()
	err := x.run()
	x.res.Stats = x.stats
	return x.res, err
}

type l4EventKind int

const (
	l4Message l4EventKind = iota
	l4StreamEnd
	l4Timer
)

type l4Event struct {
	kind l4EventKind
	resp *netprocv3.ProcessingResponse
	err  error
	dir  *l4Dir
	gen  uint64
}

// l4Stream is the side stream and the goroutine that sends on it.
type l4Stream struct {
	st     netprocv3.NetworkExternalProcessor_ProcessClient
	ctx    context.Context
	cancel context.CancelFunc

	mu    sync.Mutex
	queue []*netprocv3.ProcessingRequest
	wake  chan struct{}
}

func (s *l4Stream) enqueue(r *netprocv3.ProcessingRequest) {
	s.mu.Lock()
	s.queue = append(s.queue, r)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// sendLoop sends queued frames in order without blocking the connection
// (Envoy's sends are asynchronous).
func (s *l4Stream) sendLoop() {
	for {
		s.mu.Lock()
		q := s.queue
		s.queue = nil
		s.mu.Unlock()
		for _, r := range q {
			if s.st.Send(r) != nil {
				return // the stream is gone; Recv reports why
			}
		}
		select {
		case <-s.wake:
		case <-s.ctx.Done():
			return
		}
	}
}

// l4Dir is one direction of the connection.
type l4Dir struct {
	read   bool
	name   string
	frames []Frame
	skip   bool

	started bool
	next    int       // index of the next frame to arrive
	due     time.Time // when it arrives
	// outstanding are the frames sent to the server and not answered yet,
	// oldest first.
	outstanding []Frame
	timer       *time.Timer
	timerOn     bool
	timerGen    uint64
	injectedEOS bool
}

func (d *l4Dir) pending() bool { return d.next < len(d.frames) }

// l4Exchange is one connection through the filter: Envoy's
// NetworkExtProcFilter object.
type l4Exchange struct {
	e    *L4Emulator
	ctx  context.Context
	conn *Connection

	events chan l4Event
	done   chan struct{}
	wg     sync.WaitGroup

	stream       *l4Stream
	streamClosed bool
	attrsSent    bool

	processingComplete bool
	closed             bool      // the connection is closed
	idleSince          time.Time // every frame answered, waiting for Linger

	dirs  [2]*l4Dir
	res   *L4Result
	stats L4Stats
}

func (x *l4Exchange) post(ev l4Event) {
	select {
	case x.events <- ev:
	case <-x.done:
	}
}

func (x *l4Exchange) shutdown() {
	for _, d := range x.dirs {
		x.stopTimer(d)
	}
	if x.stream != nil {
		x.stream.cancel()
	}
	close(x.done)
	x.wg.Wait()
}

func (x *l4Exchange) run() error {
	x.start(x.dirs[0])
	if !x.conn.WriteAfterRead {
		x.start(x.dirs[1])
	}
	for {
		wait := x.pump()
		if x.closed {
			return nil
		}
		var t *time.Timer
		var tc <-chan time.Time
		if wait >= 0 {
			t = time.NewTimer(wait)
			tc = t.C
		}
		select {
		case ev := <-x.events:
			if x.ctx.Err() != nil {
				return x.ctx.Err() // the side stream ended with it
			}
			x.handle(ev)
		case <-tc:
		case <-x.ctx.Done():
			return x.ctx.Err()
		}
		if t != nil {
			t.Stop()
		}
	}
}

func (x *l4Exchange) start(d *l4Dir) {
	d.started = true
	if d.pending() {
		d.due = time.Now().Add(d.frames[0].Delay)
	}
}

// pump delivers the frames that are due and ends the connection when
// nothing more can happen. It returns how long to wait for the next frame
// or the end of Linger, or -1 to wait for the server or a timer only.
func (x *l4Exchange) pump() time.Duration {
	for {
		if x.closed {
			return -1
		}
		read, write := x.dirs[0], x.dirs[1]
		if !write.started && !read.pending() && len(read.outstanding) == 0 {
			x.start(write)
		}
		now := time.Now()
		progress := false
		for _, d := range x.dirs {
			if x.closed {
				return -1
			}
			if d.started && d.pending() && !now.Before(d.due) {
				f := d.frames[d.next]
				d.next++
				if d.pending() {
					d.due = now.Add(d.frames[d.next].Delay)
				}
				x.onFrame(d, f)
				progress = true
			}
		}
		if progress {
			continue
		}
		if x.closed {
			return -1
		}
		// Both sides ended their streams: the proxy closes the connection.
		if read.injectedEOS && write.injectedEOS {
			x.closeStream("connection closed")
			x.closed = true
			return -1
		}
		wait := time.Duration(-1)
		for _, d := range x.dirs {
			if d.started && d.pending() {
				if w := d.due.Sub(now); wait < 0 || w < wait {
					wait = max(w, 0)
				}
			}
		}
		if wait >= 0 || !write.started {
			return wait
		}
		if len(read.outstanding)+len(write.outstanding) > 0 && !x.processingComplete {
			x.idleSince = time.Time{}
			return -1
		}
		// Everything was answered: the client closes the connection after
		// lingering.
		if x.idleSince.IsZero() {
			x.idleSince = now
		}
		if left := x.conn.Linger - now.Sub(x.idleSince); left > 0 {
			return left
		}
		x.closeStream("connection closed by the client")
		x.closed = true
		return -1
	}
}

// onFrame is onData / onWrite.
func (x *l4Exchange) onFrame(d *l4Dir, f Frame) {
	if d.skip || x.processingComplete {
		x.stats.PassedThrough++
		x.inject(d, f.Data, f.EndOfStream)
		return
	}
	if !x.openStream() {
		x.handleStreamError(d, f)
		return
	}
	r := &netprocv3.ProcessingRequest{Metadata: x.metadata()}
	data := &netprocv3.Data{Data: f.Data, EndOfStream: f.EndOfStream}
	if d.read {
		r.ReadData = data
		x.stats.ReadDataSent++
	} else {
		r.WriteData = data
		x.stats.WriteDataSent++
	}
	if !x.attrsSent && x.e.attrs != nil {
		r.Attributes = map[string]*structpb.Struct{L4AttributesKey: x.e.attrs}
	}
	x.attrsSent = true
	d.outstanding = append(d.outstanding, f)
	x.startTimer(d)
	x.stats.MessagesSent++
	x.record(L4Entry{Kind: KindSent, Request: r})
	x.stream.enqueue(r)
}

func (x *l4Exchange) metadata() *corev3.Metadata {
	md := x.e.cfg.Metadata
	if len(md.GetFilterMetadata()) == 0 && len(md.GetTypedFilterMetadata()) == 0 {
		return nil
	}
	return md
}

// inject hands bytes to the next filter: towards the upstream for the read
// direction, towards the client for the write direction.
func (x *l4Exchange) inject(d *l4Dir, data []byte, eos bool) {
	if d.injectedEOS {
		x.violation("%s injected after its end_of_stream", d.name)
		return
	}
	if d.read {
		x.res.Upstream = append(x.res.Upstream, data...)
		x.res.UpstreamEOS = eos
	} else {
		x.res.Downstream = append(x.res.Downstream, data...)
		x.res.DownstreamEOS = eos
	}
	d.injectedEOS = eos
}

// openStream is NetworkExtProcFilter::openStream; false means the stream
// could not be opened.
func (x *l4Exchange) openStream() bool {
	if x.stream != nil {
		return !x.streamClosed
	}
	// Envoy sets no deadline on the side stream; Do's context bounds the
	// emulation, and shutdown cancels the stream.
	ctx, cancel := context.WithCancel(context.WithoutCancel(x.ctx))
	st, err := x.e.client.Process(ctx)
	if err != nil {
		cancel()
		x.stats.StreamOpenFailures++
		x.record(L4Entry{Kind: KindServerClosed, Code: status.Code(err), Message: status.Convert(err).Message()})
		return false
	}
	s := &l4Stream{st: st, ctx: ctx, cancel: cancel, wake: make(chan struct{}, 1)}
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
				x.post(l4Event{kind: l4StreamEnd, err: err})
				return
			}
			x.post(l4Event{kind: l4Message, resp: r})
		}
	}()
	return true
}

// handleStreamError is NetworkExtProcFilter::handleStreamError.
func (x *l4Exchange) handleStreamError(d *l4Dir, f Frame) {
	x.processingComplete = true
	if x.e.cfg.FailureModeAllow {
		x.stats.FailureModeAllowed++
		x.stats.PassedThrough++
		x.inject(d, f.Data, f.EndOfStream)
		return
	}
	x.closeConnection(ClosedFlushWrite, "ext_proc_stream_error")
}

func (x *l4Exchange) handle(ev l4Event) {
	switch ev.kind {
	case l4Message:
		if x.stream == nil || x.streamClosed {
			return // arrived after Envoy reset the stream: never seen
		}
		x.record(L4Entry{Kind: KindReceived, Response: ev.resp})
		x.onReceiveMessage(ev.resp)
	case l4StreamEnd:
		if x.stream == nil || x.streamClosed {
			return
		}
		st := status.Convert(ev.err)
		if errors.Is(ev.err, io.EOF) {
			st = status.New(codes.OK, "")
		}
		x.record(L4Entry{Kind: KindServerClosed, Code: st.Code(), Message: st.Message()})
		x.streamClosed = true
		x.stream.cancel()
		if st.Code() == codes.OK {
			x.stats.StreamsGrpcClose++
			x.endProcessing()
			return
		}
		x.stats.StreamsGrpcError++
		if x.processingComplete {
			return
		}
		x.endProcessing()
		if x.e.cfg.FailureModeAllow {
			x.stats.FailureModeAllowed++
			return
		}
		x.closeConnection(ClosedFlushWrite, "ext_proc_grpc_error")
	case l4Timer:
		d := ev.dir
		if ev.gen != d.timerGen || !d.timerOn {
			return
		}
		d.timerOn = false
		x.stats.MessageTimeouts++
		x.endProcessing()
		x.closeStream("message timeout")
		if x.e.cfg.FailureModeAllow {
			x.stats.FailureModeAllowed++
			return
		}
		x.closeConnection(ClosedFlushWrite, "ext_proc_message_timeout")
	}
}

// onReceiveMessage is NetworkExtProcFilter::onReceiveMessage, with the
// emulator's checks.
func (x *l4Exchange) onReceiveMessage(r *netprocv3.ProcessingResponse) {
	if x.processingComplete {
		x.stats.SpuriousMessages++
		return
	}
	x.stats.MessagesReceived++
	rd, wd := r.GetReadData(), r.GetWriteData()
	if rd != nil && wd != nil {
		x.violation("answer sets both read_data and write_data (Envoy takes read_data)")
	}
	switch r.GetConnectionStatus() {
	case netprocv3.ProcessingResponse_CONTINUE:
	case netprocv3.ProcessingResponse_CLOSE:
		x.closeConnection(ClosedFlushWrite, "ext_proc_close_requested")
		return
	case netprocv3.ProcessingResponse_CLOSE_RST:
		x.closeConnection(ClosedReset, "ext_proc_reset_requested")
		return
	default:
		x.violation("unknown connection_status %v", r.GetConnectionStatus())
	}
	x.setDynamicMetadata(r.GetDynamicMetadata())
	var d *l4Dir
	var data *netprocv3.Data
	switch {
	case rd != nil:
		d, data = x.dirs[0], rd
		x.stats.ReadDataInjected++
	case wd != nil:
		d, data = x.dirs[1], wd
		x.stats.WriteDataInjected++
	default:
		x.stats.EmptyResponses++
		x.violation("answer with neither read_data nor write_data and connection_status CONTINUE")
	}
	if d != nil {
		x.stopTimer(d)
		x.check(d, r, data)
		x.inject(d, data.GetData(), data.GetEndOfStream())
	}
	if r.GetCloseStreamToExtProcServer() {
		x.endProcessing()
		x.closeStream("close_stream_to_ext_proc_server")
	}
}

// check matches an answer with the oldest frame outstanding in its
// direction.
func (x *l4Exchange) check(d *l4Dir, r *netprocv3.ProcessingResponse, data *netprocv3.Data) {
	if len(d.outstanding) == 0 {
		x.violation("%s answer with no %s frame outstanding", d.name, d.name)
		return
	}
	f := d.outstanding[0]
	d.outstanding = d.outstanding[1:]
	if data.GetEndOfStream() != f.EndOfStream {
		x.violation("%s answer has end_of_stream %v, its frame %v", d.name, data.GetEndOfStream(), f.EndOfStream)
	}
	same := bytes.Equal(data.GetData(), f.Data)
	switch st := r.GetDataProcessingStatus(); {
	case st == netprocv3.ProcessingResponse_UNMODIFIED && !same:
		x.violation("%s answer says UNMODIFIED but its %d bytes differ from the frame's %d", d.name, len(data.GetData()), len(f.Data))
	case st == netprocv3.ProcessingResponse_MODIFIED && same:
		x.violation("%s answer says MODIFIED but carries the frame's bytes unchanged", d.name)
	case st != netprocv3.ProcessingResponse_UNMODIFIED && st != netprocv3.ProcessingResponse_MODIFIED:
		x.violation("%s answer has data_processing_status %v", d.name, st)
	}
}

// setDynamicMetadata applies the receiving namespaces' Struct values.
func (x *l4Exchange) setDynamicMetadata(md *structpb.Struct) {
	for ns, v := range md.GetFields() {
		s := v.GetStructValue()
		if !x.e.receiving[ns] || s == nil {
			continue
		}
		if x.res.DynamicMetadata == nil {
			x.res.DynamicMetadata = map[string]*structpb.Struct{}
		}
		dst := x.res.DynamicMetadata[ns]
		if dst == nil {
			dst = &structpb.Struct{Fields: map[string]*structpb.Value{}}
			x.res.DynamicMetadata[ns] = dst
		}
		for k, fv := range s.GetFields() {
			dst.Fields[k] = proto.Clone(fv).(*structpb.Value)
		}
	}
}

// endProcessing stops processing: nothing more goes to the server, and the
// bytes it still had are lost (Envoy drained them when it sent them).
func (x *l4Exchange) endProcessing() {
	x.processingComplete = true
	for _, d := range x.dirs {
		x.stopTimer(d)
		for _, f := range d.outstanding {
			x.stats.LostBytes += len(f.Data)
		}
		d.outstanding = nil
	}
}

// closeConnection is NetworkExtProcFilter::closeConnection.
func (x *l4Exchange) closeConnection(how ConnClose, reason string) {
	x.endProcessing()
	x.closeStream(reason)
	x.stats.ConnectionsClosed++
	if how == ClosedReset {
		x.stats.ConnectionsReset++
	}
	x.res.Close, x.res.CloseReason = how, reason
	x.closed = true
}

// closeStream resets the side stream, as the filter's closeStream does.
func (x *l4Exchange) closeStream(reason string) {
	if x.stream == nil || x.streamClosed {
		return
	}
	x.streamClosed = true
	x.stats.StreamsClosed++
	x.record(L4Entry{Kind: KindEnvoyClosed, Message: reason})
	x.stream.cancel()
}

func (x *l4Exchange) startTimer(d *l4Dir) {
	if x.e.timeout <= 0 {
		return
	}
	x.stopTimer(d)
	d.timerOn = true
	d.timerGen++
	gen := d.timerGen
	d.timer = time.AfterFunc(x.e.timeout, func() { x.post(l4Event{kind: l4Timer, dir: d, gen: gen}) })
}

func (x *l4Exchange) stopTimer(d *l4Dir) {
	if d.timer != nil {
		d.timer.Stop()
	}
	d.timerOn = false
	d.timerGen++
}

func (x *l4Exchange) violation(format string, args ...any) {
	x.res.Violations = append(x.res.Violations, fmt.Sprintf(format, args...))
}

func (x *l4Exchange) record(en L4Entry) {
	if x.e.cfg.NoTranscript {
		return
	}
	x.res.Transcript = append(x.res.Transcript, en)
}
