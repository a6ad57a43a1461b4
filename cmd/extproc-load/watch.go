package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"
)

// runWatch polls wasm-callout's GET /plugin (instances, healthy_instances)
// every -interval until -duration has passed or the process is interrupted
// (SIGINT, SIGTERM), then reports the dips it saw: a dip lasts from the
// first poll that found fewer healthy instances than configured to the
// first that found them all healthy again, so its length is the instance
// recovery time to within one interval (a dip shorter than the interval
// may go unseen). The counters failures and replaced are reported as
// differences when the status has them.
func runWatch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("extproc-load watch", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("url", "", "status URL, wasm-callout's http://HEALTH/plugin (required)")
	interval := fs.Duration("interval", 10*time.Millisecond, "poll this often")
	duration := fs.Duration("duration", maxDuration, "stop after this long")
	label := fs.String("label", "", "label recorded in the JSON line")
	if err := fs.Parse(args); err != nil {
		return err
	}
	switch {
	case fs.NArg() > 0 || *url == "":
		return errors.New("watch: usage: extproc-load watch -url http://HOST:PORT/plugin [-interval D] [-duration D]")
	case !strings.HasPrefix(*url, "http://") && !strings.HasPrefix(*url, "https://"):
		return errors.New("watch: -url must be an http or https URL")
	case *interval < time.Millisecond || *interval > time.Minute:
		return errors.New("watch: -interval must be in [1ms, 1m]")
	case *duration <= 0 || *duration > maxDuration:
		return fmt.Errorf("watch: -duration must be in (0, %v]", maxDuration)
	}
	ctx, cancel := context.WithTimeout(ctx, *duration)
	defer cancel()
	client := &http.Client{Timeout: time.Second}
	var w watchState
	start := time.Now()
	t := time.NewTicker(*interval)
	defer t.Stop()
poll:
	for {
		st, err := pollStatus(ctx, client, *url)
		if ctx.Err() != nil {
			break
		}
		w.add(time.Since(start), st, err)
		select {
		case <-ctx.Done():
			break poll
		case <-t.C:
		}
	}
	r := w.result(*label, time.Since(start))
	fmt.Fprintf(stdout, "watch %s: %d polls (%d failed) over %.1fs, instances %d, fewest healthy %d\n",
		*url, r.Polls, r.PollErrors, r.DurationS, r.Instances, r.MinHealthy)
	fmt.Fprintf(stdout, "  dips %d (unrecovered at the end: %v): recovery p50 %.1fms  max %.1fms, below full %.1fms in all\n",
		r.Dips, r.Unrecovered, r.RecoveryP50Ms, r.RecoveryMaxMs, r.BelowFullMs)
	if r.FirstPollError != "" {
		fmt.Fprintf(stdout, "  first poll error: %s\n", r.FirstPollError)
	}
	line, err := json.Marshal(r)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s\n", line)
	return nil
}

// poolStatus is the part of wasm-callout's GET /plugin that watch reads.
type poolStatus struct {
	Instances int `json:"instances"`
	Healthy   int `json:"healthy_instances"`
	// Counters that later versions may report.
	Failures *int64 `json:"failures"`
	Replaced *int64 `json:"replaced"`
}

func pollStatus(ctx context.Context, client *http.Client, url string) (*poolStatus, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	var st poolStatus
	if err := json.Unmarshal(body, &st); err != nil {
		return nil, err
	}
	if st.Instances <= 0 {
		return nil, errors.New("status without instances")
	}
	return &st, nil
}

// watchState turns polls into dips.
type watchState struct {
	polls, pollErrors   int
	firstErr            string
	instances           int
	minHealthy          int
	dipStart            time.Duration // when the current dip was first seen
	inDip               bool
	dips                []time.Duration
	firstStat, lastStat *poolStatus
}

// add records one poll at time at (since the start): a status or an error.
// Failed polls are skipped: a dip ends only on a poll that saw every
// instance healthy.
func (w *watchState) add(at time.Duration, st *poolStatus, err error) {
	w.polls++
	if err != nil {
		w.pollErrors++
		if w.firstErr == "" {
			w.firstErr = err.Error()
		}
		return
	}
	if w.firstStat == nil {
		w.firstStat, w.minHealthy = st, st.Healthy
	}
	w.lastStat = st
	w.instances = st.Instances
	w.minHealthy = min(w.minHealthy, st.Healthy)
	switch {
	case st.Healthy < st.Instances && !w.inDip:
		w.inDip, w.dipStart = true, at
	case st.Healthy >= st.Instances && w.inDip:
		w.inDip = false
		w.dips = append(w.dips, at-w.dipStart)
	}
}

// watchResult is the JSON line of a watch.
type watchResult struct {
	Label          string  `json:"label"`
	Polls          int     `json:"polls"`
	PollErrors     int     `json:"poll_errors"`
	FirstPollError string  `json:"first_poll_error,omitempty"`
	DurationS      float64 `json:"duration_s"`
	Instances      int     `json:"instances"`
	MinHealthy     int     `json:"min_healthy"`
	// Dips are the recovered dips; Unrecovered says the last poll still
	// saw one.
	Dips          int     `json:"dips"`
	Unrecovered   bool    `json:"unrecovered"`
	RecoveryP50Ms float64 `json:"recovery_p50_ms"`
	RecoveryMaxMs float64 `json:"recovery_max_ms"`
	BelowFullMs   float64 `json:"below_full_ms"`
	// Failures and Replaced are the differences of the status counters
	// between the first and the last poll, when the status has them.
	Failures *int64 `json:"failures,omitempty"`
	Replaced *int64 `json:"replaced,omitempty"`
}

func (w *watchState) result(label string, elapsed time.Duration) watchResult {
	r := watchResult{Label: label, Polls: w.polls, PollErrors: w.pollErrors, FirstPollError: w.firstErr,
		DurationS: elapsed.Seconds(), Instances: w.instances, MinHealthy: w.minHealthy,
		Dips: len(w.dips), Unrecovered: w.inDip}
	d := slices.Clone(w.dips)
	slices.Sort(d)
	var total time.Duration
	for _, x := range d {
		total += x
	}
	r.RecoveryP50Ms = ms(percentile(d, 0.50))
	if len(d) > 0 {
		r.RecoveryMaxMs = ms(d[len(d)-1])
	}
	r.BelowFullMs = ms(total)
	if w.firstStat != nil {
		diff := func(a, b *int64) *int64 {
			if a == nil || b == nil {
				return nil
			}
			v := *b - *a
			return &v
		}
		r.Failures = diff(w.firstStat.Failures, w.lastStat.Failures)
		r.Replaced = diff(w.firstStat.Replaced, w.lastStat.Replaced)
	}
	return r
}
