package host

import (
	"errors"
	"fmt"
)

// reader decodes the binary format; the first error sticks and later reads
// return zeros.
type reader struct {
	b   []byte
	pos int
	err error
}

func (r *reader) fail(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("at %#x: %s", r.pos, fmt.Sprintf(format, args...))
	}
	r.pos = len(r.b)
}

func (r *reader) byte() byte {
	if r.pos >= len(r.b) {
		r.fail("unexpected end")
		return 0
	}
	c := r.b[r.pos]
	r.pos++
	return c
}

func (r *reader) bytes(n int) []byte {
	if n < 0 || n > len(r.b)-r.pos {
		r.fail("length %d past the end", n)
		return nil
	}
	b := r.b[r.pos : r.pos+n]
	r.pos += n
	return b
}

// leb skips a LEB128 number of at most maxBytes bytes and returns its
// value's low 64 bits.
func (r *reader) leb(maxBytes int) uint64 {
	var v uint64
	for i := 0; i < maxBytes; i++ {
		c := r.byte()
		if r.err != nil {
			return 0
		}
		if i < 10 {
			v |= uint64(c&0x7f) << (7 * i)
		}
		if c&0x80 == 0 {
			return v
		}
	}
	r.fail("LEB128 too long")
	return 0
}

func (r *reader) u32() uint32 { return uint32(r.leb(5)) }

func (r *reader) name() string { return string(r.bytes(int(r.u32()))) }

func (r *reader) limits() {
	flags := r.byte()
	r.leb(10)
	if flags&1 != 0 {
		r.leb(10)
	}
}

func appendU32(b []byte, v uint32) []byte {
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if v == 0 {
			return append(b, c)
		}
		b = append(b, c|0x80)
	}
}

func appendName(b []byte, s string) []byte {
	return append(appendU32(b, uint32(len(s))), s...)
}

// constExpr copies a constant expression up to and including its end,
// shifting ref.func indices.
func (r *reader) constExpr(out []byte, shift func(uint32) uint32) []byte {
	for r.err == nil {
		start := r.pos
		switch op := r.byte(); op {
		case 0x0b:
			return append(out, op)
		case 0xd2:
			out = appendU32(append(out, op), shift(r.u32()))
			continue
		case 0x41, 0x42:
			r.leb(10)
		case 0x43:
			r.bytes(4)
		case 0x44:
			r.bytes(8)
		case 0x23:
			r.u32()
		case 0xd0:
			r.byte()
		case 0x6a, 0x6b, 0x6c, 0x7c, 0x7d, 0x7e: // extended constant arithmetic
		case 0xfd:
			if r.u32() != 12 {
				r.fail("SIMD op in a constant expression")
			}
			r.bytes(16)
		default:
			r.fail("opcode %#x in a constant expression", op)
		}
		out = append(out, r.b[start:r.pos]...)
	}
	return out
}

// rewriteElements shifts the function indices of an element section.
func rewriteElements(body []byte, shift func(uint32) uint32) ([]byte, error) {
	r := &reader{b: body}
	n := r.u32()
	out := appendU32(nil, n)
	for range n {
		flags := r.u32()
		out = appendU32(out, flags)
		if flags > 7 {
			return nil, fmt.Errorf("element flags %d", flags)
		}
		if flags&2 != 0 && flags&1 == 0 { // explicit table index
			out = appendU32(out, r.u32())
		}
		if flags&1 == 0 { // active: offset
			out = r.constExpr(out, shift)
		}
		if flags&3 != 0 { // elemkind or reftype
			out = append(out, r.byte())
		}
		count := r.u32()
		out = appendU32(out, count)
		for range count {
			if flags&4 == 0 {
				out = appendU32(out, shift(r.u32()))
			} else {
				out = r.constExpr(out, shift)
			}
		}
	}
	if r.err == nil && r.pos != len(body) {
		r.fail("trailing bytes")
	}
	return out, r.err
}

// rewriteCode shifts the function indices in every body and inserts check
// after every loop's block type.
func rewriteCode(body []byte, shift func(uint32) uint32, check []byte) ([]byte, error) {
	r := &reader{b: body}
	n := r.u32()
	out := appendU32(make([]byte, 0, len(body)+len(body)/8), n)
	var fn []byte
	for range n {
		size := r.u32()
		f := &reader{b: r.bytes(int(size))}
		fn = fn[:0]
		// Locals.
		locals := f.u32()
		for range locals {
			f.u32()
			f.byte()
		}
		fn = append(fn, f.b[:f.pos]...)
		fn = f.instructions(fn, shift, check)
		if f.err != nil {
			return nil, f.err
		}
		out = appendU32(out, uint32(len(fn)))
		out = append(out, fn...)
	}
	if r.err == nil && r.pos != len(body) {
		r.fail("trailing bytes")
	}
	return out, r.err
}

// errUnknownOpcode marks an instruction the rewriter does not decode.
var errUnknownOpcode = errors.New("unknown opcode")

