package abi

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
)

func TestPairsRoundTrip(t *testing.T) {
	tests := []struct {
		name  string
		pairs []Pair
		want  []byte
	}{
		{name: "empty", pairs: nil, want: nil},
		{
			// The spec's example {"a":"1","b":"22"}, with the real bytes.
			name:  "spec example",
			pairs: []Pair{{"a", "1"}, {"b", "22"}},
			want: []byte{
				2, 0, 0, 0,
				1, 0, 0, 0, 1, 0, 0, 0,
				1, 0, 0, 0, 2, 0, 0, 0,
				'a', 0, '1', 0, 'b', 0, '2', '2', 0,
			},
		},
		{name: "empty key and value", pairs: []Pair{{"", ""}}, want: []byte{1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}},
		{name: "repeated key", pairs: []Pair{{"set-cookie", "a=1"}, {"set-cookie", "b=2"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := AppendPairs(nil, tc.pairs)
			if tc.want != nil && !bytes.Equal(got, tc.want) {
				t.Fatalf("AppendPairs = %v, want %v", got, tc.want)
			}
			if len(got) != PairsSize(tc.pairs) {
				t.Fatalf("PairsSize = %d, serialized %d bytes", PairsSize(tc.pairs), len(got))
			}
			back, err := DecodePairs(got)
			if err != nil {
				t.Fatal(err)
			}
			if len(back) != len(tc.pairs) || (len(back) > 0 && !reflect.DeepEqual(back, tc.pairs)) {
				t.Fatalf("DecodePairs = %q, want %q", back, tc.pairs)
			}
		})
	}
}

func TestDecodePairsRejects(t *testing.T) {
	valid := AppendPairs(nil, []Pair{{"k", "v"}})
	tests := []struct {
		name string
		in   []byte
	}{
		{"short count", []byte{1, 0}},
		{"count without sizes", []byte{1, 0, 0, 0}},
		{"too many pairs", []byte{0xff, 0xff, 0, 0}},
		{"overrun", func() []byte { b := bytes.Clone(valid); b[4] = 200; return b }()},
		{"missing key NUL", func() []byte { b := bytes.Clone(valid); b[13] = 'x'; return b }()},
		{"missing value NUL", func() []byte { b := bytes.Clone(valid); b[len(b)-1] = 'x'; return b }()},
		{"trailing bytes", append(bytes.Clone(valid), 'x')},
		{"over the size limit", make([]byte, MaxPairsBytes+1)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := DecodePairs(tc.in); !errors.Is(err, ErrBadPairs) {
				t.Fatalf("DecodePairs(%v) error = %v, want ErrBadPairs", tc.in[:min(len(tc.in), 16)], err)
			}
		})
	}
}

func TestDecodePairsOneByteFormIsEmpty(t *testing.T) {
	got, err := DecodePairs([]byte{0})
	if err != nil || len(got) != 0 {
		t.Fatalf("DecodePairs([0]) = %v, %v; want empty", got, err)
	}
}

func FuzzDecodePairs(f *testing.F) {
	f.Add(AppendPairs(nil, []Pair{{"a", "1"}, {"b", "22"}}))
	f.Add([]byte{})
	f.Add([]byte{1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 1, 2, 3})
	f.Fuzz(func(t *testing.T, in []byte) {
		pairs, err := DecodePairs(in)
		if err != nil {
			return
		}
		if len(pairs) > MaxPairs {
			t.Fatalf("decoded %d pairs, limit %d", len(pairs), MaxPairs)
		}
		// Whatever decodes must re-encode to the same bytes (the canonical
		// form); an empty map has several spellings.
		if len(pairs) > 0 && !bytes.Equal(AppendPairs(nil, pairs), in) {
			t.Fatalf("re-encoding %q differs from the input", pairs)
		}
	})
}
