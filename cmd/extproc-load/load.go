package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	filterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	"google.golang.org/grpc"

	"github.com/wasm-callout/wasm-callout/server/envoytest"
)

// Limits that keep a run bounded whatever the flags say.
const (
	maxDuration    = 10 * time.Minute
	maxRequests    = 100_000_000
	maxConcurrency = 4096
	maxConns       = 256
	maxBodyBytes   = 64 << 20
	requestTimeout = 10 * time.Second
	maxSamples     = 20_000_000
)

// loadConfig is the parsed command line of a load run.
type loadConfig struct {
	addr         string
	label        string
	scenario     string
	bodyBytes    int
	chunks       int
	chunkBytes   int
	conns        int
	concurrency  int
	duration     time.Duration
	requests     int
	warmup       time.Duration
	serverPID    int
	expectHeader string
	msgTimeout   time.Duration
	// reloadURL, when set, is POSTed every reloadInterval during the
	// measured run (hot-swap under load; see swapper).
	reloadURL      string
	reloadInterval time.Duration
	// faultEvery > 0 makes every faultEvery-th request issued in the
	// measured run a fault one: faultHeader ("NAME: VALUE") added to an
	// HTTP request, or faultData replacing an L4 connection's first frame.
	// policyStatus is the status of the server's fail-closed answer.
	faultHeader  string
	faultData    string
	faultEvery   int
	policyStatus int
}

// result is the machine-readable outcome of a run (one JSON line).
type result struct {
	Label       string  `json:"label"`
	Scenario    string  `json:"scenario"`
	Addr        string  `json:"addr"`
	Conns       int     `json:"conns"`
	Concurrency int     `json:"concurrency"`
	BodyBytes   int     `json:"body_bytes"`
	Requests    int64   `json:"requests"`
	Errors      int64   `json:"errors"`
	DurationS   float64 `json:"duration_s"`
	RPS         float64 `json:"rps"`
	P50Ms       float64 `json:"p50_ms"`
	P99Ms       float64 `json:"p99_ms"`
	MaxMs       float64 `json:"max_ms"`
	ServerPID   int     `json:"server_pid,omitempty"`
	// ServerCPUS and CPUUsPerReq are -1 without -server-pid.
	ServerCPUS        float64 `json:"server_cpu_s"`
	CPUUsPerReq       float64 `json:"cpu_us_per_req"`
	ClientCPUUsPerReq float64 `json:"client_cpu_us_per_req"`
	FirstError        string  `json:"first_error,omitempty"`
	// Reloads done during the run with -reload-url: how many succeeded,
	// failed, and how long one took from request to switch.
	Swaps          int     `json:"swaps,omitempty"`
	SwapErrors     int     `json:"swap_errors,omitempty"`
	SwapP50Ms      float64 `json:"swap_p50_ms,omitempty"`
	SwapMaxMs      float64 `json:"swap_max_ms,omitempty"`
	FirstSwapError string  `json:"first_swap_error,omitempty"`
	// Requests, Errors, the latencies and RPS count good requests only;
	// with -fault-every the fault requests are counted apart. Errors
	// includes GoodPolicyFailures, good requests answered with the failure
	// policy (bystanders on an instance that failed); ErrorKinds counts
	// every good failure by its message.
	GoodPolicyFailures int64            `json:"good_policy_failures,omitempty"`
	ErrorKinds         map[string]int64 `json:"error_kinds,omitempty"`
	// Faults are the fault requests, FaultPolicy those answered with the
	// failure policy (as expected), FaultOther the rest (FaultOtherKinds
	// says how they ended); the latencies are those of all fault requests.
	Faults          int64            `json:"faults,omitempty"`
	FaultPolicy     int64            `json:"fault_policy,omitempty"`
	FaultOther      int64            `json:"fault_other,omitempty"`
	FaultP50Ms      float64          `json:"fault_p50_ms,omitempty"`
	FaultMaxMs      float64          `json:"fault_max_ms,omitempty"`
	FaultOtherKinds map[string]int64 `json:"fault_other_kinds,omitempty"`
}

