package host

import (
	"context"
	"strings"
	"unsafe"

	"github.com/tetratelabs/wazero/api"

	"github.com/wasm-callout/wasm-callout/abi"
)

// HeaderMap is a stream's header or trailer map as the plugin sees it:
// ordered pairs with lower-case keys, where a key repeats for each value.
// It records which keys the plugin changed so the server can send only
// those changes.
type HeaderMap struct {
	pairs []abi.Pair
	dirty []string // changed keys, in first-change order
	// few holds the first changed keys, so that a plugin changing a
	// header or two allocates nothing for the record; changeBuf and
	// valueBuf likewise back what Changes returns.
	few       [2]string
	changeBuf [2]HeaderChange
	valueBuf  [2]string
}

// HeaderChange is the final state of one key the plugin changed: no Values
// means the key was removed.
type HeaderChange struct {
	Key    string
	Values []string
}

func newHeaderMap(pairs []abi.Pair) *HeaderMap {
	return &HeaderMap{pairs: pairs[:len(pairs):len(pairs)]}
}

// Pairs returns the current pairs. The slice must not be modified.
func (h *HeaderMap) Pairs() []abi.Pair { return h.pairs }

// Get returns the first value of key.
func (h *HeaderMap) Get(key string) (string, bool) {
	key = lowerKey(key)
	for _, p := range h.pairs {
		if p.Key == key {
			return p.Value, true
		}
	}
	return "", false
}

// getBytes is Get for a key given as bytes, compared as lower case
// without converting it.
func (h *HeaderMap) getBytes(key []byte) (string, bool) {
	for _, p := range h.pairs {
		if equalLower(p.Key, key) {
			return p.Value, true
		}
	}
	return "", false
}

