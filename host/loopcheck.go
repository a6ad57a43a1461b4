package host

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
)

// Deadlines and loops.
//
// wazero stops a call at its deadline (WithCloseOnContextDone) by compiling,
// at every loop header, a call out of the guest into Go that checks whether
// the module was closed. Code from stock Go spends most of its time in
// loops — every Go function body is itself a loop, its resume-point
// dispatcher — so that exit runs on nearly every call and iteration: it made
// Coraza with the Core Rule Set 2.4 times slower than the same module
// without deadlines (RATIONALE.md has the figures).
//
// instrumentLoops rewrites the module instead: every loop header counts
// down a module-private global and, only when it reaches zero, calls the
// host function loopCheckModule.loopCheckName, which fails the call if its
// context is done and otherwise returns a fresh budget. The runtime is then
// built without WithCloseOnContextDone. A call is stopped as before, within
// loopBudget iterations of its deadline, and the Go scheduler still gets a
// preemption point every loopBudget iterations, but the common path is an
// inline decrement and branch.
//
// The rewrite needs every instruction of every function decoded, to shift
// function indices past the new import. A module using an instruction the
// decoder does not know (exceptions, say) is left as it is, and compiled
// with wazero's own checks.

const (
	loopCheckModule = "wasm-callout"
	loopCheckName   = "loop_check"
	// loopBudget is how many loop iterations run between checks: enough to
	// make the exit rare, few enough (tens of microseconds) to stop a
	// runaway call and let a stop-the-world pause in promptly.
	loopBudget = 1 << 13
)

// errNotInstrumentable is returned for modules instrumentLoops leaves as
// they are.
var errNotInstrumentable = errors.New("module not instrumentable")

// loopCheck is the host side of an instrumented loop header: it ends the
// call if its context is done (the watchdog cancelled it) and otherwise
// grants the guest another loopBudget iterations.
func loopCheck(ctx context.Context, stack []uint64) {
	if ctx.Err() != nil {
		if cause := context.Cause(ctx); cause != nil {
			panic(cause)
		}
		panic(ctx.Err())
	}
	stack[0] = loopBudget
}

// Section ids of the binary format.
const (
	secCustom   = 0
	secType     = 1
	secImport   = 2
	secFunction = 3
	secTable    = 4
	secMemory   = 5
	secGlobal   = 6
	secExport   = 7
	secStart    = 8
	secElement  = 9
	secCode     = 10
	secData     = 11
	secDataCnt  = 12
)

