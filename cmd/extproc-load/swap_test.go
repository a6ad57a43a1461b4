package main

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
)

// TestLoadWithReloads: with -reload-url the run POSTs reloads while it
// measures and reports them, refused ones apart.
func TestLoadWithReloads(t *testing.T) {
	addr := startBaseline(t)
	var calls atomic.Int64
	admin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.Error(w, "POST only", http.StatusMethodNotAllowed)
			return
		}
		if calls.Add(1) == 2 {
			http.Error(w, `{"error": "broken plugin"}`, http.StatusUnprocessableEntity)
			return
		}
		w.Write([]byte(`{"generation": 2}`))
	}))
	defer admin.Close()
	var out, errb bytes.Buffer
	args := []string{"-addr", addr, "-duration", "300ms", "-label", "swap", "-message-timeout", "10s",
		"-reload-url", admin.URL + "/reload", "-reload-interval", "20ms"}
	if err := run(context.Background(), args, &out, &errb); err != nil {
		t.Fatalf("run: %v\n%s", err, errb.String())
	}
	text := out.String()
	rs, err := readResults(&out)
	if err != nil || len(rs) != 1 {
		t.Fatalf("results %v %v\n%s", rs, err, text)
	}
	r := rs[0]
	if r.Swaps < 2 || r.SwapErrors != 1 || !strings.Contains(r.FirstSwapError, "broken plugin") ||
		r.SwapP50Ms <= 0 || r.SwapMaxMs < r.SwapP50Ms || int64(r.Swaps+r.SwapErrors) != calls.Load() {
		t.Errorf("result %+v after %d reloads", r, calls.Load())
	}
	if !strings.Contains(text, "hot swaps") {
		t.Errorf("no swap line in the human report:\n%s", text)
	}
	for _, bad := range [][]string{
		{"-addr", "a:1", "-reload-url", "ftp://x/reload"},
		{"-addr", "a:1", "-reload-url", "http://x/reload", "-reload-interval", "0s"},
	} {
		if _, err := parseLoadFlags(bad, &bytes.Buffer{}); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestReportSwaps(t *testing.T) {
	lines := `{"label":"steady","scenario":"headers","rps":1000,"p50_ms":1,"p99_ms":2,"cpu_us_per_req":-1}
{"label":"swap","scenario":"headers","rps":800,"p50_ms":1,"p99_ms":9,"cpu_us_per_req":-1,"swaps":4,"swap_p50_ms":60,"swap_max_ms":90}
{"label":"swap","scenario":"headers","rps":900,"p50_ms":1,"p99_ms":9,"cpu_us_per_req":-1,"swaps":5,"swap_errors":1,"swap_p50_ms":70,"swap_max_ms":120,"errors":2}
`
	path := t.TempDir() + "/r.jsonl"
	if err := os.WriteFile(path, []byte(lines), 0o644); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := run(context.Background(), []string{"report", "-baseline", "steady", path}, &out, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	text := strings.Join(strings.Fields(out.String()), " ")
	// Medians: steady 1000 req/s, swap 850; 9 swaps, 1 refused, p50 of
	// the rounds' p50s 65 ms, worst 120 ms, 2 failed requests.
	for _, want := range []string{"headers 0 in flight swap: cpu/request n/a, throughput 0.85x, p99 4.50x", "swap headers 9 1 65.0 120.0 2"} {
		if !strings.Contains(text, want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
	if _, swaps, _ := strings.Cut(text, "hot swaps under load"); strings.Contains(swaps, "steady") {
		t.Errorf("a run without swaps is listed under hot swaps:\n%s", out.String())
	}
}
