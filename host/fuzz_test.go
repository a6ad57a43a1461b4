package host

import (
	"encoding/binary"
	"sync"
	"testing"

	"github.com/wasm-callout/wasm-callout/abi"
)

// allowedStatuses is, per env function, every status it may return. The
// fuzz test holds the host to it whatever the arguments: garbage pointers
// and enums must produce one of these, never a trap or a host panic.
var allowedStatuses = map[string][]abi.Status{
	"proxy_log":                          {abi.StatusOK, abi.StatusBadArgument, abi.StatusInvalidMemoryAccess},
	"proxy_get_log_level":                {abi.StatusOK, abi.StatusInvalidMemoryAccess},
	"proxy_get_current_time_nanoseconds": {abi.StatusOK, abi.StatusInvalidMemoryAccess},
	"proxy_set_tick_period_milliseconds": {abi.StatusOK},
	"proxy_set_effective_context":        {abi.StatusOK, abi.StatusBadArgument},
	"proxy_done":                         {abi.StatusOK, abi.StatusNotFound},
	"proxy_get_buffer_bytes":             {abi.StatusOK, abi.StatusNotFound, abi.StatusBadArgument, abi.StatusInvalidMemoryAccess},
	"proxy_get_buffer_status":            {abi.StatusOK, abi.StatusNotFound, abi.StatusBadArgument, abi.StatusInvalidMemoryAccess},
	"proxy_set_buffer_bytes":             {abi.StatusOK, abi.StatusNotFound, abi.StatusBadArgument, abi.StatusInvalidMemoryAccess},
	"proxy_get_header_map_pairs":         {abi.StatusOK, abi.StatusBadArgument, abi.StatusInvalidMemoryAccess},
	"proxy_get_header_map_value":         {abi.StatusOK, abi.StatusNotFound, abi.StatusBadArgument, abi.StatusInvalidMemoryAccess},
	"proxy_add_header_map_value":         {abi.StatusOK, abi.StatusBadArgument, abi.StatusInvalidMemoryAccess},
	"proxy_replace_header_map_value":     {abi.StatusOK, abi.StatusBadArgument, abi.StatusInvalidMemoryAccess},
	"proxy_remove_header_map_value":      {abi.StatusOK, abi.StatusBadArgument, abi.StatusInvalidMemoryAccess},
	"proxy_set_header_map_pairs":         {abi.StatusOK, abi.StatusBadArgument, abi.StatusInvalidMemoryAccess},
	"proxy_get_header_map_size":          {abi.StatusOK, abi.StatusBadArgument, abi.StatusInvalidMemoryAccess},
	"proxy_continue_stream":              {abi.StatusOK, abi.StatusBadArgument, abi.StatusUnimplemented},
	"proxy_close_stream":                 {abi.StatusOK, abi.StatusBadArgument},
	"proxy_send_local_response":          {abi.StatusOK, abi.StatusBadArgument, abi.StatusInvalidMemoryAccess},
	"proxy_http_call":                    {abi.StatusOK, abi.StatusBadArgument, abi.StatusInvalidMemoryAccess},
	"proxy_dispatch_http_call":           {abi.StatusOK, abi.StatusBadArgument, abi.StatusInvalidMemoryAccess},
	"proxy_grpc_call":                    {abi.StatusOK, abi.StatusParseFailure, abi.StatusInternalFailure, abi.StatusInvalidMemoryAccess},
	"proxy_grpc_stream":                  {abi.StatusOK, abi.StatusParseFailure, abi.StatusInternalFailure, abi.StatusInvalidMemoryAccess},
	"proxy_grpc_send":                    {abi.StatusOK, abi.StatusNotFound, abi.StatusBadArgument, abi.StatusInvalidMemoryAccess},
	"proxy_grpc_cancel":                  {abi.StatusOK, abi.StatusNotFound},
	"proxy_grpc_close":                   {abi.StatusOK, abi.StatusNotFound},
	"proxy_get_status":                   {abi.StatusOK, abi.StatusInvalidMemoryAccess},
	"proxy_get_shared_data":              {abi.StatusOK, abi.StatusNotFound, abi.StatusInvalidMemoryAccess},
	"proxy_set_shared_data":              {abi.StatusOK, abi.StatusCASMismatch, abi.StatusInternalFailure, abi.StatusInvalidMemoryAccess},
	"proxy_register_shared_queue":        {abi.StatusOK, abi.StatusInvalidMemoryAccess},
	"proxy_resolve_shared_queue":         {abi.StatusOK, abi.StatusNotFound, abi.StatusInvalidMemoryAccess},
	"proxy_enqueue_shared_queue":         {abi.StatusOK, abi.StatusNotFound, abi.StatusInternalFailure, abi.StatusInvalidMemoryAccess},
	"proxy_dequeue_shared_queue":         {abi.StatusOK, abi.StatusNotFound, abi.StatusEmpty, abi.StatusInvalidMemoryAccess},
	"proxy_define_metric":                {abi.StatusOK, abi.StatusBadArgument, abi.StatusInvalidMemoryAccess},
	"proxy_get_metric":                   {abi.StatusOK, abi.StatusNotFound, abi.StatusBadArgument, abi.StatusInvalidMemoryAccess},
	"proxy_record_metric":                {abi.StatusOK, abi.StatusNotFound},
	"proxy_increment_metric":             {abi.StatusOK, abi.StatusNotFound, abi.StatusBadArgument},
	"proxy_get_property":                 {abi.StatusOK, abi.StatusNotFound, abi.StatusInvalidMemoryAccess},
	"proxy_set_property":                 {abi.StatusOK, abi.StatusNotFound, abi.StatusInvalidMemoryAccess},
	"proxy_call_foreign_function":        {abi.StatusNotFound, abi.StatusInvalidMemoryAccess},
	"proxy_get_configuration":            {abi.StatusOK, abi.StatusInvalidMemoryAccess},
	"proxy_continue_request":             {abi.StatusOK, abi.StatusBadArgument},
	"proxy_continue_response":            {abi.StatusOK, abi.StatusBadArgument},
	"proxy_clear_route_cache":            {abi.StatusOK, abi.StatusBadArgument},
}

