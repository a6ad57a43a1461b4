// Command extproc-load sends Envoy-shaped ext_proc traffic to an ext_proc
// server and reports throughput, latency and the server's CPU cost per
// request.
//
// Usage:
//
//	extproc-load -addr HOST:PORT [flags]            run load, print a report
//	extproc-load report [-baseline LABEL] FILE...   summarise JSON result lines
//	extproc-load wait -addr HOST:PORT [-timeout D]  wait until a gRPC dial succeeds
//	extproc-load watch -url URL [-interval D]       poll wasm-callout's /plugin, report instance recovery
//
// Every request is one HTTP exchange played through the Envoy emulator of
// server/envoytest (one Process stream per request, as Envoy opens them), so
// the server sees exactly the messages Envoy would send. Scenarios:
//
//	headers   request and response headers only (default processing mode)
//	buffered  request body of -body-bytes sent in BUFFERED mode
//	streamed  request body of -chunks chunks of -chunk-bytes in STREAMED mode
//	l4        one TCP connection per request through Envoy's network ext_proc
//	          filter (envoy.service.network_ext_proc): -chunks frames of
//	          -chunk-bytes each way, pipelined, checked to pass unchanged
//
// (The l4 scenario uses envoytest.L4Emulator, one Process stream per
// connection; -expect-header applies to the HTTP scenarios only.)
//
// -concurrency requests are kept in flight (default 16) over -conns gRPC
// connections (default 1), for -duration or -requests. With -server-pid the
// server process's CPU time (utime+stime from /proc/PID/stat) is read before
// and after the run and reported per request. With -reload-url the plugin
// is hot-swapped (POST, e.g. wasm-callout's /reload) every -reload-interval
// during the run, and the time from each request to the switch is reported.
//
// Fault injection: with -fault-every N every Nth request (or connection)
// issued in the measured run carries -fault-header (HTTP) or -fault-data
// (l4, as its first frame) and is counted apart: faults, fault_policy
// (answered with the server's failure policy: an ImmediateResponse of
// -policy-status, or a CLOSE for l4), fault_other, and their latency. Good
// requests answered with the policy (bystanders on the failed instance)
// are counted in good_policy_failures as well as in errors; error_kinds
// counts good failures by message. "watch" polls wasm-callout's GET
// /plugin meanwhile and reports how long the pool took to be fully healthy
// again after each fault (scripts/faults.sh runs both).
//
// The run prints a human-readable report followed by one JSON line (the last
// line of standard output); "report" reads such lines (other lines are
// skipped) and prints the median over rounds per label and scenario and the
// ratios of every label to the baseline label.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "extproc-load:", err)
		}
		os.Exit(2)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "report":
			return runReport(args[1:], stdout, stderr)
		case "wait":
			return runWait(ctx, args[1:], stdout, stderr)
		case "watch":
			return runWatch(ctx, args[1:], stdout, stderr)
		}
	}
	return runLoad(ctx, args, stdout, stderr)
}
