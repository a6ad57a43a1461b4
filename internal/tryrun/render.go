package tryrun

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/wasm-callout/wasm-callout/abi"
	"github.com/wasm-callout/wasm-callout/host"
	"github.com/wasm-callout/wasm-callout/internal/plugintest"
)

// HeaderEdit is one header the plugin changed: "added", "replaced" or
// "removed", with the values before and after.
type HeaderEdit struct {
	Op     string   `json:"op"`
	Key    string   `json:"key"`
	Before []string `json:"before,omitempty"`
	After  []string `json:"after,omitempty"`
}

// Edits classifies a phase's header changes against its input.
func Edits(rec plugintest.Record) []HeaderEdit {
	var out []HeaderEdit
	for _, c := range rec.Changes {
		var before []string
		for _, p := range rec.HeadersIn {
			if strings.EqualFold(p.Key, c.Key) {
				before = append(before, p.Value)
			}
		}
		e := HeaderEdit{Key: c.Key, Before: before, After: c.Values}
		switch {
		case len(before) == 0 && len(c.Values) == 0:
			continue // added then removed
		case len(before) == 0:
			e.Op = "added"
		case len(c.Values) == 0:
			e.Op = "removed"
		case strings.Join(before, "\x00") == strings.Join(c.Values, "\x00"):
			continue // set to what it was
		default:
			e.Op = "replaced"
		}
		out = append(out, e)
	}
	return out
}

// phaseJSON is a Record as --json shows it.
type phaseJSON struct {
	Phase      string        `json:"phase"`
	TookNS     time.Duration `json:"took_ns"`
	Action     string        `json:"action,omitempty"`
	Received   []headerJSON  `json:"received_headers,omitempty"`
	Headers    []headerJSON  `json:"headers,omitempty"`
	Edits      []HeaderEdit  `json:"header_edits,omitempty"`
	BodyIn     *string       `json:"received_body,omitempty"`
	BodyOut    *string       `json:"body,omitempty"`
	Chunks     int           `json:"chunks,omitempty"`
	Held       bool          `json:"held,omitempty"`
	LocalReply *localJSON    `json:"local_reply,omitempty"`
	Failure    string        `json:"failure,omitempty"`
	Logs       []logJSON     `json:"logs,omitempty"`
	Metrics    []metricJSON  `json:"metrics,omitempty"`
	Calls      []string      `json:"host_calls,omitempty"`
}

type localJSON struct {
	Status     uint32       `json:"status"`
	Headers    []headerJSON `json:"headers,omitempty"`
	Body       string       `json:"body,omitempty"`
	Details    string       `json:"details,omitempty"`
	GRPCStatus int32        `json:"grpc_status"`
}

type headerJSON struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

func headersJSON(pairs []abi.Pair) []headerJSON {
	if len(pairs) == 0 {
		return nil
	}
	out := make([]headerJSON, len(pairs))
	for i, p := range pairs {
		out[i] = headerJSON{p.Key, p.Value}
	}
	return out
}

type logJSON struct {
	Level   string `json:"level"`
	Message string `json:"message"`
}

type metricJSON struct {
	Name  string  `json:"name"`
	Type  string  `json:"type"`
	Delta float64 `json:"delta"`
}

