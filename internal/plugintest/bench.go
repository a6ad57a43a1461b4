package plugintest

import (
	"fmt"
	"time"

	"github.com/wasm-callout/wasm-callout/abi"
	"github.com/wasm-callout/wasm-callout/internal/plugintest/specpb"
)

// Bench is a benchmark's result: how long each phase took on average over
// Iterations streams, with the plugin's logging off (as in Google's
// tester).
type Bench struct {
	Iterations int `json:"iterations"`
	// Phases lists the mean time per phase, in stream order; stream
	// covers stream_init and stream_destroy together.
	Phases []BenchPhase `json:"phases"`
	// PerStream is the mean time of a whole stream.
	PerStream time.Duration `json:"per_stream_ns"`
	// AdditionalStreams were held open on the instance during the run.
	AdditionalStreams int `json:"additional_streams,omitempty"`
}

// BenchPhase is one phase's mean time.
type BenchPhase struct {
	Phase string        `json:"phase"`
	Mean  time.Duration `json:"mean_ns"`
}

// maxBenchIterations bounds a benchmark whatever its time.
const maxBenchIterations = 1_000_000

// bench runs the test's stream repeatedly on a fresh plugin with logging
// off and measures each phase.
func (tr *testRun) bench() (*Bench, error) {
	t := tr.test
	h, err := Load(tr.ctx, tr.harnessConfig(abi.LogCritical, false))
	if err != nil {
		return nil, fmt.Errorf("loading the plugin: %v", err)
	}
	defer h.Close()
	var reqH, respH []abi.Pair
	if inv := t.GetRequestHeaders(); inv != nil {
		if reqH, err = HeaderInput(inv.GetInput(), true, tr.spec.Resolve); err != nil {
			return nil, err
		}
	}
	if inv := t.GetResponseHeaders(); inv != nil {
		if respH, err = HeaderInput(inv.GetInput(), false, tr.spec.Resolve); err != nil {
			return nil, err
		}
	}
	chunks := func(invs []*specpb.Invocation) ([][][]byte, error) {
		var out [][][]byte
		for _, inv := range invs {
			data, err := BodyInput(inv.GetInput(), tr.spec.Resolve)
			if err != nil {
				return nil, err
			}
			out = append(out, Chunks(data, t))
		}
		return out, nil
	}
	reqB, err := chunks(t.GetRequestBody())
	if err != nil {
		return nil, err
	}
	respB, err := chunks(t.GetResponseBody())
	if err != nil {
		return nil, err
	}
	props := tr.properties()

	// Streams held open while the benchmark runs, as Google's tester's
	// num_additional_streams does, to load the plugin's per-stream state.
	extra := int(min(tr.spec.Suite.GetEnv().GetNumAdditionalStreams(), 10000))
	for range extra {
		st, _, err := h.OpenHTTP(props)
		if err != nil {
			return nil, err
		}
		defer st.Close()
		if reqH != nil {
			st.Headers(true, append([]abi.Pair(nil), reqH...), false)
		}
	}

	names := []string{"stream"}
	if reqH != nil {
		names = append(names, "request_headers")
	}
	if len(reqB) > 0 {
		names = append(names, "request_body")
	}
	if respH != nil {
		names = append(names, "response_headers")
	}
	if len(respB) > 0 {
		names = append(names, "response_body")
	}
	sums := make(map[string]time.Duration, len(names))
	budget := tr.opts.BenchTime
	if budget <= 0 {
		budget = time.Second
	}
	b := &Bench{AdditionalStreams: extra}
	start := time.Now()
	for b.Iterations == 0 || (time.Since(start) < budget && b.Iterations < maxBenchIterations) {
		b.Iterations++
		st, open, err := h.OpenHTTP(props)
		if err != nil {
			return nil, err
		}
		sums["stream"] += open.Took
		run := func(name string, r Record) error {
			sums[name] += r.Took
			if r.Failure != nil {
				return fmt.Errorf("%s: the plugin failed: %v", name, r.Failure)
			}
			return nil
		}
		err = func() error {
			if reqH != nil {
				if err := run("request_headers", st.Headers(true, append([]abi.Pair(nil), reqH...), false)); err != nil {
					return err
				}
			}
			for _, c := range reqB {
				if st.Replied != nil {
					break
				}
				if err := run("request_body", st.Body(true, c, true)); err != nil {
					return err
				}
			}
			if respH != nil && st.Replied == nil {
				if err := run("response_headers", st.Headers(false, append([]abi.Pair(nil), respH...), false)); err != nil {
					return err
				}
			}
			for _, c := range respB {
				if st.Replied != nil {
					break
				}
				if err := run("response_body", st.Body(false, c, true)); err != nil {
					return err
				}
			}
			return nil
		}()
		sums["stream"] += st.Close().Took
		if err != nil {
			return nil, err
		}
	}
	var total time.Duration
	for _, n := range names {
		m := sums[n] / time.Duration(b.Iterations)
		b.Phases = append(b.Phases, BenchPhase{Phase: n, Mean: m})
		total += m
	}
	b.PerStream = total
	return b, nil
}
