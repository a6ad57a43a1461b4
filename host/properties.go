package host

import (
	"context"
	"strconv"
	"strings"

	"github.com/tetratelabs/wazero/api"

	"github.com/wasm-callout/wasm-callout/abi"
)

// property resolves a property path for the effective context, in the
// order: the plugin's identity; values the plugin stored itself; request
// and response attributes derived from the header maps; the stream's
// PropertySource (attributes and metadata Envoy sent); then Config.Local
// (the node, the listener and the cluster). Outside a stream (vm start,
// configure, ticks, queues, a root context's call responses) only the
// identity and Config.Local answer, as Envoy answers only plugin_* and
// what its bootstrap and listener say there. Legacy top-level names
// (cluster_name, node, …) are answered as their xds.* forms.
func (in *instance) property(path []string) ([]byte, bool) {
	if len(path) == 0 {
		return nil, false
	}
	cfg := &in.plugin.cfg
	switch path[0] {
	case "plugin_name":
		return []byte(cfg.Name), len(path) == 1
	case "plugin_root_id":
		return []byte(cfg.RootID), len(path) == 1
	case "plugin_vm_id":
		return []byte(cfg.VMID), len(path) == 1
	}
	s := in.activeStream()
	if s == nil {
		return cfg.Local.property(abi.CanonicalPath(path), false)
	}
	if v, ok := s.properties[strings.Join(path, ".")]; ok {
		return v, true
	}
	path = abi.CanonicalPath(path)
	if h := s.http; h != nil {
		switch path[0] {
		case "request":
			if v, ok := h.requestProperty(path[1:]); ok {
				return v, true
			}
		case "response":
			if v, ok := h.responseProperty(path[1:]); ok {
				return v, true
			}
		}
	}
	if s.props != nil {
		if v, ok := s.props.Property(path); ok {
			return v, true
		}
	}
	return cfg.Local.property(path, true)
}

// requestProperty derives request.* attributes from the request headers.
func (s *HTTPStream) requestProperty(rest []string) ([]byte, bool) {
	h := s.maps[abi.MapHTTPRequestHeaders]
	if h == nil || len(rest) == 0 {
		return nil, false
	}
	header := func(name string) ([]byte, bool) {
		v, ok := h.Get(name)
		return []byte(v), ok && len(rest) == 1
	}
	switch rest[0] {
	case "path":
		return header(":path")
	case "method":
		return header(":method")
	case "scheme":
		return header(":scheme")
	case "host":
		if v, ok := h.Get(":authority"); ok {
			return []byte(v), len(rest) == 1
		}
		return header("host")
	case "referer":
		return header("referer")
	case "useragent":
		return header("user-agent")
	case "id":
		return header("x-request-id")
	case "url_path", "query":
		p, ok := h.Get(":path")
		if !ok || len(rest) != 1 {
			return nil, false
		}
		path, query, _ := strings.Cut(p, "?")
		if rest[0] == "query" {
			return []byte(query), true
		}
		return []byte(path), true
	case "headers":
		return mapProperty(h, rest[1:])
	}
	return nil, false
}

// responseProperty derives response.* attributes from the response maps.
func (s *HTTPStream) responseProperty(rest []string) ([]byte, bool) {
	if len(rest) == 0 {
		return nil, false
	}
	switch rest[0] {
	case "code":
		h := s.maps[abi.MapHTTPResponseHeaders]
		if h == nil || len(rest) != 1 {
			return nil, false
		}
		v, ok := h.Get(":status")
		code, err := strconv.ParseInt(v, 10, 64)
		if !ok || err != nil {
			return nil, false
		}
		return abi.EncodeInt64(code), true
	case "headers":
		return mapProperty(s.maps[abi.MapHTTPResponseHeaders], rest[1:])
	case "trailers":
		return mapProperty(s.maps[abi.MapHTTPResponseTrailers], rest[1:])
	}
	return nil, false
}

// mapProperty answers a header map attribute: the whole map (pairs, with
// repeated keys joined by commas as CEL sees them) or one key's value.
func mapProperty(h *HeaderMap, rest []string) ([]byte, bool) {
	if h == nil || len(rest) > 1 {
		return nil, false
	}
	if len(rest) == 1 {
		vs := h.Values(rest[0])
		if len(vs) == 0 {
			return nil, false
		}
		return []byte(strings.Join(vs, ",")), true
	}
	var pairs []abi.Pair
	index := map[string]int{}
	for _, p := range h.pairs {
		if i, ok := index[p.Key]; ok {
			pairs[i].Value += "," + p.Value
			continue
		}
		index[p.Key] = len(pairs)
		pairs = append(pairs, p)
	}
	return abi.EncodeMap(pairs), true
}

// proxy_get_property(path_ptr, path_size, ret_ptr_ptr, ret_size_ptr)
// returns the Envoy-encoded value of the property at path (segments joined
// by NUL; see abi.SplitPath) in memory from the plugin's allocator.
// Strings are raw bytes, integers 8 bytes little-endian, booleans one byte,
// timestamps and durations int64 nanoseconds, maps serialized pairs.
// Statuses: OK; NOT_FOUND when the property is not known or not available
// (Envoy only sends the attributes the operator configured);
// INVALID_MEMORY_ACCESS.
func getProperty(ctx context.Context, _ api.Module, stack []uint64) {
	in := instanceFrom(ctx)
	b, ok := in.read(u32(stack, 0), u32(stack, 1))
	if !ok {
		ret(stack, abi.StatusInvalidMemoryAccess)
		return
	}
	v, found := in.property(abi.SplitPath(b))
	if !found {
		ret(stack, abi.StatusNotFound)
		return
	}
	ret(stack, in.copyOut(v, u32(stack, 2), u32(stack, 3)))
}

// proxy_set_property(path_ptr, path_size, value_ptr, value_size) stores a
// value for the stream, readable back with proxy_get_property and sent to
// Envoy as dynamic metadata (Envoy keeps it as filter state). It writes
// nothing into guest memory. Statuses: OK; NOT_FOUND outside a stream or for
// an empty path (as Envoy); INVALID_MEMORY_ACCESS.
func setProperty(ctx context.Context, _ api.Module, stack []uint64) {
	in := instanceFrom(ctx)
	p, ok := in.read(u32(stack, 0), u32(stack, 1))
	if !ok {
		ret(stack, abi.StatusInvalidMemoryAccess)
		return
	}
	path := abi.SplitPath(p)
	v, ok := in.read(u32(stack, 2), u32(stack, 3))
	if !ok {
		ret(stack, abi.StatusInvalidMemoryAccess)
		return
	}
	s := in.activeStream()
	if s == nil || len(path) == 0 {
		ret(stack, abi.StatusNotFound)
		return
	}
	if s.properties == nil {
		s.properties = map[string][]byte{}
	}
	s.properties[strings.Join(path, ".")] = append([]byte(nil), v...)
	ret(stack, abi.StatusOK)
}