// instrumentLoops returns wasm with the loop budget described above, or
// errNotInstrumentable (wrapped) when it cannot rewrite the module.
func instrumentLoops(wasm []byte) ([]byte, error) {
	if len(wasm) < 8 || string(wasm[:4]) != "\x00asm" || binary.LittleEndian.Uint32(wasm[4:8]) != 1 {
		return nil, fmt.Errorf("%w: not a version 1 binary", errNotInstrumentable)
	}
	type section struct {
		id   byte
		body []byte
	}
	var sections []section
	r := &reader{b: wasm, pos: 8}
	for r.pos < len(r.b) {
		id := r.byte()
		n := r.u32()
		body := r.bytes(int(n))
		if r.err != nil {
			return nil, fmt.Errorf("%w: %v", errNotInstrumentable, r.err)
		}
		sections = append(sections, section{id, body})
	}
	find := func(id byte) int {
		for i, s := range sections {
			if s.id == id {
				return i
			}
		}
		return -1
	}
	ti, ii, ci := find(secType), find(secImport), find(secCode)
	if ti < 0 || ci < 0 {
		return nil, fmt.Errorf("%w: no type or code section", errNotInstrumentable)
	}
	if t := find(secTable); t >= 0 && len(sections[t].body) > 1 && sections[t].body[1] == 0x40 {
		return nil, fmt.Errorf("%w: table initializers", errNotInstrumentable)
	}

	// The new type () -> i32 goes last in the type section.
	types := &reader{b: sections[ti].body}
	nTypes := types.u32()
	if types.err != nil {
		return nil, fmt.Errorf("%w: type section: %v", errNotInstrumentable, types.err)
	}
	typeIdx := nTypes
	newTypes := appendU32(nil, nTypes+1)
	newTypes = append(newTypes, types.b[types.pos:]...)
	sections[ti].body = append(newTypes, 0x60, 0x00, 0x01, 0x7f)

	// The import goes last among the imports; count imported functions
	// and globals on the way.
	var nFuncImports, nGlobalImports uint32
	var imports []byte
	if ii >= 0 {
		ir := &reader{b: sections[ii].body}
		n := ir.u32()
		for range n {
			mod := ir.name()
			ir.name()
			if mod == loopCheckModule {
				return nil, fmt.Errorf("%w: the module imports from %q", errNotInstrumentable, loopCheckModule)
			}
			switch kind := ir.byte(); kind {
			case 0x00:
				ir.u32()
				nFuncImports++
			case 0x01:
				ir.byte()
				ir.limits()
			case 0x02:
				ir.limits()
			case 0x03:
				ir.byte()
				ir.byte()
				nGlobalImports++
			default:
				ir.fail("import kind %#x", kind)
			}
		}
		if ir.err != nil {
			return nil, fmt.Errorf("%w: import section: %v", errNotInstrumentable, ir.err)
		}
		imports = append(appendU32(nil, n+1), ir.b[lebLen(ir.b):]...)
	} else {
		imports = appendU32(nil, 1)
	}
	imports = appendName(imports, loopCheckModule)
	imports = appendName(imports, loopCheckName)
	imports = append(imports, 0x00)
	imports = appendU32(imports, typeIdx)
	checkFunc := nFuncImports // the new import's function index

	shift := func(idx uint32) uint32 {
		if idx >= checkFunc {
			return idx + 1
		}
		return idx
	}

	// The budget global goes last among the globals.
	gi := find(secGlobal)
	var budgetGlobal uint32
	newGlobal := []byte{0x7f, 0x01, 0x41, 0x00, 0x0b} // mut i32 = 0: the first loop header checks
	if gi >= 0 {
		gr := &reader{b: sections[gi].body}
		n := gr.u32()
		out := appendU32(nil, n+1)
		for range n {
			start := gr.pos
			gr.byte()
			gr.byte()
			out = append(out, gr.b[start:gr.pos]...)
			out = gr.constExpr(out, shift)
		}
		if gr.err != nil || gr.pos != len(gr.b) {
			return nil, fmt.Errorf("%w: global section: %v", errNotInstrumentable, gr.err)
		}
		budgetGlobal = nGlobalImports + n
		sections[gi].body = append(out, newGlobal...)
	} else {
		budgetGlobal = nGlobalImports
	}

	// Exports, start and elements name functions by index.
	if ei := find(secExport); ei >= 0 {
		er := &reader{b: sections[ei].body}
		n := er.u32()
		out := appendU32(nil, n)
		for range n {
			out = appendName(out, er.name())
			kind := er.byte()
			idx := er.u32()
			if kind == 0x00 {
				idx = shift(idx)
			}
			out = appendU32(append(out, kind), idx)
		}
		if er.err != nil || er.pos != len(er.b) {
			return nil, fmt.Errorf("%w: export section: %v", errNotInstrumentable, er.err)
		}
		sections[ei].body = out
	}
	if si := find(secStart); si >= 0 {
		sr := &reader{b: sections[si].body}
		idx := sr.u32()
		if sr.err != nil {
			return nil, fmt.Errorf("%w: start section: %v", errNotInstrumentable, sr.err)
		}
		sections[si].body = appendU32(nil, shift(idx))
	}
	if ei := find(secElement); ei >= 0 {
		out, err := rewriteElements(sections[ei].body, shift)
		if err != nil {
			return nil, fmt.Errorf("%w: element section: %v", errNotInstrumentable, err)
		}
		sections[ei].body = out
	}

	// The code: shift calls and ref.func, count down at loop headers.
	check := []byte{0x23}
	check = appendU32(check, budgetGlobal) // global.get $budget
	check = append(check, 0x45, 0x04, 0x40, 0x10)
	check = appendU32(check, checkFunc) //   i32.eqz if call $check
	check = append(check, 0x24)
	check = appendU32(check, budgetGlobal) //   global.set $budget
	check = append(check, 0x0b, 0x23)      // end global.get $budget
	check = appendU32(check, budgetGlobal)
	check = append(check, 0x41, 0x01, 0x6b, 0x24) // i32.const 1 i32.sub global.set $budget
	check = appendU32(check, budgetGlobal)
	code, err := rewriteCode(sections[ci].body, shift, check)
	if err != nil {
		return nil, fmt.Errorf("%w: code section: %v", errNotInstrumentable, err)
	}
	sections[ci].body = code

	// Function names in the name section follow the shift; other name
	// subsections are dropped rather than left wrong.
	for i, s := range sections {
		if s.id == secCustom {
			if out, ok := rewriteNames(s.body, shift); ok {
				sections[i].body = out
			}
		}
	}

	out := append([]byte(nil), wasm[:8]...)
	wroteImports, wroteGlobals := false, false
	emit := func(id byte, body []byte) {
		out = append(out, id)
		out = appendU32(out, uint32(len(body)))
		out = append(out, body...)
	}
	for _, s := range sections {
		// Sections are ordered; a missing import or global section is
		// created where it belongs.
		if !wroteImports && s.id != secCustom && s.id != secType && s.id != secImport {
			emit(secImport, imports)
			wroteImports = true
		}
		if !wroteGlobals && gi < 0 && s.id != secCustom && order(s.id) > order(secGlobal) {
			emit(secGlobal, append(appendU32(nil, 1), newGlobal...))
			wroteGlobals = true
		}
		switch s.id {
		case secImport:
			emit(secImport, imports)
			wroteImports = true
		default:
			emit(s.id, s.body)
		}
	}
	return out, nil
}

// order is a section's place in the required order (data count sits
// between element and code).
func order(id byte) int {
	switch id {
	case secDataCnt:
		return 10 // after element (9)
	case secCode:
		return 11
	case secData:
		return 12
	}
	return int(id)
}

// lebLen returns the length of the LEB128 number at the start of b.
func lebLen(b []byte) int {
	for i, c := range b {
		if c&0x80 == 0 {
			return i + 1
		}
	}
	return len(b)
}
