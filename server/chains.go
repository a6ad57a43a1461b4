package server

// This file holds the server's plugins and chains: the table new streams
// pick their chain from, its changes (Apply), and the selection of a
// stream's chain by gRPC initial metadata or metadata_context.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync/atomic"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/wasm-callout/wasm-callout/host"
)

// Chain selection keys.
const (
	// ChainMetadataKey is the gRPC initial metadata key that names a
	// stream's chain (Envoy: ExtProcPerRoute overrides.grpc_initial_metadata,
	// or the filter's grpc_service.initial_metadata).
	ChainMetadataKey = "x-wasm-callout-chain"
	// ChainNamespace and ChainField name the chain in metadata_context
	// (filter_metadata[ChainNamespace].fields[ChainField], a string), for
	// an Envoy that forwards it (metadata_options.forwarding_namespaces).
	// Initial metadata takes precedence.
	ChainNamespace = "wasm-callout"
	ChainField     = "chain"
	// DefaultChain is the name of the chain of a stream that names none,
	// unless Chains.Default says otherwise.
	DefaultChain = "default"
)

// Chains names the server's chains: ordered lists of plugin names
// (host.Config.Name). Request callbacks run in chain order, response
// callbacks in reverse, as Envoy runs an HTTP filter chain.
type Chains struct {
	// Default is the chain of a stream that names none; empty means
	// DefaultChain.
	Default string
	// Chains maps a chain name to its plugins' names, in request order. A
	// plugin may appear in several chains (its instances are shared), but
	// only once in each.
	Chains map[string][]string
}

// chainDef is one named chain of the current table.
type chainDef struct {
	name  string
	slots []*generations
	// log labels the chain's streams; it is the server's own logger for
	// the implicit chain of a single plugin.
	log *slog.Logger
	// started counts the streams that took the chain (Server.ChainStats);
	// it outlives the table, by name.
	started *atomic.Int64
}

// pluginTable is what new streams start from: the plugins by name and the
// chains. It is replaced whole by Apply; streams keep the chain they
// started with.
type pluginTable struct {
	byName  map[string]*generations
	order   []*generations // configuration order
	chains  map[string]*chainDef
	def     *chainDef
	primary *generations // the default chain's first plugin
	// implicit: built from Options.Plugin alone, without Chains.
	implicit bool
}

// Update is a change of the server's plugins and chains (Apply).
type Update struct {
	// Plugins are started plugins to serve from now on: one named like a
	// served plugin (host.Config.Name) replaces it as Swap does, a new name
	// adds it. The server takes ownership of them.
	Plugins []*host.Plugin
	// Remove names served plugins to drop: new streams no longer use them,
	// and each is closed once its last stream ends (or after the drain
	// timeout).
	Remove []string
	// Chains are the chains from now on. Streams already running finish on
	// the chain they started with.
	Chains Chains
}

// newTable builds the first table from opts.
func newTable(opts Options, log *slog.Logger) (*pluginTable, error) {
	if opts.Plugin != nil {
		if len(opts.Plugins) > 0 {
			return nil, errors.New("server: set Plugin or Plugins, not both")
		}
		name := opts.Plugin.Config().Name
		if len(opts.Chains.Chains) == 0 {
			gs := &generations{name: name}
			gs.cur.Store(newGeneration(1, opts.Plugin))
			def := &chainDef{name: DefaultChain, slots: []*generations{gs}, log: log}
			return &pluginTable{byName: map[string]*generations{name: gs}, order: []*generations{gs},
				chains: map[string]*chainDef{DefaultChain: def}, def: def, primary: gs, implicit: true}, nil
		}
		opts.Plugins = []*host.Plugin{opts.Plugin}
	}
	if len(opts.Plugins) == 0 {
		return nil, errors.New("server: no plugin")
	}
	t := &pluginTable{byName: map[string]*generations{}}
	for _, p := range opts.Plugins {
		name := p.Config().Name
		if t.byName[name] != nil {
			return nil, fmt.Errorf("server: two plugins named %q", name)
		}
		gs := &generations{name: name}
		gs.cur.Store(newGeneration(1, p))
		t.byName[name] = gs
		t.order = append(t.order, gs)
	}
	chains := opts.Chains
	if len(chains.Chains) == 0 && len(t.order) == 1 {
		chains.Chains = map[string][]string{DefaultChain: {t.order[0].name}}
	}
	if err := t.setChains(chains, log); err != nil {
		return nil, err
	}
	return t, nil
}

