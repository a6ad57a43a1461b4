package host

import (
	"github.com/wasm-callout/wasm-callout/abi"
)

// TCPStream is one TCP connection running through a plugin's TcpContext,
// pinned to one instance. Downstream data flows from the client to the
// upstream (Envoy's onData, network_ext_proc's read_data); upstream data
// flows back (onWrite, write_data). Its methods are called in connection
// order by one goroutine; Events may arrive from others.
type TCPStream struct {
	stream

	// Guarded by in.mu.
	data [2]body // downstream, upstream
}

// NewTCPStream creates a TCP context (proxy_on_context_create) on the least
// busy healthy instance. Call NewConnection next. props may be nil.
func (p *Plugin) NewTCPStream(props PropertySource) (*TCPStream, error) {
	s := &TCPStream{}
	s.tcp = s
	if err := p.openStream(&s.stream, props); err != nil {
		return nil, err
	}
	return s, nil
}

// NewTCPStreamNotify is NewTCPStream for a stream whose Notify is notify,
// which the caller may share among streams (a network filter chain); see
// NewHTTPStreamNotify.
func (p *Plugin) NewTCPStreamNotify(props PropertySource, notify chan struct{}) (*TCPStream, error) {
	s := &TCPStream{}
	s.tcp = s
	s.notify = notify
	if err := p.openStream(&s.stream, props); err != nil {
		return nil, err
	}
	return s, nil
}

// NewConnection runs proxy_on_new_connection. A Pause holds the
// connection's data until the plugin continues the downstream direction.
func (s *TCPStream) NewConnection() Result {
	in := s.in
	in.lock()
	defer in.mu.Unlock()
	if r, done := s.precheck(); done {
		return r
	}
	raw, err := s.invoke(phaseNone, in.fns.onNewConnection)
	return s.finish(abi.StreamDownstream, abi.BodyAction(uint32(raw)), err)
}

// DownstreamData runs proxy_on_downstream_data with the size of everything
// buffered so far in that direction. As Envoy does for a StopIteration, a
// Pause keeps the bytes for the next call; a Continue releases them, with
// the plugin's edits, in Result.Body. A Close result means the plugin (or
// the failure policy) closes the connection; Reset asks for an abortive
// close.
func (s *TCPStream) DownstreamData(chunk []byte, endOfStream bool) Result {
	s.in.lock()
	defer s.in.mu.Unlock()
	return s.bodyCall(&s.data[0], abi.StreamDownstream, phaseDownstreamData, s.in.fns.onDownstreamData, chunk, endOfStream)
}

// UpstreamData runs proxy_on_upstream_data; see DownstreamData.
func (s *TCPStream) UpstreamData(chunk []byte, endOfStream bool) Result {
	s.in.lock()
	defer s.in.mu.Unlock()
	return s.bodyCall(&s.data[1], abi.StreamUpstream, phaseUpstreamData, s.in.fns.onUpstreamData, chunk, endOfStream)
}

// DownstreamClose runs proxy_on_downstream_connection_close(peer).
func (s *TCPStream) DownstreamClose(peer abi.PeerType) { s.closeCallback(true, peer) }

// UpstreamClose runs proxy_on_upstream_connection_close(peer).
func (s *TCPStream) UpstreamClose(peer abi.PeerType) { s.closeCallback(false, peer) }

func (s *TCPStream) closeCallback(downstream bool, peer abi.PeerType) {
	in := s.in
	in.lock()
	defer in.mu.Unlock()
	if _, done := s.precheck(); done {
		return
	}
	fn := in.fns.onUpstreamClose
	if downstream {
		fn = in.fns.onDownstreamClose
	}
	_, err := s.invoke(phaseNone, fn, uint64(peer))
	in.flushActions(&s.stream)
	s.acts = actions{}
	if err != nil {
		s.failed = err
	}
}

// TakeData releases the bytes buffered for a direction (StreamDownstream or
// StreamUpstream) after the plugin resumed it asynchronously, with whether
// the plugin changed them.
func (s *TCPStream) TakeData(dir abi.StreamType) (data []byte, modified bool) {
	if dir != abi.StreamDownstream && dir != abi.StreamUpstream {
		return nil, false
	}
	return s.takeBody(&s.data[dir-abi.StreamDownstream])
}

// Close ends the connection's context: proxy_on_done, proxy_on_log and
// proxy_on_delete (Envoy's TCP order), exactly once. Close is idempotent.
func (s *TCPStream) Close() {
	s.close(s.in.fns.onDone, s.in.fns.onLog, s.in.fns.onDelete)
}
