package host

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"runtime/debug"
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
	// loadTimes is how long Load took (LoadTimes).
	loadTimes LoadTimes
}

// ErrNoInstance is returned by NewHTTPStream when every instance of the pool
// has failed and none has been replaced yet.
var ErrNoInstance = errors.New("no healthy plugin instance")

// ErrOverloaded is returned by NewHTTPStream and NewTCPStream when every
// healthy instance is busy and streams wait longer than
// Config.ShedQueueDelay for them: the stream would be answered too late to
// be of use, and queueing it would delay the streams already open.
var ErrOverloaded = errors.New("every plugin instance is overloaded")

// Load compiles wasm, validates its imports and exports, and starts
// cfg.Instances instances before returning, so no stream ever waits for an
// instantiation. The error explains precisely why a plugin cannot load.
func Load(ctx context.Context, wasm []byte, cfg Config) (*Plugin, error) {
	cfg = cfg.withDefaults()
	var cache wazero.CompilationCache
	if cfg.CompilationCacheDir != "" {
		dir := filepath.Join(cfg.CompilationCacheDir, cacheSubdir(cfg))
		c, err := wazero.NewCompilationCacheWithDir(dir)
		if err != nil {
			return nil, fmt.Errorf("compilation cache %s: %w", cfg.CompilationCacheDir, err)
		}
		cache = c
	}
	start := time.Now()
	cfg.Logger.Debug("compiling plugin", "plugin", cfg.Name, "bytes", len(wasm), "cache", cfg.CompilationCacheDir)
	c, err := compile(ctx, wasm, cfg, cache)
	if err != nil {
		if c != nil {
			c.runtime.Close(ctx)
		}
		return nil, err
	}
	cfg.Logger.Debug("plugin compiled; starting instances", "plugin", cfg.Name,
		"took", time.Since(start).Round(time.Millisecond), "instances", cfg.Instances)
	p := &Plugin{cfg: cfg, info: c.info, runtime: c.runtime, compiled: c.module}
	p.loadTimes.Compile = time.Since(start)
	started := time.Now()
	for _, w := range c.info.Warnings {
		cfg.Logger.Warn("plugin: "+w, "plugin", cfg.Name)
	}
	ReleaseGarbage(len(wasm))
	p.pool = newPool(p)
	if err := p.pool.start(ctx); err != nil {
		p.runtime.Close(ctx)
		return nil, err
	}
	p.loadTimes.Start = time.Since(started)
	ReleaseGarbage(len(wasm))
	return p, nil
}

// largeModule is the module size from which Load hands the garbage of
// compiling and starting back to the OS at once.
const largeModule = 4 << 20

// ReleaseGarbage returns freed heap to the OS at once if wasmSize is a
// large module's size. Load calls it after compiling and again after the
// instances start: reading a compiled module from the cache alone leaves a
// buffer as large as its machine code (110 MiB for Coraza with the CRS)
// that Go's background scavenger would hand back only over minutes, and
// the RSS a deployment sizes its memory limit by would include it. A
// caller that lets go of the module's bytes after Load calls it too: an
// idle server does not collect for minutes. RATIONALE.md has the
// measurements.
func ReleaseGarbage(wasmSize int) {
	if wasmSize >= largeModule {
		debug.FreeOSMemory()
	}
}

// cacheSchema names what, besides the module and wazero's version (which
// wazero keys itself), decides the code wazero compiles. Change it when the
// host starts compiling differently (runtime options, features), so that
// no cache written by an older host is read.
const cacheSchema = "wasm-callout compile v2"

// cacheSubdir is the directory under Config.CompilationCacheDir for code
// compiled with cfg's compile-relevant options. wazero adds its own
// version and platform below it, and keys each module by its bytes and
// whether termination checks are compiled in.
func cacheSubdir(cfg Config) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\ndeadlines=%v\nmemory-limit-pages=%d\n", cacheSchema, cfg.CallTimeout > 0, cfg.MemoryLimitPages)
	if cfg.listeners != nil {
		// Code compiled with function listeners calls them; keep it apart.
		fmt.Fprintf(h, "listeners=true\n")
	}
	return "host-" + hex.EncodeToString(h.Sum(nil)[:8])
}

// Info describes the loaded module.
func (p *Plugin) Info() *Info { return p.info }

// Config returns the plugin's configuration with defaults applied.
func (p *Plugin) Config() Config { return p.cfg }

// Metrics is the registry the plugin's metrics go to.
func (p *Plugin) Metrics() *Metrics { return p.cfg.Metrics }