// WriteJSON writes the report as one JSON object.
func (r *Report) WriteJSON(w io.Writer) error {
	out := struct {
		Phases  []phaseJSON `json:"phases"`
		Outcome Outcome     `json:"outcome"`
	}{Outcome: r.Outcome}
	for _, rec := range r.Phases {
		p := phaseJSON{Phase: rec.Phase, TookNS: rec.Took, Received: headersJSON(rec.HeadersIn), Headers: headersJSON(rec.HeadersOut),
			Edits: Edits(rec), Chunks: rec.Chunks, Held: rec.Held}
		if rec.Phase != "plugin_init" && rec.Phase != "stream_init" && rec.Phase != "stream_destroy" {
			p.Action = rec.Action.String()
		}
		if rec.IsBody {
			in, out := string(rec.BodyIn), string(rec.BodyOut)
			p.BodyIn, p.BodyOut = &in, &out
		}
		if l := rec.Local; l != nil {
			p.LocalReply = &localJSON{Status: l.Status, Headers: headersJSON(l.Headers), Body: string(l.Body), Details: l.Details, GRPCStatus: l.GRPCStatus}
		}
		if rec.Failure != nil {
			p.Failure = rec.Failure.Error()
		}
		for _, l := range rec.Logs {
			p.Logs = append(p.Logs, logJSON{Level: l.Level.String(), Message: l.Message})
		}
		for _, m := range rec.Metrics {
			p.Metrics = append(p.Metrics, metricJSON{Name: m.Name, Type: m.Type.String(), Delta: m.Delta})
		}
		for _, c := range rec.Calls {
			p.Calls = append(p.Calls, callString(c))
		}
		out.Phases = append(out.Phases, p)
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

// WriteText writes the report for a person: one block per phase.
func (r *Report) WriteText(w io.Writer, verbose bool) {
	for _, rec := range r.Phases {
		head := fmt.Sprintf("== %s (%v)", rec.Phase, rec.Took.Round(time.Microsecond))
		if rec.Phase != "plugin_init" && rec.Phase != "stream_init" && rec.Phase != "stream_destroy" {
			head += " → " + strings.ToLower(rec.Action.String())
		}
		fmt.Fprintln(w, head)
		if len(rec.HeadersIn) > 0 {
			fmt.Fprintln(w, "   received:")
			for _, p := range rec.HeadersIn {
				fmt.Fprintf(w, "     %s: %s\n", p.Key, p.Value)
			}
		}
		edits := Edits(rec)
		if len(edits) > 0 {
			fmt.Fprintln(w, "   changed:")
			for _, e := range edits {
				switch e.Op {
				case "added":
					fmt.Fprintf(w, "     + %s: %s\n", e.Key, strings.Join(e.After, ", "))
				case "removed":
					fmt.Fprintf(w, "     - %s (was %s)\n", e.Key, strings.Join(e.Before, ", "))
				default:
					fmt.Fprintf(w, "     ~ %s: %s (was %s)\n", e.Key, strings.Join(e.After, ", "), strings.Join(e.Before, ", "))
				}
			}
		} else if len(rec.HeadersIn) > 0 && rec.Local == nil && rec.Failure == nil {
			fmt.Fprintln(w, "   headers unchanged")
		}
		if rec.IsBody {
			fmt.Fprintf(w, "   received %d bytes in %d chunk(s): %s\n", len(rec.BodyIn), rec.Chunks, short(rec.BodyIn))
			switch {
			case rec.Local != nil || rec.Failure != nil:
			case string(rec.BodyIn) == string(rec.BodyOut):
				fmt.Fprintln(w, "   body unchanged")
			default:
				held := ""
				if rec.Held {
					held = " (still held by the plugin)"
				}
				fmt.Fprintf(w, "   body changed to %d bytes%s: %s\n     %s\n", len(rec.BodyOut), held, short(rec.BodyOut), bodyDiff(rec.BodyIn, rec.BodyOut))
			}
		}
		if l := rec.Local; l != nil {
			fmt.Fprintf(w, "   local reply %d", l.Status)
			if l.Details != "" {
				fmt.Fprintf(w, " (details %q)", l.Details)
			}
			if l.GRPCStatus >= 0 {
				fmt.Fprintf(w, " grpc-status %d", l.GRPCStatus)
			}
			fmt.Fprintln(w)
			for _, p := range l.Headers {
				fmt.Fprintf(w, "     %s: %s\n", p.Key, p.Value)
			}
			if len(l.Body) > 0 {
				fmt.Fprintf(w, "     body: %s\n", short(l.Body))
			}
		}
		if rec.Failure != nil {
			fmt.Fprintf(w, "   PLUGIN FAILED: %v\n", rec.Failure)
		}
		for _, l := range rec.Logs {
			fmt.Fprintf(w, "   log %-5s %s\n", l.Level.String(), l.Message)
		}
		for _, m := range rec.Metrics {
			fmt.Fprintf(w, "   metric %s %s %+g\n", m.Type.String(), m.Name, m.Delta)
		}
		if verbose {
			for _, c := range rec.Calls {
				fmt.Fprintf(w, "   call %s\n", callString(c))
			}
		}
	}
	switch r.Outcome.Kind {
	case "upstream":
		if r.Outcome.Detail == "tcp" {
			fmt.Fprintln(w, "result: the data went through in both directions (exit 0)")
		} else {
			fmt.Fprintln(w, "result: the request went upstream and the response back to the client (exit 0)")
		}
	case "paused":
		fmt.Fprintf(w, "result: the plugin paused %s and did not resume it (exit 1)\n", r.Outcome.Detail)
	case "local_reply":
		fmt.Fprintf(w, "result: the plugin answered locally in %s (exit 1)\n", r.Outcome.Detail)
	default:
		fmt.Fprintf(w, "result: the plugin failed: %s (exit 2)\n", r.Outcome.Detail)
	}
}

func bodyDiff(in, out []byte) string {
	n := min(len(in), len(out))
	i := 0
	for i < n && in[i] == out[i] {
		i++
	}
	return fmt.Sprintf("first difference at byte %d: was %s, now %s", i, short(in[i:]), short(out[i:]))
}

func short(b []byte) string {
	const max = 120
	if len(b) > max {
		return strconv.Quote(string(b[:max])) + fmt.Sprintf("…(%d bytes)", len(b))
	}
	return strconv.Quote(string(b))
}

func callString(c host.TraceCall) string {
	args := make([]string, len(c.Params))
	for i, p := range c.Params {
		args[i] = strconv.FormatUint(p, 10)
	}
	s := c.Name + "(" + strings.Join(args, ", ") + ")"
	if c.Callback {
		return "→ " + s
	}
	return s
}
