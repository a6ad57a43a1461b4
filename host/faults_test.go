package host

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wasm-callout/wasm-callout/abi"
)

// waitFor polls cond until it holds or a generous bound passes. It is for
// waiting on background work (a replacement instance), never for timing.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A plugin that traps, loops, eats memory or exits poisons only its own
// instance: its streams get the failure policy, a fresh instance replaces
// it, and streams on the other instance keep working throughout.
func TestFaultContainment(t *testing.T) {
	tests := []struct {
		fault   string
		plugin  string
		cause   string
		timeout time.Duration
		kind    FailureCause // as Telemetry counts it
	}{
		{"trap", "faults", "unreachable", 0, CauseTrap},
		{"loop", "faults", ErrCallTimeout.Error(), 200 * time.Millisecond, CauseDeadline},
		{"oom", "faults", "unreachable", 0, CauseMemory},
		{"exit", "faults", "exit_code(3)", 0, CauseExit},
		// proc_exit inside an allocation the host makes for a callback
		// ends the callback too; with and without deadlines, since only
		// without them does the guest never check its module is closed.
		{"alloc-exit", "faults", "exit_code(4)", 0, CauseExit},
		{"alloc-exit", "faults", "exit_code(4)", 200 * time.Millisecond, CauseExit},
		{"trap", "plugin:testbed", "runtime.gopanic", 0, CauseTrap},
		{"loop", "plugin:testbed", ErrCallTimeout.Error(), 300 * time.Millisecond, CauseDeadline},
		{"oom", "plugin:testbed", "", 0, CauseMemory},
	}
	for _, tc := range tests {
		// With deadlines, also through wazero's own loop checks, which a
		// module the host cannot rewrite keeps.
		for _, wazeroChecks := range []bool{false, true} {
			if wazeroChecks && tc.timeout == 0 {
				continue
			}
			name := fmt.Sprintf("%s/%s/timeout=%v", tc.plugin, tc.fault, tc.timeout)
			if wazeroChecks {
				name += "/wazero-checks"
			}
			t.Run(name, func(t *testing.T) {
				for _, policy := range []FailurePolicy{FailClosed, FailOpen} {
					p := loadFile(t, tc.plugin, Config{Instances: 2, CallTimeout: tc.timeout, FailurePolicy: policy, MemoryLimitPages: 512, wazeroLoopChecks: wazeroChecks})
					checkContained(t, p, tc.fault, tc.cause, policy)
					ts := p.Telemetry().Snapshot()
					var want [NumFailureCauses]int64
					want[tc.kind] = 1
					if ts.Failures != want || ts.Replaced != 1 {
						t.Errorf("telemetry: failures %v, replaced %d; want %v (one %s), 1", ts.Failures, ts.Replaced, want, tc.kind)
					}
				}
			})
		}
	}
}

func faultHeaders(fault string) []abi.Pair {
	if fault == "alloc-exit" {
		fault = "a"
	}
	return kv(":path", "/", ":method", "GET", "x-fault", fault, "x-testbed", fault)
}

func checkContained(t *testing.T, p *Plugin, fault, cause string, policy FailurePolicy) {
	t.Helper()
	// A paused stream on the same instance as the faulty one, and a
	// healthy stream on the other instance.
	bystander, _ := p.NewHTTPStream(nil)
	defer bystander.Close()
	bad, _ := p.NewHTTPStream(nil)
	defer bad.Close()
	other, _ := p.NewHTTPStream(nil)
	defer other.Close()
	if bystander.in != other.in {
		bystander, other = other, bystander
	}
	if bad.in == other.in {
		t.Fatal("streams were not spread over the pool")
	}

	r := bad.RequestHeaders(faultHeaders(fault), true)
	if r.Failure == nil || (cause != "" && !strings.Contains(r.Failure.Error(), cause)) {
		t.Fatalf("failure = %v, want one mentioning %q", r.Failure, cause)
	}
	switch policy {
	case FailClosed:
		if r.LocalResponse == nil || r.LocalResponse.Status != DefaultFailStatus || r.LocalResponse.Details != "wasm_fail_stream" {
			t.Fatalf("fail-closed result = %+v", r)
		}
	case FailOpen:
		if r.Action != abi.ActionContinue || r.LocalResponse != nil {
			t.Fatalf("fail-open result = %+v", r)
		}
		// The plugin is skipped for the rest of the stream.
		if r := bad.RequestBody([]byte("x"), true); r.Action != abi.ActionContinue || string(r.Body) != "x" {
			t.Fatalf("after fail-open: %+v", r)
		}
	}
	// A stream pinned to the failed instance hears about it.
	if bystander.in == bad.in {
		<-bystander.Notify()
		ev := bystander.TakeEvents()
		if len(ev) != 1 || ev[0].Kind != EventFailed || !errors.Is(ev[0].Result.Failure, bad.failed) && ev[0].Result.Failure == nil {
			t.Fatalf("bystander events = %+v", ev)
		}
	}
	// The other instance serves on.
	if r := other.RequestHeaders(kv(":path", "/", "x-fault", "none"), true); r.Failure != nil || r.Action != abi.ActionContinue {
		t.Fatalf("healthy instance: %+v", r)
	}
	// The failed instance is replaced, and new streams work.
	waitFor(t, "a replacement instance", func() bool { s := p.Stats(); return s.Replaced >= 1 && s.Healthy == 2 })
	for i := 0; i < 4; i++ {
		s, err := p.NewHTTPStream(nil)
		if err != nil {
			t.Fatal(err)
		}
		if r := s.RequestHeaders(kv(":path", "/", "x-fault", "none"), true); r.Failure != nil {
			t.Fatalf("after replacement: %+v", r)
		}
		s.Close()
	}
}