func parseLoadFlags(args []string, stderr io.Writer) (*loadConfig, error) {
	c := &loadConfig{}
	fs := flag.NewFlagSet("extproc-load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.addr, "addr", "", "ext_proc server address HOST:PORT (required)")
	fs.StringVar(&c.label, "label", "", "label recorded in the JSON line (e.g. baseline, wasm)")
	fs.StringVar(&c.scenario, "scenario", "headers", "headers, buffered, streamed or l4")
	fs.IntVar(&c.bodyBytes, "body-bytes", 4096, "request body size for -scenario buffered")
	fs.IntVar(&c.chunks, "chunks", 4, "body chunks for -scenario streamed; frames per direction for -scenario l4")
	fs.IntVar(&c.chunkBytes, "chunk-bytes", 1024, "chunk size for -scenario streamed; frame size for -scenario l4")
	fs.IntVar(&c.conns, "conns", 1, "gRPC connections (requests are spread over them)")
	fs.IntVar(&c.concurrency, "concurrency", 16, "requests in flight")
	fs.DurationVar(&c.duration, "duration", 5*time.Second, "run length (ignored with -requests)")
	fs.IntVar(&c.requests, "requests", 0, "number of requests (0: run for -duration)")
	fs.DurationVar(&c.warmup, "warmup", 0, "unmeasured warm-up before the run")
	fs.IntVar(&c.serverPID, "server-pid", 0, "server process id, for CPU per request from /proc/PID/stat")
	fs.StringVar(&c.expectHeader, "expect-header", "", "count responses without this header as errors (HTTP scenarios)")
	fs.DurationVar(&c.msgTimeout, "message-timeout", envoytest.DefaultMessageTimeout, "the emulated filter's message_timeout")
	fs.StringVar(&c.reloadURL, "reload-url", "", "during the measured run, POST this URL (wasm-callout's http://HEALTH/reload) "+
		"to hot-swap the plugin, one reload at a time, and report how long each took")
	fs.DurationVar(&c.reloadInterval, "reload-interval", 500*time.Millisecond, "start a reload this often (at once if the last took longer)")
	fs.IntVar(&c.faultEvery, "fault-every", 0, "make every Nth request (or connection) of the measured run a fault one "+
		"(-fault-header or -fault-data), counted apart from the good ones (-requests counts both); 0: none")
	fs.StringVar(&c.faultHeader, "fault-header", "", "'NAME: VALUE': the header added to fault requests (HTTP scenarios)")
	fs.StringVar(&c.faultData, "fault-data", "", "the data of a fault connection's first frame, instead of -chunk-bytes of it (-scenario l4)")
	fs.IntVar(&c.policyStatus, "policy-status", 500, "HTTP status of the server's fail-closed ImmediateResponse (the failure policy; "+
		"for l4 it is a CLOSE): answers so are counted as fault_policy or, for good requests, good_policy_failures")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	switch {
	case fs.NArg() > 0:
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	case c.addr == "":
		return nil, errors.New("-addr is required")
	case c.conns < 1 || c.conns > maxConns:
		return nil, fmt.Errorf("-conns must be in [1, %d]", maxConns)
	case c.concurrency < 1 || c.concurrency > maxConcurrency:
		return nil, fmt.Errorf("-concurrency must be in [1, %d]", maxConcurrency)
	case c.requests < 0 || c.requests > maxRequests:
		return nil, fmt.Errorf("-requests must be in [0, %d]", maxRequests)
	case c.requests == 0 && (c.duration <= 0 || c.duration > maxDuration):
		return nil, fmt.Errorf("-duration must be in (0, %v]", maxDuration)
	case c.warmup < 0 || c.warmup > maxDuration:
		return nil, fmt.Errorf("-warmup must be in [0, %v]", maxDuration)
	case c.msgTimeout <= 0 || c.msgTimeout > time.Hour:
		return nil, errors.New("-message-timeout must be in (0, 1h]")
	case c.serverPID < 0:
		return nil, errors.New("-server-pid must be positive")
	case c.reloadURL != "" && !strings.HasPrefix(c.reloadURL, "http://") && !strings.HasPrefix(c.reloadURL, "https://"):
		return nil, errors.New("-reload-url must be an http or https URL")
	case c.reloadInterval <= 0 || c.reloadInterval > maxDuration:
		return nil, fmt.Errorf("-reload-interval must be in (0, %v]", maxDuration)
	case c.faultEvery < 0 || c.faultEvery > maxRequests:
		return nil, fmt.Errorf("-fault-every must be in [0, %d]", maxRequests)
	case c.policyStatus < 200 || c.policyStatus > 599:
		return nil, errors.New("-policy-status must be an HTTP status in [200, 599]")
	case c.faultHeader != "" && c.scenario == "l4":
		return nil, errors.New("-fault-header applies to the HTTP scenarios; use -fault-data with -scenario l4")
	case c.faultData != "" && c.scenario != "l4":
		return nil, errors.New("-fault-data applies to -scenario l4; use -fault-header")
	case c.faultEvery > 0 && c.faultHeader == "" && c.faultData == "":
		return nil, errors.New("-fault-every needs -fault-header (HTTP) or -fault-data (l4)")
	case c.faultEvery == 0 && (c.faultHeader != "" || c.faultData != ""):
		return nil, errors.New("-fault-header and -fault-data need -fault-every")
	}
	if c.faultHeader != "" {
		name, _, ok := strings.Cut(c.faultHeader, ":")
		if name = strings.TrimSpace(name); !ok || name == "" || strings.ContainsAny(name, " \t") {
			return nil, fmt.Errorf("-fault-header %q is not 'NAME: VALUE'", c.faultHeader)
		}
	}
	switch c.scenario {
	case "headers":
	case "buffered":
		if c.bodyBytes < 1 || c.bodyBytes > maxBodyBytes {
			return nil, fmt.Errorf("-body-bytes must be in [1, %d]", maxBodyBytes)
		}
	case "streamed", "l4":
		if c.chunks < 1 || c.chunkBytes < 1 || c.chunks*c.chunkBytes > maxBodyBytes || c.chunks > 1<<16 {
			return nil, fmt.Errorf("-chunks × -chunk-bytes must be in [1, %d]", maxBodyBytes)
		}
	default:
		return nil, fmt.Errorf("unknown -scenario %q (headers, buffered, streamed, l4)", c.scenario)
	}
	return c, nil
}

// scenario returns the emulator configuration and the request to replay.
func (c *loadConfig) scenarioRequest() (envoytest.Config, *envoytest.Request, int) {
	cfg := envoytest.Config{NoTranscript: true, BufferLimit: maxBodyBytes + 1, MessageTimeout: c.msgTimeout}
	req := &envoytest.Request{
		Headers: envoytest.H(":method", "GET", ":path", "/load", ":authority", "extproc-load", ":scheme", "http",
			"user-agent", "extproc-load", "x-request-id", "00000000-0000-0000-0000-000000000000"),
		Response: &envoytest.Response{Headers: envoytest.H(":status", "200", "content-type", "text/plain",
			"content-length", "0")},
	}
	body := 0
	switch c.scenario {
	case "buffered":
		body = c.bodyBytes
		cfg.ProcessingMode = &filterv3.ProcessingMode{RequestBodyMode: filterv3.ProcessingMode_BUFFERED}
		req.Headers[0].Value = "POST"
		req.Headers = append(req.Headers, envoytest.Header{Key: "content-length", Value: strconv.Itoa(body)})
		req.Body = [][]byte{bytes.Repeat([]byte("b"), body)}
	case "streamed":
		body = c.chunks * c.chunkBytes
		cfg.ProcessingMode = &filterv3.ProcessingMode{RequestBodyMode: filterv3.ProcessingMode_STREAMED}
		req.Headers[0].Value = "POST"
		chunk := bytes.Repeat([]byte("s"), c.chunkBytes)
		for range c.chunks {
			req.Body = append(req.Body, chunk)
		}
	}
	return cfg, req, body
}

func runLoad(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c, err := parseLoadFlags(args, stderr)
	if err != nil {
		return err
	}
	// The load tool allocates per request; trade memory for less GC work so
	// that more of the machine is left to the server being measured.
	defer debug.SetGCPercent(debug.SetGCPercent(400))
	conns := make([]*grpc.ClientConn, c.conns)
	for i := range conns {
		conn, err := envoytest.Dial(c.addr)
		if err != nil {
			return err
		}
		defer conn.Close()
		conn.Connect()
		conns[i] = conn
	}
	play, bodyBytes, err := c.player(conns)
	if err != nil {
		return err
	}
	if c.serverPID > 0 {
		if _, err := processCPU(c.serverPID); err != nil {
			return err
		}
	}
	if c.warmup > 0 {
		if _, err := drive(ctx, c, play, time.Now().Add(c.warmup), 0, false); err != nil {
			return err
		}
	}
	var cpu0, cpu1 time.Duration
	if c.serverPID > 0 {
		if cpu0, err = processCPU(c.serverPID); err != nil {
			return err
		}
	}
	self0 := selfCPU()
	deadline := time.Now().Add(c.duration)
	if c.requests > 0 {
		deadline = time.Now().Add(maxDuration)
	}
	stopSwaps := func() {}
	var sw *swapper
	if c.reloadURL != "" {
		sw = newSwapper(c.reloadURL, c.reloadInterval)
		sctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			sw.run(sctx)
		}()
		stopSwaps = func() {
			cancel()
			<-done
		}
	}
	st, err := drive(ctx, c, play, deadline, c.requests, true)
	stopSwaps()
	if err != nil {
		return err
	}
	self1 := selfCPU()
	if c.serverPID > 0 {
		if cpu1, err = processCPU(c.serverPID); err != nil {
			return err
		}
	}
	r := st.result(c, bodyBytes)
	if sw != nil {
		sw.fill(&r)
	}
	r.ServerCPUS, r.CPUUsPerReq = -1, -1
	// CPU is shared out over every request the server handled, faults
	// included.
	all := r.Requests + r.Faults
	if c.serverPID > 0 {
		r.ServerPID = c.serverPID
		r.ServerCPUS = (cpu1 - cpu0).Seconds()
		if all > 0 {
			r.CPUUsPerReq = float64((cpu1 - cpu0).Microseconds()) / float64(all)
		}
	}
	if all > 0 {
		r.ClientCPUUsPerReq = float64((self1 - self0).Microseconds()) / float64(all)
	}
	printHuman(stdout, r)
	line, err := json.Marshal(r)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s\n", line)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return nil
}

