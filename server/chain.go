package server

// This file holds the chain layer: a stream's plugin context when its chain
// has several plugins. chainStream drives one host.HTTPStream per plugin
// with Envoy's HTTP filter-manager semantics and offers the server's stream
// the same interface (pluginStream) as a single host.HTTPStream, so the
// stream, its directions and its answers know nothing of chains: one
// ext_proc round trip per phase, however many plugins.
//
//   - Request callbacks run in chain order, response callbacks in reverse.
//   - Each plugin sees the header maps as the previous one left them; the
//     chain keeps the one map Envoy would have (canon) and copies it into a
//     plugin's stream before that plugin runs when it changed since.
//   - A pause stops the plugins after the one that paused; its resume
//     (EventContinue) runs the rest. A body chunk runs from the first
//     plugin until one holds it, as Envoy iterates data frames.
//   - A local reply ends the iteration. Sent during the request, its
//     response headers and body then pass, in response order, through the
//     plugins before the sender: in Envoy the local reply is encoded
//     through every encoder filter, and a Wasm filter whose context was
//     never created (those after the sender) skips it. The sender does
//     not see its own reply, as a single plugin served alone does not;
//     pauses in that pass are not waited for. Sent during the response,
//     it goes out as it is (Envoy sends it directly to the codec).
//   - Each plugin keeps its own failure policy: fail-closed ends the stream
//     with that plugin's fail status, fail-open skips that plugin only.

import (
	"errors"
	"strconv"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"

	"github.com/wasm-callout/wasm-callout/abi"
	"github.com/wasm-callout/wasm-callout/host"
)

// pluginStream is a stream's plugin context, as the stream drives it: a
// *host.HTTPStream for a single plugin, a *chainStream for several.
type pluginStream interface {
	RequestHeaders(headers []abi.Pair, endOfStream bool) host.Result
	ResponseHeaders(headers []abi.Pair, endOfStream bool) host.Result
	RequestBody(chunk []byte, endOfStream bool) host.Result
	ResponseBody(chunk []byte, endOfStream bool) host.Result
	RequestTrailers(trailers []abi.Pair) host.Result
	ResponseTrailers(trailers []abi.Pair) host.Result
	WithHeaders(m abi.MapType, fn func(h *host.HeaderMap))
	TakeHeaderChanges(m abi.MapType) []host.HeaderChange
	TakeBody(dir abi.StreamType) ([]byte, bool)
	TakeEvents() []host.Event
	Notify() <-chan struct{}
	PropertyWrites() map[string][]byte
	PendingCall() (time.Time, bool)
	Fail(err error)
	Close()
}

var (
	_ pluginStream = (*host.HTTPStream)(nil)
	_ pluginStream = (*chainStream)(nil)
)

// chainMember is one plugin of a chain stream.
type chainMember struct {
	name string
	// hs is nil when the plugin had no instance and fails open: the chain
	// skips it.
	hs *host.HTTPStream
	// seen is the version of each canon map the plugin's stream holds.
	seen [4]uint64
}

// chainStop is where a direction's iteration stopped: the phase and the
// position (in that direction's order) of the plugin that paused.
type chainStop struct {
	ph phase
	at int
}

// chainStream runs one stream through the plugins of a chain.
type chainStream struct {
	st      *stream
	members []chainMember
	notify  chan struct{}
	events  []host.Event

	canon [4]*host.HeaderMap // the maps as Envoy would hold them; nil until arrived
	ver   [4]uint64          // bumped when canon changes

	stop     [2]chainStop
	eos      [2]bool   // the direction's last body chunk ended it
	released [2][]byte // body bytes through the whole chain, for TakeBody
	// forced: the last body call paused; a TakeBody right after it (the
	// server releasing a BUFFERED body that cannot grow) takes what every
	// plugin holds.
	forced [2]bool
	// respStarted: Envoy sent response headers, so a local reply no longer
	// passes through the plugins.
	respStarted bool
	done        bool // a local reply, close or failure ended the stream
}

