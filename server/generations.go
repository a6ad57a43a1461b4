package server

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wasm-callout/wasm-callout/abi"
	"github.com/wasm-callout/wasm-callout/host"
)

// DefaultDrainTimeout is how long a replaced plugin generation waits for its
// streams by default (Options.DrainTimeout).
const DefaultDrainTimeout = 30 * time.Second

// expiryGrace is how long a replaced generation whose drain timeout ran out
// waits for the streams it told to let go before it closes under them. A
// stream learns at its next turn of its loop, which only a plugin call in
// progress (bounded by the plugin's CallTimeout) or a blocked send delays.
const expiryGrace = 5 * time.Second

// ErrDrainTimeout is the failure a stream gets when the plugin generation it
// started on was replaced and the drain timeout ran out before it ended.
var ErrDrainTimeout = errors.New("the plugin generation this stream started on was replaced and its drain timeout ran out")

// ErrClosed is returned by Swap and Reload once the server is closed.
var ErrClosed = errors.New("server: closed")

// generation is one loaded plugin and the streams running on it. Every
// stream holds a reference from its start to its end, and the server holds
// one while the generation is current, so a generation is closed exactly
// when it has been replaced and its last stream has let go.
type generation struct {
	id     uint64
	plugin *host.Plugin
	since  time.Time
	// wantBody says, per direction, whether the plugin exports the body
	// callback (for mode_override).
	wantBody [2]bool

	// refs counts the references: 1 for the server while current, plus one
	// per stream. Once it reaches zero it never rises again (tryAcquire).
	refs atomic.Int64
	// drained is closed when refs reaches zero.
	drained chan struct{}
	// expired is closed when the drain timeout runs out with streams still
	// holding the generation: each of them must let go (lease.expired).
	expired chan struct{}
}

func newGeneration(id uint64, p *host.Plugin) *generation {
	g := &generation{id: id, plugin: p, since: time.Now(), drained: make(chan struct{}), expired: make(chan struct{})}
	cbs := p.Info().Callbacks
	g.wantBody[abi.StreamHTTPRequest] = slices.Contains(cbs, abi.OnRequestBody)
	g.wantBody[abi.StreamHTTPResponse] = slices.Contains(cbs, abi.OnResponseBody)
	g.refs.Store(1)
	return g
}