// The draft names answer as the standard functions they alias, or
// UNIMPLEMENTED.
func init() {
	for draft, std := range map[string]string{
		"proxy_get_buffer": "proxy_get_buffer_bytes", "proxy_set_buffer": "proxy_set_buffer_bytes",
		"proxy_resume_stream": "proxy_continue_stream", "proxy_resume_http_stream": "proxy_continue_stream",
		"proxy_close_http_stream": "proxy_close_stream", "proxy_send_http_response": "proxy_send_local_response",
		"proxy_context_finalize": "proxy_done", "proxy_dequeue_shared_queue_item": "proxy_dequeue_shared_queue",
		"proxy_enqueue_shared_queue_item": "proxy_enqueue_shared_queue", "proxy_create_metric": "proxy_define_metric",
		"proxy_get_metric_value": "proxy_get_metric", "proxy_set_metric_value": "proxy_record_metric",
		"proxy_increment_metric_value": "proxy_increment_metric", "proxy_dispatch_grpc_call": "proxy_grpc_call",
		"proxy_open_grpc_stream": "proxy_grpc_stream", "proxy_send_grpc_stream_message": "proxy_grpc_send",
		"proxy_cancel_grpc_call": "proxy_grpc_cancel", "proxy_close_grpc_call": "proxy_grpc_close",
	} {
		allowedStatuses[draft] = allowedStatuses[std]
	}
	allowedStatuses["proxy_get_map_values"] = allowedStatuses["proxy_get_header_map_value"]
	for _, n := range []string{"proxy_resume_downstream", "proxy_resume_upstream", "proxy_resume_http_request", "proxy_resume_http_response"} {
		allowedStatuses[n] = allowedStatuses["proxy_continue_stream"]
	}
	for n := range stubEnvFuncs {
		if n != "proxy_call_foreign_function" {
			allowedStatuses[n] = []abi.Status{abi.StatusUnimplemented}
		}
	}
}

func TestAllowedStatusesCoverEveryFunction(t *testing.T) {
	for _, hf := range envFuncs {
		_, listed := allowedStatuses[hf.name]
		if listed != (len(hf.results) == 1 && hf.results[0] == i32 && hf.name != "pthread_equal") {
			t.Errorf("%s: listed %v", hf.name, listed)
		}
	}
}

var (
	fuzzMu       sync.Mutex
	fuzzHostcall = map[string]*hostcall{}
)

// FuzzHostcalls feeds every host function arguments drawn from the input:
// small values, values near memory's end, huge ones. Whatever they are,
// the call returns an allowed status and the instance stays healthy.
func FuzzHostcalls(f *testing.F) {
	for i := range envFuncs {
		f.Add(uint8(i), []byte{})
		f.Add(uint8(i), binary.LittleEndian.AppendUint64(nil, 0xffff_fff0_0000_ffff))
		f.Add(uint8(i), []byte{1, 0, 0, 0, 200, 255, 3, 0, 4, 0, 0, 0, 8, 0, 0, 0, 0, 0, 4, 0})
	}
	f.Fuzz(func(t *testing.T, which uint8, raw []byte) {
		hf := envFuncs[int(which)%len(envFuncs)]
		allowed, ok := allowedStatuses[hf.name]
		if !ok {
			return // glue without a status (abort exits by design)
		}
		fuzzMu.Lock()
		defer fuzzMu.Unlock()
		h := fuzzHostcall[hf.name]
		if h == nil {
			h = newHostcall(&testing.T{}, hf.name, Config{Shared: NewSharedState()})
			fuzzHostcall[hf.name] = h
		}
		h.t = t
		s, err := h.p.NewHTTPStream(nil)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		s.maps[0] = newHeaderMap(kv(":path", "/", "a", "b"))
		s.bodies[0] = body{buf: []byte("body"), active: true}
		args := make([]uint64, len(hf.params))
		for i := range args {
			var v uint64
			if len(raw) >= 4 {
				v, raw = uint64(binary.LittleEndian.Uint32(raw)), raw[4:]
			}
			// Steer some arguments to the edges of memory.
			switch v % 7 {
			case 5:
				v = uint64(h.in.mem.Size()) - v%16
			case 6:
				v = 0xffffffff - v%16
			}
			if hf.params[i] == i64 && len(raw) >= 4 {
				v |= uint64(binary.LittleEndian.Uint32(raw)) << 32
				raw = raw[4:]
			}
			args[i] = v
		}
		got := h.run(s, phaseRequestHeaders, args...)
		for _, a := range allowed {
			if got == a {
				return
			}
		}
		t.Fatalf("%s%v returned %v, allowed %v", hf.name, args, got, allowed)
	})
}