// selectChain picks the stream's chain (chainName) on its first message
// and takes its leases. An unknown chain ends the stream with NOT_FOUND,
// which Envoy's filter then handles by its failure_mode_allow.
func (st *stream) selectChain(m *extprocv3.ProcessingRequest) error {
	exp := st.srv.expiryChan() // before the leases: an expiry after them closes it
	cd, leases, err := st.srv.acquireChain(chainName(st.gs.Context(), m), st.leaseBuf[:0])
	if err != nil {
		st.log.Debug("ext_proc stream names no known chain", "err", err)
		return err
	}
	st.chain, st.log = cd, cd.log
	st.lease, st.plugin = leases[0], leases[0].gen.plugin
	if len(leases) == 1 {
		st.expired = st.lease.expired()
		return nil
	}
	st.leases, st.expired = leases, exp
	return nil
}

// releaseLeases lets go of every generation the stream holds.
func (st *stream) releaseLeases() {
	for _, l := range st.leases {
		l.release()
	}
	if st.lease != nil {
		st.lease.release()
	}
}

// wantBody reports whether a plugin of the stream has a body callback for
// direction t (mode_override).
func (st *stream) wantBody(t abi.StreamType) bool {
	if st.leases == nil {
		return st.lease.gen.wantBody[t]
	}
	for _, l := range st.leases {
		if l.gen.wantBody[t] {
			return true
		}
	}
	return false
}

// expireChain handles an expiry while the stream runs a chain: each plugin
// whose generation ran out of drain time fails (its own failure policy
// applies) and its lease is released; the others go on.
func (st *stream) expireChain() {
	st.expired = st.srv.expiryChan()
	cs, _ := st.hs.(*chainStream)
	for i, l := range st.leases {
		select {
		case <-l.expired():
		default:
			continue
		}
		if l.done.Load() {
			continue
		}
		if cs == nil {
			// No plugin context yet: move to the current generation.
			if nl, ok := st.srv.acquireIn(l.slot); ok {
				st.leases[i] = nl
			}
		} else if m := &cs.members[i]; m.hs != nil {
			st.srv.gens.expiredStreams.Add(1)
			m.hs.Fail(ErrDrainTimeout)
		}
		l.release()
	}
}

// newChainStream creates the plugin context of every plugin of the chain.
// A plugin without a healthy instance gets its own failure policy.
func (st *stream) newChainStream() error {
	c := &chainStream{st: st, notify: make(chan struct{}, 1), members: make([]chainMember, len(st.leases))}
	c.stop[0].at, c.stop[1].at = -1, -1
	for i, l := range st.leases {
		p := l.gen.plugin
		c.members[i].name = l.slot.name
		hs, err := p.NewHTTPStreamNotify(&st.props, c.notify)
		if err == nil {
			c.members[i].hs = hs
			continue
		}
		if errors.Is(err, host.ErrOverloaded) {
			c.Close()
			return st.srv.shed()
		}
		cfg := p.Config()
		closed := cfg.FailurePolicy != host.FailOpen
		st.pluginFailed(err, closed, "plugin", l.slot.name)
		if closed {
			c.Close()
			return st.immediate(&host.LocalResponse{Status: cfg.FailStatus, Details: detailsFailStream, GRPCStatus: grpcStatusUnavail})
		}
	}
	st.hs = c
	return nil
}

// ---- order and maps ----

// member returns the plugin at position k of direction dir's order.
func (c *chainStream) member(dir abi.StreamType, k int) *chainMember {
	if dir == abi.StreamHTTPResponse {
		return &c.members[len(c.members)-1-k]
	}
	return &c.members[k]
}

// install makes pairs the canon map mt, as Envoy received it.
func (c *chainStream) install(mt abi.MapType, pairs []abi.Pair) {
	h := &host.HeaderMap{}
	h.SetPairs(pairs)
	h.ClearChanges()
	c.canon[mt] = h
	c.ver[mt]++
}

// sync copies into m's stream the canon maps it has not seen, but for
// skip (the map its next callback installs).
func (c *chainStream) sync(m *chainMember, skip abi.MapType) {
	for mt := range c.canon {
		h := c.canon[mt]
		if h == nil || abi.MapType(mt) == skip || m.seen[mt] == c.ver[mt] {
			continue
		}
		m.hs.WithHeaders(abi.MapType(mt), func(mh *host.HeaderMap) {
			mh.SetPairs(h.Pairs())
			mh.ClearChanges()
		})
		m.seen[mt] = c.ver[mt]
	}
}