// instructions copies a function body's instructions to out, shifting
// call and ref.func indices and inserting check after each loop header.
func (r *reader) instructions(out []byte, shift func(uint32) uint32, check []byte) []byte {
	for r.pos < len(r.b) && r.err == nil {
		start := r.pos
		op := r.byte()
		switch {
		case op == 0x02 || op == 0x04: // block, if
			r.blockType()
		case op == 0x03: // loop
			r.blockType()
			out = append(out, r.b[start:r.pos]...)
			out = append(out, check...)
			continue
		case op == 0x10 || op == 0x12: // call, return_call
			out = appendU32(append(out, op), shift(r.u32()))
			continue
		case op == 0xd2: // ref.func
			out = appendU32(append(out, op), shift(r.u32()))
			continue
		case op == 0x0c || op == 0x0d: // br, br_if
			r.u32()
		case op == 0x0e: // br_table
			for n := r.u32(); n > 0 && r.err == nil; n-- {
				r.u32()
			}
			r.u32()
		case op == 0x11 || op == 0x13: // call_indirect, return_call_indirect
			r.u32()
			r.u32()
		case op == 0x1c: // select t*
			for n := r.u32(); n > 0 && r.err == nil; n-- {
				r.byte()
			}
		case op >= 0x20 && op <= 0x26: // local.*, global.*, table.get/set
			r.u32()
		case op >= 0x28 && op <= 0x3e: // loads and stores
			r.memarg()
		case op == 0x3f || op == 0x40: // memory.size, memory.grow
			r.u32()
		case op == 0x41:
			r.leb(5)
		case op == 0x42:
			r.leb(10)
		case op == 0x43:
			r.bytes(4)
		case op == 0x44:
			r.bytes(8)
		case op == 0xd0: // ref.null t
			r.byte()
		case op == 0x00 || op == 0x01 || op == 0x05 || op == 0x0b || op == 0x0f || op == 0x1a || op == 0x1b ||
			(op >= 0x45 && op <= 0xc4) || op == 0xd1:
			// no immediates
		case op == 0xfc:
			r.prefixedFC()
		case op == 0xfd:
			r.prefixedFD()
		case op == 0xfe:
			if sub := r.u32(); sub == 3 { // atomic.fence
				r.byte()
			} else {
				r.memarg()
			}
		default:
			r.err = fmt.Errorf("%w %#x at %#x", errUnknownOpcode, op, start)
		}
		out = append(out, r.b[start:r.pos]...)
	}
	return out
}

func (r *reader) blockType() { r.leb(5) } // 0x40, a value type, or an s33 type index

func (r *reader) memarg() {
	if align := r.u32(); align&0x40 != 0 {
		r.u32() // memory index (multi-memory)
	}
	r.leb(10)
}

func (r *reader) prefixedFC() {
	switch sub := r.u32(); {
	case sub <= 7: // saturating truncations
	case sub == 8, sub == 10, sub == 12, sub == 14: // memory.init, memory.copy, table.init, table.copy
		r.u32()
		r.u32()
	case sub == 9, sub == 11, sub == 13, sub >= 15 && sub <= 17:
		r.u32()
	default:
		r.err = fmt.Errorf("%w 0xfc %d", errUnknownOpcode, sub)
	}
}

func (r *reader) prefixedFD() {
	switch sub := r.u32(); {
	case sub <= 11 || sub == 92 || sub == 93: // loads, stores
		r.memarg()
	case sub == 12 || sub == 13: // v128.const, i8x16.shuffle
		r.bytes(16)
	case sub >= 21 && sub <= 34: // extract and replace lane
		r.byte()
	case sub >= 84 && sub <= 91: // load and store lane
		r.memarg()
		r.byte()
	case sub <= 275:
		// no immediates
	default:
		r.err = fmt.Errorf("%w 0xfd %d", errUnknownOpcode, sub)
	}
}

// rewriteNames shifts the function indices of a "name" custom section's
// function names; it drops local names and the other subsections, whose
// indices it does not rewrite. ok is false for other custom sections.
func rewriteNames(body []byte, shift func(uint32) uint32) ([]byte, bool) {
	r := &reader{b: body}
	if r.name() != "name" || r.err != nil {
		return nil, false
	}
	out := append([]byte(nil), body[:r.pos]...)
	for r.pos < len(r.b) && r.err == nil {
		id := r.byte()
		sub := &reader{b: r.bytes(int(r.u32()))}
		switch id {
		case 0: // module name
			out = appendU32(append(out, id), uint32(len(sub.b)))
			out = append(out, sub.b...)
		case 1: // function names
			n := sub.u32()
			m := appendU32(nil, n)
			for range n {
				m = appendU32(m, shift(sub.u32()))
				m = appendName(m, sub.name())
			}
			if sub.err != nil {
				return nil, false
			}
			out = appendU32(append(out, id), uint32(len(m)))
			out = append(out, m...)
		}
	}
	if r.err != nil {
		return appendName(nil, "name"), true // a broken name section: drop its content
	}
	return out, true
}
