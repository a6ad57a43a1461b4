package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/wasm-callout/wasm-callout/internal/baseline"
)

func startBaseline(t *testing.T) string {
	t.Helper()
	srv, err := baseline.New("")
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	srv.Register(g)
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)
	return lis.Addr().String()
}

func TestLoadScenarios(t *testing.T) {
	addr := startBaseline(t)
	pid := strconv.Itoa(os.Getpid())
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"headers", []string{"-scenario", "headers"}},
		{"buffered", []string{"-scenario", "buffered", "-body-bytes", "10000", "-conns", "2"}},
		{"streamed", []string{"-scenario", "streamed", "-chunks", "3", "-chunk-bytes", "100", "-concurrency", "4"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			// A generous message timeout: the machine may be busy.
			args := append([]string{"-addr", addr, "-requests", "40", "-label", "x", "-server-pid", pid, "-message-timeout", "10s",
				"-expect-header", "x-wasm-callout"}, tc.args...)
			if err := run(context.Background(), args, &out, &errb); err != nil {
				t.Fatalf("run: %v\n%s", err, errb.String())
			}
			text := out.String()
			rs, err := readResults(&out)
			if err != nil || len(rs) != 1 {
				t.Fatalf("results %v %v\n%s", rs, err, out.String())
			}
			r := rs[0]
			if r.Requests != 40 || r.Errors != 0 || r.Scenario != tc.name || r.Label != "x" {
				t.Errorf("result %+v", r)
			}
			if r.CPUUsPerReq < 0 || r.P50Ms <= 0 || r.P99Ms < r.P50Ms || r.MaxMs < r.P99Ms {
				t.Errorf("result %+v", r)
			}
			if !strings.Contains(text, "req/s") {
				t.Errorf("no human report:\n%s", text)
			}
		})
	}
}

func TestLoadCountsErrors(t *testing.T) {
	addr := startBaseline(t)
	var out bytes.Buffer
	err := run(context.Background(), []string{"-addr", addr, "-requests", "5", "-message-timeout", "10s", "-expect-header", "x-missing"}, &out, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	rs, _ := readResults(&out)
	if len(rs) != 1 || rs[0].Errors != 5 || !strings.Contains(rs[0].FirstError, "x-missing") {
		t.Fatalf("results %+v", rs)
	}
}

func TestFlags(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"-addr", "a:1", "-scenario", "nope"},
		{"-addr", "a:1", "-concurrency", "0"},
		{"-addr", "a:1", "-conns", "100000"},
		{"-addr", "a:1", "-duration", "-1s"},
		{"-addr", "a:1", "-scenario", "buffered", "-body-bytes", "0"},
		{"-addr", "a:1", "-scenario", "streamed", "-chunks", "0"},
		{"-addr", "a:1", "extra"},
	} {
		if _, err := parseLoadFlags(args, &bytes.Buffer{}); err == nil {
			t.Errorf("%q accepted", args)
		}
	}
}

func TestParseStatCPU(t *testing.T) {
	for _, tc := range []struct {
		stat string
		want time.Duration
		ok   bool
	}{
		{"1234 (extproc-base) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0", 3 * time.Second, true},
		{"1 (a b) (c)) R 1 2 3 4 5 6 7 8 9 10 1 2 0 0", 30 * time.Millisecond, true},
		{"garbage", 0, false},
		{"1 (x) S 1 2", 0, false},
		{"1 (x) S 1 2 3 4 5 6 7 8 9 10 x 2", 0, false},
	} {
		got, err := parseStatCPU(tc.stat)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseStatCPU(%q) = %v, %v", tc.stat, got, err)
		}
	}
	if _, err := processCPU(os.Getpid()); err != nil {
		t.Errorf("own process: %v", err)
	}
}

func TestPercentileMedian(t *testing.T) {
	d := []time.Duration{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	if percentile(d, 0.5) != 5 || percentile(d, 0.99) != 10 || percentile(nil, 0.5) != 0 || percentile(d[:1], 0.99) != 1 {
		t.Error("percentile")
	}
	if median([]float64{3, 1, 2}) != 2 || median([]float64{4, 1, 2, 3}) != 2.5 || median(nil) != 0 {
		t.Error("median")
	}
}

func TestReport(t *testing.T) {
	dir := t.TempDir()
	lines := `noise before
{"label":"baseline","scenario":"headers","rps":1000,"p50_ms":1,"p99_ms":2,"cpu_us_per_req":50}
{"label":"wasm","scenario":"headers","rps":500,"p50_ms":2,"p99_ms":4,"cpu_us_per_req":150}
{"label":"baseline","scenario":"headers","rps":3000,"p50_ms":1,"p99_ms":2,"cpu_us_per_req":40}
{"label":"wasm","scenario":"headers","rps":600,"p50_ms":2,"p99_ms":4,"cpu_us_per_req":100}
{"label":"baseline","scenario":"headers","rps":2000,"p50_ms":1,"p99_ms":2,"cpu_us_per_req":60}
{"label":"wasm","scenario":"headers","rps":700,"p50_ms":2,"p99_ms":4,"cpu_us_per_req":200}
{"label":"baseline","scenario":"buffered","rps":100,"p50_ms":1,"p99_ms":2,"cpu_us_per_req":-1}
`
	path := dir + "/r.jsonl"
	if err := os.WriteFile(path, []byte(lines), 0o644); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := run(context.Background(), []string{"report", path}, &out, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	// Medians: baseline 2000 req/s, 50 µs; wasm 600 req/s, 150 µs.
	for _, want := range []string{"headers 0 in flight wasm: cpu/request 3.00x, throughput 0.30x, p99 2.00x", "n/a"} {
		if !strings.Contains(strings.Join(strings.Fields(out.String()), " "), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
	if err := run(context.Background(), []string{"report"}, &out, &bytes.Buffer{}); err == nil {
		t.Error("report without files accepted")
	}
}

func TestWait(t *testing.T) {
	addr := startBaseline(t)
	var out bytes.Buffer
	if err := run(context.Background(), []string{"wait", "-addr", addr, "-timeout", "5s"}, &out, &bytes.Buffer{}); err != nil {
		t.Fatalf("wait: %v", err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := lis.Addr().String()
	lis.Close()
	if err := run(context.Background(), []string{"wait", "-addr", closed, "-timeout", "300ms"}, &out, &bytes.Buffer{}); err == nil {
		t.Fatal("wait succeeded on a closed port")
	}
}
