package host

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
	"github.com/tetratelabs/wazero/sys"

	"github.com/wasm-callout/wasm-callout/abi"
)

// ErrCallTimeout is the cause recorded when a call into the plugin runs past
// Config.CallTimeout.
var ErrCallTimeout = errors.New("plugin call exceeded its deadline")

// instanceKey finds the *instance behind the context.Context that wazero
// passes to host functions.
type instanceKey struct{}

func instanceFrom(ctx context.Context) *instance {
	in, _ := ctx.Value(instanceKey{}).(*instance)
	return in
}

// callbacks caches the plugin's exports; wazero builds a call engine per
// lookup, so they are looked up once per instance. Absent ones are nil.
type callbacks struct {
	alloc                              api.Function
	onContextCreate, onVMStart         api.Function
	onConfigure, onTick, onQueueReady  api.Function
	onDone, onLog, onDelete            api.Function
	onRequestHeaders, onRequestBody    api.Function
	onRequestTrailers                  api.Function
	onResponseHeaders, onResponseBody  api.Function
	onResponseTrailers                 api.Function
	onNewConnection                    api.Function
	onDownstreamData, onUpstreamData   api.Function
	onDownstreamClose, onUpstreamClose api.Function
	onHTTPCallResponse                 api.Function
	onGRPCReceiveInitialMetadata       api.Function
	onGRPCReceive                      api.Function
	onGRPCReceiveTrailingMetadata      api.Function
	onGRPCClose                        api.Function
}

// instance is one started VM: a wazero module with its root context. Every
// call into it holds mu, so it runs one callback at a time, like one Envoy
// worker's VM.
type instance struct {
	plugin *Plugin
	slot   int
	mod    api.Module
	mem    api.Memory
	fns    callbacks
	arity  int // header callback parameter count

	// ctx is passed to every guest call. It carries the instance for host
	// functions; cancelling it aborts a runaway call and closes the module.
	ctx    context.Context
	cancel context.CancelCauseFunc
	// callStart is when the outermost running call began (UnixNano), or 0.
	callStart atomic.Int64
	// The pool reads these without mu, so that nothing outside a stream
	// waits for a running call: dead is set when the instance fails or
	// stops, live counts its open streams, pendingCalls its outbound calls.
	dead         atomic.Bool
	live         atomic.Int64
	pendingCalls atomic.Int64
	// memBytes is the linear memory's size after the last call (for
	// Plugin.Instances); cause is why the instance failed, set once
	// failed is.
	memBytes atomic.Uint64
	cause    FailureCause
	// queueDelay is a moving average of how long a stream waits for mu
	// (ns); it decays towards zero while nobody has to wait (see lock).
	// waitedAt is when a stream last had to wait (UnixNano).
	queueDelay, waitedAt atomic.Int64

	mu sync.Mutex
	// Fields below are guarded by mu.
	rootID    uint32
	nextID    uint32
	contexts  map[uint32]*pluginContext
	effective uint32    // context host functions act on
	depth     int       // nesting of guest calls (allocations re-enter)
	frame     *stream   // the stream whose callback is running
	phase     phase     // which callback is running
	touched   []*stream // streams with actions recorded in this call
	failed    error
	// rootDone is set when the root context deferred its shutdown (its
	// proxy_on_done returned false) and has since called proxy_done.
	rootDonePending, rootDone bool
	calls                     map[uint32]*outboundCall // by token
	nextToken                 uint32
	callResp                  *callResponse // readable during a call's callback
	status                    callStatus    // proxy_get_status
	stack                     [8]uint64
	nestedStack               [2]uint64
	shapes                    map[api.Function]callShape // by export, filled by call
	stdout, stderr            *logWriter

	tasks    chan func()
	tick     chan time.Duration
	closed   chan struct{}
	stopOnce sync.Once
}