// runStats collects the outcome of the workers.
type runStats struct {
	mu        sync.Mutex
	latencies []time.Duration
	requests  atomic.Int64
	errors    atomic.Int64
	firstErr  string
	elapsed   time.Duration
	// Good requests failed by the policy, and every good failure by kind.
	goodPolicy atomic.Int64
	errKinds   kinds
	// Fault requests (-fault-every).
	faults, faultPolicy, faultOther atomic.Int64
	faultLat                        []time.Duration
	faultKinds                      kinds
}

func (s *runStats) fail(msg string) {
	s.errors.Add(1)
	s.mu.Lock()
	if s.firstErr == "" {
		s.firstErr = msg
	}
	s.errKinds.add(msg)
	s.mu.Unlock()
}

// account records the outcome of one measured request.
func (s *runStats) account(fault bool, o outcome, lat time.Duration) {
	if !fault {
		s.requests.Add(1)
		if o.policy {
			s.goodPolicy.Add(1)
		}
		if o.failure != "" {
			s.fail(o.failure)
		}
		return
	}
	s.faults.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.faultLat) < maxSamples {
		s.faultLat = append(s.faultLat, lat)
	}
	switch {
	case o.policy:
		s.faultPolicy.Add(1)
	case o.failure == "":
		s.faultOther.Add(1)
		s.faultKinds.add("served normally")
	default:
		s.faultOther.Add(1)
		s.faultKinds.add(o.failure)
	}
}

