package host

import (
	"bytes"
	"context"
	"log/slog"

	"github.com/tetratelabs/wazero/api"

	"github.com/wasm-callout/wasm-callout/abi"
)

// LogLevelToSlog maps a plugin log level onto slog: trace and critical
// extend slog's four levels below Debug and above Error.
func LogLevelToSlog(l abi.LogLevel) slog.Level {
	switch l {
	case abi.LogTrace:
		return slog.LevelDebug - 4
	case abi.LogDebug:
		return slog.LevelDebug
	case abi.LogInfo:
		return slog.LevelInfo
	case abi.LogWarn:
		return slog.LevelWarn
	case abi.LogError:
		return slog.LevelError
	}
	return slog.LevelError + 4
}

// SlogToLogLevel is the plugin log level that shows what slog level l
// shows: the answer to proxy_get_log_level.
func SlogToLogLevel(l slog.Level) abi.LogLevel {
	switch {
	case l < slog.LevelDebug:
		return abi.LogTrace
	case l < slog.LevelInfo:
		return abi.LogDebug
	case l < slog.LevelWarn:
		return abi.LogInfo
	case l < slog.LevelError:
		return abi.LogWarn
	case l <= slog.LevelError:
		return abi.LogError
	}
	return abi.LogCritical
}

// minLogLevel is the lowest plugin level the logger shows.
func (in *instance) minLogLevel(ctx context.Context) abi.LogLevel {
	for l := abi.LogTrace; l < abi.LogCritical; l++ {
		if in.plugin.cfg.Logger.Enabled(ctx, LogLevelToSlog(l)) {
			return l
		}
	}
	return abi.LogCritical
}

// log writes one plugin message, tagged as Envoy tags it with the plugin
// name, root id and vm id, cut at maxLogBytes.
func (in *instance) log(ctx context.Context, level abi.LogLevel, msg []byte) {
	if len(msg) > maxLogBytes {
		msg = append(msg[:maxLogBytes:maxLogBytes], "…(truncated)"...)
	}
	cfg := &in.plugin.cfg
	if cfg.PluginLog != nil && cfg.Logger.Enabled(ctx, LogLevelToSlog(level)) {
		cfg.PluginLog(level, string(msg))
	}
	cfg.Logger.LogAttrs(ctx, LogLevelToSlog(level), string(msg),
		slog.String("plugin", cfg.Name), slog.String("root_id", cfg.RootID), slog.String("vm_id", cfg.VMID))
}

// proxy_log(level, message_ptr, message_size) logs a message at a
// proxy_log_level_t level. Messages below the logger's level are dropped
// without being read. Statuses: OK; BAD_ARGUMENT for a level above
// critical; INVALID_MEMORY_ACCESS.
func proxyLog(ctx context.Context, _ api.Module, stack []uint64) {
	in := instanceFrom(ctx)
	level := abi.LogLevel(u32(stack, 0))
	if !level.Valid() {
		ret(stack, abi.StatusBadArgument)
		return
	}
	if !in.plugin.cfg.Logger.Enabled(ctx, LogLevelToSlog(level)) {
		if !in.writable(u32(stack, 1), u32(stack, 2)) {
			ret(stack, abi.StatusInvalidMemoryAccess)
			return
		}
		ret(stack, abi.StatusOK)
		return
	}
	msg, ok := in.read(u32(stack, 1), u32(stack, 2))
	if !ok {
		ret(stack, abi.StatusInvalidMemoryAccess)
		return
	}
	in.log(ctx, level, msg)
	ret(stack, abi.StatusOK)
}

// proxy_get_log_level(ret_level_ptr) writes the lowest level the host logs
// (u32). Statuses: OK, INVALID_MEMORY_ACCESS.
func getLogLevel(ctx context.Context, _ api.Module, stack []uint64) {
	in := instanceFrom(ctx)
	if !in.writeU32(u32(stack, 0), uint32(in.minLogLevel(ctx))) {
		ret(stack, abi.StatusInvalidMemoryAccess)
		return
	}
	ret(stack, abi.StatusOK)
}

// logWriter receives WASI fd_write to stdout (info) or stderr (error) and
// logs it line by line, like Envoy's host does, except for a runtime's
// crash report: from a line that starts one (see crashStart) to the end of
// the guest call (which a crash ends by a trap or an exit), the lines are
// collected and logged as one record, the first line as the message and
// the rest in a "stack" attribute. It is only written during calls, under
// the instance lock; endCall runs when the outermost call returns.
type logWriter struct {
	in      *instance
	level   abi.LogLevel
	partial []byte

	crash     []byte // the first line of the crash report being collected; nil when none
	stack     []byte // the lines after it, each ending in '\n'
	truncated bool   // the stack passed maxLogBytes
}

// crashStart reports whether line begins the crash report of a runtime
// that writes one through WASI: Go's (panic, and fatal error for out of
// memory, deadlock and corrupt state), TinyGo's (panic) and Rust's default
// panic hook ("thread 'main' panicked at src/lib.rs:3:5:"; the proxy-wasm
// SDK's own hook uses proxy_log instead, one record already). What follows
// up to the end of the call is the report: goroutine headers, frames,
// "[recovered]" chains, Rust's message and backtrace note.
func crashStart(line []byte) bool {
	if bytes.HasPrefix(line, []byte("panic: ")) || bytes.HasPrefix(line, []byte("fatal error: ")) {
		return true
	}
	return bytes.HasPrefix(line, []byte("thread '")) && bytes.Contains(line, []byte("' panicked at "))
}

func (w *logWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			if len(w.partial)+len(p) > maxLogBytes {
				w.flush(p)
			} else {
				w.partial = append(w.partial, p...)
			}
			break
		}
		w.flush(p[:i])
		p = p[i+1:]
	}
	return n, nil
}

func (w *logWriter) flush(tail []byte) {
	line := append(w.partial, tail...)
	w.partial = w.partial[:0]
	switch {
	case w.crash != nil:
		if len(w.stack)+len(line) >= maxLogBytes {
			w.truncated = true
			return
		}
		w.stack = append(append(w.stack, line...), '\n')
	case crashStart(line):
		w.crash = append([]byte(nil), line...)
	default:
		w.in.log(w.in.ctx, w.level, line)
	}
}

// endCall logs the crash report collected during the call that just
// returned, if any, as one record. A line left without its newline
// belongs to the report; otherwise it waits for the next call.
func (w *logWriter) endCall() {
	if w == nil || w.crash == nil {
		return
	}
	if len(w.partial) > 0 {
		w.flush(nil)
	}
	stack := string(bytes.TrimSpace(w.stack))
	if w.truncated {
		stack += "\n…(truncated)"
	}
	cfg := &w.in.plugin.cfg
	cfg.Logger.LogAttrs(w.in.ctx, LogLevelToSlog(w.level), string(w.crash), slog.String("stack", stack),
		slog.String("plugin", cfg.Name), slog.String("root_id", cfg.RootID), slog.String("vm_id", cfg.VMID))
	w.crash, w.stack, w.truncated = nil, w.stack[:0], false
}
