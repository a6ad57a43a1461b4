package server

// This file holds the L4 chain layer: a connection's plugin context when its
// chain has several plugins, with Envoy's network filter-manager semantics,
// behind the interface of a single host.TCPStream (tcpPluginStream).
//
//   - proxy_on_new_connection runs in chain order; a pause stops the
//     plugins after it (and holds the connection's data) until it continues
//     the downstream direction.
//   - Downstream data (read filters) runs in chain order, upstream data
//     (write filters) in reverse; a frame runs from the first plugin until
//     one holds it, and what a plugin releases later runs through the ones
//     after it.
//   - Connection-close callbacks reach every plugin.
//   - Each plugin keeps its own failure policy: fail-closed closes the
//     connection, fail-open skips that plugin.

import (
	"errors"

	"github.com/wasm-callout/wasm-callout/abi"
	"github.com/wasm-callout/wasm-callout/host"
)

// tcpPluginStream is a connection's plugin context, as tcpConn drives it:
// a *host.TCPStream for a single plugin, a *tcpChain for several.
type tcpPluginStream interface {
	NewConnection() host.Result
	DownstreamData(chunk []byte, endOfStream bool) host.Result
	UpstreamData(chunk []byte, endOfStream bool) host.Result
	DownstreamClose(peer abi.PeerType)
	UpstreamClose(peer abi.PeerType)
	TakeData(dir abi.StreamType) ([]byte, bool)
	TakeEvents() []host.Event
	Notify() <-chan struct{}
	PropertyWrites() map[string][]byte
	Fail(err error)
	Close()
}

var (
	_ tcpPluginStream = (*host.TCPStream)(nil)
	_ tcpPluginStream = (*tcpChain)(nil)
)

// tcpMember is one plugin of a connection's chain; ts is nil when the
// plugin had no instance and fails open.
type tcpMember struct {
	name string
	ts   *host.TCPStream
}

// tcpChain runs one connection through the plugins of a chain.
type tcpChain struct {
	c       *tcpConn
	members []tcpMember
	notify  chan struct{}
	events  []host.Event

	// connAt is the position of the plugin whose proxy_on_new_connection
	// paused, -1 if none.
	connAt int
	// held is, per direction (0 downstream, 1 upstream), the position of
	// the plugin that held the last frame, -1 if none; eos that frame's
	// end_of_stream.
	held [2]int
	eos  [2]bool
	// released are bytes that went through the whole chain after a
	// plugin resumed; forced says the last data call paused, so that a
	// TakeData right after it takes what every plugin holds.
	released [2][]byte
	forced   [2]bool
	done     bool
}

func flowIndex(dir abi.StreamType) int {
	if dir == abi.StreamUpstream {
		return 1
	}
	return 0
}

// member returns the plugin at position k of dir's order.
func (t *tcpChain) member(dir abi.StreamType, k int) *tcpMember {
	if dir == abi.StreamUpstream {
		return &t.members[len(t.members)-1-k]
	}
	return &t.members[k]
}

func (t *tcpChain) position(dir abi.StreamType, i int) int {
	if dir == abi.StreamUpstream {
		return len(t.members) - 1 - i
	}
	return i
}

// newTCPChain creates the TCP context of every plugin of the connection's
// chain. A plugin without a healthy instance gets its own failure policy:
// the Result closes the connection for a fail-closed one.
func (c *tcpConn) newTCPChain() (host.Result, error) {
	t := &tcpChain{c: c, notify: make(chan struct{}, 1), members: make([]tcpMember, len(c.leases)), connAt: -1, held: [2]int{-1, -1}}
	for i, l := range c.leases {
		t.members[i].name = l.slot.name
		ts, err := l.gen.plugin.NewTCPStreamNotify(&c.props, t.notify)
		if err == nil {
			t.members[i].ts = ts
			continue
		}
		if errors.Is(err, host.ErrOverloaded) {
			t.Close()
			return host.Result{}, c.srv.shed()
		}
		closed := l.gen.plugin.Config().FailurePolicy != host.FailOpen
		c.pluginFailed(err, closed, "plugin", l.slot.name)
		if closed {
			t.Close()
			return host.Result{Action: abi.ActionPause, Close: true, Failure: err}, nil
		}
	}
	c.ts = t
	return t.connect(0), nil
}

