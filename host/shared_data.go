package host

import (
	"context"
	"sync"

	"github.com/tetratelabs/wazero/api"

	"github.com/wasm-callout/wasm-callout/abi"
)

// Limits on host-side state a plugin can create. Guest memory is capped by
// Config.MemoryLimitPages; these cap what lives outside it.
const (
	MaxSharedDataBytes = 256 << 20 // per vm_id, keys and values
	MaxQueueItems      = 65536     // per queue
)

// SharedState holds shared data and shared queues. Like Envoy's, it is
// process-wide and keyed by vm_id, so every instance of a plugin, and a
// reloaded plugin with the same vm_id, sees the same data. Safe for
// concurrent use.
type SharedState struct {
	mu     sync.Mutex
	data   map[string]*sharedSpace
	cas    uint32
	queues map[uint32]*sharedQueue
	byName map[queueKey]uint32
	nextQ  uint32
}

type sharedSpace struct {
	values map[string]sharedValue
	bytes  int
}

type sharedValue struct {
	data []byte
	cas  uint32
}

type queueKey struct{ vmID, name string }

type sharedQueue struct {
	items [][]byte
	owner *instance
	root  uint32
}

var processShared = NewSharedState()

// NewSharedState returns an empty store, for tests or for isolating plugins
// that would otherwise share a vm_id.
func NewSharedState() *SharedState {
	return &SharedState{data: map[string]*sharedSpace{}, queues: map[uint32]*sharedQueue{}, byName: map[queueKey]uint32{}}
}

// disown forgets in as the owner of its queues, so that a stopped instance
// is neither notified nor kept reachable. The items stay for the next
// registrant (a replacement instance, or the next plugin generation).
func (sh *SharedState) disown(in *instance) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	for _, q := range sh.queues {
		if q.owner == in {
			q.owner = nil
		}
	}
}

// proxy_get_shared_data(key_ptr, key_size, ret_value_ptr_ptr,
// ret_value_size_ptr, ret_cas_ptr) returns the value of key in the plugin's
// vm_id space, in memory from the plugin's allocator, and writes its CAS
// token (u32). Statuses: OK; NOT_FOUND for an absent key;
// INVALID_MEMORY_ACCESS.
func getSharedData(ctx context.Context, _ api.Module, stack []uint64) {
	in := instanceFrom(ctx)
	key, ok := in.readString(u32(stack, 0), u32(stack, 1))
	if !ok || !in.writable(u32(stack, 4), 4) {
		ret(stack, abi.StatusInvalidMemoryAccess)
		return
	}
	sh := in.plugin.cfg.Shared
	sh.mu.Lock()
	var v sharedValue
	if sp := sh.data[in.plugin.cfg.VMID]; sp != nil {
		v, ok = sp.values[key]
	} else {
		ok = false
	}
	sh.mu.Unlock()
	if !ok {
		ret(stack, abi.StatusNotFound)
		return
	}
	// v.data is never modified after it is stored, so it is safe to copy
	// out without the lock (the copy re-enters the plugin).
	if st := in.copyOut(v.data, u32(stack, 2), u32(stack, 3)); st != abi.StatusOK {
		ret(stack, st)
		return
	}
	in.writeU32(u32(stack, 4), v.cas)
	ret(stack, abi.StatusOK)
}

// proxy_set_shared_data(key_ptr, key_size, value_ptr, value_size, cas) sets
// key when cas is 0, the key is new, or cas equals the key's current token;
// every set issues a new token. It writes nothing into guest memory.
// Statuses: OK; CAS_MISMATCH; INTERNAL_FAILURE past MaxSharedDataBytes for
// the vm_id; INVALID_MEMORY_ACCESS.
func setSharedData(ctx context.Context, _ api.Module, stack []uint64) {
	in := instanceFrom(ctx)
	key, ok := in.readString(u32(stack, 0), u32(stack, 1))
	if !ok {
		ret(stack, abi.StatusInvalidMemoryAccess)
		return
	}
	val, ok := in.read(u32(stack, 2), u32(stack, 3))
	if !ok {
		ret(stack, abi.StatusInvalidMemoryAccess)
		return
	}
	cas := u32(stack, 4)
	sh := in.plugin.cfg.Shared
	sh.mu.Lock()
	defer sh.mu.Unlock()
	sp := sh.data[in.plugin.cfg.VMID]
	if sp == nil {
		sp = &sharedSpace{values: map[string]sharedValue{}}
		sh.data[in.plugin.cfg.VMID] = sp
	}
	old, exists := sp.values[key]
	if exists && cas != 0 && cas != old.cas {
		ret(stack, abi.StatusCASMismatch)
		return
	}
	grow := len(val) - len(old.data)
	if !exists {
		grow += len(key)
	}
	if sp.bytes+grow > MaxSharedDataBytes {
		ret(stack, abi.StatusInternalFailure)
		return
	}
	sh.cas++
	if sh.cas == 0 {
		sh.cas = 1
	}
	sp.values[key] = sharedValue{data: append([]byte(nil), val...), cas: sh.cas}
	sp.bytes += grow
	ret(stack, abi.StatusOK)
}

