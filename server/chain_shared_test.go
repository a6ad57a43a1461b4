package server

import (
	"context"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"

	"github.com/wasm-callout/wasm-callout/host"
	"github.com/wasm-callout/wasm-callout/server/envoytest"
)

// ownedTagged loads a testbed plugin like tagged, owned by the caller, with
// the given vm_id and shared store.
func ownedTagged(t testing.TB, tag, vmID string, sh *host.SharedState) *host.Plugin {
	t.Helper()
	p := loadOwned(t, "testbed", host.Config{Name: tag, VMID: vmID, Shared: sh,
		PluginConfig: []byte(fmt.Sprintf("tag: %s\naction_header: x-testbed-%s", tag, tag))})
	t.Cleanup(func() { p.Close(context.Background()) })
	return p
}

// TestChainSharedDataByVMID: plugins with the same vm_id share shared data,
// plugins with different ones do not, as in Envoy.
func TestChainSharedDataByVMID(t *testing.T) {
	for _, tt := range []struct {
		name       string
		vmX, vmY   string
		wantCounts []string
	}{
		{"same_vm_id", "shared", "shared", []string{"1", "2"}},
		{"different_vm_ids", "vm-x", "vm-y", []string{"1", "1"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			sh := host.NewSharedState()
			x, y := ownedTagged(t, "x", tt.vmX, sh), ownedTagged(t, "y", tt.vmY, sh)
			h := chainOf(t, x, y)
			res := h.do(t, envoytest.Config{}, withHeader(withHeader(get(""),
				"x-testbed-x", "shared-data"), "x-testbed-y", "shared-data"))
			clean(t, res)
			// y's response callback runs first and adds its value first.
			got := res.Response.Headers.Values("x-shared-counter")
			slices.Sort(got)
			if !slices.Equal(got, tt.wantCounts) {
				t.Errorf("x-shared-counter values %q, want %q", got, tt.wantCounts)
			}
		})
	}
}

// TestChainSharedQueue runs the SDK-style queue sender and receiver in one
// server: the sender resolves the receiver's queue by its vm_id and
// enqueues every request's path; the receiver counts them in its shared
// data, which its own HTTP contexts report.
func TestChainSharedQueue(t *testing.T) {
	sh := host.NewSharedState()
	load := func(plugin, name, vmID, config string) *host.Plugin {
		p := loadOwned(t, plugin, host.Config{Name: name, VMID: vmID, Shared: sh, PluginConfig: []byte(config)})
		t.Cleanup(func() { p.Close(context.Background()) })
		return p
	}
	receiver := load("queue-receiver", "receiver", "receiver-vm", "queue: paths")
	sender := load("queue-sender", "sender", "sender-vm", "vm_id: receiver-vm\nqueue: paths")
	lost := load("queue-sender", "lost", "sender-vm", "vm_id: nobody\nqueue: paths")
	h := start(t, Options{Plugins: []*host.Plugin{receiver, sender, lost}, Chains: Chains{Chains: map[string][]string{
		DefaultChain: {"sender"}, "read": {"receiver"}, "lost": {"lost"},
	}}})
	chain := func(name string) envoytest.Config {
		return envoytest.Config{InitialMetadata: map[string]string{ChainMetadataKey: name}}
	}

	const sent = 3
	for i := range sent {
		req := get("")
		req.Headers[1].Value = fmt.Sprintf("/item/%d", i)
		res := h.do(t, envoytest.Config{}, req)
		clean(t, res)
		header(t, res.Response.Headers, "x-queue-sent", "ok")
	}
	res := h.do(t, chain("lost"), get(""))
	clean(t, res)
	header(t, res.Response.Headers, "x-queue-sent", "not-found")

	// The receiver's proxy_on_queue_ready runs on its own instance, after
	// the sender's call returned: poll until it has seen every item.
	deadline := time.Now().Add(20 * time.Second)
	for {
		res := h.do(t, chain("read"), get(""))
		clean(t, res)
		if got, _ := res.Response.Headers.Get("x-queue-received"); got == fmt.Sprint(sent) {
			header(t, res.Response.Headers, "x-queue-last", fmt.Sprintf("/item/%d", sent-1))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the receiver never counted %d items: %s", sent, res.Response.Headers)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestChainSwapUnderLoad swaps the middle plugin of a chain of three while
// requests run: no request fails, every request runs all three plugins, and
// only the swapped plugin gets new generations.
func TestChainSwapUnderLoad(t *testing.T) {
	sh := host.NewSharedState()
	a, b, c := ownedTagged(t, "a", "a", sh), ownedTagged(t, "b", "b", sh), ownedTagged(t, "c", "c", sh)
	h := chainOf(t, a, b, c)

	// The default message timeout (200 ms) is about the machine, not the
	// swap: loading the new b competes for the CPU with the requests.
	var stop atomic.Bool
	var done, failed atomic.Int64
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				res, err := envoytest.Do(ctx, h.conn, envoytest.Config{NoTranscript: true, MessageTimeout: 10 * time.Second}, get(""))
				cancel()
				if err != nil || res.LocalReply != nil || res.Stats.StreamsFailed > 0 {
					failed.Add(1)
					t.Errorf("request failed: err %v, local reply %+v, stats %+v", err, res.LocalReply, res.Stats)
					continue
				}
				if got, _ := res.Request.Headers.Get("x-chain"); got != "a,b,c" {
					failed.Add(1)
					t.Errorf("x-chain %q, want a,b,c", got)
				}
				done.Add(1)
			}
		}()
	}
	const swaps = 3
	for i := range swaps {
		for n := done.Load(); done.Load() < n+5 && failed.Load() == 0; {
			time.Sleep(time.Millisecond) // let requests run on this generation
		}
		nb := loadOwned(t, "testbed", host.Config{Name: "b", VMID: "b", Shared: sh,
			PluginConfig: []byte(fmt.Sprintf("tag: b\naction_header: x-testbed-b\n# generation %d", i+2))})
		if _, err := h.srv.SwapPlugin("b", nb); err != nil {
			t.Fatal(err)
		}
	}
	for n := done.Load(); done.Load() < n+5 && failed.Load() == 0; {
		time.Sleep(time.Millisecond)
	}
	stop.Store(true)
	wg.Wait()
	gens := map[string]uint64{}
	for _, g := range h.srv.Generations() {
		gens[g.Name] = g.ID
	}
	if gens["a"] != 1 || gens["b"] != 1+swaps || gens["c"] != 1 {
		t.Errorf("generations %v, want a and c at 1, b at %d", gens, 1+swaps)
	}
	if st := h.srv.Stats(); st.Swaps != swaps || st.PluginFailures != 0 || st.DrainExpired != 0 {
		t.Errorf("stats %+v", st)
	}
	t.Logf("%d requests", done.Load())
	// The server owns the plugins it replaced; the b current now is the
	// caller's, closed once the server has stopped.
	h.stop()
	for _, p := range h.srv.Plugins() {
		if p.Config().Name == "b" {
			p.Close(context.Background())
		}
	}
}

