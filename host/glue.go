package host

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"math"

	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/sys"

	"github.com/wasm-callout/wasm-callout/abi"
)

// Toolchain glue that real plugins import from env alongside the ABI.

// emscripten_notify_memory_growth(memory_index) is Emscripten's notice that
// memory grew. The host re-reads memory on every access, so it needs no
// action.
func emscriptenNotifyMemoryGrowth(context.Context, api.Module, []uint64) {}

// pthread_equal(a, b) compares thread ids; plugins are single-threaded, so
// it is plain equality (non-zero when equal), as Envoy's host answers.
func pthreadEqual(_ context.Context, _ api.Module, stack []uint64) {
	if uint32(stack[0]) == uint32(stack[1]) {
		stack[0] = 1
	} else {
		stack[0] = 0
	}
}

// abort(message_ptr, file_ptr, line, column) is AssemblyScript's assertion
// failure. It logs the location and stops the plugin the way proc_exit
// does, so the instance is treated as crashed.
func asAbort(ctx context.Context, m api.Module, stack []uint64) {
	in := instanceFrom(ctx)
	msg := fmt.Sprintf("abort called by the plugin at line %d, column %d", uint32(stack[2]), uint32(stack[3]))
	in.log(ctx, abi.LogCritical, []byte(msg))
	// This is how wazero's own proc_exit unwinds a guest: close the module,
	// then panic with an ExitError, which the runtime turns into the
	// call's error. It is a guest exit, not a host crash.
	_ = m.CloseWithExitCode(ctx, 255)
	panic(sys.NewExitError(255))
}

// seed() returns a random f64, AssemblyScript's seed for Math.random.
func asSeed(_ context.Context, _ api.Module, stack []uint64) {
	var b [8]byte
	_, _ = rand.Read(b[:])
	stack[0] = api.EncodeF64(float64(binary.LittleEndian.Uint64(b[:])>>11) / (1 << 53) * math.MaxUint32)
}
