package host

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetratelabs/wazero"
)

// Plugin is a loaded proxy-wasm module with a started pool of instances.
// It is safe for concurrent use.
type Plugin struct {
	cfg      Config
	info     *Info
	runtime  wazero.Runtime
	compiled wazero.CompiledModule
	pool     *pool
}

// ErrNoInstance is returned by NewHTTPStream when every instance of the pool
// has failed and none has been replaced yet.
var ErrNoInstance = errors.New("no healthy plugin instance")

// Load compiles wasm, validates its imports and exports, and starts
// cfg.Instances instances before returning, so no stream ever waits for an
// instantiation. The error explains precisely why a plugin cannot load.
func Load(ctx context.Context, wasm []byte, cfg Config) (*Plugin, error) {
	cfg = cfg.withDefaults()
	var cache wazero.CompilationCache
	if cfg.CompilationCacheDir != "" {
		c, err := wazero.NewCompilationCacheWithDir(cfg.CompilationCacheDir)
		if err != nil {
			return nil, fmt.Errorf("compilation cache %s: %w", cfg.CompilationCacheDir, err)
		}
		cache = c
	}
	c, err := compile(ctx, wasm, cfg, cache)
	if err != nil {
		if c != nil {
			c.runtime.Close(ctx)
		}
		return nil, err
	}
	p := &Plugin{cfg: cfg, info: c.info, runtime: c.runtime, compiled: c.module}
	for _, w := range c.info.Warnings {
		cfg.Logger.Warn("plugin: "+w, "plugin", cfg.Name)
	}
	p.pool = newPool(p)
	if err := p.pool.start(ctx); err != nil {
		p.runtime.Close(ctx)
		return nil, err
	}
	return p, nil
}

// Info describes the loaded module.
func (p *Plugin) Info() *Info { return p.info }

// Config returns the plugin's configuration with defaults applied.
func (p *Plugin) Config() Config { return p.cfg }

// Metrics is the registry the plugin's metrics go to.
func (p *Plugin) Metrics() *Metrics { return p.cfg.Metrics }

// Stats counts what the pool has done.
type Stats struct {
	Instances   int   // configured pool size
	Healthy     int   // instances serving now
	LiveStreams int64 // streams open now
	Failures    int64 // instances poisoned so far
	Replaced    int64 // instances replaced so far
	// PendingCalls counts outbound HTTP and gRPC calls in flight.
	PendingCalls int
}

// Stats reports the pool's state.
func (p *Plugin) Stats() Stats { return p.pool.stats() }

// Close shuts every instance down: each root context gets proxy_on_done
// (waiting up to one second for proxy_done when the plugin defers) and
// proxy_on_delete, then the runtime is closed. Streams still open are failed.
func (p *Plugin) Close(ctx context.Context) error {
	p.pool.close(time.Second)
	return p.runtime.Close(ctx)
}

// pool keeps cfg.Instances started instances and replaces failed ones with
// back-off. A stream picks the healthy instance with the fewest live streams
// and stays on it.
type pool struct {
	p     *Plugin
	mu    sync.Mutex
	slots []*instance // nil while a slot is being replaced
	live  []atomic.Int64
	stopC chan struct{}
	wg    sync.WaitGroup
	shut  bool

	failures, replaced atomic.Int64
	streams            atomic.Int64
}

func newPool(p *Plugin) *pool {
	return &pool{
		p:     p,
		slots: make([]*instance, p.cfg.Instances),
		live:  make([]atomic.Int64, p.cfg.Instances),
		stopC: make(chan struct{}),
	}
}

func (pl *pool) start(ctx context.Context) error {
	for i := range pl.slots {
		in, err := newInstance(ctx, pl.p, i)
		if err != nil {
			pl.close(0)
			return fmt.Errorf("start instance %d: %w", i, err)
		}
		pl.slots[i] = in
	}
	if pl.p.cfg.CallTimeout > 0 {
		pl.wg.Add(1)
		go pl.watchdog()
	}
	return nil
}

// pick returns the healthy instance with the fewest live streams.
func (pl *pool) pick() (*instance, error) {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	if pl.shut {
		return nil, errClosed
	}
	var best *instance
	var bestLive int64
	for i, in := range pl.slots {
		if in == nil {
			continue
		}
		if n := pl.live[i].Load(); best == nil || n < bestLive {
			best, bestLive = in, n
		}
	}
	if best == nil {
		return nil, ErrNoInstance
	}
	return best, nil
}

// replace swaps a failed instance for a fresh one, retrying with exponential
// back-off while instantiation fails (a plugin that crashes on start-up must
// not spin the CPU).
func (pl *pool) replace(old *instance) {
	pl.mu.Lock()
	if pl.shut || pl.slots[old.slot] != old {
		pl.mu.Unlock()
		return
	}
	pl.slots[old.slot] = nil
	pl.failures.Add(1)
	pl.wg.Add(1)
	pl.mu.Unlock()
	defer pl.wg.Done()

	// The old instance's module is closed once the call that poisoned it
	// has returned and released mu.
	old.mu.Lock()
	old.stop()
	old.mu.Unlock()

	backoff := 50 * time.Millisecond
	for {
		in, err := newInstance(context.Background(), pl.p, old.slot)
		if err == nil {
			pl.mu.Lock()
			if pl.shut {
				pl.mu.Unlock()
				in.stop()
				return
			}
			pl.slots[old.slot] = in
			pl.live[old.slot].Store(0)
			pl.mu.Unlock()
			pl.replaced.Add(1)
			return
		}
		pl.p.cfg.Logger.Error("replacing plugin instance failed; retrying",
			"plugin", pl.p.cfg.Name, "instance", old.slot, "backoff", backoff, "err", err)
		select {
		case <-pl.stopC:
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 10*time.Second)
	}
}

// watchdog cancels any call that has run longer than CallTimeout. The
// runtime was built WithCloseOnContextDone, so cancelling the instance's
// context stops the guest wherever it is.
func (pl *pool) watchdog() {
	defer pl.wg.Done()
	timeout := pl.p.cfg.CallTimeout
	t := time.NewTicker(max(timeout/8, time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-pl.stopC:
			return
		case now := <-t.C:
			pl.mu.Lock()
			for _, in := range pl.slots {
				if in == nil {
					continue
				}
				if start := in.callStart.Load(); start != 0 && now.UnixNano()-start > int64(timeout) {
					in.cancel(ErrCallTimeout)
				}
			}
			pl.mu.Unlock()
		}
	}
}

func (pl *pool) stats() Stats {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	s := Stats{Instances: len(pl.slots), LiveStreams: pl.streams.Load(), Failures: pl.failures.Load(), Replaced: pl.replaced.Load()}
	for _, in := range pl.slots {
		if in != nil {
			s.Healthy++
			in.mu.Lock()
			s.PendingCalls += len(in.calls)
			in.mu.Unlock()
		}
	}
	return s
}

func (pl *pool) close(wait time.Duration) {
	pl.mu.Lock()
	if pl.shut {
		pl.mu.Unlock()
		return
	}
	pl.shut = true
	close(pl.stopC)
	slots := append([]*instance(nil), pl.slots...)
	pl.mu.Unlock()
	for _, in := range slots {
		if in != nil {
			in.shutdown(wait)
		}
	}
	pl.wg.Wait()
}
