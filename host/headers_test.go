package host

import (
	"fmt"
	"reflect"
	"testing"

	"github.com/wasm-callout/wasm-callout/abi"
)

func TestHeaderMapChanges(t *testing.T) {
	tests := []struct {
		name string
		edit func(h *HeaderMap)
		want []HeaderChange
		end  []abi.Pair
	}{
		{"no change", func(h *HeaderMap) {}, nil, kv("a", "1", "b", "2", "b", "3")},
		{"add", func(h *HeaderMap) { h.Add("B", "4") }, []HeaderChange{{"b", []string{"2", "3", "4"}}}, kv("a", "1", "b", "2", "b", "3", "b", "4")},
		{"replace collapses", func(h *HeaderMap) { h.Replace("b", "x") }, []HeaderChange{{"b", []string{"x"}}}, kv("a", "1", "b", "x")},
		{"replace adds", func(h *HeaderMap) { h.Replace("c", "x") }, []HeaderChange{{"c", []string{"x"}}}, kv("a", "1", "b", "2", "b", "3", "c", "x")},
		{"remove", func(h *HeaderMap) { h.Remove("b") }, []HeaderChange{{"b", nil}}, kv("a", "1")},
		{"remove absent is no change", func(h *HeaderMap) { h.Remove("zz") }, nil, kv("a", "1", "b", "2", "b", "3")},
		{"more changes and values than the buffers hold",
			func(h *HeaderMap) {
				h.Add("x", "1")
				h.Add("y", "2")
				h.Add("x", "3")
				h.Add("z", "4")
				h.Add("y", "5")
			},
			[]HeaderChange{{"x", []string{"1", "3"}}, {"y", []string{"2", "5"}}, {"z", []string{"4"}}},
			kv("a", "1", "b", "2", "b", "3", "x", "1", "y", "2", "x", "3", "z", "4", "y", "5")},
		{"set pairs", func(h *HeaderMap) { h.SetPairs(kv("b", "9", "D", "1")) },
			[]HeaderChange{{"a", nil}, {"b", []string{"9"}}, {"d", []string{"1"}}}, kv("b", "9", "d", "1")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := kv("a", "1", "b", "2", "b", "3")
			h := newHeaderMap(in)
			tc.edit(h)
			if got := h.Changes(); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Changes = %+v, want %+v", got, tc.want)
			}
			if !reflect.DeepEqual(h.Pairs(), tc.end) {
				t.Errorf("Pairs = %+v, want %+v", h.Pairs(), tc.end)
			}
			if !reflect.DeepEqual(in, kv("a", "1", "b", "2", "b", "3")) {
				t.Errorf("the caller's pairs were modified: %+v", in)
			}
			h.ClearChanges()
			if h.Changes() != nil {
				t.Error("ClearChanges kept changes")
			}
		})
	}
}

func TestGetHeaderMapPairs(t *testing.T) {
	h := newHostcall(t, "proxy_get_header_map_pairs", Config{})
	s := h.stream()
	s.maps[abi.MapHTTPRequestHeaders] = newHeaderMap(kv(":path", "/", "a", "1"))
	tests := []struct {
		name   string
		s      *HTTPStream
		mt     uint64
		retP   uint64
		want   abi.Status
		wantKV []abi.Pair
	}{
		{"request headers", s, 0, retP, abi.StatusOK, kv(":path", "/", "a", "1")},
		{"absent map reads empty", s, 2, retP, abi.StatusOK, nil},
		{"root context reads empty", nil, 0, retP, abi.StatusOK, nil},
		{"call response map not available", s, 6, retP, abi.StatusOK, nil},
		{"unknown map type", s, 8, retP, abi.StatusBadArgument, nil},
		{"bad out pointer", s, 0, badPtr, abi.StatusInvalidMemoryAccess, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h.in.mem.WriteUint64Le(retP, 0xdeadbeef_deadbeef)
			if got := h.run(tc.s, phaseRequestHeaders, tc.mt, tc.retP, retL); got != tc.want {
				t.Fatalf("status = %v, want %v", got, tc.want)
			}
			if tc.want != abi.StatusOK {
				return
			}
			pairs, err := abi.DecodePairs(h.out(retP, retL))
			if err != nil || !reflect.DeepEqual(pairs, tc.wantKV) {
				t.Fatalf("pairs = %+v (%v), want %+v", pairs, err, tc.wantKV)
			}
		})
	}
}