// outcome folds one plugin's result into acc and reports whether the
// iteration stops there.
func (t *tcpChain) outcome(m *tcpMember, r host.Result, acc *host.Result) bool {
	if r.Failure != nil {
		t.c.pluginFailed(r.Failure, r.Close, "plugin", m.name)
		acc.Failure = r.Failure
	}
	if r.Close {
		acc.Action, acc.Close, acc.Reset = abi.ActionPause, true, r.Reset
		t.done = true
		return true
	}
	if r.Action != abi.ActionContinue {
		acc.Action = abi.ActionPause
		return true
	}
	return false
}

// connect runs proxy_on_new_connection from position from on.
func (t *tcpChain) connect(from int) host.Result {
	acc := host.Result{Action: abi.ActionContinue}
	t.connAt = -1
	for k := from; k < len(t.members); k++ {
		m := &t.members[k]
		if m.ts == nil {
			continue
		}
		if t.outcome(m, m.ts.NewConnection(), &acc) {
			if !acc.Close {
				t.connAt = k
			}
			return acc
		}
	}
	return acc
}

// data runs a frame from position from on, until a plugin holds it.
func (t *tcpChain) data(dir abi.StreamType, chunk []byte, eos bool, from int) host.Result {
	acc := host.Result{Action: abi.ActionContinue}
	fi := flowIndex(dir)
	t.held[fi] = -1
	for k := from; k < len(t.members); k++ {
		m := t.member(dir, k)
		if m.ts == nil {
			continue
		}
		var r host.Result
		if dir == abi.StreamDownstream {
			r = m.ts.DownstreamData(chunk, eos)
		} else {
			r = m.ts.UpstreamData(chunk, eos)
		}
		if t.outcome(m, r, &acc) {
			if !acc.Close {
				t.held[fi] = k
			}
			return acc
		}
		chunk = r.Body
		acc.BodyModified = acc.BodyModified || r.BodyModified
	}
	acc.Body = chunk
	return acc
}

func (t *tcpChain) frame(dir abi.StreamType, chunk []byte, eos bool) host.Result {
	fi := flowIndex(dir)
	t.eos[fi] = eos
	r := t.data(dir, chunk, eos, 0)
	t.forced[fi] = r.Action != abi.ActionContinue && !r.Close
	if r.Action == abi.ActionContinue && len(t.released[fi]) > 0 {
		// Bytes a plugin resumed since go first (the connection takes
		// only downstream ones at once).
		r.Body = append(t.released[fi], r.Body...)
		r.BodyModified = true
		t.released[fi] = nil
	}
	return r
}

// NewConnection is run by newTCPChain; the connection calls it once.
func (t *tcpChain) NewConnection() host.Result { return t.connect(0) }

// DownstreamData runs a read_data frame through the chain, in order.
func (t *tcpChain) DownstreamData(chunk []byte, eos bool) host.Result {
	return t.frame(abi.StreamDownstream, chunk, eos)
}

// UpstreamData runs a write_data frame through the chain, in reverse.
func (t *tcpChain) UpstreamData(chunk []byte, eos bool) host.Result {
	return t.frame(abi.StreamUpstream, chunk, eos)
}

// DownstreamClose tells every plugin the downstream side closed.
func (t *tcpChain) DownstreamClose(peer abi.PeerType) {
	for i := range t.members {
		if t.members[i].ts != nil {
			t.members[i].ts.DownstreamClose(peer)
		}
	}
}

// UpstreamClose tells every plugin the upstream side closed.
func (t *tcpChain) UpstreamClose(peer abi.PeerType) {
	for i := range t.members {
		if t.members[i].ts != nil {
			t.members[i].ts.UpstreamClose(peer)
		}
	}
}

// TakeData returns the bytes that went through the whole chain since the
// last take; right after a data call that paused, also what every plugin
// holds (the later plugins hold the older bytes).
func (t *tcpChain) TakeData(dir abi.StreamType) ([]byte, bool) {
	fi := flowIndex(dir)
	out := t.released[fi]
	t.released[fi] = nil
	if t.forced[fi] {
		t.forced[fi] = false
		t.held[fi] = -1
		for k := len(t.members) - 1; k >= 0; k-- {
			if m := t.member(dir, k); m.ts != nil {
				if b, _ := m.ts.TakeData(dir); len(b) > 0 {
					out = append(out, b...)
				}
			}
		}
	}
	return out, len(out) > 0
}