// A stream whose instance failed still ends cleanly, and the host never
// calls into the dead instance again.
func TestCloseAfterFailure(t *testing.T) {
	p := loadFile(t, "faults", Config{Instances: 1})
	s, _ := p.NewHTTPStream(nil)
	s.RequestHeaders(faultHeaders("trap"), true)
	s.Close()
	if got := p.Stats().LiveStreams; got != 0 {
		t.Errorf("live streams = %d", got)
	}
	waitFor(t, "replacement", func() bool { return p.Stats().Healthy == 1 })
}

// Many goroutines hit faults while others stream: nothing panics, races
// or deadlocks, and every healthy request succeeds.
func TestFaultHammer(t *testing.T) {
	p := loadFile(t, "faults", Config{Instances: 2, CallTimeout: 100 * time.Millisecond})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var unexpected []string
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 40; i++ {
				s, err := p.NewHTTPStream(nil)
				if err != nil {
					continue // every instance is being replaced: ErrNoInstance
				}
				fault := "none"
				if g == 0 && i%10 == 0 {
					fault = "trap"
				}
				r := s.RequestHeaders(faultHeaders(fault), true)
				if fault == "none" && r.Failure == nil && r.Action != abi.ActionContinue {
					mu.Lock()
					unexpected = append(unexpected, "unexpected action")
					mu.Unlock()
				}
				s.Close()
			}
		}()
	}
	wg.Wait()
	if len(unexpected) > 0 {
		t.Fatal(unexpected)
	}
	waitFor(t, "a healthy pool", func() bool { return p.Stats().Healthy == 2 })
}

var errTestFault = errors.New("test fault")

// A looping call must not wedge anything but its own instance (issue:
// the pool's stats held the pool lock while waiting on the instance lock
// the loop held, and the watchdog needed the pool lock to stop the loop).
// While one call loops: Stats answers at once, new streams open on the
// healthy instance and are never refused, and the watchdog stops the loop
// within its deadline.
func TestLoopDoesNotWedgePool(t *testing.T) {
	const timeout = 300 * time.Millisecond
	p := loadFile(t, "faults", Config{Instances: 2, CallTimeout: timeout})
	bad, err := p.NewHTTPStream(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	looped := make(chan Result, 1)
	start := time.Now()
	go func() { looped <- bad.RequestHeaders(faultHeaders("loop"), true) }()
	waitFor(t, "the loop to start", func() bool { return bad.in.callStart.Load() != 0 })

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var slowest atomic.Int64
	wg.Add(1)
	go func() { // a health checker polling as fast as it can
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			t0 := time.Now()
			p.Stats()
			if d := int64(time.Since(t0)); d > slowest.Load() {
				slowest.Store(d)
			}
		}
	}()
	var refused atomic.Int64
	for range 20 {
		s, err := p.NewHTTPStream(nil)
		if err != nil {
			refused.Add(1)
			continue
		}
		if s.in == bad.in {
			t.Error("a new stream was placed on the instance running a loop")
		}
		if r := s.RequestHeaders(faultHeaders("none"), true); r.Failure != nil {
			t.Errorf("good stream failed: %v", r.Failure)
		}
		s.Close()
	}
	r := <-looped
	close(stop)
	wg.Wait()
	if r.Failure == nil || !errors.Is(r.Failure, ErrCallTimeout) && !strings.Contains(r.Failure.Error(), ErrCallTimeout.Error()) {
		t.Fatalf("looping call: %+v", r)
	}
	// Generous bounds: a wedge shows as never, not as slow.
	if took := time.Since(start); took > timeout+5*time.Second {
		t.Errorf("the watchdog stopped the loop after %v (deadline %v)", took, timeout)
	}
	if d := time.Duration(slowest.Load()); d > time.Second {
		t.Errorf("Stats waited %v while a call looped", d)
	}
	if n := refused.Load(); n > 0 {
		t.Errorf("%d streams refused while an instance was healthy", n)
	}
	waitFor(t, "a replacement", func() bool { s := p.Stats(); return s.Replaced >= 1 && s.Healthy == 2 })
}

