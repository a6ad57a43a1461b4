package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	netprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/network_ext_proc/v3"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/wasm-callout/wasm-callout/host"
)

// chaosPlugin loads host/testdata/faults.wasm, which traps, loops, eats
// memory or exits on demand in HTTP and TCP callbacks.
func chaosPlugin(t testing.TB, wasm []byte) (*host.Plugin, error) {
	return host.Load(context.Background(), wasm, host.Config{
		Name: "faults", Instances: 2, CallTimeout: chaosCallTimeout, MemoryLimitPages: 256,
		FailStatus: 500, Logger: testLogger(),
	})
}

const chaosCallTimeout = 200 * time.Millisecond

// TestChaos runs, at once: good HTTP and TCP traffic, gRPC health and
// readiness polling, reloads, and every fault kind (trap, loop, memory
// bomb, proc_exit) in HTTP and TCP callbacks. The wedge this guards
// against showed only when health was polled during a loop. It checks that
// good streams fail only as bystanders of a fault (the failure policy,
// never a refusal, an error or a time-out), that every fault stream gets
// the failure policy in time, that health answers within a second
// throughout, and that goroutines, instances and memory come back.
func TestChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("chaos takes seconds")
	}
	wasm := mustRead(t, filepath.Join("..", "host", "testdata", "faults.wasm"))
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	heapBefore := ms.HeapInuse
	instancesBefore := host.LiveInstances()
	goroutinesBefore := runtime.NumGoroutine()

	p, err := chaosPlugin(t, wasm)
	if err != nil {
		t.Fatal(err)
	}
	h := start(t, Options{Plugin: p, DisableModeOverride: true, HealthInterval: 20 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()

	var (
		wg                         sync.WaitGroup
		errMu                      sync.Mutex
		errs                       []string
		good, goodFailed, faultsN  atomic.Int64
		slowestFault, slowestCheck atomic.Int64
	)
	report := func(format string, args ...any) {
		errMu.Lock()
		defer errMu.Unlock()
		if len(errs) < 20 {
			errs = append(errs, fmt.Sprintf(format, args...))
		}
	}
	longest := func(a *atomic.Int64, d time.Duration) {
		for {
			old := a.Load()
			if int64(d) <= old || a.CompareAndSwap(old, int64(d)) {
				return
			}
		}
	}
	loop := func(f func()) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				f()
			}
		}()
	}

	// Good traffic: HTTP request and response headers, TCP frames.
	const goodWorkers = 3
	for range goodWorkers {
		loop(func() {
			out, failed, err := chaosHTTP(h, "")
			switch {
			case err != nil:
				report("good HTTP stream: %v", err)
			case failed:
				goodFailed.Add(1)
			case len(out) != 2 || len(out[1].GetResponseHeaders().GetResponse().GetHeaderMutation().GetSetHeaders()) != 1:
				report("good HTTP stream answered %v", out)
			}
			good.Add(1)
		})
		loop(func() {
			closed, err := chaosTCP(h, "hello")
			switch {
			case err != nil:
				report("good TCP stream: %v", err)
			case closed:
				goodFailed.Add(1)
			}
			good.Add(1)
		})
	}
	// Faults, one at a time, every kind in both services.
	loop(func() {
		for _, kind := range []string{"trap", "loop", "oom", "exit"} {
			if ctx.Err() != nil {
				return
			}
			t0 := time.Now()
			_, failed, err := chaosHTTP(h, kind)
			if err != nil || !failed {
				report("HTTP fault %s: failed=%v err=%v, want the failure policy", kind, failed, err)
			}
			longest(&slowestFault, time.Since(t0))
			t0 = time.Now()
			closed, err := chaosTCP(h, kind)
			if err != nil || !closed {
				report("TCP fault %s: closed=%v err=%v, want the connection closed", kind, closed, err)
			}
			longest(&slowestFault, time.Since(t0))
			faultsN.Add(2)
			time.Sleep(20 * time.Millisecond)
		}
	})
	// Health: the gRPC service, readiness and liveness.
	health := healthpb.NewHealthClient(h.conn)
	loop(func() {
		t0 := time.Now()
		cctx, ccancel := context.WithTimeout(context.Background(), time.Second)
		_, err := health.Check(cctx, &healthpb.HealthCheckRequest{Service: ServiceName})
		ccancel()
		h.srv.Ready()
		if !h.srv.Live() {
			report("Live() false: nothing here can stall")
		}
		h.srv.Plugin().Stats()
		if err != nil {
			report("health check: %v", err)
		}
		longest(&slowestCheck, time.Since(t0))
		time.Sleep(5 * time.Millisecond)
	})
	// Reloads of the same module.
	loop(func() {
		if _, err := h.srv.Reload(ctx, func(context.Context) (*host.Plugin, error) { return chaosPlugin(t, wasm) }); err != nil && ctx.Err() == nil {
			report("reload: %v", err)
		}
		time.Sleep(300 * time.Millisecond)
	})

	wg.Wait()
	for _, e := range errs {
		t.Error(e)
	}
	t.Logf("%d good streams (%d got the failure policy as bystanders), %d faults; slowest fault answer %v, slowest health check %v",
		good.Load(), goodFailed.Load(), faultsN.Load(), time.Duration(slowestFault.Load()), time.Duration(slowestCheck.Load()))
	if good.Load() == 0 || faultsN.Load() < 8 {
		t.Fatalf("too little happened: %d good streams, %d faults", good.Load(), faultsN.Load())
	}
	// A good stream fails only when it shared an instance with a fault:
	// at most the good streams in flight at each fault.
	if max := faultsN.Load() * 2 * goodWorkers; goodFailed.Load() > max {
		t.Errorf("%d good streams failed, more than the %d that can have shared an instance with a fault", goodFailed.Load(), max)
	}
	if d := time.Duration(slowestFault.Load()); d > chaosCallTimeout+2*time.Second {
		t.Errorf("a fault was answered after %v (deadline %v)", d, chaosCallTimeout)
	}
	if d := time.Duration(slowestCheck.Load()); d > time.Second {
		t.Errorf("a health check took %v", d)
	}

	// Everything comes back: streams, instances, goroutines, memory.
	waitIdle(t, h)
	h.stop()
	if err := h.srv.Plugin().Close(context.Background()); err != nil {
		t.Error(err)
	}
	waitFor(t, func() bool { return host.LiveInstances() == instancesBefore })
	waitFor(t, func() bool { return runtime.NumGoroutine() <= goroutinesBefore+2 })
	runtime.GC()
	runtime.ReadMemStats(&ms)
	if grown := int64(ms.HeapInuse) - int64(heapBefore); grown > 32<<20 {
		t.Errorf("heap grew by %d MiB", grown>>20)
	}
}