// newInstance instantiates the compiled module and runs the start sequence:
// the WASI entry point, then the root context's create, vm_start and
// configure. It refuses the plugin if either of the last two returns false.
func newInstance(ctx context.Context, p *Plugin, slot int) (*instance, error) {
	in := &instance{
		plugin:   p,
		slot:     slot,
		arity:    p.info.HeaderArity,
		contexts: map[uint32]*pluginContext{},
		shapes:   map[api.Function]callShape{},
		tasks:    make(chan func(), 64),
		tick:     make(chan time.Duration, 1),
		closed:   make(chan struct{}),
	}
	in.ctx, in.cancel = context.WithCancelCause(context.WithValue(context.Background(), instanceKey{}, in))
	in.stdout = &logWriter{in: in, level: abi.LogInfo}
	in.stderr = &logWriter{in: in, level: abi.LogError}

	mc := wazero.NewModuleConfig().
		WithName("").
		WithStartFunctions().
		WithStdout(in.stdout).
		WithStderr(in.stderr).
		WithSysWalltime().
		WithSysNanotime().
		WithRandSource(rand.Reader)
	for k, v := range p.cfg.Env {
		mc = mc.WithEnv(k, v)
	}
	if memoryAllocator != nil {
		ctx = experimental.WithMemoryAllocator(ctx, memoryAllocator)
	}
	mod, err := p.runtime.InstantiateModule(ctx, p.compiled, mc)
	if err != nil {
		return nil, fmt.Errorf("instantiate: %w", err)
	}
	in.mod = mod
	liveInstances.Add(1)
	in.mem = mod.Memory()
	in.memBytes.Store(in.memSize())
	in.lookupCallbacks()

	in.mu.Lock()
	err = in.start()
	in.mu.Unlock()
	if err != nil {
		in.stop()
		return nil, err
	}
	go in.run()
	return in, nil
}

func (in *instance) lookupCallbacks() {
	f := func(name string) api.Function { return in.mod.ExportedFunction(name) }
	in.fns = callbacks{
		alloc:                         f(in.plugin.info.Allocator),
		onContextCreate:               f(abi.OnContextCreate),
		onVMStart:                     f(abi.OnVMStart),
		onConfigure:                   f(abi.OnConfigure),
		onTick:                        f(abi.OnTick),
		onQueueReady:                  f(abi.OnQueueReady),
		onDone:                        f(abi.OnDone),
		onLog:                         f(abi.OnLog),
		onDelete:                      f(abi.OnDelete),
		onRequestHeaders:              f(abi.OnRequestHeaders),
		onRequestBody:                 f(abi.OnRequestBody),
		onRequestTrailers:             f(abi.OnRequestTrailers),
		onResponseHeaders:             f(abi.OnResponseHeaders),
		onResponseBody:                f(abi.OnResponseBody),
		onResponseTrailers:            f(abi.OnResponseTrailers),
		onNewConnection:               f(abi.OnNewConnection),
		onDownstreamData:              f(abi.OnDownstreamData),
		onUpstreamData:                f(abi.OnUpstreamData),
		onDownstreamClose:             f(abi.OnDownstreamClose),
		onUpstreamClose:               f(abi.OnUpstreamClose),
		onHTTPCallResponse:            f(abi.OnHTTPCallResponse),
		onGRPCReceiveInitialMetadata:  f(abi.OnGRPCReceiveInitialMetadata),
		onGRPCReceive:                 f(abi.OnGRPCReceive),
		onGRPCReceiveTrailingMetadata: f(abi.OnGRPCReceiveTrailingMetadata),
		onGRPCClose:                   f(abi.OnGRPCClose),
	}
	if in.fns.onGRPCReceiveTrailingMetadata == nil {
		// The AssemblyScript SDK exports only the older name.
		in.fns.onGRPCReceiveTrailingMetadata = f(abi.OnGRPCTrailingMetadataLegacy)
	}
}