// collect applies m's header changes to the canon maps.
func (c *chainStream) collect(m *chainMember) {
	for mt := range c.canon {
		h := c.canon[mt]
		if h == nil {
			continue
		}
		changes := m.hs.TakeHeaderChanges(abi.MapType(mt))
		if len(changes) == 0 {
			continue
		}
		for _, ch := range changes {
			if len(ch.Values) == 0 {
				h.Remove(ch.Key)
				continue
			}
			h.Replace(ch.Key, ch.Values[0])
			for _, v := range ch.Values[1:] {
				h.Add(ch.Key, v)
			}
		}
		c.ver[mt]++
		m.seen[mt] = c.ver[mt]
	}
}

func (c *chainStream) collectAll() {
	for i := range c.members {
		if c.members[i].hs != nil {
			c.collect(&c.members[i])
		}
	}
}

// ---- iteration ----

// outcome folds one plugin's result into the chain's: it reports whether
// the iteration stops there, and the result the chain answers with then.
// k is the plugin's position in dir's order.
func (c *chainStream) outcome(dir abi.StreamType, ph phase, k int, m *chainMember, r host.Result, acc *host.Result) (stop bool) {
	if r.ClearRouteCache {
		acc.ClearRouteCache = true
	}
	if r.Failure != nil {
		c.st.pluginFailed(r.Failure, r.LocalResponse != nil || r.Close, "plugin", m.name)
		acc.Failure = r.Failure
	}
	switch {
	case r.LocalResponse != nil:
		lr := r.LocalResponse
		if r.Failure == nil && dir == abi.StreamHTTPRequest {
			lr = c.encodeLocal(k, lr)
		}
		acc.Action, acc.LocalResponse = abi.ActionPause, lr
		c.done = true
		return true
	case r.Close:
		acc.Action, acc.Close, acc.Reset = abi.ActionPause, true, r.Reset
		c.done = true
		return true
	case r.Action != abi.ActionContinue:
		acc.Action = abi.ActionPause
		c.stop[dir] = chainStop{ph: ph, at: k}
		return true
	}
	return false
}

// mapPhase runs a headers or trailers phase from position from on: the
// canon map mt as it stands now.
func (c *chainStream) mapPhase(dir abi.StreamType, ph phase, mt abi.MapType, eos bool, from int) host.Result {
	acc := host.Result{Action: abi.ActionContinue}
	c.stop[dir] = chainStop{at: -1}
	for k := from; k < len(c.members); k++ {
		m := c.member(dir, k)
		if m.hs == nil {
			continue
		}
		c.sync(m, mt)
		pairs := c.canon[mt].Pairs()
		var r host.Result
		switch {
		case ph == phaseHeaders && dir == abi.StreamHTTPRequest:
			r = m.hs.RequestHeaders(pairs, eos)
		case ph == phaseHeaders:
			r = m.hs.ResponseHeaders(pairs, eos)
		case dir == abi.StreamHTTPRequest:
			r = m.hs.RequestTrailers(pairs)
		default:
			r = m.hs.ResponseTrailers(pairs)
		}
		m.seen[mt] = c.ver[mt]
		c.collect(m)
		if ph == phaseTrailers && r.Action == abi.ActionContinue && r.LocalResponse == nil && !r.Close {
			// Envoy forwards a body the plugin still held when its
			// trailers continue, before the trailers.
			if b, _ := m.hs.TakeBody(dir); len(b) > 0 {
				if out := c.bodyPhase(dir, b, false, k+1); out.Action == abi.ActionContinue {
					c.released[dir] = append(c.released[dir], out.Body...)
				} else if out.LocalResponse != nil || out.Close {
					return out
				}
			}
		}
		if c.outcome(dir, ph, k, m, r, &acc) {
			return acc
		}
	}
	return acc
}

// bodyPhase runs a body chunk from position from on, until a plugin holds
// it.
func (c *chainStream) bodyPhase(dir abi.StreamType, data []byte, eos bool, from int) host.Result {
	acc := host.Result{Action: abi.ActionContinue}
	for k := from; k < len(c.members); k++ {
		m := c.member(dir, k)
		if m.hs == nil {
			continue
		}
		c.sync(m, 0xff)
		var r host.Result
		if dir == abi.StreamHTTPRequest {
			r = m.hs.RequestBody(data, eos)
		} else {
			r = m.hs.ResponseBody(data, eos)
		}
		c.collect(m)
		if c.outcome(dir, phaseBody, k, m, r, &acc) {
			return acc
		}
		data = r.Body
		acc.BodyModified = acc.BodyModified || r.BodyModified
	}
	acc.Body = data
	return acc
}