// Stats counts what the pool has done. Reading it never waits for a plugin
// call: health checks read it while a plugin may be looping.
type Stats struct {
	Instances   int   // configured pool size
	Healthy     int   // instances serving now
	LiveStreams int64 // streams open now
	Failures    int64 // instances poisoned so far
	Replaced    int64 // instances replaced so far
	// PendingCalls counts outbound HTTP and gRPC calls in flight.
	PendingCalls int
	// Stalled counts instances running a call that has outlived its
	// deadline by StallGrace (the deadline could not stop it) or, with
	// deadlines off, has run longer than StallGrace. A stalled instance
	// will not make progress again: liveness checks report it.
	Stalled int
	// GuestCalls counts entries into the plugin's code so far: callbacks,
	// and the allocations the host makes re-entering the guest.
	GuestCalls int64
}

// StallGrace is how long past its deadline (or, with deadlines off, in
// all) a plugin call may run before the pool reports its instance stalled.
const StallGrace = 10 * time.Second

// Stats reports the pool's state.
func (p *Plugin) Stats() Stats { return p.pool.stats() }

// Close shuts every instance down: each root context gets proxy_on_done
// (waiting up to one second for proxy_done when the plugin defers) and
// proxy_on_delete, then the runtime is closed. Streams still open are failed.
// An instance busy in a call is given until ctx's deadline (or one second
// plus the call timeout) to finish it; one that still runs then (possible
// only with deadlines off) is abandoned without its final callbacks, and
// the runtime is left open under it rather than unmapped under running
// code. Close then returns an error saying so.
func (p *Plugin) Close(ctx context.Context) error {
	wait := time.Second
	if d, ok := ctx.Deadline(); ok {
		wait = min(wait, time.Until(d))
	}
	grace := time.Second
	if p.cfg.CallTimeout > 0 {
		grace += p.cfg.CallTimeout
	}
	if d, ok := ctx.Deadline(); ok {
		grace = time.Until(d)
	}
	if abandoned := p.pool.close(wait, grace); abandoned > 0 {
		return fmt.Errorf("%d plugin instance(s) still running a call were abandoned; their runtime stays open", abandoned)
	}
	return p.runtime.Close(ctx)
}

// pool keeps cfg.Instances started instances and replaces failed ones with
// back-off. A stream picks a healthy instance and stays on it.
//
// Nothing in the pool waits for a guest call: slots are read atomically,
// and mu guards only the pool's own bookkeeping, so health checks, new
// streams and the watchdog go on while an instance is busy or looping.
type pool struct {
	p     *Plugin
	slots []atomic.Pointer[instance] // nil while a slot is being replaced
	stopC chan struct{}
	wg    sync.WaitGroup

	mu   sync.Mutex // guards shut; never held across an instance's mu
	shut bool

	failures, replaced atomic.Int64
	streams            atomic.Int64
	guestCalls         atomic.Int64
}

func newPool(p *Plugin) *pool {
	return &pool{
		p:     p,
		slots: make([]atomic.Pointer[instance], p.cfg.Instances),
		stopC: make(chan struct{}),
	}
}

// start starts every instance at once: a large plugin spends its start
// in proxy_on_vm_start and proxy_on_configure (Coraza parses its whole rule
// set there), and instances share nothing while they start, so the pool is
// ready when the slowest is rather than after the sum. The first error (by
// slot) is returned, with every instance closed.
func (pl *pool) start(ctx context.Context) error {
	errs := make([]error, len(pl.slots))
	var wg sync.WaitGroup
	for i := range pl.slots {
		wg.Add(1)
		go func() {
			defer wg.Done()
			in, err := newInstance(ctx, pl.p, i)
			if err != nil {
				errs[i] = fmt.Errorf("start instance %d: %w", i, err)
				return
			}
			pl.slots[i].Store(in)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			pl.close(0, 0)
			return err
		}
	}
	if pl.p.cfg.CallTimeout > 0 {
		pl.wg.Add(1)
		go pl.watchdog()
	}
	return nil
}

