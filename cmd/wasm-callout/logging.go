package main

import (
	"context"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync/atomic"

	"google.golang.org/grpc/grpclog"

	"github.com/wasm-callout/wasm-callout/abi"
	"github.com/wasm-callout/wasm-callout/host"
)

// With --log-format json every line the process writes is a JSON object:
// the "listening" lines are not printed (their log records say the same),
// the error that ends the command is a record too, grpc-go's and
// net/http's own logs go through the same handler, and a plugin's crash
// report is one record (host's logWriter). Values are written as people
// read them: durations as strings ("1.5s"), enums by name.

// newLogger returns the serve command's logger.
func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var l slog.Level
	switch level {
	case "trace":
		l = host.LogLevelToSlog(abi.LogTrace)
	case "debug":
		l = slog.LevelDebug
	case "info":
		l = slog.LevelInfo
	case "warn":
		l = slog.LevelWarn
	case "error":
		l = slog.LevelError
	default:
		return nil, fmt.Errorf("--log-level %q: want trace, debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: l, ReplaceAttr: readableAttr}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}

// readableAttr writes durations as strings, and values with a String
// method (enums such as the failure policy or a body mode) by name,
// unless they say how to be JSON or text themselves. The level keeps its
// name for the plugin levels slog lacks (TRACE, CRITICAL).
func readableAttr(groups []string, a slog.Attr) slog.Attr {
	if len(groups) == 0 && a.Key == slog.LevelKey {
		if l, ok := a.Value.Any().(slog.Level); ok {
			return slog.String(slog.LevelKey, levelName(l))
		}
		return a
	}
	switch a.Value.Kind() {
	case slog.KindDuration:
		return slog.String(a.Key, a.Value.Duration().String())
	case slog.KindAny:
		switch v := a.Value.Any().(type) {
		case error, json.Marshaler, encoding.TextMarshaler:
		case fmt.Stringer:
			return slog.String(a.Key, v.String())
		}
	}
	return a
}

// levelName names the plugin levels slog has no name for.
func levelName(l slog.Level) string {
	switch l {
	case host.LogLevelToSlog(abi.LogTrace):
		return "TRACE"
	case host.LogLevelToSlog(abi.LogCritical):
		return "CRITICAL"
	}
	return l.String()
}

// loggedError is an error the serve command has logged already (with JSON
// logs, where a plain line from main would break the format): main exits
// with its status without printing it again.
type loggedError struct{ err error }

func (e loggedError) Error() string { return e.err.Error() }
func (e loggedError) Unwrap() error { return e.err }

// logExit logs the error that ends the serve command when logs are JSON,
// and marks it logged.
func logExit(logger *slog.Logger, format string, err error) error {
	if err == nil || format != "json" || errors.As(err, new(loggedError)) {
		return err
	}
	logger.Error("exiting", "err", err)
	return loggedError{err}
}

// grpcLogger is the logger grpc-go's own messages go to, once main has
// installed grpcLogTo (grpclog.SetLoggerV2 must be called before gRPC
// starts, and only once, so main does it and serve points it at its
// logger). Until then, and in tests, they go where grpc-go sends them.
var grpcLogger atomic.Pointer[slog.Logger]

// grpcLogTo forwards grpc-go's log to grpcLogger. grpc-go logs at info
// what its own default logger discards unless asked for
// (GRPC_GO_LOG_SEVERITY_LEVEL), so its info is logged at debug.
type grpcLogTo struct{}

func (grpcLogTo) log(l slog.Level, args ...any) {
	if lg := grpcLogger.Load(); lg != nil {
		lg.Log(context.Background(), l, fmt.Sprint(args...), "component", "grpc")
		return
	}
	if l >= slog.LevelError {
		fmt.Fprintln(os.Stderr, "grpc:", fmt.Sprint(args...))
	}
}
func (g grpcLogTo) logf(l slog.Level, format string, args ...any) {
	g.log(l, fmt.Sprintf(format, args...))
}

func (g grpcLogTo) Info(args ...any)                    { g.log(slog.LevelDebug, args...) }
func (g grpcLogTo) Infoln(args ...any)                  { g.log(slog.LevelDebug, args...) }
func (g grpcLogTo) Infof(format string, args ...any)    { g.logf(slog.LevelDebug, format, args...) }
func (g grpcLogTo) Warning(args ...any)                 { g.log(slog.LevelWarn, args...) }
func (g grpcLogTo) Warningln(args ...any)               { g.log(slog.LevelWarn, args...) }
func (g grpcLogTo) Warningf(format string, args ...any) { g.logf(slog.LevelWarn, format, args...) }
func (g grpcLogTo) Error(args ...any)                   { g.log(slog.LevelError, args...) }
func (g grpcLogTo) Errorln(args ...any)                 { g.log(slog.LevelError, args...) }
func (g grpcLogTo) Errorf(format string, args ...any)   { g.logf(slog.LevelError, format, args...) }
func (g grpcLogTo) Fatal(args ...any)                   { g.log(slog.LevelError+4, args...); exitFatal() }
func (g grpcLogTo) Fatalln(args ...any)                 { g.log(slog.LevelError+4, args...); exitFatal() }
func (g grpcLogTo) Fatalf(format string, args ...any) {
	g.logf(slog.LevelError+4, format, args...)
	exitFatal()
}

// V reports whether verbosity level l is on: grpc-go's verbose logs are
// for its developers.
func (grpcLogTo) V(l int) bool { return false }

var _ grpclog.LoggerV2 = grpcLogTo{}

// exitFatal ends the process after grpc-go logged a fatal error, as its
// own logger does.
func exitFatal() { os.Exit(1) }