// start runs the entry points and starts the root context. Caller holds mu.
func (in *instance) start() error {
	for _, name := range in.plugin.info.Entry {
		fn := in.mod.ExportedFunction(name)
		params := make([]uint64, len(fn.Definition().ParamTypes())) // main(argc=0, argv=0)
		if _, err := in.call(fn, params...); err != nil {
			var exit *sys.ExitError
			if errors.As(err, &exit) {
				return fmt.Errorf("%s: the module exited with code %d during start-up; a plugin must stay alive to serve callbacks (a Go plugin must be built with -buildmode=c-shared)", name, exit.ExitCode())
			}
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	in.nextID++
	in.rootID = in.nextID
	in.contexts[in.rootID] = &pluginContext{id: in.rootID, root: true}
	if _, err := in.callCtx(in.fns.onContextCreate, in.rootID, 0); err != nil {
		return fmt.Errorf("%s: %w", abi.OnContextCreate, err)
	}
	in.phase = phaseVMStart
	ok, err := in.callCtx(in.fns.onVMStart, in.rootID, uint64(len(in.plugin.cfg.VMConfig)))
	in.phase = phaseNone
	if err != nil {
		return fmt.Errorf("%s: %w", abi.OnVMStart, err)
	}
	if in.fns.onVMStart != nil && uint32(ok) == 0 {
		return fmt.Errorf("%s returned false: the plugin refused its VM configuration", abi.OnVMStart)
	}
	in.phase = phaseConfigure
	ok, err = in.callCtx(in.fns.onConfigure, in.rootID, uint64(len(in.plugin.cfg.PluginConfig)))
	in.phase = phaseNone
	if err != nil {
		return fmt.Errorf("%s: %w", abi.OnConfigure, err)
	}
	if in.fns.onConfigure != nil && uint32(ok) == 0 {
		return fmt.Errorf("%s returned false: the plugin refused its configuration", abi.OnConfigure)
	}
	return nil
}

// callCtx calls a callback of context id with the remaining parameters.
// The effective context is reset to id for the call's duration. An absent
// callback returns 0 (Continue, or false for boolean callbacks, which
// callers treat as "absent means default").
func (in *instance) callCtx(fn api.Function, id uint32, params ...uint64) (uint64, error) {
	if fn == nil {
		return 0, in.failed
	}
	var buf [8]uint64
	buf[0] = uint64(id)
	n := 1 + copy(buf[1:], params)
	prev := in.effective
	in.effective = id
	res, err := in.call(fn, buf[:n]...)
	in.effective = prev
	return res, err
}

// call invokes fn with params and returns its first result. Caller holds
// mu. A failed call poisons the instance: the error is kept and returned
// by every later call, and stop poisons it with errClosed, so nothing
// enters a closed module (with the loop budget, compiled code does not
// check whether its module is closed, and a closed module's memory is
// unmapped).
//
// A nested call (an allocation from inside a host function) that fails
// does not return: it unwinds the outer call at once, as proc_exit does.
// Returning into the outer guest code would run it on an instance that is
// lost, whose module proc_exit may already have closed.
func (in *instance) call(fn api.Function, params ...uint64) (uint64, error) {
	outer := in.depth == 0
	if in.failed != nil {
		if !outer {
			panic(in.failed)
		}
		return 0, in.failed
	}
	shape, ok := in.shapes[fn]
	if !ok {
		// wazero builds a definition's type lists on every request.
		def := fn.Definition()
		shape = callShape{stack: max(len(def.ParamTypes()), len(def.ResultTypes())), results: len(def.ResultTypes())}
		shape.callback = numCallbacks - 1
		if names := def.ExportNames(); len(names) > 0 {
			shape.callback = callbackIndex(names[0])
		}
		in.shapes[fn] = shape
	}
	// The outer call and the first nested one (an allocation) each have a
	// stack of their own; deeper nesting (the allocator re-entering, as
	// Go's GC can) gets a fresh one.
	n := shape.stack
	var stack []uint64
	switch {
	case in.depth == 0 && n <= len(in.stack):
		stack = in.stack[:n]
	case in.depth == 1 && n <= len(in.nestedStack):
		stack = in.nestedStack[:n]
	default:
		stack = make([]uint64, n)
	}
	copy(stack, params)
	var start time.Time
	if outer {
		start = time.Now()
		in.callStart.Store(start.UnixNano())
	}
	in.depth++
	in.plugin.pool.guestCalls.Add(1)
	err := fn.CallWithStack(in.ctx, stack)
	in.depth--
	if outer {
		in.callStart.Store(0)
		// Before the failure is logged: a crash report comes first.
		in.stdout.endCall()
		in.stderr.endCall()
		in.plugin.cfg.Telemetry.callbacks[shape.callback].Observe(time.Since(start))
		in.memBytes.Store(in.memSize())
	}
	if err != nil {
		if !outer {
			err = fmt.Errorf("%s: %w", fn.Definition().Name(), err)
		}
		in.fail(err)
		if !outer {
			// wazero recovers the panic at the outer call and returns
			// it as that call's error.
			panic(in.failed)
		}
		return 0, in.failed
	}
	if shape.results == 0 {
		return 0, nil
	}
	return stack[0], nil
}

// memSize is the linear memory's size in bytes, 0 without one.
func (in *instance) memSize() uint64 {
	if in.mem == nil {
		return 0
	}
	return uint64(in.mem.Size())
}

// callShape is what call needs of an exported function: its signature,
// and which callback it is (an index in callbackNames) for Telemetry.
type callShape struct {
	stack, results int
	callback       uint8
}

// alloc asks the plugin for size bytes, re-entering the guest from inside a
// host function. It returns 0 if the allocator returned 0 or an address
// outside memory; if the allocator fails, the outer call unwinds (see call).
func (in *instance) alloc(size uint32) uint32 {
	if in.fns.alloc == nil {
		return 0
	}
	res, _ := in.call(in.fns.alloc, uint64(size))
	ptr := uint32(res)
	if ptr == 0 || uint64(ptr)+uint64(size) > uint64(in.mem.Size()) {
		return 0
	}
	return ptr
}

// fail poisons the instance with the first error it saw, tells every live
// stream, and asks the pool for a replacement. Caller holds mu.
func (in *instance) fail(err error) {
	if in.failed != nil {
		return
	}
	if cause := context.Cause(in.ctx); cause != nil && in.ctx.Err() != nil {
		err = fmt.Errorf("%w (%v)", cause, err)
	}
	in.failed = err
	in.cause = classifyFailure(err, in.memSize(), uint64(in.plugin.cfg.MemoryLimitPages)*65536)
	in.dead.Store(true)
	// A nested call (an allocation) may fail while the outer call runs
	// on: stop it too, since the instance is lost either way.
	in.cancel(err)
	in.plugin.cfg.Logger.Error("plugin instance failed; replacing it",
		"plugin", in.plugin.cfg.Name, "instance", in.slot, "err", err)
	for _, c := range in.contexts {
		if c.stream != nil {
			c.stream.instanceFailed(err)
		}
	}
	go in.plugin.pool.replace(in)
}

// run is the instance's executor for work that does not come from a stream:
// timer ticks and posted tasks (queue notifications). Each runs under mu, so
// it never overlaps a stream callback.
func (in *instance) run() {
	var ticker *time.Ticker
	var tickC <-chan time.Time
	defer func() {
		if ticker != nil {
			ticker.Stop()
		}
	}()
	for {
		select {
		case <-in.closed:
			return
		case d := <-in.tick:
			if ticker != nil {
				ticker.Stop()
				ticker, tickC = nil, nil
			}
			if d > 0 {
				ticker = time.NewTicker(d)
				tickC = ticker.C
			}
		case <-tickC:
			in.withLock(func() {
				in.callCtx(in.fns.onTick, in.rootID)
			})
		case task := <-in.tasks:
			in.withLock(task)
		}
	}
}

// lock takes mu for a stream, keeping queueDelay: an average over the last
// eight or so acquisitions of how long each waited. An uncontended lock
// costs one TryLock and decays the average.
func (in *instance) lock() {
	if in.mu.TryLock() {
		if d := in.queueDelay.Load(); d != 0 {
			in.queueDelay.Store(d - d/8 - 1)
		}
		return
	}
	t0 := time.Now()
	in.mu.Lock()
	now := time.Now()
	d := in.queueDelay.Load()
	in.queueDelay.Store(d + (int64(now.Sub(t0))-d)/8)
	in.waitedAt.Store(now.UnixNano())
}

// queueWindow is how long a measured queue delay stays news: an instance
// nobody has had to wait for since then has no queue.
const queueWindow = time.Second

// recentQueueDelay is queueDelay, or zero if nobody waited for the
// instance within queueWindow before now.
func (in *instance) recentQueueDelay(now int64) int64 {
	if now-in.waitedAt.Load() > int64(queueWindow) {
		return 0
	}
	return in.queueDelay.Load()
}

// withLock runs fn under mu unless the instance failed, then delivers the
// stream actions fn caused.
func (in *instance) withLock(fn func()) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.failed != nil {
		return
	}
	fn()
	in.flushActions(nil)
}

// postWait queues fn on the executor, waiting for room; it drops fn only
// if the instance is gone. Never call it holding mu.
func (in *instance) postWait(fn func()) {
	select {
	case <-in.closed:
	case in.tasks <- fn:
	}
}

// post queues fn on the executor. It reports false if the instance is gone
// or its queue is full.
func (in *instance) post(fn func()) bool {
	select {
	case <-in.closed:
		return false
	case in.tasks <- fn:
		return true
	default:
		return false
	}
}

// shutdown runs the root context's on_done (waiting up to wait for
// proxy_done if the plugin defers) and on_delete, then stops the instance.
// If a call holds the instance, shutdown waits up to wait for it, then
// cancels the instance's context (a deadline-checked call stops at once)
// and waits up to grace more. It reports false if the call still runs:
// the instance is then abandoned, not stopped, since its module must not
// be closed under running code.
func (in *instance) shutdown(wait, grace time.Duration) bool {
	if !lockWithin(&in.mu, wait) {
		in.cancel(errClosed)
		if !lockWithin(&in.mu, grace) {
			in.dead.Store(true)
			in.plugin.cfg.Logger.Error("plugin instance still running a call at close; abandoning it",
				"plugin", in.plugin.cfg.Name, "instance", in.slot)
			return false
		}
	}
	if in.failed == nil {
		ok, err := in.callCtx(in.fns.onDone, in.rootID)
		if err == nil && in.fns.onDone != nil && uint32(ok) == 0 {
			in.rootDonePending = true
		}
	}
	in.mu.Unlock()
	deadline := time.Now().Add(wait)
	for {
		in.mu.Lock()
		waiting := in.rootDonePending && !in.rootDone && in.failed == nil
		if !waiting || time.Now().After(deadline) {
			if in.failed == nil {
				in.callCtx(in.fns.onDelete, in.rootID)
			}
			// Stopped under mu, so no stream callback can be running in
			// the module, or start in it, while it closes.
			in.stop()
			in.mu.Unlock()
			return true
		}
		in.mu.Unlock()
		time.Sleep(10 * time.Millisecond)
	}
}

// lockWithin locks mu, giving up after d. Only shutdown uses it: streams
// wait for their own instance, and nothing else waits on a call.
func lockWithin(mu *sync.Mutex, d time.Duration) bool {
	if mu.TryLock() {
		return true
	}
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
		if mu.TryLock() {
			return true
		}
	}
	return false
}

// liveInstances counts instances instantiated and not yet stopped, across
// every plugin of the process.
var liveInstances atomic.Int64

// LiveInstances returns how many plugin instances, of every plugin in the
// process, are instantiated and not yet stopped. A closed plugin leaves
// none: tests use it to check that replaced plugins release their VMs.
func LiveInstances() int64 { return liveInstances.Load() }

// stop closes the module and the executor, and poisons the instance so
// that no call enters the closed module: a timer tick or posted task that
// was waiting for mu while the instance shut down finds it failed. Caller
// holds mu, unless the instance was never shared. It is idempotent.
func (in *instance) stop() {
	in.stopOnce.Do(func() {
		in.dead.Store(true)
		if in.mod != nil {
			liveInstances.Add(-1)
		}
		close(in.closed)
		for _, c := range in.calls {
			c.cancel()
		}
		in.plugin.cfg.Shared.disown(in)
		in.cancel(errClosed)
		if in.failed == nil {
			in.failed = errClosed // see call
		}
		if in.mod != nil {
			in.mod.Close(context.Background())
		}
	})
}