// proxy_register_shared_queue(name_ptr, name_size, ret_queue_id_ptr)
// registers (or re-registers, keeping its items) the queue name in the
// plugin's vm_id space, owned by the caller's root context on this
// instance, and writes its id (u32). As in Envoy, the last registrant owns
// the queue and gets proxy_on_queue_ready. Statuses: OK,
// INVALID_MEMORY_ACCESS.
func registerSharedQueue(ctx context.Context, _ api.Module, stack []uint64) {
	in := instanceFrom(ctx)
	name, ok := in.readString(u32(stack, 0), u32(stack, 1))
	if !ok || !in.writable(u32(stack, 2), 4) {
		ret(stack, abi.StatusInvalidMemoryAccess)
		return
	}
	sh := in.plugin.cfg.Shared
	sh.mu.Lock()
	k := queueKey{in.plugin.cfg.VMID, name}
	id, exists := sh.byName[k]
	if !exists {
		sh.nextQ++
		id = sh.nextQ
		sh.byName[k] = id
		sh.queues[id] = &sharedQueue{}
	}
	q := sh.queues[id]
	q.owner, q.root = in, in.rootID
	sh.mu.Unlock()
	in.writeU32(u32(stack, 2), id)
	ret(stack, abi.StatusOK)
}

// proxy_resolve_shared_queue(vm_id_ptr, vm_id_size, name_ptr, name_size,
// ret_queue_id_ptr) finds a queue by vm_id (empty means the plugin's own)
// and name, and writes its id (u32). Statuses: OK; NOT_FOUND;
// INVALID_MEMORY_ACCESS.
func resolveSharedQueue(ctx context.Context, _ api.Module, stack []uint64) {
	in := instanceFrom(ctx)
	vmID, ok1 := in.readString(u32(stack, 0), u32(stack, 1))
	name, ok2 := in.readString(u32(stack, 2), u32(stack, 3))
	if !ok1 || !ok2 || !in.writable(u32(stack, 4), 4) {
		ret(stack, abi.StatusInvalidMemoryAccess)
		return
	}
	if vmID == "" {
		vmID = in.plugin.cfg.VMID
	}
	sh := in.plugin.cfg.Shared
	sh.mu.Lock()
	id, ok := sh.byName[queueKey{vmID, name}]
	sh.mu.Unlock()
	if !ok {
		ret(stack, abi.StatusNotFound)
		return
	}
	in.writeU32(u32(stack, 4), id)
	ret(stack, abi.StatusOK)
}

// proxy_enqueue_shared_queue(queue_id, value_ptr, value_size) appends a copy
// of the value and posts proxy_on_queue_ready(root, queue_id) to the owning
// instance, which runs it after its current call, never concurrently with
// another. Statuses: OK; NOT_FOUND for an unknown queue; INTERNAL_FAILURE
// when the queue holds MaxQueueItems; INVALID_MEMORY_ACCESS.
func enqueueSharedQueue(ctx context.Context, _ api.Module, stack []uint64) {
	in := instanceFrom(ctx)
	id := u32(stack, 0)
	val, ok := in.read(u32(stack, 1), u32(stack, 2))
	if !ok {
		ret(stack, abi.StatusInvalidMemoryAccess)
		return
	}
	sh := in.plugin.cfg.Shared
	sh.mu.Lock()
	q := sh.queues[id]
	if q == nil {
		sh.mu.Unlock()
		ret(stack, abi.StatusNotFound)
		return
	}
	if len(q.items) >= MaxQueueItems {
		sh.mu.Unlock()
		ret(stack, abi.StatusInternalFailure)
		return
	}
	q.items = append(q.items, append([]byte(nil), val...))
	owner, root := q.owner, q.root
	sh.mu.Unlock()
	if owner != nil {
		owner.post(func() { owner.callCtx(owner.fns.onQueueReady, root, uint64(id)) })
	}
	ret(stack, abi.StatusOK)
}

// proxy_dequeue_shared_queue(queue_id, ret_value_ptr_ptr, ret_value_size_ptr)
// removes the oldest item and returns it in memory from the plugin's
// allocator. Statuses: OK; EMPTY; NOT_FOUND for an unknown queue;
// INVALID_MEMORY_ACCESS.
func dequeueSharedQueue(ctx context.Context, _ api.Module, stack []uint64) {
	in := instanceFrom(ctx)
	retPtr, retLen := u32(stack, 1), u32(stack, 2)
	if !in.writable(retPtr, 4) || !in.writable(retLen, 4) {
		ret(stack, abi.StatusInvalidMemoryAccess)
		return
	}
	sh := in.plugin.cfg.Shared
	sh.mu.Lock()
	q := sh.queues[u32(stack, 0)]
	if q == nil {
		sh.mu.Unlock()
		ret(stack, abi.StatusNotFound)
		return
	}
	if len(q.items) == 0 {
		sh.mu.Unlock()
		ret(stack, abi.StatusEmpty)
		return
	}
	item := q.items[0]
	q.items[0] = nil
	q.items = q.items[1:]
	sh.mu.Unlock()
	ret(stack, in.copyOut(item, retPtr, retLen))
}