func TestGetHeaderMapValue(t *testing.T) {
	h := newHostcall(t, "proxy_get_header_map_value", Config{})
	s := h.stream()
	s.maps[abi.MapHTTPRequestHeaders] = newHeaderMap(kv("set-cookie", "a", "set-cookie", "b"))
	tests := []struct {
		name  string
		abi   abi.Version
		s     *HTTPStream
		ph    phase
		mt    uint64
		key   string
		want  abi.Status
		value string
	}{
		{"first value only", abi.Version021, s, phaseRequestHeaders, 0, "set-cookie", abi.StatusOK, "a"},
		{"case-insensitive", abi.Version021, s, phaseRequestHeaders, 0, "Set-Cookie", abi.StatusOK, "a"},
		{"missing key", abi.Version021, s, phaseRequestHeaders, 0, "x", abi.StatusNotFound, ""},
		{"missing key in 0.1.0 is empty", abi.Version010, s, phaseRequestHeaders, 0, "x", abi.StatusOK, ""},
		{"map not available", abi.Version021, s, phaseRequestHeaders, 2, "x", abi.StatusBadArgument, ""},
		{"map gone in on_log", abi.Version021, s, phaseLog, 2, "x", abi.StatusNotFound, ""},
		{"map not available in 0.1.0", abi.Version010, s, phaseRequestHeaders, 2, "x", abi.StatusOK, ""},
		{"unknown map type", abi.Version021, s, phaseRequestHeaders, 99, "x", abi.StatusBadArgument, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h.p.info.ABI = tc.abi
			defer func() { h.p.info.ABI = abi.Version021 }()
			k, kl := h.put(argA, []byte(tc.key))
			if got := h.run(tc.s, tc.ph, tc.mt, k, kl, retP, retL); got != tc.want {
				t.Fatalf("status = %v, want %v", got, tc.want)
			}
			if got := string(h.out(retP, retL)); tc.want == abi.StatusOK && got != tc.value {
				t.Fatalf("value = %q, want %q", got, tc.value)
			}
		})
	}
	if got := h.run(s, phaseRequestHeaders, 0, badPtr, 4, retP, retL); got != abi.StatusInvalidMemoryAccess {
		t.Errorf("bad key pointer: %v", got)
	}
}

func TestHeaderMapMutations(t *testing.T) {
	tests := []struct {
		fn    string
		key   string
		value string
		mt    uint64
		want  abi.Status
		end   []abi.Pair
	}{
		{"proxy_add_header_map_value", "b", "2", 0, abi.StatusOK, kv("a", "1", "b", "2")},
		{"proxy_add_header_map_value", "A", "2", 0, abi.StatusOK, kv("a", "1", "a", "2")},
		{"proxy_replace_header_map_value", "a", "9", 0, abi.StatusOK, kv("a", "9")},
		{"proxy_replace_header_map_value", "c", "9", 0, abi.StatusOK, kv("a", "1", "c", "9")},
		{"proxy_remove_header_map_value", "a", "", 0, abi.StatusOK, nil},
		{"proxy_remove_header_map_value", "zz", "", 0, abi.StatusOK, kv("a", "1")},
		{"proxy_add_header_map_value", "b", "2", 2, abi.StatusBadArgument, kv("a", "1")},
		{"proxy_add_header_map_value", "b", "2", 6, abi.StatusBadArgument, kv("a", "1")},
		{"proxy_replace_header_map_value", "b", "2", 42, abi.StatusBadArgument, kv("a", "1")},
		{"proxy_remove_header_map_value", "a", "", 1, abi.StatusBadArgument, kv("a", "1")},
	}
	for _, tc := range tests {
		t.Run(tc.fn+"/"+tc.key, func(t *testing.T) {
			h := newHostcall(t, tc.fn, Config{})
			s := h.stream()
			s.maps[0] = newHeaderMap(kv("a", "1"))
			k, kl := h.put(argA, []byte(tc.key))
			v, vl := h.put(argB, []byte(tc.value))
			var got abi.Status
			if tc.fn == "proxy_remove_header_map_value" {
				got = h.run(s, phaseRequestHeaders, tc.mt, k, kl)
			} else {
				got = h.run(s, phaseRequestHeaders, tc.mt, k, kl, v, vl)
			}
			if got != tc.want {
				t.Fatalf("status = %v, want %v", got, tc.want)
			}
			if end := s.maps[0].Pairs(); !reflect.DeepEqual(end, tc.end) && !(len(end) == 0 && len(tc.end) == 0) {
				t.Fatalf("map = %+v, want %+v", end, tc.end)
			}
			if tc.fn != "proxy_remove_header_map_value" {
				if got := h.run(s, phaseRequestHeaders, 0, k, kl, badPtr, 1); got != abi.StatusInvalidMemoryAccess {
					t.Errorf("bad value pointer: %v", got)
				}
			}
		})
	}
}