// setChains checks c against t's plugins and installs it.
func (t *pluginTable) setChains(c Chains, log *slog.Logger) error {
	if len(c.Chains) == 0 {
		return errors.New("server: no chain")
	}
	def := c.Default
	if def == "" {
		def = DefaultChain
	}
	t.chains = make(map[string]*chainDef, len(c.Chains))
	for name, members := range c.Chains {
		if name == "" {
			return errors.New("server: a chain has an empty name")
		}
		if len(members) == 0 {
			return fmt.Errorf("server: chain %q has no plugin", name)
		}
		cd := &chainDef{name: name, log: log.With("chain", name)}
		for i, m := range members {
			gs := t.byName[m]
			if gs == nil {
				return fmt.Errorf("server: chain %q: no plugin named %q", name, m)
			}
			if slices.Contains(members[:i], m) {
				return fmt.Errorf("server: chain %q names plugin %q twice", name, m)
			}
			cd.slots = append(cd.slots, gs)
		}
		t.chains[name] = cd
	}
	t.def = t.chains[def]
	if t.def == nil {
		return fmt.Errorf("server: no default chain: no chain named %q", def)
	}
	t.primary = t.def.slots[0]
	return nil
}

// Apply changes the server's plugins and chains at once: new streams start
// on the new table, streams already running finish on the chain (and
// plugin generations) they started with. Replaced and removed plugins are
// retired as Swap retires them. On error nothing changes and the caller
// keeps u.Plugins.
func (s *Server) Apply(u Update) error {
	s.gens.mu.Lock()
	defer s.gens.mu.Unlock()
	if s.gens.closed {
		return ErrClosed
	}
	old := s.table.Load()
	t := &pluginTable{byName: map[string]*generations{}}
	for _, gs := range old.order {
		t.byName[gs.name] = gs
	}
	fresh := map[string]*host.Plugin{}
	for _, p := range u.Plugins {
		name := p.Config().Name
		if fresh[name] != nil {
			return fmt.Errorf("server: two plugins named %q", name)
		}
		if gs := t.byName[name]; gs != nil && gs.cur.Load().plugin == p {
			return fmt.Errorf("server: plugin %q is already served", name)
		}
		fresh[name] = p
	}
	removed := map[string]bool{}
	for _, name := range u.Remove {
		if t.byName[name] == nil {
			return fmt.Errorf("server: no plugin named %q to remove", name)
		}
		if fresh[name] != nil {
			return fmt.Errorf("server: plugin %q both replaced and removed", name)
		}
		removed[name] = true
		delete(t.byName, name)
	}
	added := map[string]*generations{}
	for name := range fresh {
		if t.byName[name] == nil {
			gs := &generations{name: name}
			t.byName[name], added[name] = gs, gs
		}
	}
	if err := t.setChains(u.Chains, s.log); err != nil {
		return err
	}
	// Valid: switch. Keep configuration order: the old plugins that stay,
	// then the new ones in the order given.
	for _, gs := range old.order {
		if !removed[gs.name] {
			t.order = append(t.order, gs)
		}
	}
	for _, p := range u.Plugins {
		if gs := added[p.Config().Name]; gs != nil {
			gs.cur.Store(newGeneration(1, p))
			t.order = append(t.order, gs)
			s.log.Info("plugin added", "plugin", gs.name)
		} else {
			s.swapLocked(t.byName[p.Config().Name], p)
		}
	}
	s.countChains(t)
	s.table.Store(t)
	for _, gs := range old.order {
		if removed[gs.name] {
			g := gs.cur.Swap(nil)
			s.log.Info("plugin removed", "plugin", gs.name, "generation", g.id, "streams", g.refs.Load()-1)
			s.retireLater(g)
		}
	}
	s.updateHealth()
	return nil
}

