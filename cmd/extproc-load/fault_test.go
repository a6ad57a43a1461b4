package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/wasm-callout/wasm-callout/host"
	"github.com/wasm-callout/wasm-callout/internal/testutil"
	"github.com/wasm-callout/wasm-callout/server"
)

func TestFaultFlags(t *testing.T) {
	c, err := parseLoadFlags([]string{"-addr", "a:1", "-fault-every", "7", "-fault-header", " X-Fault :  trap "}, &bytes.Buffer{})
	if err != nil || c.faultEvery != 7 || c.policyStatus != 500 {
		t.Fatalf("%+v %v", c, err)
	}
	if _, err := parseLoadFlags([]string{"-addr", "a:1", "-scenario", "l4", "-fault-every", "3", "-fault-data", "t",
		"-policy-status", "503"}, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"-addr", "a:1", "-fault-every", "3"},                                             // nothing to inject
		{"-addr", "a:1", "-fault-header", "x-fault: t"},                                   // no -fault-every
		{"-addr", "a:1", "-fault-every", "-1", "-fault-header", "x-fault: t"},             // negative
		{"-addr", "a:1", "-fault-every", "2", "-fault-header", "x-fault"},                 // no colon
		{"-addr", "a:1", "-fault-every", "2", "-fault-header", ": t"},                     // no name
		{"-addr", "a:1", "-fault-every", "2", "-fault-header", "x fault: t"},              // space in name
		{"-addr", "a:1", "-fault-every", "2", "-fault-data", "t"},                         // data for HTTP
		{"-addr", "a:1", "-scenario", "l4", "-fault-every", "2", "-fault-header", "a: b"}, // header for l4
		{"-addr", "a:1", "-policy-status", "99"},
	} {
		if _, err := parseLoadFlags(args, &bytes.Buffer{}); err == nil {
			t.Errorf("%q accepted", args)
		}
	}
}

func TestIsFault(t *testing.T) {
	var got []int64
	for ticket := int64(1); ticket <= 12; ticket++ {
		if isFault(ticket, 4) {
			got = append(got, ticket)
		}
		if isFault(ticket, 0) {
			t.Fatal("fault with -fault-every 0")
		}
	}
	if len(got) != 3 || got[0] != 4 || got[1] != 8 || got[2] != 12 {
		t.Errorf("faults at %v, want [4 8 12]", got)
	}
	var k kinds
	for i := range maxKinds + 5 {
		k.add(strings.Repeat("x", i+1) + strings.Repeat("y", maxKindLen))
	}
	if len(k) != maxKinds+1 || k["(other)"] != 5 {
		t.Errorf("kinds: %d distinct, other %d", len(k), k["(other)"])
	}
}

// startFaults serves host/testdata/faults.wasm (fail-closed, status 500) as
// wasm-callout does: a trap, loop, memory bomb or exit on demand.
func startFaults(t *testing.T) string {
	t.Helper()
	wasm, err := os.ReadFile("../../host/testdata/faults.wasm")
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	p, err := host.Load(context.Background(), wasm, host.Config{Name: "faults", Instances: 2,
		FailurePolicy: host.FailClosed, FailStatus: 500, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(server.Options{Plugin: p, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	addr, stop := testutil.Serve(t, srv)
	t.Cleanup(func() {
		stop()
		p.Close(context.Background())
	})
	return addr
}

// Fault requests are counted apart from the good ones and classified: a
// trapping plugin gets the failure policy, a server that ignores the fault
// header serves them normally.
func TestLoadFaults(t *testing.T) {
	faults, plain := startFaults(t), startBoth(t)
	for _, tc := range []struct {
		name, addr string
		args       []string
		policy     bool
	}{
		{"http trap", faults, []string{"-fault-header", "x-fault: t", "-expect-header", "x-ok"}, true},
		{"l4 trap", faults, []string{"-scenario", "l4", "-chunks", "2", "-chunk-bytes", "10", "-fault-data", "t"}, true},
		{"http ignored", plain, []string{"-fault-header", "x-fault: t"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			// One request at a time and a generous message timeout. A good
			// request can still meet the policy when two faults take both
			// instances before the first is replaced; it must then be
			// counted as a bystander, never as another error.
			args := append([]string{"-addr", tc.addr, "-requests", "40", "-concurrency", "1", "-message-timeout", "10s",
				"-fault-every", "4"}, tc.args...)
			if err := run(context.Background(), args, &out, &errb); err != nil {
				t.Fatalf("run: %v\n%s", err, errb.String())
			}
			rs, err := readResults(&out)
			if err != nil || len(rs) != 1 {
				t.Fatalf("results %v %v\n%s", rs, err, out.String())
			}
			r := rs[0]
			if r.Requests != 30 || r.Errors != r.GoodPolicyFailures || r.Faults != 10 || r.FaultMaxMs < r.FaultP50Ms || r.FaultP50Ms <= 0 {
				t.Errorf("result %+v\n%s", r, out.String())
			}
			if tc.policy && (r.FaultPolicy != 10 || r.FaultOther != 0) {
				t.Errorf("faults not answered with the policy: %+v\n%s", r, out.String())
			}
			if !tc.policy && (r.FaultOther != 10 || r.FaultOtherKinds["served normally"] != 10) {
				t.Errorf("faults: %+v", r)
			}
		})
	}
}

func TestWatch(t *testing.T) {
	var w watchState
	ms := time.Millisecond
	st := func(h int) *poolStatus { return &poolStatus{Instances: 2, Healthy: h} }
	for i, s := range []*poolStatus{st(2), st(1), st(0), nil, st(2), st(2), st(1), st(2), st(1)} {
		var err error
		if s == nil {
			err = io.EOF
		}
		w.add(time.Duration(i*10)*ms, s, err)
	}
	r := w.result("x", time.Second)
	// Dips: 10 ms to 40 ms (the failed poll at 30 ms does not end it), 60
	// to 70 ms; one still open at the end.
	if r.Dips != 2 || !r.Unrecovered || r.MinHealthy != 0 || r.PollErrors != 1 || r.RecoveryMaxMs != 30 ||
		r.RecoveryP50Ms != 10 || r.BelowFullMs != 40 || r.Failures != nil {
		t.Errorf("%+v", r)
	}

	// Against a fake /plugin: all healthy, with counters.
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, `{"instances":2,"healthy_instances":2,"failures":3,"replaced":3}`)
	}))
	defer ts.Close()
	var out bytes.Buffer
	if err := run(context.Background(), []string{"watch", "-url", ts.URL, "-duration", "100ms"}, &out, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), `"dips":0`) || !strings.Contains(out.String(), `"failures":0`) || strings.Contains(out.String(), `"polls":0`) {
		t.Errorf("watch output:\n%s", out.String())
	}
}
