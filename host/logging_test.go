package host

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/wasm-callout/wasm-callout/abi"
)

// recorder is a slog handler that keeps records at or above its level.
type recorder struct {
	mu    sync.Mutex
	level slog.Level
	recs  []slog.Record
}

func (r *recorder) Enabled(_ context.Context, l slog.Level) bool { return l >= r.level }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	r.recs = append(r.recs, rec)
	r.mu.Unlock()
	return nil
}
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *recorder) WithGroup(string) slog.Handler      { return r }

func (r *recorder) messages() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, rec := range r.recs {
		out = append(out, rec.Level.String()+" "+rec.Message)
	}
	return out
}

func TestProxyLog(t *testing.T) {
	rec := &recorder{level: slog.LevelInfo}
	h := newHostcall(t, "proxy_log", Config{Name: "p", Logger: slog.New(rec)})
	long := strings.Repeat("x", maxLogBytes+10)
	tests := []struct {
		level abi.LogLevel
		msg   string
		want  abi.Status
	}{
		{abi.LogInfo, "hello", abi.StatusOK},
		{abi.LogDebug, "hidden", abi.StatusOK},
		{abi.LogCritical, "fire", abi.StatusOK},
		{abi.LogWarn, long, abi.StatusOK},
		{6, "bad level", abi.StatusBadArgument},
	}
	for _, tc := range tests {
		p, n := h.put(argA, []byte(tc.msg))
		if got := h.run(nil, phaseNone, uint64(tc.level), p, n); got != tc.want {
			t.Errorf("log(%v): %v, want %v", tc.level, got, tc.want)
		}
	}
	for _, lvl := range []uint64{uint64(abi.LogDebug), uint64(abi.LogError)} {
		if got := h.run(nil, phaseNone, lvl, badPtr, 5); got != abi.StatusInvalidMemoryAccess {
			t.Errorf("bad pointer at level %d: %v", lvl, got)
		}
	}
	got := rec.messages()
	if len(got) != 3 || got[0] != "INFO hello" || got[1] != "ERROR+4 fire" || !strings.HasSuffix(got[2], "…(truncated)") || len(got[2]) > maxLogBytes+40 {
		t.Errorf("logged %d records: %.80q", len(got), got)
	}
}

func TestGetLogLevel(t *testing.T) {
	for _, tc := range []struct {
		slog slog.Level
		want abi.LogLevel
	}{{slog.LevelDebug - 4, abi.LogTrace}, {slog.LevelDebug, abi.LogDebug}, {slog.LevelInfo, abi.LogInfo}, {slog.LevelWarn, abi.LogWarn}, {slog.LevelError, abi.LogError}, {slog.LevelError + 4, abi.LogCritical}} {
		h := newHostcall(t, "proxy_get_log_level", Config{Logger: slog.New(&recorder{level: tc.slog})})
		if st := h.run(nil, phaseNone, retP); st != abi.StatusOK || abi.LogLevel(h.u32(retP)) != tc.want {
			t.Errorf("slog %v: %v %v, want %v", tc.slog, st, abi.LogLevel(h.u32(retP)), tc.want)
		}
		if LogLevelToSlog(tc.want) != tc.slog || SlogToLogLevel(tc.slog) != tc.want {
			t.Errorf("level mapping is not a round trip for %v", tc.want)
		}
	}
}

func TestLogWriterLines(t *testing.T) {
	rec := &recorder{level: slog.LevelInfo}
	h := newHostcall(t, "proxy_log", Config{Logger: slog.New(rec)})
	w := &logWriter{in: h.in, level: abi.LogError}
	w.Write([]byte("one\ntw"))
	w.Write([]byte("o\n"))
	w.Write([]byte("three"))
	if got := rec.messages(); len(got) != 2 || got[0] != "ERROR one" || got[1] != "ERROR two" {
		t.Errorf("lines = %q", got)
	}
}
