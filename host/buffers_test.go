package host

import (
	"testing"

	"github.com/wasm-callout/wasm-callout/abi"
)

func TestGetBufferBytes(t *testing.T) {
	h := newHostcall(t, "proxy_get_buffer_bytes", Config{VMConfig: []byte("vm"), PluginConfig: []byte("plugin")})
	s := h.stream()
	s.bodies[abi.StreamHTTPRequest] = body{buf: []byte("hello world"), active: true}
	tests := []struct {
		name           string
		s              *HTTPStream
		ph             phase
		bt, start, max uint64
		want           abi.Status
		data           string
	}{
		{"whole body as SDKs ask", s, phaseRequestBody, 0, 0, 0x7fffffff, abi.StatusOK, "hello world"},
		{"range", s, phaseRequestBody, 0, 6, 3, abi.StatusOK, "wor"},
		{"clamped", s, phaseRequestBody, 0, 6, 100, abi.StatusOK, "world"},
		{"start past end is empty", s, phaseRequestBody, 0, 50, 5, abi.StatusOK, ""},
		{"64-bit arithmetic", s, phaseRequestBody, 0, 0xffffffff, 0xffffffff, abi.StatusOK, ""},
		{"response body not yet seen is empty", s, phaseRequestBody, 1, 0, 10, abi.StatusOK, ""},
		{"body from the root context", nil, phaseNone, 0, 0, 10, abi.StatusNotFound, ""},
		{"vm configuration", nil, phaseVMStart, 6, 0, 10, abi.StatusOK, "vm"},
		{"plugin configuration in on_configure", nil, phaseConfigure, 7, 0, 10, abi.StatusOK, "plugin"},
		{"plugin configuration elsewhere", nil, phaseNone, 7, 0, 10, abi.StatusNotFound, ""},
		{"call response body without a call", nil, phaseNone, 4, 0, 10, abi.StatusNotFound, ""},
		{"tcp data on an HTTP stream", s, phaseRequestBody, 2, 0, 10, abi.StatusNotFound, ""},
		{"unknown type", s, phaseRequestBody, 9, 0, 10, abi.StatusBadArgument, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := h.run(tc.s, tc.ph, tc.bt, tc.start, tc.max, retP, retL); got != tc.want {
				t.Fatalf("status = %v, want %v", got, tc.want)
			}
			if got := string(h.out(retP, retL)); tc.want == abi.StatusOK && got != tc.data {
				t.Fatalf("data = %q, want %q", got, tc.data)
			}
		})
	}
	if got := h.run(s, phaseRequestBody, 0, 0, 5, badPtr, retL); got != abi.StatusInvalidMemoryAccess {
		t.Errorf("bad out pointer: %v", got)
	}
}

func TestGetBufferStatus(t *testing.T) {
	h := newHostcall(t, "proxy_get_buffer_status", Config{})
	s := h.stream()
	s.bodies[abi.StreamHTTPResponse] = body{buf: []byte("abc"), active: true}
	if got := h.run(s, phaseResponseBody, 1, retP, retL); got != abi.StatusOK || h.u32(retP) != 3 || h.u32(retL) != 0 {
		t.Fatalf("status %v len %d flags %d", got, h.u32(retP), h.u32(retL))
	}
	if got := h.run(s, phaseResponseBody, 7, retP, retL); got != abi.StatusNotFound {
		t.Errorf("plugin config outside on_configure: %v", got)
	}
	if got := h.run(s, phaseResponseBody, 10, retP, retL); got != abi.StatusBadArgument {
		t.Errorf("unknown type: %v", got)
	}
	if got := h.run(s, phaseResponseBody, 1, badPtr, retL); got != abi.StatusInvalidMemoryAccess {
		t.Errorf("bad pointer: %v", got)
	}
}

func TestSetBufferBytes(t *testing.T) {
	tests := []struct {
		name        string
		active      bool
		bt          uint64
		start, size uint64
		data        string
		want        abi.Status
		body        string
	}{
		{"prepend", true, 0, 0, 0, ">", abi.StatusOK, ">body"},
		{"replace as the Go SDK does", true, 0, 0, 0x7fffffff, "new", abi.StatusOK, "new"},
		{"replace exact", true, 0, 0, 4, "new", abi.StatusOK, "new"},
		{"append as the Go SDK does", true, 0, 0x7fffffff, 0, "<", abi.StatusOK, "body<"},
		{"append at end", true, 0, 4, 0, "<", abi.StatusOK, "body<"},
		{"clear", true, 0, 0, 4, "", abi.StatusOK, ""},
		{"splice is not supported by Envoy", true, 0, 1, 2, "x", abi.StatusBadArgument, "body"},
		{"no body in flight", false, 0, 0, 0, "x", abi.StatusNotFound, "body"},
		{"configuration is read-only", true, 6, 0, 0, "x", abi.StatusBadArgument, "body"},
		{"call response body absent", true, 4, 0, 0, "x", abi.StatusNotFound, "body"},
		{"unknown type", true, 12, 0, 0, "x", abi.StatusBadArgument, "body"},
	}
	h := newHostcall(t, "proxy_set_buffer_bytes", Config{})
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := h.stream()
			orig := []byte("body")
			s.bodies[0] = body{buf: orig, active: tc.active}
			p, n := h.put(argA, []byte(tc.data))
			if got := h.run(s, phaseRequestBody, tc.bt, tc.start, tc.size, p, n); got != tc.want {
				t.Fatalf("status = %v, want %v", got, tc.want)
			}
			if got := string(s.bodies[0].buf); got != tc.body {
				t.Fatalf("body = %q, want %q", got, tc.body)
			}
			if s.bodies[0].modified != (tc.want == abi.StatusOK) {
				t.Errorf("modified = %v", s.bodies[0].modified)
			}
			if string(orig) != "body" {
				t.Errorf("the caller's chunk was written: %q", orig)
			}
		})
	}
	s := h.stream()
	s.bodies[0] = body{buf: []byte("x"), active: true}
	if got := h.run(s, phaseRequestBody, 0, 0, 0, badPtr, 3); got != abi.StatusInvalidMemoryAccess {
		t.Errorf("bad data pointer: %v", got)
	}
}
