package host

import (
	"bytes"
	"testing"

	"github.com/wasm-callout/wasm-callout/abi"
)

// props is a PropertySource backed by a map of dotted paths.
type props map[string][]byte

func (p props) Property(path []string) ([]byte, bool) {
	v, ok := p[joinDots(path)]
	return v, ok
}

func joinDots(path []string) string {
	var b bytes.Buffer
	for i, s := range path {
		if i > 0 {
			b.WriteByte('.')
		}
		b.WriteString(s)
	}
	return b.String()
}

func TestGetProperty(t *testing.T) {
	h := newHostcall(t, "proxy_get_property", Config{Name: "p1", RootID: "root", VMID: "vm"})
	s, err := h.p.NewHTTPStream(props{
		"xds.cluster_name": []byte("backend"),
		"source.address":   []byte("10.0.0.1:5555"),
		"request.time":     abi.EncodeInt64(42),
		"request.path":     []byte("/from-attributes"),
		"xds.node.id":      []byte("node-1"),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.maps[abi.MapHTTPRequestHeaders] = newHeaderMap(kv(":path", "/a/b?x=1", ":method", "POST", ":authority", "example.com",
		":scheme", "https", "user-agent", "curl", "x-request-id", "rid", "x-m", "1", "x-m", "2"))
	s.maps[abi.MapHTTPResponseHeaders] = newHeaderMap(kv(":status", "404"))
	s.properties = map[string][]byte{"wasm.mine": []byte("stored")}
	tests := []struct {
		name string
		s    *HTTPStream
		path []string
		want abi.Status
		val  []byte
	}{
		{"plugin_name", s, []string{"plugin_name"}, abi.StatusOK, []byte("p1")},
		{"plugin_root_id from the root context", nil, []string{"plugin_root_id"}, abi.StatusOK, []byte("root")},
		{"plugin_vm_id", s, []string{"plugin_vm_id"}, abi.StatusOK, []byte("vm")},
		{"request.path from headers wins", s, []string{"request", "path"}, abi.StatusOK, []byte("/a/b?x=1")},
		{"request.url_path", s, []string{"request", "url_path"}, abi.StatusOK, []byte("/a/b")},
		{"request.query", s, []string{"request", "query"}, abi.StatusOK, []byte("x=1")},
		{"request.method", s, []string{"request", "method"}, abi.StatusOK, []byte("POST")},
		{"request.host", s, []string{"request", "host"}, abi.StatusOK, []byte("example.com")},
		{"request.scheme", s, []string{"request", "scheme"}, abi.StatusOK, []byte("https")},
		{"request.useragent", s, []string{"request", "useragent"}, abi.StatusOK, []byte("curl")},
		{"request.id", s, []string{"request", "id"}, abi.StatusOK, []byte("rid")},
		{"one request header, values joined", s, []string{"request", "headers", "x-m"}, abi.StatusOK, []byte("1,2")},
		{"request.time from attributes", s, []string{"request", "time"}, abi.StatusOK, abi.EncodeInt64(42)},
		{"response.code as int64", s, []string{"response", "code"}, abi.StatusOK, abi.EncodeInt64(404)},
		{"xds name", s, []string{"xds", "cluster_name"}, abi.StatusOK, []byte("backend")},
		{"legacy name", s, []string{"cluster_name"}, abi.StatusOK, []byte("backend")},
		{"legacy node subfield", s, []string{"node", "id"}, abi.StatusOK, []byte("node-1")},
		{"source.address", s, []string{"source", "address"}, abi.StatusOK, []byte("10.0.0.1:5555")},
		{"written by the plugin", s, []string{"wasm", "mine"}, abi.StatusOK, []byte("stored")},
		{"absent attribute", s, []string{"destination", "port"}, abi.StatusNotFound, nil},
		{"absent header", s, []string{"request", "referer"}, abi.StatusNotFound, nil},
		{"stream property from the root context", nil, []string{"request", "path"}, abi.StatusNotFound, nil},
		{"empty path", s, nil, abi.StatusNotFound, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, n := h.put(argA, abi.JoinPath(tc.path...))
			if got := h.run(tc.s, phaseRequestHeaders, p, n, retP, retL); got != tc.want {
				t.Fatalf("status = %v, want %v", got, tc.want)
			}
			if got := h.out(retP, retL); tc.want == abi.StatusOK && !bytes.Equal(got, tc.val) {
				t.Fatalf("value = %q, want %q", got, tc.val)
			}
		})
	}
	// The whole header map is a pair serialization, duplicates joined.
	p, n := h.put(argA, abi.JoinPath("response", "headers"))
	if h.run(s, phaseResponseHeaders, p, n, retP, retL) != abi.StatusOK || !bytes.Equal(h.out(retP, retL), abi.EncodeMap(kv(":status", "404"))) {
		t.Errorf("response.headers = %q", h.out(retP, retL))
	}
	// A trailing NUL is tolerated, as Envoy tolerates it.
	p, n = h.put(argA, []byte("plugin_name\x00"))
	if h.run(s, phaseRequestHeaders, p, n, retP, retL) != abi.StatusOK {
		t.Error("trailing NUL")
	}
	if got := h.run(s, phaseRequestHeaders, badPtr, 3, retP, retL); got != abi.StatusInvalidMemoryAccess {
		t.Errorf("bad path pointer: %v", got)
	}
}

func TestSetProperty(t *testing.T) {
	h := newHostcall(t, "proxy_set_property", Config{})
	s := h.stream()
	p, n := h.put(argA, abi.JoinPath("wasm", "tag"))
	v, vn := h.put(argB, []byte("v1"))
	if got := h.run(s, phaseRequestHeaders, p, n, v, vn); got != abi.StatusOK {
		t.Fatalf("status %v", got)
	}
	if got := s.PropertyWrites()["wasm.tag"]; string(got) != "v1" {
		t.Fatalf("PropertyWrites = %q", got)
	}
	if got := h.run(nil, phaseNone, p, n, v, vn); got != abi.StatusNotFound {
		t.Errorf("root context: %v", got)
	}
	e, en := h.put(argC, nil)
	if got := h.run(s, phaseRequestHeaders, e, en, v, vn); got != abi.StatusNotFound {
		t.Errorf("empty path: %v", got)
	}
	if got := h.run(s, phaseRequestHeaders, p, n, badPtr, 2); got != abi.StatusInvalidMemoryAccess {
		t.Errorf("bad value pointer: %v", got)
	}
}
