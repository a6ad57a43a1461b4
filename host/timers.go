package host

import (
	"context"
	"time"

	"github.com/tetratelabs/wazero/api"

	"github.com/wasm-callout/wasm-callout/abi"
)

// proxy_get_current_time_nanoseconds(ret_time_ptr) writes the wall-clock
// time as u64 nanoseconds since the Unix epoch. Statuses: OK,
// INVALID_MEMORY_ACCESS.
func getCurrentTimeNanoseconds(ctx context.Context, _ api.Module, stack []uint64) {
	in := instanceFrom(ctx)
	now := time.Now
	if in.plugin.cfg.Now != nil {
		now = in.plugin.cfg.Now
	}
	if !in.writeU64(u32(stack, 0), uint64(now().UnixNano())) {
		ret(stack, abi.StatusInvalidMemoryAccess)
		return
	}
	ret(stack, abi.StatusOK)
}

// proxy_set_tick_period_milliseconds(period) arms (or, with 0, disarms) the
// timer of the caller's root context on this instance: proxy_on_tick(root)
// then runs every period, serialized with the instance's other calls, the
// first one period from now. A root context has one timer, as in Envoy; a
// stream context setting it sets its root's. Status: OK.
func setTickPeriodMilliseconds(ctx context.Context, _ api.Module, stack []uint64) {
	in := instanceFrom(ctx)
	d := time.Duration(u32(stack, 0)) * time.Millisecond
	// Keep only the newest period if the executor has not read the last.
	select {
	case <-in.tick:
	default:
	}
	in.tick <- d
	ret(stack, abi.StatusOK)
}