// TestApplyKeepsRunningStreams: a configuration change applies to new
// streams; a stream already running finishes on the chain and plugins it
// started with, even a plugin the change removed, which closes after it.
func TestApplyKeepsRunningStreams(t *testing.T) {
	sh := host.NewSharedState()
	a := ownedTagged(t, "a", "a", sh)
	b := loadOwned(t, "testbed", host.Config{Name: "b", VMID: "b", Shared: sh,
		PluginConfig: []byte("tag: b\naction_header: x-testbed-b")}) // the server closes it once removed
	h := chainOf(t, a, b)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st, err := extprocv3.NewExternalProcessorClient(h.conn).Process(ctx)
	if err != nil {
		t.Fatal(err)
	}
	send := func(m *extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse {
		t.Helper()
		if err := st.Send(m); err != nil {
			t.Fatal(err)
		}
		r, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{
		Headers: hdrs(":method", "GET", ":path", "/", ":authority", "x", ":scheme", "http"), EndOfStream: true}}})

	if err := h.srv.Apply(Update{Remove: []string{"b"}, Chains: Chains{Chains: map[string][]string{DefaultChain: {"a"}}}}); err != nil {
		t.Fatal(err)
	}
	res := h.do(t, envoytest.Config{}, get(""))
	clean(t, res)
	header(t, res.Request.Headers, "x-chain", "a")

	// The running stream's response still passes b, then a.
	r := send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extprocv3.HttpHeaders{
		Headers: hdrs(":status", "200"), EndOfStream: true}}})
	var chain string
	for _, o := range r.GetResponseHeaders().GetResponse().GetHeaderMutation().GetSetHeaders() {
		if o.GetHeader().GetKey() == "x-chain-resp" {
			chain = string(o.GetHeader().GetRawValue())
		}
	}
	if chain != "b,a" {
		t.Errorf("running stream's x-chain-resp %q, want b,a\n%v", chain, r)
	}
	st.CloseSend()
	if _, err := st.Recv(); err != io.EOF {
		t.Fatalf("stream end: %v", err)
	}
	// b closes once its last stream is gone.
	deadline := time.Now().Add(10 * time.Second)
	for h.srv.Stats().DrainingGenerations != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the removed plugin was not closed: %+v", h.srv.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if got := len(h.srv.Generations()); got != 1 {
		t.Errorf("%d plugins served, want 1", got)
	}
	// Invalid changes change nothing.
	for _, u := range []Update{
		{Chains: Chains{Chains: map[string][]string{DefaultChain: {"b"}}}},
		{Chains: Chains{Chains: map[string][]string{"other": {"a"}}}},
		{Remove: []string{"zz"}, Chains: Chains{Chains: map[string][]string{DefaultChain: {"a"}}}},
	} {
		if err := h.srv.Apply(u); err == nil {
			t.Errorf("Apply(%+v) succeeded", u)
		}
	}
}

// TestChainNoInstance: a plugin of the chain that cannot open a context
// (here: closed under the server, as a pool with no healthy instance
// refuses) gets its own failure policy; the others are unaffected.
func TestChainNoInstance(t *testing.T) {
	for _, policy := range []host.FailurePolicy{host.FailOpen, host.FailClosed} {
		t.Run(policy.String(), func(t *testing.T) {
			sh := host.NewSharedState()
			a := ownedTagged(t, "a", "a", sh)
			gone := loadOwned(t, "testbed", host.Config{Name: "gone", VMID: "gone", Shared: sh, FailurePolicy: policy,
				PluginConfig: []byte("tag: gone")})
			gone.Close(context.Background())
			h := chainOf(t, a, gone)
			res := h.do(t, envoytest.Config{}, get(""))
			clean(t, res)
			if policy == host.FailOpen {
				if res.LocalReply != nil {
					t.Fatalf("local reply %+v, want none", res.LocalReply)
				}
				header(t, res.Request.Headers, "x-chain", "a")
			} else if lr := res.LocalReply; lr == nil || lr.Status != 500 || lr.Details != detailsFailStream {
				t.Fatalf("local reply %+v, want 500 %s", lr, detailsFailStream)
			}
			if n := h.srv.Stats().PluginFailures; n != 1 {
				t.Errorf("%d plugin failures counted, want 1", n)
			}
		})
	}
}