// lock returns a healthy instance for a new stream, locked. It prefers the
// instance with the fewest live streams among those not running a call;
// only when every healthy instance is busy does it wait, for the one
// streams have lately waited least for, unless that wait is past
// ShedQueueDelay (ErrOverloaded). An instance found failed once locked is
// passed over, so a stream is refused (ErrNoInstance) only when no healthy
// instance is left.
func (pl *pool) lock() (*instance, error) {
	var skip uint64 // slots found failed, as a bit set (pools beyond 64 reuse bits)
	for range len(pl.slots) + 1 {
		if pl.closed() {
			return nil, errClosed
		}
		var best, idle *instance
		var bestDelay, idleLive int64
		now := time.Now().UnixNano()
		for i := range pl.slots {
			in := pl.slots[i].Load()
			if in == nil || in.dead.Load() || skip&(1<<(i%64)) != 0 {
				continue
			}
			if d := in.recentQueueDelay(now); best == nil || d < bestDelay {
				best, bestDelay = in, d
			}
			if n := in.live.Load(); in.callStart.Load() == 0 && (idle == nil || n < idleLive) {
				idle, idleLive = in, n
			}
		}
		if best == nil {
			return nil, ErrNoInstance
		}
		in := best
		switch {
		case idle != nil && idle.mu.TryLock():
			in = idle
		case best.mu.TryLock():
		case pl.p.cfg.ShedQueueDelay > 0 && bestDelay > int64(pl.p.cfg.ShedQueueDelay):
			return nil, ErrOverloaded
		default:
			best.lock()
		}
		if in.failed == nil { // a stopped instance has failed with errClosed
			return in, nil
		}
		in.mu.Unlock()
		skip |= 1 << (in.slot % 64)
	}
	return nil, ErrNoInstance
}

func (pl *pool) closed() bool {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	return pl.shut
}

// replace swaps a failed instance for a fresh one, retrying with exponential
// back-off while instantiation fails (a plugin that crashes on start-up must
// not spin the CPU).
func (pl *pool) replace(old *instance) {
	pl.mu.Lock()
	if pl.shut || !pl.slots[old.slot].CompareAndSwap(old, nil) {
		pl.mu.Unlock()
		return
	}
	pl.failures.Add(1)
	pl.wg.Add(1)
	pl.mu.Unlock()
	// old.cause was set with old.failed, under old.mu, before this
	// goroutine started.
	pl.p.cfg.Telemetry.failures[old.cause].Add(1)
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
			pl.slots[old.slot].Store(in)
			pl.mu.Unlock()
			pl.replaced.Add(1)
			pl.p.cfg.Telemetry.replaced.Add(1)
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

// watchdog cancels any call that has run longer than CallTimeout.
// Cancelling the instance's context stops the guest at its next loop check
// (loopcheck.go) or, for a module the host could not instrument, at
// wazero's own check (WithCloseOnContextDone). It reads only atomics, so
// it always fires, whatever else waits.
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
			for i := range pl.slots {
				in := pl.slots[i].Load()
				if in == nil {
					continue
				}
				if start := in.callStart.Load(); start != 0 && now.UnixNano()-start > int64(timeout) {
					in.cancel(ErrCallTimeout)
				}
			}
		}
	}
}

// stalled reports whether in's running call has outlived any chance of
// being stopped (see Stats.Stalled).
func (pl *pool) stalled(in *instance, now int64) bool {
	start := in.callStart.Load()
	if start == 0 {
		return false
	}
	limit := StallGrace
	if pl.p.cfg.CallTimeout > 0 {
		limit += pl.p.cfg.CallTimeout
	}
	return now-start > int64(limit)
}

func (pl *pool) stats() Stats {
	s := Stats{Instances: len(pl.slots), LiveStreams: pl.streams.Load(), Failures: pl.failures.Load(), Replaced: pl.replaced.Load(),
		GuestCalls: pl.guestCalls.Load()}
	now := time.Now().UnixNano()
	for i := range pl.slots {
		in := pl.slots[i].Load()
		if in == nil {
			continue
		}
		if !in.dead.Load() {
			s.Healthy++
		}
		s.PendingCalls += int(in.pendingCalls.Load())
		if pl.stalled(in, now) {
			s.Stalled++
		}
	}
	return s
}

// close shuts the instances down (see Plugin.Close) and reports how many
// it had to abandon in a call.
func (pl *pool) close(wait, grace time.Duration) (abandoned int) {
	pl.mu.Lock()
	if pl.shut {
		pl.mu.Unlock()
		return 0
	}
	pl.shut = true
	close(pl.stopC)
	pl.mu.Unlock()
	var wg sync.WaitGroup
	var lost atomic.Int64
	for i := range pl.slots {
		in := pl.slots[i].Load()
		if in == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if !in.shutdown(wait, grace) {
				lost.Add(1)
			}
		}()
	}
	wg.Wait()
	// Replacements in progress end once the call that failed their old
	// instance returns, which a deadline bounds.
	if !waitTimeout(&pl.wg, grace) {
		lost.Add(1)
	}
	return int(lost.Load())
}

// waitTimeout waits for wg for up to d and reports whether it finished.
func waitTimeout(wg *sync.WaitGroup, d time.Duration) bool {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	}
}