// chaosHTTP plays request and response headers, with x-fault set to fault
// unless it is empty. failed reports the failure policy's answer (500,
// wasm_fail_stream); err anything else that went wrong, a time-out
// included.
func chaosHTTP(h *harness, fault string) (out []*extprocv3.ProcessingResponse, failed bool, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	kv := []string{":path", "/", ":method", "GET"}
	if fault != "" {
		kv = append(kv, "x-fault", fault)
	}
	out, err = exchange(ctx, h, []*extprocv3.ProcessingRequest{reqHeaders(true, kv...), respHeadersMsg()})
	if !errors.Is(err, io.EOF) {
		return out, false, fmt.Errorf("ended with %v after %d answers", err, len(out))
	}
	if n := len(out); n > 0 {
		if ir := out[n-1].GetImmediateResponse(); ir != nil {
			if ir.GetStatus().GetCode() != 500 || ir.GetDetails() != "wasm_fail_stream" {
				return out, false, fmt.Errorf("immediate response %v", ir)
			}
			return out, true, nil
		}
	}
	return out, false, nil
}

// chaosTCP sends one frame and reports whether the connection was closed
// (the failure policy, fail-closed) or its data answered.
func chaosTCP(h *harness, data string) (closed bool, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := netprocv3.NewNetworkExternalProcessorClient(h.conn).Process(ctx)
	if err != nil {
		return false, err
	}
	if err := st.Send(&netprocv3.ProcessingRequest{ReadData: &netprocv3.Data{Data: []byte(data), EndOfStream: true}}); err != nil {
		return false, err
	}
	st.CloseSend()
	answered := false
	for {
		r, err := st.Recv()
		if errors.Is(err, io.EOF) {
			if !answered {
				return false, errors.New("no answer")
			}
			return closed, nil
		}
		if err != nil {
			return false, fmt.Errorf("ended with %v", err)
		}
		answered = true
		if r.GetConnectionStatus() == netprocv3.ProcessingResponse_CLOSE {
			closed = true
		}
	}
}
