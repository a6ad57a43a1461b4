package server

import (
	"bytes"
	"errors"
	"io"
	"runtime/debug"
	"time"

	netprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/network_ext_proc/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/wasm-callout/wasm-callout/abi"
	"github.com/wasm-callout/wasm-callout/host"
)

// NetworkServiceName is the fully qualified name of the network_ext_proc
// service, as the gRPC health service knows it.
const NetworkServiceName = "envoy.service.network_ext_proc.v3.NetworkExternalProcessor"

// NetworkAttributesKey is the attributes key the server prefers for the
// values of the network filter's connection_attributes (Envoy v1.40). The
// v1.40 API does not name the key, so the server reads the Struct of every
// key, and this one wins where two define the same attribute.
const NetworkAttributesKey = "envoy.filters.network.ext_proc"

// Statuses of network_ext_proc answers, by their proto names.
const (
	dataUnmodified = netprocv3.ProcessingResponse_UNMODIFIED
	dataModified   = netprocv3.ProcessingResponse_MODIFIED
	connClose      = netprocv3.ProcessingResponse_CLOSE
	connReset      = netprocv3.ProcessingResponse_CLOSE_RST
)

// networkProcessor is the network_ext_proc service of a Server. It is a
// type of its own because both services name their method Process.
type networkProcessor struct {
	netprocv3.UnimplementedNetworkExternalProcessorServer
	srv *Server
}

// NetworkProcessor returns the envoy.service.network_ext_proc.v3
// NetworkExternalProcessor service of s, which Register adds to its gRPC
// server; use it to register the L4 service on a server of your own. It
// shares s's plugin, options and Stats.
func (s *Server) NetworkProcessor() netprocv3.NetworkExternalProcessorServer {
	return &networkProcessor{srv: s}
}

// flow is one direction of a TCP connection: read_data (downstream, client
// to upstream) or write_data (upstream, back to the client).
type flow struct {
	typ   abi.StreamType // abi.StreamDownstream or abi.StreamUpstream
	name  string         // the ProcessingRequest field
	ended bool           // end_of_stream received
	// released holds bytes the plugin resumed asynchronously (or the
	// failure policy released); they go out with the next answer of this
	// direction, since network_ext_proc answers one message per frame.
	released []byte
	// hostHeld is what the host keeps of this direction: the data the
	// plugin paused on, not yet released.
	hostHeld int64
}

// tcpConn is one network_ext_proc Process stream: one TCP connection through
// one host.TCPStream.
type tcpConn struct {
	srv *Server
	gs  netprocv3.NetworkExternalProcessor_ProcessServer
	// plugin is the generation this connection runs on, from its first
	// frame to its end (TCP connections can outlive many swaps). lease
	// holds it; expired is the lease's expiry, nil once handled.
	plugin  *host.Plugin
	lease   *lease
	expired <-chan struct{}
	ts      tcpPluginStream // a *host.TCPStream, or a *tcpChain (network_chain.go)
	// leases holds one lease per plugin of a chain of several (lease is
	// then the first's, and expired the server's expiry channel).
	leases []*lease
	props  attributeSource
	flows  [2]flow // read_data, write_data

	noPlugin bool // fail-open without an instance: everything passes
	failed   bool // a plugin failure was reported
	// connPaused: proxy_on_new_connection paused, so, as in Envoy, the
	// plugin sees no downstream data until it continues; connHeld is what
	// arrived meanwhile.
	connPaused bool
	connHeld   []byte
	downClosed bool // proxy_on_downstream_connection_close has run
	finished   bool // CLOSE or CLOSE_RST sent: the connection is gone
	limited    bool // a limit closed the connection (Outcome)
	closed     bool // CLOSE or CLOSE_RST was sent (Outcome)
	sentProps  map[string]string
	held       held // bytes kept across frames, against the limits
}