// encodeLocal passes a local reply sent by the plugin at request position
// k through the response callbacks of the plugins before it, in response
// order, and returns the reply as they left it.
func (c *chainStream) encodeLocal(k int, lr *host.LocalResponse) *host.LocalResponse {
	if k == 0 || c.respStarted {
		return lr
	}
	pairs := make([]abi.Pair, 0, len(lr.Headers)+1)
	pairs = append(pairs, abi.Pair{Key: ":status", Value: strconv.Itoa(int(lr.Status))})
	pairs = append(pairs, lr.Headers...)
	c.install(abi.MapHTTPResponseHeaders, pairs)
	body := lr.Body
	for j := k - 1; j >= 0; j-- {
		m := &c.members[j]
		if m.hs == nil {
			continue
		}
		c.sync(m, abi.MapHTTPResponseHeaders)
		r := m.hs.ResponseHeaders(c.canon[abi.MapHTTPResponseHeaders].Pairs(), len(body) == 0)
		m.seen[abi.MapHTTPResponseHeaders] = c.ver[abi.MapHTTPResponseHeaders]
		c.collect(m)
		if r.Failure != nil {
			closed := r.LocalResponse != nil
			c.st.pluginFailed(r.Failure, closed, "plugin", m.name)
			if closed {
				return r.LocalResponse
			}
			continue
		}
		if r.Action != abi.ActionContinue || r.LocalResponse != nil || r.Close {
			c.st.log.Debug("a plugin paused or replied on a local reply's response headers; the chain does not wait",
				"plugin", m.name)
		}
		if len(body) == 0 {
			continue
		}
		rb := m.hs.ResponseBody(body, true)
		c.collect(m)
		if rb.Failure != nil && rb.LocalResponse != nil {
			c.st.pluginFailed(rb.Failure, true, "plugin", m.name)
			return rb.LocalResponse
		}
		if rb.Action == abi.ActionContinue && rb.LocalResponse == nil {
			body = rb.Body
		} else if b, _ := m.hs.TakeBody(abi.StreamHTTPResponse); b != nil {
			body = b
		}
	}
	out := *lr
	out.Headers, out.Body = nil, body
	for _, p := range c.canon[abi.MapHTTPResponseHeaders].Pairs() {
		if p.Key != ":status" {
			out.Headers = append(out.Headers, p)
		} else if n, err := strconv.Atoi(p.Value); err == nil && n >= 200 && n <= 599 {
			out.Status = uint32(n)
		}
	}
	return &out
}

// ---- pluginStream ----

// RequestHeaders runs the request headers through the chain.
func (c *chainStream) RequestHeaders(headers []abi.Pair, eos bool) host.Result {
	c.install(abi.MapHTTPRequestHeaders, headers)
	return c.mapPhase(abi.StreamHTTPRequest, phaseHeaders, abi.MapHTTPRequestHeaders, eos, 0)
}

// ResponseHeaders runs the response headers through the chain, last plugin
// first.
func (c *chainStream) ResponseHeaders(headers []abi.Pair, eos bool) host.Result {
	c.respStarted = true
	c.install(abi.MapHTTPResponseHeaders, headers)
	return c.mapPhase(abi.StreamHTTPResponse, phaseHeaders, abi.MapHTTPResponseHeaders, eos, 0)
}

// RequestTrailers runs the request trailers through the chain.
func (c *chainStream) RequestTrailers(trailers []abi.Pair) host.Result {
	c.forced[abi.StreamHTTPRequest] = false
	c.install(abi.MapHTTPRequestTrailers, trailers)
	return c.mapPhase(abi.StreamHTTPRequest, phaseTrailers, abi.MapHTTPRequestTrailers, false, 0)
}

// ResponseTrailers runs the response trailers through the chain.
func (c *chainStream) ResponseTrailers(trailers []abi.Pair) host.Result {
	c.forced[abi.StreamHTTPResponse] = false
	c.install(abi.MapHTTPResponseTrailers, trailers)
	return c.mapPhase(abi.StreamHTTPResponse, phaseTrailers, abi.MapHTTPResponseTrailers, false, 0)
}

