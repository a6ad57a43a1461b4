package host

import (
	"context"
	"log/slog"
	"slices"
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

// recordStack returns the "stack" attribute of rec, and whether it has one.
func recordStack(rec slog.Record) (string, bool) {
	var stack string
	found := false
	rec.Attrs(func(a slog.Attr) bool {
		if a.Key == "stack" {
			stack, found = a.Value.String(), true
		}
		return true
	})
	return stack, found
}

// A runtime's crash report is one record, from its first line to the end
// of the call; lines outside one are a record each.
func TestLogWriterCrashReport(t *testing.T) {
	goPanic := "panic: boom\n\ngoroutine 1 [running]:\nmain.f()\n\t/src/main.go:3 +0x1\n"
	tests := []struct {
		name   string
		writes []string // one call's writes
		want   []string // "LEVEL message | stack"
	}{
		{"plain lines", []string{"a\nb\n"}, []string{"ERROR a | ", "ERROR b | "}},
		{"go panic", []string{"before\n", goPanic}, []string{"ERROR before | ", "ERROR panic: boom | goroutine 1 [running]:\nmain.f()\n\t/src/main.go:3 +0x1"}},
		{"go panic, written a byte at a time", strings.Split(goPanic, ""),
			[]string{"ERROR panic: boom | goroutine 1 [running]:\nmain.f()\n\t/src/main.go:3 +0x1"}},
		{"fatal error", []string{"fatal error: runtime: out of memory\n\nruntime stack:\nruntime.throw()\n"},
			[]string{"ERROR fatal error: runtime: out of memory | runtime stack:\nruntime.throw()"}},
		{"recovered chain", []string{"panic: a [recovered]\n\tpanic: b\n\ngoroutine 1 [running]:\n"},
			[]string{"ERROR panic: a [recovered] | panic: b\n\ngoroutine 1 [running]:"}},
		{"report without a last newline", []string{"panic: x\nframe"}, []string{"ERROR panic: x | frame"}},
		{"tinygo one-line panic", []string{"panic: runtime error: index out of range\n"}, []string{"ERROR panic: runtime error: index out of range | "}},
		{"rust default hook", []string{"thread 'main' panicked at src/lib.rs:3:5:\nboom\nnote: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n"},
			[]string{"ERROR thread 'main' panicked at src/lib.rs:3:5: | boom\nnote: run with `RUST_BACKTRACE=1` environment variable to display a backtrace"}},
		{"not at a line start", []string{"no panic: here\n"}, []string{"ERROR no panic: here | "}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{level: slog.LevelInfo}
			h := newHostcall(t, "proxy_log", Config{Logger: slog.New(rec)})
			w := &logWriter{in: h.in, level: abi.LogError}
			for _, s := range tc.writes {
				w.Write([]byte(s))
			}
			w.endCall()
			var got []string
			for _, r := range rec.recs {
				stack, _ := recordStack(r)
				got = append(got, r.Level.String()+" "+r.Message+" | "+stack)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("records:\n%q\nwant\n%q", got, tc.want)
			}
			// The next call starts afresh.
			w.Write([]byte("after\n"))
			w.endCall()
			if last := rec.recs[len(rec.recs)-1]; last.Message != "after" {
				t.Errorf("after the crash report: %q", last.Message)
			}
		})
	}
}

// A crash report past maxLogBytes is cut, and says so.
func TestLogWriterCrashReportBounded(t *testing.T) {
	rec := &recorder{level: slog.LevelInfo}
	h := newHostcall(t, "proxy_log", Config{Logger: slog.New(rec)})
	w := &logWriter{in: h.in, level: abi.LogError}
	w.Write([]byte("panic: big\n"))
	frame := []byte(strings.Repeat("f", 1000) + "\n")
	for range 200 {
		w.Write(frame)
	}
	w.endCall()
	if len(rec.recs) != 1 {
		t.Fatalf("%d records", len(rec.recs))
	}
	stack, _ := recordStack(rec.recs[0])
	if len(stack) > maxLogBytes+100 || !strings.HasSuffix(stack, "…(truncated)") {
		t.Errorf("stack of %d bytes, suffix %q", len(stack), stack[len(stack)-20:])
	}
}

// A stock-Go plugin that panics logs its panic as one record, with the
// frames in "stack", before the instance failure.
func TestGoPanicIsOneRecord(t *testing.T) {
	rec := &recorder{level: slog.LevelInfo}
	p := loadFile(t, "plugin:testbed", Config{Instances: 1, Logger: slog.New(rec)})
	s, _ := p.NewHTTPStream(nil)
	defer s.Close()
	if r := s.RequestHeaders(faultHeaders("trap"), true); r.Failure == nil {
		t.Fatal("no failure")
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	var crashes []slog.Record
	for _, r := range rec.recs {
		if stack, ok := recordStack(r); ok {
			crashes = append(crashes, r)
			if r.Message != "panic: testbed: trap requested" || r.Level != slog.LevelError ||
				!strings.Contains(stack, "goroutine 1 [running]:") || !strings.Contains(stack, "main.(*httpContext).OnHttpRequestHeaders") ||
				!strings.Contains(stack, "plugins/testbed/main.go:") {
				t.Errorf("crash record: %v %q, stack:\n%s", r.Level, r.Message, stack)
			}
		} else if strings.HasPrefix(r.Message, "goroutine ") || strings.HasPrefix(r.Message, "\t") || r.Message == "" {
			t.Errorf("a line of the panic logged on its own: %q", r.Message)
		}
	}
	if len(crashes) != 1 {
		t.Errorf("%d crash records, want 1", len(crashes))
	}
}