// kinds counts failures by message, up to maxKinds distinct messages (cut
// to maxKindLen bytes); the rest count as "(other)".
type kinds map[string]int64

const (
	maxKinds   = 20
	maxKindLen = 160
)

func (k *kinds) add(msg string) {
	if *k == nil {
		*k = kinds{}
	}
	if len(msg) > maxKindLen {
		msg = strings.ToValidUTF8(msg[:maxKindLen], "") + "…"
	}
	if _, ok := (*k)[msg]; !ok && len(*k) >= maxKinds {
		msg = "(other)"
	}
	(*k)[msg]++
}

// isFault says whether the request with this ticket (1, 2, ... in the order
// issued) is a fault one: every every-th, none when every is 0.
func isFault(ticket int64, every int) bool {
	return every > 0 && ticket%int64(every) == 0
}

// drive keeps c.concurrency requests (HTTP exchanges or L4 connections) in
// flight until the deadline or until n requests (n > 0) have been issued.
func drive(ctx context.Context, c *loadConfig, play player, deadline time.Time, n int, record bool) (*runStats, error) {
	st := &runStats{}
	faultEvery := c.faultEvery
	if !record {
		faultEvery = 0 // no faults in the warm-up
	}
	var tickets atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for w := range c.concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var local []time.Duration
			for ctx.Err() == nil && time.Now().Before(deadline) {
				ticket := tickets.Add(1)
				if n > 0 && ticket > int64(n) {
					break
				}
				fault := isFault(ticket, faultEvery)
				rctx, cancel := context.WithTimeout(ctx, requestTimeout)
				t0 := time.Now()
				o := play(rctx, w, fault)
				lat := time.Since(t0)
				cancel()
				if ctx.Err() != nil {
					break
				}
				st.account(fault, o, lat)
				if fault {
					continue
				}
				if record && len(local) < maxSamples/c.concurrency {
					local = append(local, lat)
				}
			}
			st.mu.Lock()
			st.latencies = append(st.latencies, local...)
			st.mu.Unlock()
		}()
	}
	wg.Wait()
	st.elapsed = time.Since(start)
	return st, nil
}