// ChainNames returns the chain names and the default chain's.
func (s *Server) ChainNames() (names []string, def string) {
	t := s.table.Load()
	for name := range t.chains {
		names = append(names, name)
	}
	sort.Strings(names)
	return names, t.def.name
}

// ApplyAndReload is Apply with the loading of its plugins under the reload
// lock, counted and recorded as a reload (Stats.ReloadFailures,
// LastReloadError) when it fails. On failure the plugins load returned are
// closed.
func (s *Server) ApplyAndReload(ctx context.Context, load func(context.Context) (Update, error)) error {
	_, err := s.reload(func() (uint64, error) {
		u, err := load(ctx)
		if err == nil {
			err = s.Apply(u)
		}
		if err != nil {
			for _, p := range u.Plugins {
				p.Close(context.Background())
			}
		}
		return 0, err
	})
	return err
}

// chainName returns the chain the stream asks for: the gRPC initial metadata
// key, or else the metadata_context field; empty if neither.
func chainName(ctx context.Context, m *extprocv3.ProcessingRequest) string {
	if v := metadata.ValueFromIncomingContext(ctx, ChainMetadataKey); len(v) > 0 {
		return v[0]
	}
	if m == nil {
		return ""
	}
	ns := m.GetMetadataContext().GetFilterMetadata()[ChainNamespace]
	if ns == nil {
		return ""
	}
	return ns.GetFields()[ChainField].GetStringValue()
}

// lookupChain returns the named chain of the current table (the default for
// an empty name), or a NOT_FOUND error naming the chains there are.
func (t *pluginTable) lookupChain(name string) (*chainDef, error) {
	if name == "" {
		return t.def, nil
	}
	if cd := t.chains[name]; cd != nil {
		return cd, nil
	}
	names := make([]string, 0, len(t.chains))
	for n := range t.chains {
		names = append(names, n)
	}
	sort.Strings(names)
	return nil, status.Errorf(codes.NotFound, "wasm-callout: no chain named %q (%s names one; chains: %s)",
		name, ChainMetadataKey, strings.Join(names, ", "))
}

// acquireChain looks up the named chain in the current table and takes a
// lease on each of its plugins' current generations, appended to buf (a
// stream passes room for one, so that a single plugin allocates no slice).
// A plugin removed meanwhile (Apply) sends it to the new table.
func (s *Server) acquireChain(name string, buf []*lease) (*chainDef, []*lease, error) {
	for {
		cd, err := s.table.Load().lookupChain(name)
		if err != nil {
			s.unknownChain.Add(1)
			return nil, nil, err
		}
		leases := buf[:0]
		ok := true
		for _, gs := range cd.slots {
			l, got := s.acquireIn(gs)
			if !got {
				ok = false
				break
			}
			leases = append(leases, l)
		}
		if ok {
			cd.started.Add(1)
			return cd, leases, nil
		}
		for _, l := range leases {
			l.release()
		}
	}
}

// countChains gives every chain of t its stream counter, the one its name
// had in earlier tables, before t serves.
func (s *Server) countChains(t *pluginTable) {
	s.chainCountsMu.Lock()
	defer s.chainCountsMu.Unlock()
	if s.chainCounts == nil {
		s.chainCounts = map[string]*atomic.Int64{}
	}
	for name, cd := range t.chains {
		c := s.chainCounts[name]
		if c == nil {
			c = new(atomic.Int64)
			s.chainCounts[name] = c
		}
		cd.started = c
	}
}

// ChainStats are the streams each chain has taken since the server
// started, by chain name (chains removed since included), and the streams
// that named no chain there was.
type ChainStats struct {
	Streams map[string]int64
	Unknown int64
}

// ChainStats reports the streams per chain.
func (s *Server) ChainStats() ChainStats {
	s.chainCountsMu.Lock()
	defer s.chainCountsMu.Unlock()
	st := ChainStats{Streams: make(map[string]int64, len(s.chainCounts)), Unknown: s.unknownChain.Load()}
	for name, c := range s.chainCounts {
		st.Streams[name] = c.Load()
	}
	return st
}