func TestSetHeaderMapPairs(t *testing.T) {
	h := newHostcall(t, "proxy_set_header_map_pairs", Config{})
	s := h.stream()
	s.maps[0] = newHeaderMap(kv("a", "1"))
	p, n := h.put(argA, abi.AppendPairs(nil, kv("X", "1", "y", "2")))
	if got := h.run(s, phaseRequestHeaders, 0, p, n); got != abi.StatusOK {
		t.Fatalf("status %v", got)
	}
	if !reflect.DeepEqual(s.maps[0].Pairs(), kv("x", "1", "y", "2")) {
		t.Fatalf("map = %+v", s.maps[0].Pairs())
	}
	bad, bn := h.put(argB, []byte{5, 0, 0, 0, 1})
	for _, tc := range []struct {
		name     string
		mt, p, n uint64
		want     abi.Status
	}{
		{"malformed pairs keep the map", 0, bad, bn, abi.StatusBadArgument},
		{"unavailable map", 3, p, n, abi.StatusBadArgument},
		{"unknown map", 9, p, n, abi.StatusBadArgument},
		{"out of bounds", 0, badPtr, 8, abi.StatusInvalidMemoryAccess},
	} {
		if got := h.run(s, phaseRequestHeaders, tc.mt, tc.p, tc.n); got != tc.want {
			t.Errorf("%s: status %v, want %v", tc.name, got, tc.want)
		}
	}
	if !reflect.DeepEqual(s.maps[0].Pairs(), kv("x", "1", "y", "2")) {
		t.Fatalf("map changed by failed calls: %+v", s.maps[0].Pairs())
	}
}

func TestGetHeaderMapSize(t *testing.T) {
	h := newHostcall(t, "proxy_get_header_map_size", Config{})
	s := h.stream()
	s.maps[0] = newHeaderMap(kv(":path", "/abc", "k", "vv"))
	if got := h.run(s, phaseRequestHeaders, 0, retP); got != abi.StatusOK || h.u32(retP) != 5+4+1+2 {
		t.Fatalf("status %v size %d, want OK 12 (Envoy's byteSize)", got, h.u32(retP))
	}
	if got := h.run(s, phaseRequestHeaders, 2, retP); got != abi.StatusBadArgument {
		t.Errorf("unavailable map: %v", got)
	}
	if got := h.run(s, phaseRequestHeaders, 0, badPtr); got != abi.StatusInvalidMemoryAccess {
		t.Errorf("bad pointer: %v", got)
	}
}

// keep hands out strings over the stream's own bytes until they run out,
// then over fresh ones; none changes when later ones are made.
func TestKeepStrings(t *testing.T) {
	s := &HTTPStream{}
	type pair struct{ k, v string }
	var kept, want []pair
	for i := range 40 { // 40 pairs of 7 to 8 bytes: past the stream's own bytes
		k, v := fmt.Sprintf("key-%d", i), fmt.Sprintf("v%d", i)
		buf := []byte(k + v) // as in guest memory, overwritten below
		gk, gv := s.keep(buf[:len(k)], buf[len(k):])
		for j := range buf {
			buf[j] = '!'
		}
		kept, want = append(kept, pair{gk, gv}), append(want, pair{k, v})
	}
	if k, v := s.keep(nil, nil); k != "" || v != "" {
		t.Errorf("keep(nil, nil) = %q, %q", k, v)
	}
	if !reflect.DeepEqual(kept, want) {
		t.Errorf("kept %v\nwant %v", kept, want)
	}
	if s.strsUsed == 0 || s.strsUsed > len(s.strs) {
		t.Errorf("strsUsed = %d", s.strsUsed)
	}
}