// equalLower reports whether lower is key lower-cased (ASCII).
func equalLower(lower string, key []byte) bool {
	if len(lower) != len(key) {
		return false
	}
	for i := 0; i < len(key); i++ {
		c := key[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if lower[i] != c {
			return false
		}
	}
	return true
}

// Values returns every value of key, in order.
func (h *HeaderMap) Values(key string) []string {
	key = lowerKey(key)
	var vs []string
	for _, p := range h.pairs {
		if p.Key == key {
			vs = append(vs, p.Value)
		}
	}
	return vs
}

// ByteSize is the sum of key and value lengths, which is what Envoy's
// proxy_get_header_map_size reports.
func (h *HeaderMap) ByteSize() int {
	n := 0
	for _, p := range h.pairs {
		n += len(p.Key) + len(p.Value)
	}
	return n
}

// Add appends a value for key, keeping existing ones.
func (h *HeaderMap) Add(key, value string) {
	key = lowerKey(key)
	h.pairs = append(h.pairs, abi.Pair{Key: key, Value: value})
	h.markDirty(key)
}

// Replace sets key to the single value, in place of its first occurrence.
func (h *HeaderMap) Replace(key, value string) {
	key = lowerKey(key)
	out := h.pairs[:0:0]
	replaced := false
	for _, p := range h.pairs {
		if p.Key != key {
			out = append(out, p)
		} else if !replaced {
			out = append(out, abi.Pair{Key: key, Value: value})
			replaced = true
		}
	}
	if !replaced {
		out = append(out, abi.Pair{Key: key, Value: value})
	}
	h.pairs = out
	h.markDirty(key)
}

// Remove deletes every value of key.
func (h *HeaderMap) Remove(key string) {
	key = lowerKey(key)
	out := h.pairs[:0:0]
	for _, p := range h.pairs {
		if p.Key != key {
			out = append(out, p)
		}
	}
	if len(out) != len(h.pairs) {
		h.markDirty(key)
	}
	h.pairs = out
}

// SetPairs replaces the whole map.
func (h *HeaderMap) SetPairs(pairs []abi.Pair) {
	for _, p := range h.pairs {
		h.markDirty(p.Key)
	}
	h.pairs = make([]abi.Pair, len(pairs))
	for i, p := range pairs {
		h.pairs[i] = abi.Pair{Key: lowerKey(p.Key), Value: p.Value}
		h.markDirty(h.pairs[i].Key)
	}
}

// Changes lists the final values of every key changed since the map
// arrived or since the last ClearChanges. The result is the map's own
// buffer, valid until the next call of Changes.
func (h *HeaderMap) Changes() []HeaderChange {
	if len(h.dirty) == 0 {
		return nil
	}
	out, vals := h.changeBuf[:0], h.valueBuf[:0]
	for _, k := range h.dirty {
		start := len(vals)
		for _, p := range h.pairs {
			if p.Key == k {
				vals = append(vals, p.Value)
			}
		}
		var vs []string
		if len(vals) > start {
			// Capped, so that a later append copies rather than
			// writing over this change's values.
			vs = vals[start:len(vals):len(vals)]
		}
		out = append(out, HeaderChange{Key: k, Values: vs})
	}
	return out
}

// ClearChanges forgets the recorded changes, once they have been sent.
func (h *HeaderMap) ClearChanges() { h.dirty = nil }

func (h *HeaderMap) markDirty(key string) {
	for _, k := range h.dirty {
		if k == key {
			return
		}
	}
	if h.dirty == nil {
		h.dirty = h.few[:0]
	}
	h.dirty = append(h.dirty, key)
}

// lowerKey lower-cases a header name, without allocating when it already
// is lower case (the common case: Envoy sends lower-case names).
func lowerKey(k string) string {
	for i := 0; i < len(k); i++ {
		if c := k[i]; 'A' <= c && c <= 'Z' {
			return strings.ToLower(k)
		}
	}
	return k
}

// headerMap returns the map of type mt for the effective context, or nil if
// it is not available now: maps 0 to 3 belong to an HTTP stream; 4 to 7 to
// the outbound call whose callback is running. Caller has checked
// mt.Valid().
func (in *instance) headerMap(mt abi.MapType) *HeaderMap {
	if mt > abi.MapHTTPResponseTrailers {
		r := in.callResp
		if r == nil {
			return nil
		}
		switch {
		case mt == abi.MapHTTPCallResponseHeaders && !r.grpc, mt == abi.MapGRPCReceiveInitialMetadata && r.grpc:
			return r.headers
		case mt == abi.MapHTTPCallResponseTrailers && !r.grpc, mt == abi.MapGRPCReceiveTrailingMetadata && r.grpc:
			return r.trailers
		}
		return nil
	}
	s := in.activeHTTP()
	if s == nil {
		return nil
	}
	return s.maps[mt]
}

// proxy_get_header_map_pairs(map_type, ret_ptr_ptr, ret_size_ptr) returns
// every pair of the map, serialized (abi.AppendPairs), in memory from the
// plugin's allocator; its address and size are written to the two out
// pointers. A map not available now reads as empty (0, 0), as in Envoy.
// Statuses: OK, BAD_ARGUMENT (unknown map type), INVALID_MEMORY_ACCESS.
func getHeaderMapPairs(ctx context.Context, _ api.Module, stack []uint64) {
	in := instanceFrom(ctx)
	mt := abi.MapType(u32(stack, 0))
	if !mt.Valid() {
		ret(stack, abi.StatusBadArgument)
		return
	}
	var data []byte
	if m := in.headerMap(mt); m != nil {
		data = abi.AppendPairs(nil, m.pairs)
	}
	ret(stack, in.copyOut(data, u32(stack, 1), u32(stack, 2)))
}

// proxy_get_header_map_value(map_type, key_ptr, key_size, ret_ptr_ptr,
// ret_size_ptr) returns the first value of key (Envoy returns only the
// first), in memory from the plugin's allocator.
// Statuses: OK; NOT_FOUND when the key is absent (ABI 0.1.0 plugins get OK
// with an empty value, as Envoy gives them) or when the map is gone in
// on_log; BAD_ARGUMENT for an unknown map type or a map not available now;
// INVALID_MEMORY_ACCESS.
func getHeaderMapValue(ctx context.Context, _ api.Module, stack []uint64) {
	in := instanceFrom(ctx)
	mt := abi.MapType(u32(stack, 0))
	if !mt.Valid() {
		ret(stack, abi.StatusBadArgument)
		return
	}
	key, ok := in.read(u32(stack, 1), u32(stack, 2))
	if !ok {
		ret(stack, abi.StatusInvalidMemoryAccess)
		return
	}
	retPtr, retLen := u32(stack, 3), u32(stack, 4)
	v010 := in.plugin.info.ABI == abi.Version010
	m := in.headerMap(mt)
	if m == nil {
		switch {
		case v010:
			ret(stack, in.copyOut(nil, retPtr, retLen))
		case in.phase == phaseLog:
			ret(stack, abi.StatusNotFound)
		default:
			ret(stack, abi.StatusBadArgument)
		}
		return
	}
	// The key is looked up as bytes, still in guest memory: the
	// allocation below may move that memory, so key is not used after it.
	v, found := m.getBytes(key)
	if !found && !v010 {
		ret(stack, abi.StatusNotFound)
		return
	}
	ret(stack, in.copyOutString(v, retPtr, retLen))
}

// mutableMap reads the key (and value) arguments and returns the map to
// change, or the status to return.
func (in *instance) mutableMap(stack []uint64, withValue bool) (m *HeaderMap, key, value string, st abi.Status) {
	mt := abi.MapType(u32(stack, 0))
	if !mt.Valid() {
		return nil, "", "", abi.StatusBadArgument
	}
	kb, ok := in.read(u32(stack, 1), u32(stack, 2))
	if !ok {
		return nil, "", "", abi.StatusInvalidMemoryAccess
	}
	var vb []byte
	if withValue {
		if vb, ok = in.read(u32(stack, 3), u32(stack, 4)); !ok {
			return nil, "", "", abi.StatusInvalidMemoryAccess
		}
	}
	if m = in.headerMap(mt); m == nil || mt > abi.MapHTTPResponseTrailers {
		return nil, "", "", abi.StatusBadArgument // absent, or a call's read-only map
	}
	key, value = in.activeHTTP().keep(kb, vb)
	return m, key, value, abi.StatusOK
}

// keep copies a key and value out of guest memory into strings the
// stream's maps can hold. One string holds both. The first few bytes of
// each stream go to the stream's own strs, so that a plugin adding a
// header or two allocates nothing for them: strs is only ever appended
// to, and the stream is never reused, so the bytes under those strings
// never change.
func (s *HTTPStream) keep(k, v []byte) (key, value string) {
	n := len(k) + len(v)
	var kv string
	switch {
	case n == 0:
	case n <= len(s.strs)-s.strsUsed:
		b := s.strs[s.strsUsed : s.strsUsed+n]
		copy(b[copy(b, k):], v)
		s.strsUsed += n
		kv = unsafe.String(&b[0], n)
	default:
		var b strings.Builder
		b.Grow(n)
		b.Write(k)
		b.Write(v)
		kv = b.String()
	}
	return kv[:len(k)], kv[len(k):]
}

// proxy_add_header_map_value(map_type, key_ptr, key_size, value_ptr,
// value_size) appends a value for key, keeping existing ones (Envoy's
// addCopy). Statuses: OK; BAD_ARGUMENT for an unknown map type or a map not
// available or not writable now; INVALID_MEMORY_ACCESS.
func addHeaderMapValue(ctx context.Context, _ api.Module, stack []uint64) {
	m, k, v, st := instanceFrom(ctx).mutableMap(stack, true)
	if m != nil {
		m.Add(k, v)
	}
	ret(stack, st)
}

// proxy_replace_header_map_value(map_type, key_ptr, key_size, value_ptr,
// value_size) sets key to one value, adding it if absent (Envoy's setCopy).
// Statuses: as proxy_add_header_map_value.
func replaceHeaderMapValue(ctx context.Context, _ api.Module, stack []uint64) {
	m, k, v, st := instanceFrom(ctx).mutableMap(stack, true)
	if m != nil {
		m.Replace(k, v)
	}
	ret(stack, st)
}

// proxy_remove_header_map_value(map_type, key_ptr, key_size) removes every
// value of key; an absent key is not an error. Statuses: as
// proxy_add_header_map_value.
func removeHeaderMapValue(ctx context.Context, _ api.Module, stack []uint64) {
	m, k, _, st := instanceFrom(ctx).mutableMap(stack, false)
	if m != nil {
		m.Remove(k)
	}
	ret(stack, st)
}

// proxy_set_header_map_pairs(map_type, pairs_ptr, pairs_size) replaces the
// whole map with the serialized pairs. Statuses: OK; BAD_ARGUMENT for an
// unknown map type, a map not available now, or a malformed serialization
// (Envoy would silently empty the map; refusing keeps the headers);
// INVALID_MEMORY_ACCESS.
func setHeaderMapPairs(ctx context.Context, _ api.Module, stack []uint64) {
	in := instanceFrom(ctx)
	mt := abi.MapType(u32(stack, 0))
	if !mt.Valid() {
		ret(stack, abi.StatusBadArgument)
		return
	}
	b, ok := in.read(u32(stack, 1), u32(stack, 2))
	if !ok {
		ret(stack, abi.StatusInvalidMemoryAccess)
		return
	}
	pairs, err := abi.DecodePairs(b)
	m := in.headerMap(mt)
	if err != nil || m == nil || mt > abi.MapHTTPResponseTrailers {
		ret(stack, abi.StatusBadArgument)
		return
	}
	m.SetPairs(pairs)
	ret(stack, abi.StatusOK)
}

// proxy_get_header_map_size(map_type, ret_size_ptr) writes the map's size
// as a u32: the sum of key and value lengths, as Envoy reports it (the spec
// says serialized size; Envoy's answer is what plugins were tested with).
// Statuses: OK, BAD_ARGUMENT (unknown or unavailable map),
// INVALID_MEMORY_ACCESS.
func getHeaderMapSize(ctx context.Context, _ api.Module, stack []uint64) {
	in := instanceFrom(ctx)
	mt := abi.MapType(u32(stack, 0))
	m := in.headerMap(mt)
	if !mt.Valid() || m == nil {
		ret(stack, abi.StatusBadArgument)
		return
	}
	if !in.writeU32(u32(stack, 1), uint32(m.ByteSize())) {
		ret(stack, abi.StatusInvalidMemoryAccess)
		return
	}
	ret(stack, abi.StatusOK)
}
