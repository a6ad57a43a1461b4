package host

import (
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"

	"github.com/wasm-callout/wasm-callout/abi"
)

// Config.Trace reports callbacks and host calls in order, with i32
// arguments zero-extended; Config.PluginLog gets the plugin's lines the
// logger is enabled for.
func TestTraceAndPluginLog(t *testing.T) {
	var mu sync.Mutex
	var calls []string
	var logs []string
	cfg := Config{
		Instances: 1,
		Logger:    slog.New(slog.NewTextHandler(io.Discard, nil)), // info and up
		Trace: func(c TraceCall) {
			mu.Lock()
			defer mu.Unlock()
			name := c.Name
			if c.Callback {
				name = "→" + name
			}
			calls = append(calls, name)
			for _, p := range c.Params {
				if p>>32 != 0 && c.Name != "proxy_record_metric" && c.Name != "proxy_increment_metric" {
					t.Errorf("%s: param %#x is not zero-extended", c.Name, p)
				}
			}
		},
		PluginLog: func(level abi.LogLevel, msg string) {
			mu.Lock()
			logs = append(logs, level.String()+" "+msg)
			mu.Unlock()
		},
	}
	p := loadFile(t, "hostcalls/proxy_log", cfg)
	h := &hostcall{t: t, p: p, in: p.pool.slots[0].Load()}
	h.call = h.in.mod.ExportedFunction("call")
	mu.Lock()
	calls = nil
	mu.Unlock()
	ptr, n := h.put(argA, []byte("hello"))
	if st := h.run(nil, phaseNone, uint64(abi.LogInfo), ptr, n); st != abi.StatusOK {
		t.Fatal(st)
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Contains(calls, "proxy_log") {
		t.Errorf("calls %q lack proxy_log", calls)
	}
	if len(logs) != 1 || logs[0] != abi.LogInfo.String()+" hello" {
		t.Errorf("plugin logs %q, want the one info line", logs)
	}
}

// Lines below the logger's level reach neither the logger nor PluginLog.
func TestPluginLogFollowsLoggerLevel(t *testing.T) {
	var logs []string
	p := loadFile(t, "hostcalls/proxy_log", Config{
		Instances: 1, Logger: slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelWarn})),
		PluginLog: func(level abi.LogLevel, msg string) { logs = append(logs, msg) },
	})
	h := &hostcall{t: t, p: p, in: p.pool.slots[0].Load()}
	h.call = h.in.mod.ExportedFunction("call")
	ptr, n := h.put(argA, []byte("quiet"))
	h.run(nil, phaseNone, uint64(abi.LogInfo), ptr, n)
	ptr, n = h.put(argA, []byte("loud"))
	h.run(nil, phaseNone, uint64(abi.LogError), ptr, n)
	if len(logs) != 1 || logs[0] != "loud" {
		t.Errorf("plugin logs %q, want only the error line", logs)
	}
}
