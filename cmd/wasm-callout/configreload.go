package main

// Reloading the --config file: each plugin whose file, configurations or
// settings changed gets a new generation (the others keep theirs and their
// streams), removed plugins drain, and the chains are replaced, all at once
// through the server's Apply. Running streams finish on the chain they
// started with.

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/wasm-callout/wasm-callout/host"
	"github.com/wasm-callout/wasm-callout/server"
)

// configState is the reloader's view of the configuration serving now.
type configState struct {
	src *configSource
	// gens and loadedAt are each plugin's generation and load time.
	gens     map[string]uint64
	loadedAt map[string]time.Time
	trigger  string

	mu        sync.Mutex
	metrics   map[string]*host.Metrics   // per plugin name: values survive reloads
	telemetry map[string]*host.Telemetry // likewise
	upstreams []*host.Upstreams          // every plugin's own, closed at exit
}

// metricsFor returns the plugin's metrics registry, the same across its
// generations.
func (cs *configState) metricsFor(name string) *host.Metrics {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.metrics == nil {
		cs.metrics = map[string]*host.Metrics{}
	}
	m := cs.metrics[name]
	if m == nil {
		m = host.NewMetrics()
		cs.metrics[name] = m
	}
	return m
}

// telemetryFor returns the plugin's host counts (failures by cause,
// callback times), the same across its generations.
func (cs *configState) telemetryFor(name string) *host.Telemetry {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.telemetry == nil {
		cs.telemetry = map[string]*host.Telemetry{}
	}
	t := cs.telemetry[name]
	if t == nil {
		t = host.NewTelemetry()
		cs.telemetry[name] = t
	}
	return t
}

// closeUpstreams closes the clusters of the plugins' own upstreams.
func (cs *configState) closeUpstreams() {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	for _, u := range cs.upstreams {
		u.Close()
	}
	cs.upstreams = nil
}

// loadNamed starts one plugin of the configuration file.
func (r *reloader) loadNamed(ctx context.Context, p *pluginConfig, ps *pluginSource) (*host.Plugin, error) {
	cfg, err := p.hostConfig(r.base, ps)
	if err != nil {
		return nil, err
	}
	cfg.Logger = r.base.Logger.With("plugin", p.Name)
	cfg.Metrics = r.cfg.metricsFor(p.Name)
	cfg.Telemetry = r.cfg.telemetryFor(p.Name)
	if len(p.Upstreams) > 0 {
		list, err := p.upstreams(r.c)
		if err != nil {
			return nil, err
		}
		us, err := host.NewUpstreams(list)
		if err != nil {
			return nil, fmt.Errorf("plugin %q: %w", p.Name, err)
		}
		r.cfg.mu.Lock()
		r.cfg.upstreams = append(r.cfg.upstreams, us)
		r.cfg.mu.Unlock()
		cfg.Upstreams = us
	}
	r.log.Info("loading plugin: compiling (fast when the compilation cache has it) and starting instances",
		"plugin", p.Name, "path", ps.Plugin.Resolved, "bytes", len(ps.Plugin.data), "compilation_cache", cfg.CompilationCacheDir)
	pl, err := host.Load(ctx, ps.Plugin.data, cfg)
	if err != nil {
		return nil, fmt.Errorf("plugin %q: loading %s (sha256 %.12s): %w", p.Name, ps.Plugin.Resolved, ps.Plugin.SHA256, err)
	}
	return pl, nil
}

// startConfig loads every plugin of the configuration file, before the
// server exists.
func (r *reloader) startConfig() (server.Options, error) {
	cs, err := readConfigSource(r.c.configFile)
	if err != nil {
		return server.Options{}, err
	}
	var plugins []*host.Plugin
	for i, ps := range cs.Plugins {
		p, err := r.loadNamed(r.ctx, &cs.fc.Plugins[i], ps)
		if err != nil {
			for _, p := range plugins {
				p.Close(context.Background())
			}
			return server.Options{}, err
		}
		plugins = append(plugins, p)
	}
	r.attempted = cs.key()
	r.recordConfig(cs, nil, triggerStart)
	return server.Options{Plugins: plugins, Chains: cs.fc.chains()}, nil
}