func (s *runStats) result(c *loadConfig, bodyBytes int) result {
	r := result{
		Label: c.label, Scenario: c.scenario, Addr: c.addr, Conns: c.conns, Concurrency: c.concurrency,
		BodyBytes: bodyBytes, Requests: s.requests.Load(), Errors: s.errors.Load(),
		DurationS: s.elapsed.Seconds(), FirstError: s.firstErr,
		GoodPolicyFailures: s.goodPolicy.Load(), ErrorKinds: s.errKinds,
		Faults: s.faults.Load(), FaultPolicy: s.faultPolicy.Load(), FaultOther: s.faultOther.Load(),
		FaultOtherKinds: s.faultKinds,
	}
	slices.Sort(s.faultLat)
	r.FaultP50Ms = ms(percentile(s.faultLat, 0.50))
	if len(s.faultLat) > 0 {
		r.FaultMaxMs = ms(s.faultLat[len(s.faultLat)-1])
	}
	if r.DurationS > 0 {
		r.RPS = float64(r.Requests) / r.DurationS
	}
	slices.Sort(s.latencies)
	r.P50Ms = ms(percentile(s.latencies, 0.50))
	r.P99Ms = ms(percentile(s.latencies, 0.99))
	if len(s.latencies) > 0 {
		r.MaxMs = ms(s.latencies[len(s.latencies)-1])
	}
	return r
}

// percentile of sorted samples (nearest rank).
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func ms(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e6 }

