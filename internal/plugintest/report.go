package plugintest

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"
)

// Summary counts results.
type Summary struct {
	Passed  int      `json:"passed"`
	Failed  int      `json:"failed"`
	Results []Result `json:"results"`
}

// Summarize counts results.
func Summarize(results []Result) Summary {
	s := Summary{Results: results}
	if s.Results == nil {
		s.Results = []Result{}
	}
	for _, r := range results {
		if r.Passed {
			s.Passed++
		} else {
			s.Failed++
		}
	}
	return s
}

// WriteText writes one line per test, the failures under it, benchmark
// figures, and a last line "N passed, M failed".
func (s Summary) WriteText(w io.Writer) {
	for _, r := range s.Results {
		status := "PASS"
		if !r.Passed {
			status = "FAIL"
		}
		fmt.Fprintf(w, "%s  %s  %s (%v)\n", status, r.Spec, r.Name, r.Took.Round(100*time.Microsecond))
		for _, f := range r.Failures {
			fmt.Fprintf(w, "      %s\n", strings.ReplaceAll(f, "\n", "\n      "))
		}
		for _, n := range r.Notes {
			fmt.Fprintf(w, "      note: %s\n", n)
		}
		if b := r.Bench; b != nil {
			parts := make([]string, 0, len(b.Phases))
			for _, p := range b.Phases {
				parts = append(parts, fmt.Sprintf("%s %v", p.Phase, p.Mean))
			}
			extra := ""
			if b.AdditionalStreams > 0 {
				extra = fmt.Sprintf(", %d other streams open", b.AdditionalStreams)
			}
			fmt.Fprintf(w, "      bench: %d streams%s; per stream %v: %s\n", b.Iterations, extra, b.PerStream, strings.Join(parts, ", "))
		}
	}
	fmt.Fprintf(w, "%d passed, %d failed\n", s.Passed, s.Failed)
}

// WriteJSON writes the summary as one JSON object.
func (s Summary) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(s)
}