// Notify is signalled when any plugin of the chain has events.
func (t *tcpChain) Notify() <-chan struct{} { return t.notify }

// TakeEvents handles the plugins' events and returns the chain's.
func (t *tcpChain) TakeEvents() []host.Event {
	t.forced = [2]bool{}
	for i := range t.members {
		m := &t.members[i]
		if m.ts == nil {
			continue
		}
		for _, ev := range m.ts.TakeEvents() {
			if t.done {
				break
			}
			t.event(i, m, ev)
		}
	}
	out := t.events
	t.events = nil
	return out
}

func (t *tcpChain) event(i int, m *tcpMember, ev host.Event) {
	switch ev.Kind {
	case host.EventContinue:
		if ev.Stream == abi.StreamDownstream || ev.Stream == abi.StreamUpstream {
			t.resume(ev.Stream, i, m)
		}
	case host.EventClose, host.EventLocalResponse:
		t.done = true
		t.events = append(t.events, ev)
	case host.EventFailed:
		r := ev.Result
		if r.Close {
			t.c.pluginFailed(r.Failure, true, "plugin", m.name)
			t.done = true
			t.events = append(t.events, ev)
			return
		}
		// Fail-open: what the plugin held goes on through the rest.
		t.c.pluginFailed(r.Failure, false, "plugin", m.name)
		t.resume(abi.StreamDownstream, i, m)
		t.resume(abi.StreamUpstream, i, m)
	}
}

// resume continues direction dir after plugin i continued it.
func (t *tcpChain) resume(dir abi.StreamType, i int, m *tcpMember) {
	k := t.position(dir, i)
	if dir == abi.StreamDownstream && t.connAt == i {
		r := t.connect(i + 1)
		t.emit(dir, r, false)
		return
	}
	fi := flowIndex(dir)
	b, _ := m.ts.TakeData(dir)
	if t.held[fi] != k && len(b) == 0 {
		return
	}
	eos := t.held[fi] == k && t.eos[fi]
	r := t.data(dir, b, eos, k+1)
	t.emit(dir, r, true)
}

// emit turns the outcome of a resumed iteration into the chain's event.
func (t *tcpChain) emit(dir abi.StreamType, r host.Result, data bool) {
	fi := flowIndex(dir)
	switch {
	case r.Close && r.Failure != nil:
		t.events = append(t.events, host.Event{Kind: host.EventFailed, Result: r})
	case r.Close:
		t.events = append(t.events, host.Event{Kind: host.EventClose})
	case r.Action == abi.ActionContinue:
		if data {
			t.released[fi] = append(t.released[fi], r.Body...)
		}
		t.events = append(t.events, host.Event{Kind: host.EventContinue, Stream: dir})
	}
}

// PropertyWrites merges the plugins' property writes; a later plugin's
// write of the same path wins.
func (t *tcpChain) PropertyWrites() map[string][]byte {
	var out map[string][]byte
	for i := range t.members {
		if t.members[i].ts == nil {
			continue
		}
		for k, v := range t.members[i].ts.PropertyWrites() {
			if out == nil {
				out = map[string][]byte{}
			}
			out[k] = v
		}
	}
	return out
}

// Fail applies every plugin's failure policy.
func (t *tcpChain) Fail(err error) {
	for i := range t.members {
		if t.members[i].ts != nil {
			t.members[i].ts.Fail(err)
		}
	}
}

// Close ends every plugin's context, in chain order.
func (t *tcpChain) Close() {
	for i := range t.members {
		if t.members[i].ts != nil {
			t.members[i].ts.Close()
		}
	}
}

// expireChain lets go of the generations of the connection's chain whose
// drain time ran out: each such plugin fails by its own policy.
func (c *tcpConn) expireChain() {
	c.expired = c.srv.expiryChan()
	t, _ := c.ts.(*tcpChain)
	for i, l := range c.leases {
		select {
		case <-l.expired():
		default:
			continue
		}
		if l.done.Load() {
			continue
		}
		if t == nil {
			if nl, ok := c.srv.acquireIn(l.slot); ok {
				c.leases[i] = nl
			}
		} else if m := &t.members[i]; m.ts != nil {
			c.srv.gens.expiredStreams.Add(1)
			m.ts.Fail(ErrDrainTimeout)
		}
		l.release()
	}
}
