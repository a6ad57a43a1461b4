package abi

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Pair is one header, trailer or metadata entry. Keys repeat when a header
// has several values.
type Pair struct {
	Key, Value string
}

// Limits Envoy applies to pair maps coming from a plugin (proxy-wasm-cpp-host
// limits.h). DecodePairs refuses anything larger.
const (
	MaxPairsBytes = 1 << 20
	MaxPairs      = 1024
)

// Errors returned by DecodePairs. They wrap ErrBadPairs.
var (
	ErrBadPairs = errors.New("malformed pair serialization")
)

// PairsSize is the length of the serialization of pairs.
func PairsSize(pairs []Pair) int {
	if len(pairs) == 0 {
		return 0
	}
	n := 4 + 8*len(pairs)
	for _, p := range pairs {
		n += len(p.Key) + len(p.Value) + 2
	}
	return n
}

// AppendPairs appends the serialization of pairs to dst:
//
//	u32 count, count × (u32 key_len, u32 value_len), count × (key NUL value NUL)
//
// all little-endian. An empty map serializes to nothing, never to the
// one-byte form the spec also allows, because the Rust SDK cannot parse it.
func AppendPairs(dst []byte, pairs []Pair) []byte {
	if len(pairs) == 0 {
		return dst
	}
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(pairs)))
	for _, p := range pairs {
		dst = binary.LittleEndian.AppendUint32(dst, uint32(len(p.Key)))
		dst = binary.LittleEndian.AppendUint32(dst, uint32(len(p.Value)))
	}
	for _, p := range pairs {
		dst = append(dst, p.Key...)
		dst = append(dst, 0)
		dst = append(dst, p.Value...)
		dst = append(dst, 0)
	}
	return dst
}

// DecodePairs parses a pair serialization from a plugin. An empty input, or
// the one-byte form, is an empty map. Anything malformed (short, missing NUL
// terminators, trailing bytes, over MaxPairs or MaxPairsBytes) is an error
// wrapping ErrBadPairs. The result does not alias b.
func DecodePairs(b []byte) ([]Pair, error) {
	if len(b) <= 1 {
		return nil, nil
	}
	if len(b) > MaxPairsBytes {
		return nil, fmt.Errorf("%w: %d bytes exceeds %d", ErrBadPairs, len(b), MaxPairsBytes)
	}
	if len(b) < 4 {
		return nil, fmt.Errorf("%w: %d bytes is too short for a count", ErrBadPairs, len(b))
	}
	n := binary.LittleEndian.Uint32(b)
	if n > MaxPairs {
		return nil, fmt.Errorf("%w: %d pairs exceeds %d", ErrBadPairs, n, MaxPairs)
	}
	sizes := b[4:]
	if uint64(len(sizes)) < 8*uint64(n) {
		return nil, fmt.Errorf("%w: %d pairs need %d size bytes, have %d", ErrBadPairs, n, 8*n, len(sizes))
	}
	data := sizes[8*n:]
	// One allocation holds every string; the pairs slice a second.
	text := string(data)
	pairs := make([]Pair, n)
	off := uint64(0)
	for i := range pairs {
		kl := uint64(binary.LittleEndian.Uint32(sizes[8*i:]))
		vl := uint64(binary.LittleEndian.Uint32(sizes[8*i+4:]))
		end := off + kl + 1 + vl + 1
		if end > uint64(len(text)) {
			return nil, fmt.Errorf("%w: pair %d overruns the buffer", ErrBadPairs, i)
		}
		if text[off+kl] != 0 || text[off+kl+1+vl] != 0 {
			return nil, fmt.Errorf("%w: pair %d is not NUL-terminated", ErrBadPairs, i)
		}
		pairs[i] = Pair{Key: text[off : off+kl], Value: text[off+kl+1 : off+kl+1+vl]}
		off = end
	}
	if off != uint64(len(text)) {
		return nil, fmt.Errorf("%w: %d trailing bytes", ErrBadPairs, uint64(len(text))-off)
	}
	return pairs, nil
}