// With deadlines off nothing can stop a looping call: Stats reports the
// instance stalled once it has run past StallGrace, so liveness can fail,
// and Close abandons it instead of waiting forever.
func TestStalledInstance(t *testing.T) {
	p := loadFile(t, "faults", Config{Instances: 1, CallTimeout: 5 * time.Second})
	s, err := p.NewHTTPStream(nil)
	if err != nil {
		t.Fatal(err)
	}
	in := s.in
	if p.pool.stalled(in, time.Now().UnixNano()) {
		t.Fatal("idle instance reported stalled")
	}
	// Pretend a call began long ago rather than wait StallGrace.
	in.callStart.Store(time.Now().Add(-StallGrace - 6*time.Second).UnixNano())
	if got := p.Stats().Stalled; got != 1 {
		t.Errorf("Stalled = %d, want 1", got)
	}
	in.callStart.Store(0)
	s.Close()
}

// A stream is never refused while a healthy instance exists: one that
// picks an instance that failed (or is busy failing) moves on to a healthy
// one instead of giving up (issue: "no healthy plugin instance" failed
// good streams while the other instance served).
func TestNewStreamAvoidsFailedInstance(t *testing.T) {
	p := loadFile(t, "faults", Config{Instances: 2})
	for round := range 20 {
		bad := p.pool.slots[round%2].Load()
		if bad == nil {
			waitFor(t, "a replacement", func() bool { return p.Stats().Healthy == 2 })
			bad = p.pool.slots[round%2].Load()
		}
		bad.mu.Lock()
		bad.fail(errTestFault)
		// While the failed instance is still in its slot and locked (its
		// replacement waits for the lock), new streams go elsewhere.
		for range 5 {
			s, err := p.NewHTTPStream(nil)
			if err != nil {
				bad.mu.Unlock()
				t.Fatalf("round %d: %v with a healthy instance in the pool", round, err)
			}
			if s.in == bad {
				t.Errorf("round %d: stream placed on the failed instance", round)
			}
			go s.Close()
		}
		bad.mu.Unlock()
		waitFor(t, "a replacement", func() bool { return p.Stats().Healthy == 2 })
	}
}

// Past ShedQueueDelay a new stream is refused at once (ErrOverloaded)
// instead of queueing behind busy instances; it waits for an instance
// whose queue is short, and a queue nobody has waited in lately counts as
// none.
func TestShedQueueDelay(t *testing.T) {
	p := loadFile(t, "faults", Config{Instances: 2, ShedQueueDelay: 50 * time.Millisecond})
	var ins []*instance
	queued := func(in *instance, d time.Duration, ago time.Duration) {
		in.queueDelay.Store(int64(d))
		in.waitedAt.Store(time.Now().Add(-ago).UnixNano())
	}
	for i := range p.pool.slots {
		in := p.pool.slots[i].Load()
		in.mu.Lock() // busy, as if in a long callback
		queued(in, 80*time.Millisecond, 0)
		ins = append(ins, in)
	}
	if _, err := p.NewHTTPStream(nil); !errors.Is(err, ErrOverloaded) {
		t.Fatalf("every instance busy with a long queue: %v, want ErrOverloaded", err)
	}
	for _, tc := range []struct {
		name       string
		delay, ago time.Duration
	}{
		{"a short queue", 10 * time.Millisecond, 0},
		{"a long queue nobody waited in lately", 80 * time.Millisecond, 2 * queueWindow},
	} {
		queued(ins[1], tc.delay, tc.ago)
		opened := make(chan *HTTPStream)
		go func() {
			s, err := p.NewHTTPStream(nil)
			if err != nil {
				t.Errorf("%s: %v", tc.name, err)
			}
			opened <- s
		}()
		time.Sleep(20 * time.Millisecond) // let it reach the lock: a refusal would be at once
		ins[1].mu.Unlock()
		if s := <-opened; s != nil {
			if s.in != ins[1] {
				t.Errorf("%s: the stream did not wait for the instance with the shorter queue", tc.name)
			}
			s.Close()
		}
		ins[1].mu.Lock()
	}
	for _, in := range ins {
		in.mu.Unlock()
	}
	// Uncontended locks decay the average.
	queued(ins[0], 80*time.Millisecond, 0)
	for range 100 {
		s, err := p.NewHTTPStream(nil)
		if err != nil {
			t.Fatal(err)
		}
		s.RequestHeaders(faultHeaders("none"), true)
		s.Close()
	}
	if d := time.Duration(ins[0].queueDelay.Load()); d > time.Millisecond {
		t.Errorf("queue delay %v after uncontended streams", d)
	}
}

