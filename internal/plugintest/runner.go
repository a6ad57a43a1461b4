package plugintest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/wasm-callout/wasm-callout/abi"
	"github.com/wasm-callout/wasm-callout/host"
	"github.com/wasm-callout/wasm-callout/internal/plugintest/specpb"
)

// Options say how to run specs.
type Options struct {
	// Wasm is the plugin; nil means each spec's env.wasm_path.
	Wasm []byte
	// PluginConfig, when HasPluginConfig, replaces each spec's
	// env.config_path.
	PluginConfig    []byte
	HasPluginConfig bool
	// Run selects tests by name; nil runs all.
	Run *regexp.Regexp
	// ThroughExtProc plays each test through the ext_proc server and the
	// Envoy emulator instead of calling the host directly.
	ThroughExtProc bool
	// Limits, when set, fails tests that would break them.
	Limits *Limits
	// BenchTime is how long each benchmark runs; zero means one second.
	BenchTime time.Duration
	// CacheDir is a compilation cache directory; empty compiles each load.
	CacheDir string
}

// Result is one test's outcome.
type Result struct {
	Spec     string        `json:"spec"`
	Name     string        `json:"name"`
	Passed   bool          `json:"passed"`
	Failures []string      `json:"failures,omitempty"`
	Notes    []string      `json:"notes,omitempty"`
	Bench    *Bench        `json:"benchmark,omitempty"`
	Took     time.Duration `json:"took_ns"`
	Phases   []Record      `json:"-"`
}

// RunSpec runs the selected tests of spec in order.
func RunSpec(ctx context.Context, spec *Spec, opts Options) []Result {
	var out []Result
	env := spec.Suite.GetEnv()
	wasm := opts.Wasm
	var loadErr error
	if wasm == nil {
		if env.GetWasmPath() == "" {
			loadErr = fmt.Errorf("no plugin: pass --plugin or set env.wasm_path")
		} else {
			wasm, loadErr = readRelative(spec, env.GetWasmPath())
		}
	}
	config := opts.PluginConfig
	if !opts.HasPluginConfig && env.GetConfigPath() != "" && loadErr == nil {
		config, loadErr = readRelative(spec, env.GetConfigPath())
	}
	for i, t := range spec.Suite.GetTest() {
		name := t.GetName()
		if name == "" {
			name = fmt.Sprintf("test%d", i+1)
		}
		if opts.Run != nil && !opts.Run.MatchString(name) {
			continue
		}
		r := Result{Spec: spec.Path, Name: name}
		start := time.Now()
		if loadErr != nil {
			r.Failures = []string{loadErr.Error()}
		} else {
			tc := &testRun{ctx: ctx, spec: spec, test: t, opts: opts, wasm: wasm, config: config, res: &r}
			tc.run()
		}
		r.Took = time.Since(start)
		r.Passed = len(r.Failures) == 0
		out = append(out, r)
	}
	return out
}

// readRelative reads p from the spec's directory, or, failing that, as
// given (paths in Google's specs are often relative to the repository).
func readRelative(spec *Spec, p string) ([]byte, error) {
	data, err := os.ReadFile(spec.Resolve(p))
	if err == nil || filepath.IsAbs(p) {
		return data, err
	}
	if d, err2 := os.ReadFile(p); err2 == nil {
		return d, nil
	}
	return nil, err
}

// testRun is one test in progress.
type testRun struct {
	ctx    context.Context
	spec   *Spec
	test   *specpb.Test
	opts   Options
	wasm   []byte
	config []byte
	res    *Result
}

func (tr *testRun) fail(phase, format string, args ...any) {
	tr.res.Failures = append(tr.res.Failures, "["+phase+"] "+fmt.Sprintf(format, args...))
}

// logLevel is env.log_level as a plugin log level (INFO when unset).
func (tr *testRun) logLevel() abi.LogLevel {
	ll := tr.spec.Suite.GetEnv().GetLogLevel()
	if ll == specpb.Env_UNDEFINED {
		ll = specpb.Env_INFO
	}
	return abi.LogLevel(ll - 1)
}

// now is the frozen clock: env.time_secs, or the Unix epoch.
func (tr *testRun) now() func() time.Time {
	t := time.Unix(int64(tr.spec.Suite.GetEnv().GetTimeSecs()), 0)
	return func() time.Time { return t }
}

func (tr *testRun) harnessConfig(level abi.LogLevel, trace bool) HarnessConfig {
	hc := HarnessConfig{
		Wasm: tr.wasm, Name: "test", PluginConfig: tr.config, LogLevel: level,
		Now: tr.now(), Trace: trace, CacheDir: tr.opts.CacheDir,
	}
	if tr.opts.Limits != nil {
		hc.MemoryLimitPages = tr.opts.Limits.MemoryPages()
	}
	return hc
}

func (tr *testRun) properties() Properties {
	p := Properties{}
	for _, pr := range tr.test.GetProperties() {
		p.Set(pr.GetPath(), pr.GetValue())
	}
	return p
}