// RequestBody runs a request body chunk through the chain.
func (c *chainStream) RequestBody(chunk []byte, eos bool) host.Result {
	return c.body(abi.StreamHTTPRequest, chunk, eos)
}

// ResponseBody runs a response body chunk through the chain.
func (c *chainStream) ResponseBody(chunk []byte, eos bool) host.Result {
	return c.body(abi.StreamHTTPResponse, chunk, eos)
}

func (c *chainStream) body(dir abi.StreamType, chunk []byte, eos bool) host.Result {
	c.eos[dir] = eos
	c.stop[dir] = chainStop{at: -1}
	r := c.bodyPhase(dir, chunk, eos, 0)
	c.forced[dir] = r.Action != abi.ActionContinue && r.LocalResponse == nil && !r.Close
	return r
}

// WithHeaders runs fn on the canon map mt.
func (c *chainStream) WithHeaders(mt abi.MapType, fn func(h *host.HeaderMap)) {
	if mt > abi.MapHTTPResponseTrailers || c.canon[mt] == nil {
		return
	}
	c.collectAll()
	fn(c.canon[mt])
	c.ver[mt]++
}

// TakeHeaderChanges returns the changes every plugin made to map mt since
// the last take, merged: the final value of each key any of them changed.
// The result is valid until the next take of the same map.
func (c *chainStream) TakeHeaderChanges(mt abi.MapType) []host.HeaderChange {
	if mt > abi.MapHTTPResponseTrailers || c.canon[mt] == nil {
		return nil
	}
	c.collectAll()
	h := c.canon[mt]
	ch := h.Changes()
	h.ClearChanges()
	return ch
}

// TakeBody returns the body bytes that went through the whole chain since
// the last take. Right after a body call that paused it takes, too, what
// every plugin holds (oldest first: the later plugins hold older bytes).
func (c *chainStream) TakeBody(dir abi.StreamType) ([]byte, bool) {
	if dir > abi.StreamHTTPResponse {
		return nil, false
	}
	out := c.released[dir]
	c.released[dir] = nil
	if c.forced[dir] {
		c.forced[dir] = false
		c.stop[dir] = chainStop{at: -1}
		for k := len(c.members) - 1; k >= 0; k-- {
			if m := c.member(dir, k); m.hs != nil {
				if b, _ := m.hs.TakeBody(dir); len(b) > 0 {
					out = append(out, b...)
				}
			}
		}
	}
	return out, len(out) > 0
}

// Notify is signalled when any plugin of the chain has events.
func (c *chainStream) Notify() <-chan struct{} { return c.notify }

// TakeEvents handles the plugins' events and returns the chain's: a
// direction continues once every plugin after the one that resumed it has
// continued too.
func (c *chainStream) TakeEvents() []host.Event {
	c.forced = [2]bool{}
	for i := range c.members {
		m := &c.members[i]
		if m.hs == nil {
			continue
		}
		for _, ev := range m.hs.TakeEvents() {
			if c.done {
				break
			}
			c.collect(m)
			c.event(i, m, ev)
		}
	}
	out := c.events
	c.events = nil
	return out
}

// position returns member i's position in dir's order.
func (c *chainStream) position(dir abi.StreamType, i int) int {
	if dir == abi.StreamHTTPResponse {
		return len(c.members) - 1 - i
	}
	return i
}

func (c *chainStream) event(i int, m *chainMember, ev host.Event) {
	switch ev.Kind {
	case host.EventContinue:
		if ev.Stream <= abi.StreamHTTPResponse {
			c.resume(ev.Stream, i, m, ev.ClearRouteCache)
		}
	case host.EventLocalResponse:
		lr := ev.LocalResponse
		if k := c.position(abi.StreamHTTPRequest, i); !c.respStarted {
			lr = c.encodeLocal(k, lr)
		}
		c.done = true
		c.events = append(c.events, host.Event{Kind: host.EventLocalResponse, LocalResponse: lr})
	case host.EventClose:
		c.done = true
		c.events = append(c.events, ev)
	case host.EventFailed:
		r := ev.Result
		if r.LocalResponse != nil || r.Close {
			c.st.pluginFailed(r.Failure, true, "plugin", m.name)
			c.done = true
			c.events = append(c.events, ev)
			return
		}
		// Fail-open: the host skips the plugin from now on; a direction
		// it held goes on with the plugins after it.
		c.st.pluginFailed(r.Failure, false, "plugin", m.name)
		for dir := abi.StreamHTTPRequest; dir <= abi.StreamHTTPResponse; dir++ {
			if c.stop[dir].ph != phaseNone && c.stop[dir].at == c.position(dir, i) {
				c.resume(dir, i, m, false)
			}
		}
	}
}