// Code compiled with termination checks and code compiled without never
// share a cache directory, nor do different memory limits; the same
// options always find their directory again.
func TestCacheSubdir(t *testing.T) {
	a := cacheSubdir(Config{CallTimeout: time.Second, MemoryLimitPages: 10})
	if a != cacheSubdir(Config{CallTimeout: 2 * time.Second, MemoryLimitPages: 10}) {
		t.Error("the same compile options gave different directories")
	}
	for _, other := range []Config{{CallTimeout: -1, MemoryLimitPages: 10}, {CallTimeout: time.Second, MemoryLimitPages: 11}} {
		if cacheSubdir(other) == a {
			t.Errorf("%+v shares a cache directory with deadlines on and 10 pages", other)
		}
	}
}

// Each instance's memory is a mapping of its own, reserved up to the
// memory limit: a memory bomb grows it without copying, and a failed or
// closed instance gives all of it back at once.
func TestLinearMemoryMapped(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("instance memory is mapped on Linux only")
	}
	base := MappedMemory()
	const pages = 512
	p := loadFile(t, "faults", Config{Instances: 2, MemoryLimitPages: pages})
	per := int64(pages) << 16
	if got := MappedMemory() - base; got != 2*per {
		t.Fatalf("mapped %d bytes for 2 instances, want %d", got, 2*per)
	}
	for range 3 {
		s, err := p.NewHTTPStream(nil)
		if err != nil {
			t.Fatal(err)
		}
		if r := s.RequestHeaders(faultHeaders("oom"), true); r.Failure == nil {
			t.Fatalf("memory bomb: %+v", r)
		}
		s.Close()
		waitFor(t, "a replacement", func() bool { st := p.Stats(); return st.Healthy == 2 })
		waitFor(t, "the failed instance's memory", func() bool { return MappedMemory()-base == 2*per })
	}
	p.Close(context.Background())
	if got := MappedMemory() - base; got != 0 {
		t.Errorf("%d bytes still mapped after Close", got)
	}
}

// Nothing enters an instance once it is stopped. A timer tick or posted
// task may be waiting for the instance's lock while the instance shuts
// down; when it gets the lock it must find the instance failed, because
// with the loop budget compiled code never checks whether its module is
// closed, and a closed module's memory is unmapped.
func TestNoCallAfterStop(t *testing.T) {
	for _, timeout := range []time.Duration{0, time.Second} {
		t.Run(fmt.Sprintf("timeout=%v", timeout), func(t *testing.T) {
			p := loadFile(t, "faults", Config{Instances: 1, CallTimeout: timeout})
			in := p.pool.slots[0].Load()
			in.mu.Lock()
			in.stop()
			in.mu.Unlock()
			calls := p.pool.guestCalls.Load()
			ran := false
			// What the executor does with a tick that was waiting.
			in.withLock(func() { ran = true })
			in.mu.Lock()
			_, err := in.callCtx(in.fns.onConfigure, in.rootID, 0)
			in.mu.Unlock()
			if ran || !errors.Is(err, errClosed) || p.pool.guestCalls.Load() != calls {
				t.Errorf("after stop: task ran %v, call error %v, guest calls %d → %d; want no task, errClosed, no call",
					ran, err, calls, p.pool.guestCalls.Load())
			}
		})
	}
}

// Closing a plugin whose instances tick every millisecond: a tick that
// waited for an instance's lock while it shut down must not run in the
// closed module. Before stop poisoned the instance this crashed the
// process in every run ("unexpected fault address": the guest reading its
// unmapped memory), since with the loop budget compiled code does not
// check whether its module is closed.
func TestCloseWhileTicking(t *testing.T) {
	wasm := mustRead(t, pluginPath(t, "testbed"))
	dir := t.TempDir()
	for range 10 {
		p, err := Load(context.Background(), wasm, Config{
			Instances: 4, CallTimeout: time.Second, CompilationCacheDir: dir,
			Logger: quietLogger(), Shared: NewSharedState(), PluginConfig: []byte("tick_ms: 1"),
		})
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond) // let the ticks run
		if err := p.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
}