func (tr *testRun) run() {
	if tr.opts.ThroughExtProc {
		tr.runExtProc()
	} else {
		tr.runDirect()
	}
	if tr.opts.Limits != nil {
		for _, v := range tr.opts.Limits.Check(tr.wasm, tr.config, tr.res.Phases) {
			tr.res.Failures = append(tr.res.Failures, "[limits "+tr.opts.Limits.Name+"] "+v)
		}
	}
	if lp := tr.spec.Suite.GetEnv().GetLogPath(); lp != "" {
		if err := tr.writeLog(lp); err != nil {
			tr.fail("env", "log_path: %v", err)
		}
	}
	if tr.test.GetBenchmark() && len(tr.res.Failures) == 0 {
		b, err := tr.bench()
		if err != nil {
			tr.fail("benchmark", "%v", err)
		} else {
			tr.res.Bench = b
			if tr.opts.ThroughExtProc {
				tr.res.Notes = append(tr.res.Notes, "the benchmark ran on the host directly, not through ext_proc")
			}
		}
	}
}

// load loads the plugin for the test and checks plugin_init; nil means
// the plugin failed to start (the test has failed).
func (tr *testRun) load(trace bool) *Harness {
	h, err := Load(tr.ctx, tr.harnessConfig(tr.logLevel(), trace))
	tr.res.Phases = append(tr.res.Phases, h.Init)
	tr.checkLogs("plugin_init", tr.test.GetPluginInit(), h.Init.Logs)
	if err != nil {
		tr.fail("plugin_init", "the plugin failed to start: %v%s", err, logTail(h.Init.Logs))
		return nil
	}
	return h
}

// runDirect drives the host phase by phase.
func (tr *testRun) runDirect() {
	t := tr.test
	h := tr.load(tr.opts.Limits != nil)
	if h == nil {
		return
	}
	defer h.Close()
	st, rec, err := h.OpenHTTP(tr.properties())
	tr.res.Phases = append(tr.res.Phases, rec)
	tr.checkLogs("stream_init", t.GetStreamInit(), rec.Logs)
	if err != nil {
		tr.fail("stream_init", "opening the stream failed: %v%s", err, logTail(rec.Logs))
		return
	}
	if rec.Failure == nil {
		if !tr.phases(st) {
			st.Close()
			return
		}
	}
	rec = st.Close()
	tr.res.Phases = append(tr.res.Phases, rec)
	tr.checkLogs("stream_destroy", t.GetStreamDestroy(), rec.Logs)
	if rec.Failure != nil {
		tr.fail("stream_destroy", "the plugin failed: %v%s", rec.Failure, logTail(rec.Logs))
	}
}

// phases runs the HTTP phases and reports whether the plugin is still
// healthy.
func (tr *testRun) phases(st *Stream) bool {
	t := tr.test
	header := func(phase string, request bool, inv *specpb.Invocation) bool {
		if inv == nil {
			return true
		}
		if st.Replied != nil {
			tr.skipped(phase, inv.GetResult(), st.Replied)
			return true
		}
		pairs, err := HeaderInput(inv.GetInput(), request, tr.spec.Resolve)
		if err != nil {
			tr.fail(phase, "%v", err)
			return true
		}
		rec := st.Headers(request, pairs, false)
		return tr.checkPhase(phase, inv.GetResult(), rec)
	}
	body := func(phase string, request bool, invs []*specpb.Invocation) bool {
		for i, inv := range invs {
			name := phase
			if len(invs) > 1 {
				name = fmt.Sprintf("%s[%d]", phase, i)
			}
			if st.Replied != nil {
				tr.skipped(name, inv.GetResult(), st.Replied)
				continue
			}
			data, err := BodyInput(inv.GetInput(), tr.spec.Resolve)
			if err != nil {
				tr.fail(name, "%v", err)
				continue
			}
			// Like Google's tester, every invocation ends its body: its
			// last chunk carries end_of_stream.
			rec := st.Body(request, Chunks(data, t), true)
			st.TakeHeld(&rec)
			rec.Phase = name
			if !tr.checkPhase(name, inv.GetResult(), rec) {
				return false
			}
		}
		return true
	}
	return header("request_headers", true, t.GetRequestHeaders()) &&
		body("request_body", true, t.GetRequestBody()) &&
		header("response_headers", false, t.GetResponseHeaders()) &&
		body("response_body", false, t.GetResponseBody())
}

// skipped fails the expectations of a phase that did not run because the
// stream had ended.
func (tr *testRun) skipped(phase string, e *specpb.Expectation, by *Record) {
	if e == nil || proto.Size(e) == 0 {
		return
	}
	why := "the plugin failed"
	if by.Local != nil {
		why = fmt.Sprintf("the plugin replied locally (%d)", by.Local.Status)
	} else if by.Failure == nil {
		why = "the plugin closed the stream"
	}
	tr.fail(phase, "not run: %s in %s, so this phase's expectations cannot hold", why, by.Phase)
}