// Process implements netprocv3.NetworkExternalProcessorServer: one call per
// TCP connection. The plugin's TCP context is created on the first frame
// (Envoy sends no connection event), followed by proxy_on_new_connection,
// and closed (proxy_on_done, proxy_on_log, proxy_on_delete) exactly once
// when the stream ends, however it ends. Envoy ending the stream (EOF,
// cancellation, reset) is a normal end.
func (p *networkProcessor) Process(gs netprocv3.NetworkExternalProcessor_ProcessServer) (err error) {
	s := p.srv
	if err := s.enter(ServiceNetworkExtProc); err != nil {
		return err
	}
	defer s.leave(ServiceNetworkExtProc)
	c := &tcpConn{srv: s, gs: gs, held: held{srv: s}}
	defer func() { s.finish(ServiceNetworkExtProc, outcomeOf(err, c.limited, c.failed, c.closed)) }()
	defer c.held.set(0)
	c.flows[0] = flow{typ: abi.StreamDownstream, name: "read_data"}
	c.flows[1] = flow{typ: abi.StreamUpstream, name: "write_data"}
	var buf [1]*lease
	exp := s.expiryChan()
	_, leases, err := s.acquireChain(chainName(gs.Context(), nil), buf[:0])
	if err != nil {
		return err
	}
	c.lease = leases[0]
	c.plugin, c.expired = c.lease.gen.plugin, c.lease.expired()
	if len(leases) > 1 {
		c.leases, c.expired = leases, exp
	}
	defer func() { // expire may move the connection
		for _, l := range c.leases {
			l.release()
		}
		c.lease.release()
	}()
	defer c.close()
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("network_ext_proc stream panicked", "panic", r, "stack", string(debug.Stack()))
			err = status.Error(codes.Internal, "wasm-callout: internal error")
		}
	}()
	err = c.run()
	if c := status.Code(err); c == codes.InvalidArgument || c == codes.FailedPrecondition {
		s.log.Debug("network_ext_proc stream rejected", "code", c, "err", status.Convert(err).Message())
	}
	return err
}

// run reads frames on a helper goroutine and handles them, and the plugin's
// asynchronous events, on this one, which alone sends. Every frame is
// answered before the next is read, so nothing is ever withheld: after
// Envoy half-closes there is nothing left to do.
func (c *tcpConn) run() error {
	ctx := c.gs.Context()
	done := make(chan struct{})
	defer close(done)
	in := receive(c.gs.Recv, done)
	idle := c.srv.newIdleTimer()
	defer idle.stop()
	for !c.finished {
		var notify <-chan struct{}
		if c.ts != nil {
			notify = c.ts.Notify()
		}
		select {
		case r := <-in:
			if r.err != nil {
				if errors.Is(r.err, io.EOF) {
					return nil
				}
				switch status.Code(r.err) {
				case codes.Canceled, codes.DeadlineExceeded:
					return nil
				}
				return r.err
			}
			idle.reset()
			if err := c.receive(r.msg); err != nil {
				return err
			}
		case <-notify:
			if err := c.events(); err != nil {
				return err
			}
		case <-c.expired:
			c.expire()
		case <-idle.C():
			c.srv.stats.limitRefusals.Add(1)
			return idle.err()
		case <-ctx.Done():
			return nil
		}
		c.held.set(c.holding())
	}
	return nil
}

// expire lets go of the connection's plugin generation, replaced and past
// its drain timeout, as an HTTP stream does: a connection whose plugin
// context does not exist yet moves to the current generation; otherwise the
// host fails the connection (an EventFailed brings the failure policy:
// fail-closed closes the connection, fail-open passes its data from now on)
// and the plugin is never called for it again, so the lease is released at
// once.
func (c *tcpConn) expire() {
	c.expired = nil
	if c.leases != nil {
		c.expireChain()
		return
	}
	if c.ts == nil && !c.noPlugin {
		old := c.lease
		if l, ok := c.srv.acquireIn(old.slot); ok {
			c.lease = l
			c.plugin, c.expired = l.gen.plugin, l.expired()
			old.release()
		}
		return
	}
	if c.ts != nil {
		c.srv.gens.expiredStreams.Add(1)
		c.ts.Fail(ErrDrainTimeout)
	}
	c.lease.release()
}