// tryAcquire adds a reference unless the generation has already drained.
func (g *generation) tryAcquire() bool {
	for {
		n := g.refs.Load()
		if n <= 0 {
			return false
		}
		if g.refs.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

func (g *generation) release() {
	if g.refs.Add(-1) == 0 {
		close(g.drained)
	}
}

// lease is one stream's reference to the generation it runs on. Release is
// idempotent, so a stream may let go early (when its generation expires)
// and again when it ends.
type lease struct {
	gen  *generation
	slot *generations // the plugin the generation belongs to
	done atomic.Bool
}

func (l *lease) release() {
	if l.done.CompareAndSwap(false, true) {
		l.gen.release()
	}
}

// expired is closed when the stream must stop using the generation: its
// drain timeout ran out. The stream then applies the failure policy (an
// HTTP stream through host.HTTPStream.Fail) and releases the lease.
func (l *lease) expired() <-chan struct{} { return l.gen.expired }

// generations is one named plugin of the server: its current generation,
// nil once the plugin is removed (Apply). Each plugin swaps on its own, so a
// reload of one plugin of a chain drains only that plugin's generation.
type generations struct {
	name string
	cur  atomic.Pointer[generation]
}

// genState is the server-wide bookkeeping of swaps and reloads.
type genState struct {
	mu     sync.Mutex // serialises Swap and Apply against Close
	closed bool

	reloadMu    sync.Mutex // one Reload at a time
	errMu       sync.Mutex
	lastErr     error
	lastErrTime time.Time

	swaps, reloadFailures, draining, expiredStreams atomic.Int64
}

// acquireLease returns a reference to the primary plugin's current
// generation (see acquireIn).
func (s *Server) acquireLease() *lease {
	for {
		if l, ok := s.acquireIn(s.table.Load().primary); ok {
			return l
		}
	}
}

// acquireIn returns a reference to the current generation of gs for a new
// stream, or false if gs has been removed. The generation is current at
// some instant while it is acquired (the check after the increment), so a
// stream that starts after a Swap returned never gets the generation it
// replaced.
func (s *Server) acquireIn(gs *generations) (*lease, bool) {
	for {
		g := gs.cur.Load()
		if g == nil {
			return nil, false
		}
		if !g.tryAcquire() {
			continue // replaced and drained meanwhile: cur has moved on
		}
		if gs.cur.Load() == g {
			return &lease{gen: g, slot: gs}, true
		}
		g.release()
	}
}

// Generation describes a plugin generation.
type Generation struct {
	// Name is the plugin's name (host.Config.Name).
	Name string
	// ID is 1 for the plugin's first generation and one more for every
	// Swap of that plugin.
	ID uint64
	// Plugin is the generation's plugin.
	Plugin *host.Plugin
	// Since is when the generation became current.
	Since time.Time
}

func (gs *generations) describe() Generation {
	g := gs.cur.Load()
	if g == nil {
		return Generation{Name: gs.name}
	}
	return Generation{Name: gs.name, ID: g.id, Plugin: g.plugin, Since: g.since}
}

// Generation returns the current generation of the primary plugin: the
// first plugin of the default chain (Options.Plugin when there is one).
func (s *Server) Generation() Generation { return s.table.Load().primary.describe() }

// Generations returns the current generation of every plugin, in
// configuration order.
func (s *Server) Generations() []Generation {
	t := s.table.Load()
	out := make([]Generation, 0, len(t.order))
	for _, gs := range t.order {
		out = append(out, gs.describe())
	}
	return out
}

// Plugin returns the primary plugin's current generation (see Generation).
// The server never closes it; its owner closes it after Close (see Swap).
func (s *Server) Plugin() *host.Plugin { return s.table.Load().primary.cur.Load().plugin }

// Plugins returns the current plugin of every plugin name, in configuration
// order: what the owner closes after Close.
func (s *Server) Plugins() []*host.Plugin {
	t := s.table.Load()
	out := make([]*host.Plugin, 0, len(t.order))
	for _, gs := range t.order {
		if g := gs.cur.Load(); g != nil {
			out = append(out, g.plugin)
		}
	}
	return out
}

// Swap makes p the current primary plugin (see SwapPlugin).
func (s *Server) Swap(p *host.Plugin) (uint64, error) {
	return s.SwapPlugin(s.table.Load().primary.name, p)
}

// SwapPlugin makes p the current plugin of the given name: every stream that
// starts from now on runs on p, while streams already running finish on the
// plugin they started on; the server's other plugins are untouched. It
// returns p's generation number. p must be started (host.Load) and not held
// by the server already.
//
// The server takes ownership of p, and of every plugin Swap replaces,
// Options.Plugin included: a replaced plugin is closed (host.Plugin.Close,
// which runs proxy_on_done and proxy_on_delete on its root contexts) as soon
// as its last stream ends, or, after Options.DrainTimeout, once the streams
// still on it have been given the failure policy. The plugins current when
// the server is closed stay open for the caller to close (see Plugins).
// On error the caller keeps p.
func (s *Server) SwapPlugin(name string, p *host.Plugin) (uint64, error) {
	if p == nil {
		return 0, errors.New("server: Swap with no plugin")
	}
	s.gens.mu.Lock()
	defer s.gens.mu.Unlock()
	if s.gens.closed {
		return 0, ErrClosed
	}
	gs := s.table.Load().byName[name]
	if gs == nil {
		return 0, fmt.Errorf("server: no plugin named %q", name)
	}
	id, err := s.swapLocked(gs, p)
	if err == nil {
		s.updateHealth()
	}
	return id, err
}

// swapLocked makes p the current generation of gs. Caller holds gens.mu.
func (s *Server) swapLocked(gs *generations, p *host.Plugin) (uint64, error) {
	old := gs.cur.Load()
	if old.plugin == p {
		return 0, errors.New("server: Swap with the current plugin")
	}
	g := newGeneration(old.id+1, p)
	gs.cur.Store(g)
	s.log.Info("plugin generation switched", "plugin", gs.name, "generation", g.id, "replaced", old.id,
		"streams_on_replaced", old.refs.Load()-1)
	s.gens.swaps.Add(1)
	s.retireLater(old)
	return g.id, nil
}

// retireLater retires a generation that is no longer current.
func (s *Server) retireLater(g *generation) {
	s.gens.draining.Add(1)
	s.wg.Add(1)
	go s.retire(g)
}

// Reload reloads the primary plugin (see ReloadPlugin).
func (s *Server) Reload(ctx context.Context, load func(context.Context) (*host.Plugin, error)) (uint64, error) {
	return s.ReloadPlugin(ctx, s.table.Load().primary.name, load)
}

// ReloadPlugin prepares a new generation of the named plugin with load and
// switches to it with SwapPlugin. load must return a started plugin
// (host.Load compiles, validates and starts the whole pool,
// proxy_on_vm_start and proxy_on_configure included). If it fails, the
// current generation keeps serving: the failure is logged at error, counted
// (Stats.ReloadFailures), kept for LastReloadError, and returned. Reloads
// run one at a time. After Close, it returns ErrClosed without loading.
func (s *Server) ReloadPlugin(ctx context.Context, name string, load func(context.Context) (*host.Plugin, error)) (uint64, error) {
	return s.reload(func() (uint64, error) {
		if s.table.Load().byName[name] == nil {
			return 0, fmt.Errorf("server: no plugin named %q", name)
		}
		p, err := load(ctx)
		if err == nil && p == nil {
			err = errors.New("server: the loader returned no plugin")
		}
		if err != nil {
			return 0, err
		}
		id, err := s.SwapPlugin(name, p)
		if err != nil {
			p.Close(context.Background())
		}
		return id, err
	})
}

// reload runs one reload at a time and records its failure, if any.
func (s *Server) reload(do func() (uint64, error)) (uint64, error) {
	s.gens.reloadMu.Lock()
	defer s.gens.reloadMu.Unlock()
	if s.closed() {
		return 0, ErrClosed
	}
	id, err := do()
	if err != nil {
		if errors.Is(err, ErrClosed) {
			return 0, err // closed meanwhile: not the new plugin's fault
		}
		s.gens.reloadFailures.Add(1)
		s.gens.errMu.Lock()
		s.gens.lastErr, s.gens.lastErrTime = err, time.Now()
		s.gens.errMu.Unlock()
		s.log.Error("plugin reload failed; the current generation keeps serving", "err", err)
		return 0, err
	}
	return id, nil
}

// LastReloadError returns when the most recent failed Reload happened and
// its error, or a nil error if none failed.
func (s *Server) LastReloadError() (time.Time, error) {
	s.gens.errMu.Lock()
	defer s.gens.errMu.Unlock()
	return s.gens.lastErrTime, s.gens.lastErr
}

// retire closes a replaced generation once its streams have ended, bounding
// the wait by the drain timeout (or cutting it short when the server
// closes).
func (s *Server) retire(g *generation) {
	defer s.wg.Done()
	defer s.gens.draining.Add(-1)
	g.release() // the server's reference
	timer := time.NewTimer(s.opts.DrainTimeout)
	defer timer.Stop()
	select {
	case <-g.drained:
	case <-timer.C:
		s.expire(g, "drain timeout")
	case <-s.stop:
		s.expire(g, "server closing")
	}
	start := time.Now()
	if err := g.plugin.Close(context.Background()); err != nil {
		s.log.Warn("closing a replaced plugin generation", "plugin", g.plugin.Config().Name, "generation", g.id, "err", err)
	}
	s.log.Info("replaced plugin generation closed", "plugin", g.plugin.Config().Name, "generation", g.id,
		"took", time.Since(start).Round(time.Millisecond))
}

// expire tells the streams still on g to let go, and waits a little for
// them.
func (s *Server) expire(g *generation, why string) {
	select {
	case <-g.drained:
		return
	default:
	}
	s.log.Warn("streams still running on a replaced plugin generation get the failure policy",
		"plugin", g.plugin.Config().Name, "generation", g.id, "streams", g.refs.Load(), "reason", why, "drain_timeout", s.opts.DrainTimeout)
	close(g.expired)
	s.bumpExpiry()
	t := time.NewTimer(expiryGrace)
	defer t.Stop()
	select {
	case <-g.drained:
	case <-t.C:
		s.log.Error("streams did not let go of a replaced plugin generation; closing it under them",
			"plugin", g.plugin.Config().Name, "generation", g.id, "streams", g.refs.Load())
	}
}

func (s *Server) closed() bool {
	s.gens.mu.Lock()
	defer s.gens.mu.Unlock()
	return s.gens.closed
}

// closeGenerations stops further swaps; Close then waits for the retiring
// generations.
func (s *Server) closeGenerations() {
	s.gens.mu.Lock()
	s.gens.closed = true
	s.gens.mu.Unlock()
}

// expiry is closed, and replaced, whenever a generation expires. A chain
// stream holds several generations; it waits on this one channel rather
// than on each generation's, and checks its leases when it closes.
type expiry struct {
	mu sync.Mutex
	ch chan struct{}
}

// expiryChan returns the channel the next expiry closes.
func (s *Server) expiryChan() <-chan struct{} {
	s.expiry.mu.Lock()
	defer s.expiry.mu.Unlock()
	if s.expiry.ch == nil {
		s.expiry.ch = make(chan struct{})
	}
	return s.expiry.ch
}

func (s *Server) bumpExpiry() {
	s.expiry.mu.Lock()
	defer s.expiry.mu.Unlock()
	if s.expiry.ch != nil {
		close(s.expiry.ch)
		s.expiry.ch = nil
	}
}