// recordConfig makes cs the configuration serving now; srv (nil at start)
// gives the generations.
func (r *reloader) recordConfig(cs *configSource, srv *server.Server, trigger string) {
	r.stateMu.Lock()
	defer r.stateMu.Unlock()
	old := r.cfg.src
	oldKeys := map[string]string{}
	if old != nil {
		for _, ps := range old.Plugins {
			oldKeys[ps.Name] = ps.key()
		}
	}
	if r.cfg.gens == nil {
		r.cfg.gens, r.cfg.loadedAt = map[string]uint64{}, map[string]time.Time{}
	}
	gens := map[string]uint64{}
	if srv != nil {
		for _, g := range srv.Generations() {
			gens[g.Name] = g.ID
		}
	}
	for _, ps := range cs.Plugins {
		if oldKeys[ps.Name] != ps.key() {
			r.cfg.loadedAt[ps.Name] = time.Now()
			r.log.Info("plugin generation loaded", "plugin", ps.Name, "trigger", trigger, "path", ps.Plugin.Resolved,
				"sha256", ps.Plugin.SHA256, "generation", max(gens[ps.Name], 1))
		}
		r.cfg.gens[ps.Name] = max(gens[ps.Name], 1)
	}
	// The plugins' bytes are compiled; keeping them would hold a copy of
	// every module for as long as it serves (see input.data). A large
	// module's heap goes back now.
	size := 0
	for _, ps := range cs.Plugins {
		size = max(size, len(ps.Plugin.data))
		ps.Plugin.data = nil
	}
	defer host.ReleaseGarbage(size)
	r.cfg.src, r.cfg.trigger = cs, trigger
}

// applyConfig switches to the configuration cs (readErr if it could not be
// read). Caller holds mu.
func (r *reloader) applyConfig(srv *server.Server, trigger string, cs *configSource, readErr error) error {
	r.stateMu.Lock()
	cur := r.cfg.src
	r.stateMu.Unlock()
	err := srv.ApplyAndReload(r.ctx, func(ctx context.Context) (server.Update, error) {
		var u server.Update
		if readErr != nil {
			return u, readErr
		}
		curKeys := map[string]string{}
		for _, ps := range cur.Plugins {
			curKeys[ps.Name] = ps.key()
		}
		for i, ps := range cs.Plugins {
			if k, ok := curKeys[ps.Name]; ok && k == ps.key() {
				delete(curKeys, ps.Name)
				continue
			}
			delete(curKeys, ps.Name)
			p, err := r.loadNamed(ctx, &cs.fc.Plugins[i], ps)
			if err != nil {
				return u, err
			}
			u.Plugins = append(u.Plugins, p)
		}
		for name := range curKeys {
			u.Remove = append(u.Remove, name)
		}
		u.Chains = cs.fc.chains()
		return u, nil
	})
	if err != nil {
		if !errors.Is(err, server.ErrClosed) {
			r.stateMu.Lock()
			r.lastErr = &reloadError{Error: err.Error(), At: time.Now(), Trigger: trigger}
			r.stateMu.Unlock()
		}
		return err
	}
	r.recordConfig(cs, srv, trigger)
	names, def := srv.ChainNames()
	r.log.Info("configuration applied", "trigger", trigger, "config", cs.File.Resolved, "sha256", cs.File.SHA256,
		"chains", names, "default_chain", def)
	return nil
}

// reloadConfig reads the configuration file and applies it.
func (r *reloader) reloadConfig(srv *server.Server, trigger string) error {
	cs, err := readConfigSource(r.c.configFile)
	r.attempted = attemptKey(cs, err)
	return r.applyConfig(srv, trigger, cs, err)
}

// pollConfig applies the configuration file if it, or a file it names,
// changed since the configuration serving now and since the last attempt.
func (r *reloader) pollConfig(srv *server.Server) {
	cs, err := readConfigSource(r.c.configFile)
	r.stateMu.Lock()
	cur := r.cfg.src
	r.stateMu.Unlock()
	if r.worthTrying(attemptKey(cs, err), cur.key(), err) {
		r.applyConfig(srv, triggerWatch, cs, err)
	}
}

// namedStatus is one plugin of GET /plugin in --config mode.
type namedStatus struct {
	*pluginSource
	Generation       uint64    `json:"generation"`
	LoadedAt         time.Time `json:"loaded_at"`
	Instances        int       `json:"instances"`
	HealthyInstances int       `json:"healthy_instances"`
	LiveStreams      int64     `json:"live_streams"`
}

// configStatus fills GET /plugin's --config part. Caller holds stateMu.
func (r *reloader) configStatus(ps *pluginStatus) {
	cs := r.cfg.src
	ps.Config = &cs.File
	ps.Chains, ps.DefaultChain = cs.fc.Chains, cs.fc.DefaultChain
	if ps.DefaultChain == "" {
		ps.DefaultChain = server.DefaultChain
	}
	byName := map[string]server.Generation{}
	for _, g := range r.srv.Generations() {
		byName[g.Name] = g
	}
	for _, src := range cs.Plugins {
		n := namedStatus{pluginSource: src, Generation: r.cfg.gens[src.Name], LoadedAt: r.cfg.loadedAt[src.Name]}
		if g, ok := byName[src.Name]; ok && g.Plugin != nil {
			st := g.Plugin.Stats()
			n.Generation, n.Instances, n.HealthyInstances, n.LiveStreams = g.ID, st.Instances, st.Healthy, st.LiveStreams
		}
		ps.Plugins = append(ps.Plugins, n)
	}
}
