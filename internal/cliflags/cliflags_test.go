package cliflags

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestExitCode(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want int
	}{
		{nil, 0},
		{errors.New("disk full"), 1},
		{Usagef("--x: bad"), 2},
		{fmt.Errorf("wrapped: %w", AsUsage(errors.New("bad"))), 2},
		{AsUsage(nil), 0},
	} {
		if got := ExitCode(tc.err); got != tc.want {
			t.Errorf("ExitCode(%v) = %d, want %d", tc.err, got, tc.want)
		}
	}
}

// A failed parse leaves the flag set as it was: the usage still shows the
// defaults, and a later parse works.
func TestParseRestoresValues(t *testing.T) {
	var out bytes.Buffer
	fs := NewFlagSet("cmd", &out, "Usage: cmd")
	d := fs.Duration("d", time.Second, "a duration")
	var mode string
	EnumVar(fs, &mode, "mode", "a", []string{"a", "b", "c"}, "a mode")
	err := Parse(fs, []string{"-mode", "z"})
	if err == nil || err.Error() != `--mode "z": want a, b or c` || out.Len() > 0 {
		t.Fatalf("bad enum: %v, printed %q", err, out.String())
	}
	if err := Parse(fs, []string{"-h"}); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-h: %v", err)
	}
	if !strings.Contains(out.String(), "(default 1s)") || !strings.Contains(out.String(), "(default a)") {
		t.Errorf("usage after a failed parse:\n%s", out.String())
	}
	if err := Parse(fs, []string{"-d", "2s", "-mode", "c"}); err != nil || *d != 2*time.Second || mode != "c" {
		t.Errorf("parse after a failure: %v, %v, %q", err, *d, mode)
	}
}
