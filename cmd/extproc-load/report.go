package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
)

// runReport reads the JSON lines of several runs and prints, per scenario,
// the median over rounds of each label and the ratios to the baseline label.
func runReport(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("extproc-load report", flag.ContinueOnError)
	fs.SetOutput(stderr)
	base := fs.String("baseline", "baseline", "label the others are compared with")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return errors.New("report: no result files")
	}
	var results []result
	for _, path := range fs.Args() {
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		rs, err := readResults(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		results = append(results, rs...)
	}
	if len(results) == 0 {
		return errors.New("report: no result lines")
	}
	writeReport(stdout, summarize(results), *base)
	return nil
}

// readResults returns the JSON result lines of r; other lines are skipped.
func readResults(r io.Reader) ([]result, error) {
	var rs []result
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if !strings.HasPrefix(line, "{") {
			continue
		}
		var res result
		if err := json.Unmarshal([]byte(line), &res); err != nil {
			return nil, err
		}
		rs = append(rs, res)
	}
	return rs, sc.Err()
}

// summary is the median over the rounds of one label and scenario.
type summary struct {
	label, scenario string
	concurrency     int
	rounds          int
	errors          int64
	rps             float64
	p50Ms, p99Ms    float64
	cpuUsPerReq     float64 // -1 when unknown
	// Hot swaps (-reload-url): totals over the rounds, the median of the
	// rounds' median latency, and the worst.
	swaps, swapErrors    int
	swapP50Ms, swapMaxMs float64
}

func summarize(rs []result) []summary {
	type key struct {
		label, scenario string
		concurrency     int
	}
	groups := map[key][]result{}
	var order []key
	for _, r := range rs {
		k := key{r.Label, r.Scenario, r.Concurrency}
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], r)
	}
	var out []summary
	for _, k := range order {
		g := groups[k]
		s := summary{label: k.label, scenario: k.scenario, concurrency: k.concurrency, rounds: len(g), cpuUsPerReq: -1}
		var rps, p50, p99, cpu, swapP50 []float64
		for _, r := range g {
			s.errors += r.Errors
			s.swaps += r.Swaps
			s.swapErrors += r.SwapErrors
			s.swapMaxMs = max(s.swapMaxMs, r.SwapMaxMs)
			if r.Swaps > 0 {
				swapP50 = append(swapP50, r.SwapP50Ms)
			}
			rps = append(rps, r.RPS)
			p50 = append(p50, r.P50Ms)
			p99 = append(p99, r.P99Ms)
			if r.CPUUsPerReq >= 0 {
				cpu = append(cpu, r.CPUUsPerReq)
			}
		}
		s.rps, s.p50Ms, s.p99Ms = median(rps), median(p50), median(p99)
		s.swapP50Ms = median(swapP50)
		if len(cpu) > 0 {
			s.cpuUsPerReq = median(cpu)
		}
		out = append(out, s)
	}
	return out
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	v = slices.Clone(v)
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

func writeReport(w io.Writer, ss []summary, base string) {
	fmt.Fprintf(w, "%-14s %-10s %9s %6s %10s %9s %9s %11s %7s\n",
		"label", "scenario", "in flight", "rounds", "req/s", "p50 ms", "p99 ms", "cpu µs/req", "errors")
	for _, s := range ss {
		cpu := "n/a"
		if s.cpuUsPerReq >= 0 {
			cpu = fmt.Sprintf("%.1f", s.cpuUsPerReq)
		}
		fmt.Fprintf(w, "%-14s %-10s %9d %6d %10.0f %9.3f %9.3f %11s %7d\n",
			s.label, s.scenario, s.concurrency, s.rounds, s.rps, s.p50Ms, s.p99Ms, cpu, s.errors)
	}
	type point struct {
		scenario    string
		concurrency int
	}
	baseBy := map[point]summary{}
	for _, s := range ss {
		if s.label == base {
			baseBy[point{s.scenario, s.concurrency}] = s
		}
	}
	header := false
	for _, s := range ss {
		b, ok := baseBy[point{s.scenario, s.concurrency}]
		if s.label == base || !ok {
			continue
		}
		if !header {
			fmt.Fprintf(w, "\nratios to %s (medians):\n", base)
			header = true
		}
		cpu := "n/a"
		if s.cpuUsPerReq >= 0 && b.cpuUsPerReq > 0 {
			cpu = fmt.Sprintf("%.2fx", s.cpuUsPerReq/b.cpuUsPerReq)
		}
		tput := "n/a"
		if b.rps > 0 {
			tput = fmt.Sprintf("%.2fx", s.rps/b.rps)
		}
		p99 := "n/a"
		if b.p99Ms > 0 {
			p99 = fmt.Sprintf("%.2fx", s.p99Ms/b.p99Ms)
		}
		fmt.Fprintf(w, "  %-10s %3d in flight  %-14s cpu/request %s, throughput %s, p99 %s\n",
			s.scenario, s.concurrency, s.label+":", cpu, tput, p99)
	}
	writeSwaps(w, ss)
}

// writeSwaps lists the runs that hot-swapped the plugin: how many reloads,
// how long from request to switch, and the requests that failed meanwhile.
func writeSwaps(w io.Writer, ss []summary) {
	header := false
	for _, s := range ss {
		if s.swaps+s.swapErrors == 0 {
			continue
		}
		if !header {
			fmt.Fprintf(w, "\nhot swaps under load (request to switch):\n%-14s %-10s %6s %13s %12s %12s %15s\n",
				"label", "scenario", "swaps", "reload errors", "p50 ms", "max ms", "failed requests")
			header = true
		}
		fmt.Fprintf(w, "%-14s %-10s %6d %13d %12.1f %12.1f %15d\n",
			s.label, s.scenario, s.swaps, s.swapErrors, s.swapP50Ms, s.swapMaxMs, s.errors)
	}
}