// receive validates a frame and answers it.
func (c *tcpConn) receive(m *netprocv3.ProcessingRequest) error {
	start := monotonic()
	rd, wd := m.GetReadData(), m.GetWriteData()
	var f *flow
	var d *netprocv3.Data
	switch {
	case rd != nil && wd != nil:
		return status.Error(codes.InvalidArgument,
			"network_ext_proc ProcessingRequest sets both read_data and write_data; a message carries one direction")
	case rd != nil:
		f, d = &c.flows[0], rd
	case wd != nil:
		f, d = &c.flows[1], wd
	default:
		msg := "network_ext_proc ProcessingRequest sets neither read_data nor write_data"
		if len(m.ProtoReflect().GetUnknown()) > 0 {
			msg += " (it carries fields this server does not know, perhaps from an Envoy newer than the v1.40 API)"
		}
		return status.Error(codes.InvalidArgument, msg)
	}
	p := PhaseRead
	if f.typ == abi.StreamUpstream {
		p = PhaseWrite
	}
	c.srv.stats.messages[p].Add(1)
	if f.ended {
		return status.Errorf(codes.FailedPrecondition, "%s after its end_of_stream", f.name)
	}
	// Every frame is answered before the next is read.
	defer func() { c.srv.stats.latency[p].Observe(time.Duration(monotonic() - start)) }()
	c.properties(m)
	eos := d.GetEndOfStream()
	f.ended = eos
	if err := c.held.admit(c.holding(), int64(len(d.GetData()))); err != nil {
		if err != errStreamBuffer {
			return err
		}
		// Envoy would stop reading the connection; ext_proc has no way
		// to ask for that, so the connection is closed instead.
		c.limited = true
		c.srv.log.Warn("connection passed its buffer limit; closing it",
			"direction", f.name, "limit", c.srv.opts.Limits.MaxStreamBuffer)
		return c.closeWith(f, d.GetData(), eos, false)
	}
	return c.frame(f, d.GetData(), eos)
}

// holding is what the connection keeps across frames
// (Limits.MaxStreamBuffer counts it): data held while the connection is
// paused, data the plugin paused on in the host, and released bytes
// waiting for their direction's next answer.
func (c *tcpConn) holding() int64 {
	n := int64(len(c.connHeld))
	for i := range c.flows {
		n += c.flows[i].hostHeld + int64(len(c.flows[i].released))
	}
	return n
}

// properties keeps what the frame says about the connection for the
// plugin's proxy_get_property: the attributes (every key's Struct merged,
// NetworkAttributesKey winning) and the latest metadata.
func (c *tcpConn) properties(m *netprocv3.ProcessingRequest) {
	if attrs := m.GetAttributes(); len(attrs) > 0 {
		merged := attrs[NetworkAttributesKey]
		if len(attrs) > 1 || merged == nil {
			merged = &structpb.Struct{Fields: map[string]*structpb.Value{}}
			for _, k := range sortedKeys(attrs) {
				if k == NetworkAttributesKey {
					continue
				}
				for name, v := range attrs[k].GetFields() {
					merged.Fields[name] = v
				}
			}
			for name, v := range attrs[NetworkAttributesKey].GetFields() {
				merged.Fields[name] = v
			}
		}
		// The connection's attributes take the request direction's slot
		// of the HTTP property source, so that the same typed encoding
		// applies.
		c.props.setAttributes(abi.StreamHTTPRequest, merged)
	}
	if md := m.GetMetadata(); md != nil {
		c.props.setMetadata(md)
	}
}

// frame runs one frame through the plugin and answers it.
func (c *tcpConn) frame(f *flow, in []byte, eos bool) error {
	if c.ts == nil && !c.noPlugin {
		r, err := c.open()
		if err != nil {
			return err
		}
		if r.Close {
			return c.closeWith(f, in, eos, r.Reset)
		}
	}
	r := c.call(f, in, eos)
	if r.Failure != nil {
		c.pluginFailed(r.Failure, r.Close)
	}
	if r.Close {
		return c.closeWith(f, in, eos, r.Reset)
	}
	var out []byte
	switch {
	case r.Action == abi.ActionContinue:
		out = r.Body
	case eos:
		// The direction ends and no later frame can carry what the plugin
		// holds: release it rather than lose it.
		if c.ts != nil {
			out, _ = c.ts.TakeData(f.typ)
			f.hostHeld = 0
		}
		c.srv.log.Debug("plugin paused the last frame of a direction; releasing what it held",
			"direction", f.name, "bytes", len(out))
	}
	if len(f.released) > 0 {
		out = append(f.released, out...)
		f.released = nil
	}
	if err := c.answer(f, in, out, eos); err != nil || !eos {
		return err
	}
	c.closeCallback(f)
	return nil
}