// resume continues direction dir after plugin i resumed it.
func (c *chainStream) resume(dir abi.StreamType, i int, m *chainMember, clearRouteCache bool) {
	k := c.position(dir, i)
	st := c.stop[dir]
	var r host.Result
	switch {
	case st.ph == phaseNone:
		// Bytes the plugin held mid-body, released: they run through the
		// plugins after it.
		b, _ := m.hs.TakeBody(dir)
		if len(b) == 0 && !clearRouteCache {
			return
		}
		r = c.bodyPhase(dir, b, false, k+1)
		if r.Action == abi.ActionContinue && r.LocalResponse == nil && !r.Close {
			c.released[dir] = append(c.released[dir], r.Body...)
		}
	case st.at != k:
		return // not the plugin the direction waits for
	case st.ph == phaseBody:
		b, _ := m.hs.TakeBody(dir)
		r = c.bodyPhase(dir, b, c.eos[dir], k+1)
		if r.Action == abi.ActionContinue && r.LocalResponse == nil && !r.Close {
			c.stop[dir] = chainStop{at: -1}
			c.released[dir] = append(c.released[dir], r.Body...)
		}
	case st.ph == phaseHeaders:
		mt := abi.MapHTTPRequestHeaders
		if dir == abi.StreamHTTPResponse {
			mt = abi.MapHTTPResponseHeaders
		}
		r = c.mapPhase(dir, phaseHeaders, mt, false, k+1)
	default:
		mt := abi.MapHTTPRequestTrailers
		if dir == abi.StreamHTTPResponse {
			mt = abi.MapHTTPResponseTrailers
		}
		r = c.mapPhase(dir, phaseTrailers, mt, false, k+1)
	}
	switch {
	case r.LocalResponse != nil && r.Failure != nil:
		c.events = append(c.events, host.Event{Kind: host.EventFailed, Result: r})
	case r.LocalResponse != nil:
		c.events = append(c.events, host.Event{Kind: host.EventLocalResponse, LocalResponse: r.LocalResponse})
	case r.Close:
		c.events = append(c.events, host.Event{Kind: host.EventClose})
	case r.Action == abi.ActionContinue:
		c.events = append(c.events, host.Event{Kind: host.EventContinue, Stream: dir,
			ClearRouteCache: clearRouteCache || r.ClearRouteCache})
	}
}

// PropertyWrites merges the plugins' property writes; a later plugin's
// write of the same path wins.
func (c *chainStream) PropertyWrites() map[string][]byte {
	var out map[string][]byte
	for i := range c.members {
		if c.members[i].hs == nil {
			continue
		}
		for k, v := range c.members[i].hs.PropertyWrites() {
			if out == nil {
				out = map[string][]byte{}
			}
			out[k] = v
		}
	}
	return out
}

// PendingCall reports whether a plugin has an outbound call in flight, and
// the latest deadline among them (zero if one has none).
func (c *chainStream) PendingCall() (deadline time.Time, pending bool) {
	for i := range c.members {
		if c.members[i].hs == nil {
			continue
		}
		d, p := c.members[i].hs.PendingCall()
		if !p {
			continue
		}
		if d.IsZero() {
			return time.Time{}, true
		}
		if !pending || d.After(deadline) {
			deadline = d
		}
		pending = true
	}
	return deadline, pending
}

// Fail applies every plugin's failure policy (see host.HTTPStream.Fail).
func (c *chainStream) Fail(err error) {
	for i := range c.members {
		if c.members[i].hs != nil {
			c.members[i].hs.Fail(err)
		}
	}
}

// Close ends every plugin's context, in chain order.
func (c *chainStream) Close() {
	for i := range c.members {
		if c.members[i].hs != nil {
			c.members[i].hs.Close()
		}
	}
}
