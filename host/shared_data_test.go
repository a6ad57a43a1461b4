package host

import (
	"testing"

	"github.com/wasm-callout/wasm-callout/abi"
)

func TestSharedData(t *testing.T) {
	shared := NewSharedState()
	get := newHostcall(t, "proxy_get_shared_data", Config{VMID: "a", Shared: shared})
	set := newHostcall(t, "proxy_set_shared_data", Config{VMID: "a", Shared: shared})
	otherVM := newHostcall(t, "proxy_get_shared_data", Config{VMID: "b", Shared: shared})

	put := func(key, val string, cas uint32) abi.Status {
		k, kl := set.put(argA, []byte(key))
		v, vl := set.put(argB, []byte(val))
		return set.run(nil, phaseNone, k, kl, v, vl, uint64(cas))
	}
	read := func(h *hostcall, key string) (abi.Status, string, uint32) {
		k, kl := h.put(argA, []byte(key))
		st := h.run(nil, phaseNone, k, kl, retP, retL, retX)
		return st, string(h.out(retP, retL)), h.u32(retX)
	}

	if st, _, _ := read(get, "k"); st != abi.StatusNotFound {
		t.Fatalf("absent key: %v", st)
	}
	if st := put("k", "v1", 12345); st != abi.StatusOK {
		t.Fatalf("new keys ignore cas: %v", st)
	}
	st, v, cas := read(get, "k")
	if st != abi.StatusOK || v != "v1" || cas == 0 {
		t.Fatalf("get = %v %q %d", st, v, cas)
	}
	if st := put("k", "v2", cas+1); st != abi.StatusCASMismatch {
		t.Errorf("stale cas: %v", st)
	}
	if st := put("k", "v2", cas); st != abi.StatusOK {
		t.Errorf("matching cas: %v", st)
	}
	if st := put("k", "v3", 0); st != abi.StatusOK {
		t.Errorf("cas 0 always sets: %v", st)
	}
	if _, v, cas2 := read(get, "k"); v != "v3" || cas2 == cas {
		t.Errorf("after sets: %q cas %d (was %d)", v, cas2, cas)
	}
	if st, _, _ := read(otherVM, "k"); st != abi.StatusNotFound {
		t.Errorf("another vm_id sees the key: %v", st)
	}
	if st := set.run(nil, phaseNone, badPtr, 3, argB, 1, 0); st != abi.StatusInvalidMemoryAccess {
		t.Errorf("bad key pointer: %v", st)
	}
	k, kl := get.put(argA, []byte("k"))
	if st := get.run(nil, phaseNone, k, kl, retP, retL, badPtr); st != abi.StatusInvalidMemoryAccess {
		t.Errorf("bad cas pointer: %v", st)
	}
}

func TestSharedQueues(t *testing.T) {
	shared := NewSharedState()
	cfg := Config{VMID: "vm", Shared: shared}
	reg := newHostcall(t, "proxy_register_shared_queue", cfg)
	res := newHostcall(t, "proxy_resolve_shared_queue", cfg)
	enq := newHostcall(t, "proxy_enqueue_shared_queue", cfg)
	deq := newHostcall(t, "proxy_dequeue_shared_queue", cfg)

	n, nl := reg.put(argA, []byte("q"))
	if st := reg.run(nil, phaseNone, n, nl, retP); st != abi.StatusOK {
		t.Fatal(st)
	}
	id := reg.u32(retP)
	if reg.run(nil, phaseNone, n, nl, retP) != abi.StatusOK || reg.u32(retP) != id {
		t.Errorf("re-registering gave a new id")
	}

	resolve := func(vm, name string) (abi.Status, uint32) {
		v, vl := res.put(argA, []byte(vm))
		q, ql := res.put(argB, []byte(name))
		st := res.run(nil, phaseNone, v, vl, q, ql, retP)
		return st, res.u32(retP)
	}
	for _, tc := range []struct {
		vm, name string
		want     abi.Status
	}{{"", "q", abi.StatusOK}, {"vm", "q", abi.StatusOK}, {"other", "q", abi.StatusNotFound}, {"", "nope", abi.StatusNotFound}} {
		if st, got := resolve(tc.vm, tc.name); st != tc.want || (st == abi.StatusOK && got != id) {
			t.Errorf("resolve(%q, %q) = %v %d", tc.vm, tc.name, st, got)
		}
	}

	dequeue := func() (abi.Status, string) {
		st := deq.run(nil, phaseNone, uint64(id), retP, retL)
		return st, string(deq.out(retP, retL))
	}
	if st, _ := dequeue(); st != abi.StatusEmpty {
		t.Errorf("empty queue: %v", st)
	}
	for _, item := range []string{"one", "two"} {
		p, l := enq.put(argA, []byte(item))
		if st := enq.run(nil, phaseNone, uint64(id), p, l); st != abi.StatusOK {
			t.Fatal(st)
		}
	}
	for _, want := range []string{"one", "two"} {
		if st, got := dequeue(); st != abi.StatusOK || got != want {
			t.Errorf("dequeue = %v %q, want %q", st, got, want)
		}
	}
	if st := enq.run(nil, phaseNone, 9999, argA, 1); st != abi.StatusNotFound {
		t.Errorf("unknown queue: %v", st)
	}
	if st := deq.run(nil, phaseNone, 9999, retP, retL); st != abi.StatusNotFound {
		t.Errorf("unknown queue: %v", st)
	}
	if st := enq.run(nil, phaseNone, uint64(id), badPtr, 2); st != abi.StatusInvalidMemoryAccess {
		t.Errorf("bad value pointer: %v", st)
	}
}

// A stopped instance gives up its queues: it is no longer notified or
// referenced, and the items wait for the next registrant.
func TestQueueOwnerStops(t *testing.T) {
	shared := NewSharedState()
	reg := newHostcall(t, "proxy_register_shared_queue", Config{VMID: "vm", Shared: shared})
	n, nl := reg.put(argA, []byte("q"))
	if st := reg.run(nil, phaseNone, n, nl, retP); st != abi.StatusOK {
		t.Fatal(st)
	}
	id := reg.u32(retP)
	reg.in.stop()
	shared.mu.Lock()
	owner := shared.queues[id].owner
	shared.mu.Unlock()
	if owner != nil {
		t.Fatal("the stopped instance still owns the queue")
	}
	enq := newHostcall(t, "proxy_enqueue_shared_queue", Config{VMID: "vm", Shared: shared})
	p, l := enq.put(argA, []byte("kept"))
	if st := enq.run(nil, phaseNone, uint64(id), p, l); st != abi.StatusOK {
		t.Fatalf("enqueue without an owner: %v", st)
	}
	if got := len(shared.queues[id].items); got != 1 {
		t.Fatalf("%d items kept", got)
	}
}