// open creates the plugin's TCP context and runs proxy_on_new_connection.
// Without a healthy instance the failure policy applies. The result says
// whether the connection must be closed.
func (c *tcpConn) open() (host.Result, error) {
	if c.leases != nil {
		r, err := c.newTCPChain()
		if err == nil && r.Action == abi.ActionPause && !r.Close {
			c.connPaused = true
		}
		return r, err
	}
	ts, err := c.plugin.NewTCPStream(&c.props)
	if errors.Is(err, host.ErrOverloaded) {
		return host.Result{}, c.srv.shed()
	}
	if err != nil {
		if c.plugin.Config().FailurePolicy == host.FailOpen {
			c.noPlugin = true
			c.pluginFailed(err, false)
			return host.Result{Action: abi.ActionContinue}, nil
		}
		c.pluginFailed(err, true)
		return host.Result{Action: abi.ActionPause, Close: true, Failure: err}, nil
	}
	c.ts = ts
	r := ts.NewConnection()
	if r.Failure != nil {
		c.pluginFailed(r.Failure, r.Close)
	}
	if r.Action == abi.ActionPause && !r.Close {
		c.connPaused = true
	}
	return r, nil
}

// call runs the direction's data callback on in.
func (c *tcpConn) call(f *flow, in []byte, eos bool) host.Result {
	if c.ts == nil {
		return host.Result{Action: abi.ActionContinue, Body: in}
	}
	if f.typ == abi.StreamUpstream {
		return f.track(in, c.ts.UpstreamData(in, eos))
	}
	if c.connPaused && !eos {
		c.connHeld = append(c.connHeld, in...)
		return host.Result{Action: abi.ActionPause}
	}
	chunk := in
	if len(c.connHeld) > 0 {
		chunk = append(c.connHeld, in...)
		c.connHeld = nil
	}
	c.connPaused = false
	return f.track(chunk, c.ts.DownstreamData(chunk, eos))
}

// track keeps hostHeld after the plugin saw chunk: a Continue released
// everything, a Pause kept chunk on top of what was held.
func (f *flow) track(chunk []byte, r host.Result) host.Result {
	if r.Action == abi.ActionContinue {
		f.hostHeld = 0
	} else {
		f.hostHeld += int64(len(chunk))
	}
	return r
}

// closeCallback runs the connection-close callback of a direction that has
// ended: the peer (client or upstream) closed its side.
func (c *tcpConn) closeCallback(f *flow) {
	if c.ts == nil {
		return
	}
	if f.typ == abi.StreamDownstream {
		c.downClosed = true
		c.ts.DownstreamClose(abi.PeerRemote)
		return
	}
	c.ts.UpstreamClose(abi.PeerRemote)
}

// answer sends a frame's answer: the same direction's Data with every byte
// Envoy must forward (out) and the frame's end_of_stream, MODIFIED exactly
// when out differs from what Envoy sent (in).
func (c *tcpConn) answer(f *flow, in, out []byte, eos bool) error {
	d := &netprocv3.Data{Data: out, EndOfStream: eos}
	resp := &netprocv3.ProcessingResponse{DataProcessingStatus: dataUnmodified}
	if !bytes.Equal(in, out) {
		resp.DataProcessingStatus = dataModified
	}
	if f.typ == abi.StreamDownstream {
		resp.ReadData = d
	} else {
		resp.WriteData = d
	}
	return c.send(resp)
}

// closeWith answers a frame with CLOSE (proxy_close_stream, a fail-closed
// failure) or CLOSE_RST (a local response), which ends processing: Envoy
// closes the connection before looking at the data, so none is sent.
func (c *tcpConn) closeWith(f *flow, in []byte, eos, reset bool) error {
	c.finished, c.closed = true, true
	resp := &netprocv3.ProcessingResponse{ConnectionStatus: connClose, DataProcessingStatus: dataUnmodified}
	if reset {
		resp.ConnectionStatus = connReset
	}
	if len(in) > 0 {
		resp.DataProcessingStatus = dataModified
	}
	d := &netprocv3.Data{EndOfStream: eos}
	if f.typ == abi.StreamDownstream {
		resp.ReadData = d
	} else {
		resp.WriteData = d
	}
	c.srv.log.Debug("plugin closed the connection", "reset", reset, "direction", f.name)
	return c.send(resp)
}

// closeAsync closes the connection outside any frame's answer (a timer, a
// call's response or another stream closed it, or its instance failed):
// Envoy applies connection_status before looking for data, so a message
// with no data closes the connection.
func (c *tcpConn) closeAsync(reset bool) error {
	c.finished, c.closed = true, true
	resp := &netprocv3.ProcessingResponse{ConnectionStatus: connClose}
	if reset {
		resp.ConnectionStatus = connReset
	}
	c.srv.log.Debug("plugin closed the connection asynchronously", "reset", reset)
	return c.send(resp)
}