// checkPhase checks a phase's expectations and reports whether the
// plugin is still healthy.
func (tr *testRun) checkPhase(phase string, e *specpb.Expectation, rec Record) bool {
	tr.res.Phases = append(tr.res.Phases, rec)
	if rec.Failure != nil {
		tr.fail(phase, "the plugin failed: %v%s", rec.Failure, logTail(rec.Logs))
		return false
	}
	headers, body := rec.HeadersOut, rec.BodyOut
	if rec.IsBody {
		headers = nil
	}
	if rec.Local != nil {
		headers, body = rec.Local.Headers, rec.Local.Body
	}
	for _, f := range CheckExpectation(e, headers, body, rec.Local, rec.Logs, tr.spec.Resolve) {
		tr.fail(phase, "%s", f)
	}
	if rec.Local == nil && e.GetImmediate() != nil {
		tr.fail(phase, "want an immediate reply, the plugin %s", describeAction(rec))
	}
	return true
}

func describeAction(rec Record) string {
	if rec.Action == abi.ActionPause {
		return "paused the stream without replying"
	}
	return "continued"
}

// CheckExpectation checks e against a phase's output headers and body, its
// local reply (nil if none) and its logs, and returns what failed. An
// expectation of an immediate reply when there is none is left to the
// caller, who knows what the plugin did instead.
func CheckExpectation(e *specpb.Expectation, headers []abi.Pair, body []byte, local *host.LocalResponse, logs []LogLine, resolve func(string) string) []string {
	var out []string
	for _, h := range e.GetHasHeader() {
		if ok, why := CheckHasHeader(headers, h); !ok {
			out = append(out, why)
		}
	}
	for _, h := range e.GetNoHeader() {
		if ok, why := CheckNoHeader(headers, h); !ok {
			out = append(out, why)
		}
	}
	match := func(what string, ms []*specpb.StringMatcher, values [][]byte) {
		for _, m := range ms {
			cm, err := CompileMatcher(m, resolve)
			if err != nil {
				out = append(out, err.Error())
				continue
			}
			if ok, why := cm.Check(what, values); !ok {
				out = append(out, why)
			}
		}
	}
	match("header line", e.GetHeaders(), headerLines(headers))
	match("body", e.GetBody(), [][]byte{body})
	lines := make([][]byte, len(logs))
	for i, l := range logs {
		lines[i] = []byte(l.Message)
	}
	match("log line", e.GetLog(), lines)
	imm := e.GetImmediate()
	switch {
	case imm == nil && local != nil:
		out = append(out, fmt.Sprintf("want no immediate reply, the plugin replied %d%s", local.Status, detailsSuffix(local.Details)))
	case imm != nil && local != nil:
		if imm.HttpStatus != nil && imm.GetHttpStatus() != local.Status {
			out = append(out, fmt.Sprintf("immediate reply: want HTTP status %d, got %d", imm.GetHttpStatus(), local.Status))
		}
		if imm.GrpcStatus != nil {
			switch {
			case local.GRPCStatus < 0:
				out = append(out, fmt.Sprintf("immediate reply: want gRPC status %d, got none", imm.GetGrpcStatus()))
			case uint32(local.GRPCStatus) != imm.GetGrpcStatus():
				out = append(out, fmt.Sprintf("immediate reply: want gRPC status %d, got %d", imm.GetGrpcStatus(), local.GRPCStatus))
			}
		}
		if imm.Details != nil && imm.GetDetails() != local.Details {
			out = append(out, fmt.Sprintf("immediate reply: want details %q, got %q", imm.GetDetails(), local.Details))
		}
	}
	return out
}

func detailsSuffix(d string) string {
	if d == "" {
		return ""
	}
	return fmt.Sprintf(" (details %q)", d)
}

func (tr *testRun) checkLogs(phase string, e *specpb.Expectation, logs []LogLine) {
	for _, f := range CheckExpectation(&specpb.Expectation{Log: e.GetLog()}, nil, nil, nil, logs, tr.spec.Resolve) {
		tr.fail(phase, "%s", f)
	}
}

// logTail shows the last log lines, which usually say why a plugin failed.
func logTail(logs []LogLine) string {
	if len(logs) == 0 {
		return ""
	}
	if len(logs) > 10 {
		logs = logs[len(logs)-10:]
	}
	var b strings.Builder
	b.WriteString("; its last logs:")
	for _, l := range logs {
		fmt.Fprintf(&b, "\n    %s", l.Message)
	}
	return b.String()
}

func contextWithTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, d)
}

// writeLog appends the test's plugin log lines to path (env.log_path),
// between lines that name the test, as Google's tester does.
func (tr *testRun) writeLog(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "--- Starting test: %s ---\n", tr.res.Name)
	for _, r := range tr.res.Phases {
		for _, l := range r.Logs {
			b.WriteString(l.Message + "\n")
		}
	}
	fmt.Fprintf(&b, "--- Finished test: %s ---\n", tr.res.Name)
	_, err = f.WriteString(b.String())
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