func printHuman(w io.Writer, r result) {
	label := r.Label
	if label == "" {
		label = "-"
	}
	fmt.Fprintf(w, "%s: scenario=%s body=%dB addr=%s conns=%d in-flight=%d\n",
		label, r.Scenario, r.BodyBytes, r.Addr, r.Conns, r.Concurrency)
	fmt.Fprintf(w, "  requests %d in %.2fs: %.0f req/s, errors %d\n", r.Requests, r.DurationS, r.RPS, r.Errors)
	if r.FirstError != "" {
		fmt.Fprintf(w, "  first error: %s\n", r.FirstError)
	}
	if r.Faults > 0 || r.GoodPolicyFailures > 0 {
		fmt.Fprintf(w, "  of the errors, failure policy (bystanders on a failed instance) %d, other %d\n",
			r.GoodPolicyFailures, r.Errors-r.GoodPolicyFailures)
	}
	if len(r.ErrorKinds) > 1 || (r.Faults > 0 && len(r.ErrorKinds) > 0) {
		printKinds(w, "errors", r.ErrorKinds)
	}
	if r.Faults > 0 {
		fmt.Fprintf(w, "  fault requests %d: failure policy %d, other %d; latency p50 %.3fms  max %.3fms\n",
			r.Faults, r.FaultPolicy, r.FaultOther, r.FaultP50Ms, r.FaultMaxMs)
		printKinds(w, "fault requests not answered with the policy", r.FaultOtherKinds)
	}
	fmt.Fprintf(w, "  latency p50 %.3fms  p99 %.3fms  max %.3fms\n", r.P50Ms, r.P99Ms, r.MaxMs)
	if r.CPUUsPerReq >= 0 {
		fmt.Fprintf(w, "  server cpu %.3fs: %.1f µs/request (pid %d)\n", r.ServerCPUS, r.CPUUsPerReq, r.ServerPID)
	}
	fmt.Fprintf(w, "  load tool cpu: %.1f µs/request\n", r.ClientCPUUsPerReq)
	if r.Swaps+r.SwapErrors > 0 {
		fmt.Fprintf(w, "  hot swaps %d, failed %d: request to switch p50 %.1fms  max %.1fms\n", r.Swaps, r.SwapErrors, r.SwapP50Ms, r.SwapMaxMs)
		if r.FirstSwapError != "" {
			fmt.Fprintf(w, "  first reload error: %s\n", r.FirstSwapError)
		}
	}
}

// printKinds lists failure counts by message, most frequent first.
func printKinds(w io.Writer, what string, k map[string]int64) {
	if len(k) == 0 {
		return
	}
	msgs := make([]string, 0, len(k))
	for m := range k {
		msgs = append(msgs, m)
	}
	slices.SortFunc(msgs, func(a, b string) int {
		if k[a] != k[b] {
			return int(k[b] - k[a])
		}
		return strings.Compare(a, b)
	})
	fmt.Fprintf(w, "  %s by kind:\n", what)
	for _, m := range msgs {
		fmt.Fprintf(w, "    %7d  %s\n", k[m], m)
	}
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat times: 100 on every
// Linux architecture Go supports.
const clockTicks = 100

// processCPU returns utime+stime of a process (all its threads, live and
// exited) from /proc/PID/stat.
func processCPU(pid int) (time.Duration, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("server cpu: %w", err)
	}
	return parseStatCPU(string(data))
}

// parseStatCPU extracts utime (field 14) and stime (field 15); the command
// name (field 2) is parenthesised and may contain spaces or parentheses.
func parseStatCPU(stat string) (time.Duration, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("server cpu: malformed /proc stat")
	}
	f := strings.Fields(stat[i+1:])
	// f[0] is field 3 (state); utime is field 14, stime field 15.
	if len(f) < 13 {
		return 0, errors.New("server cpu: short /proc stat")
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	stt, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, errors.New("server cpu: bad utime/stime in /proc stat")
	}
	return time.Duration(ut+stt) * time.Second / clockTicks, nil
}

// selfCPU is the load tool's own user+system CPU time.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