// events applies what the plugin decided outside the connection's own
// callbacks.
func (c *tcpConn) events() error {
	for _, ev := range c.ts.TakeEvents() {
		if c.finished {
			return nil
		}
		switch ev.Kind {
		case host.EventContinue:
			if ev.Stream != abi.StreamDownstream {
				continue
			}
			if c.connPaused {
				// The bytes that waited reach the plugin with the next
				// downstream frame.
				c.connPaused = false
				continue
			}
			c.takeHeld(&c.flows[0])
		case host.EventClose:
			return c.closeAsync(false)
		case host.EventLocalResponse:
			return c.closeAsync(true)
		case host.EventFailed:
			r := ev.Result
			c.pluginFailed(r.Failure, r.Close)
			if r.Close {
				return c.closeAsync(r.Reset)
			}
			// Fail-open: what the plugin held passes with the next answer
			// of its direction; the host skips the plugin from now on.
			c.connPaused = false
			for i := range c.flows {
				c.takeHeld(&c.flows[i])
			}
		}
	}
	return nil
}

// takeHeld moves the bytes the host holds for f to f.released.
func (c *tcpConn) takeHeld(f *flow) {
	data, _ := c.ts.TakeData(f.typ)
	f.hostHeld = 0
	if len(data) == 0 {
		return
	}
	if f.ended {
		c.lost(f.name, len(data))
		return
	}
	f.released = append(f.released, data...)
}

func (c *tcpConn) lost(direction string, n int) {
	c.srv.stats.lostBodyBytes.Add(int64(n))
	c.srv.log.Warn("plugin released data after its direction ended; network_ext_proc cannot deliver it",
		"direction", direction, "bytes", n)
}

// pluginFailed logs and counts the connection's first plugin failure;
// attrs name the plugin of a chain.
func (c *tcpConn) pluginFailed(err error, closed bool, attrs ...any) {
	if c.failed {
		return
	}
	c.failed = true
	c.srv.stats.pluginFailures.Add(1)
	attrs = append(attrs, "err", err)
	if closed {
		c.srv.log.Warn("plugin failed; closing the connection (fail-closed)", attrs...)
	} else {
		c.srv.log.Warn("plugin failed; passing the connection's data without it (fail-open)", attrs...)
	}
}

// send sends an answer with the plugin's new property writes as dynamic
// metadata.
func (c *tcpConn) send(resp *netprocv3.ProcessingResponse) error {
	if md := c.metadata(); md != nil {
		resp.DynamicMetadata = md
	}
	c.srv.stats.responsesSent.Add(1)
	if err := c.gs.Send(resp); err != nil {
		c.finished = true
		if status.Code(err) == codes.Canceled || errors.Is(err, io.EOF) {
			return nil
		}
		return err
	}
	return nil
}

func (c *tcpConn) metadata() *structpb.Struct {
	if c.ts == nil {
		return nil
	}
	writes := c.ts.PropertyWrites()
	if len(writes) == 0 {
		return nil
	}
	if c.sentProps == nil {
		c.sentProps = map[string]string{}
	}
	md, skipped := propertyMetadata(c.srv.opts.MetadataNamespace, writes, c.sentProps)
	for _, k := range skipped {
		c.srv.log.Debug("property value is not valid UTF-8; not sent as dynamic metadata", "property", k)
	}
	return md
}

// close ends the plugin's TCP context. A plugin that has not seen its
// downstream side close hears of it first, as in Envoy, where the
// connection's close event always reaches it: from its own side (local)
// when it closed the connection, otherwise of unknown origin (the stream
// ending says the connection is gone, not who closed it). Bytes still held
// are lost with the connection and counted.
func (c *tcpConn) close() {
	if c.ts == nil {
		return
	}
	if !c.finished && !c.failed {
		n := len(c.connHeld)
		for i := range c.flows {
			f := &c.flows[i]
			b, _ := c.ts.TakeData(f.typ)
			n += len(b) + len(f.released)
		}
		if n > 0 {
			c.srv.stats.lostBodyBytes.Add(int64(n))
			c.srv.log.Debug("connection ended while the plugin held data", "bytes", n)
		}
	}
	if !c.downClosed {
		peer := abi.PeerUnknown
		if c.finished {
			peer = abi.PeerLocal
		}
		c.ts.DownstreamClose(peer)
	}
	c.ts.Close()
}
