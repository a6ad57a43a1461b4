package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

// maxSwapTime bounds one reload request: a cold compilation of a large Go
// plugin on a busy machine takes seconds, not minutes.
const maxSwapTime = 2 * time.Minute

// swapper POSTs to a reload URL (wasm-callout's POST /reload) while a run
// measures, to see what hot-swapping costs the traffic. Reloads run one at
// a time; one starts every interval, or as soon as the previous one ended
// if it took longer. Each latency is from the request to the answer, which
// wasm-callout sends once the new generation is prepared and switched to.
type swapper struct {
	url      string
	interval time.Duration
	client   *http.Client

	mu        sync.Mutex
	latencies []time.Duration
	errors    int
	firstErr  string
}

func newSwapper(url string, interval time.Duration) *swapper {
	return &swapper{url: url, interval: interval, client: &http.Client{Timeout: maxSwapTime}}
}

// run reloads until ctx is done. A reload still running then is waited for
// and counted: its traffic was measured.
func (s *swapper) run(ctx context.Context) {
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for {
		s.once()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *swapper) once() {
	t0 := time.Now()
	resp, err := s.client.Post(s.url, "application/json", nil)
	lat := time.Since(t0)
	if err == nil {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("reload: %s: %s", resp.Status, strings.TrimSpace(string(body)))
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.errors++
		if s.firstErr == "" {
			s.firstErr = err.Error()
		}
		return
	}
	s.latencies = append(s.latencies, lat)
}

// fill records the reloads in r.
func (s *swapper) fill(r *result) {
	s.mu.Lock()
	defer s.mu.Unlock()
	lat := slices.Clone(s.latencies)
	slices.Sort(lat)
	r.Swaps, r.SwapErrors, r.FirstSwapError = len(lat), s.errors, s.firstErr
	if len(lat) > 0 {
		r.SwapP50Ms = ms(percentile(lat, 0.50))
		r.SwapMaxMs = ms(lat[len(lat)-1])
	}
}
