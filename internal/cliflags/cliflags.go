// Package cliflags gives the commands' flag sets one behaviour: a bad
// value gets one line naming the flag and what it wants (`--call-timeout
// "5": want a duration such as 500ms, 2s or 1m30s`) and exit status 2, as
// flag.ExitOnError has it, never the whole usage, which buries the line
// that matters; -h and --help print the usage to stdout and succeed.
package cliflags

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"
)

// UsageError is a mistake on the command line: ExitCode is 2 for it.
type UsageError struct{ Err error }

func (e UsageError) Error() string { return e.Err.Error() }
func (e UsageError) Unwrap() error { return e.Err }

// AsUsage marks err as a mistake on the command line (nil stays nil).
func AsUsage(err error) error {
	if err == nil {
		return nil
	}
	return UsageError{err}
}

// Usagef returns a UsageError with a formatted message.
func Usagef(format string, args ...any) error {
	return UsageError{fmt.Errorf(format, args...)}
}

// ExitCode is the process's exit status for a command's error: 0 for
// none, 2 for a UsageError (wrapped or not), the status an error with an
// ExitCode() int method asks for, 1 for any other.
func ExitCode(err error) int {
	var ue UsageError
	var coded interface{ ExitCode() int }
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ue):
		return 2
	case errors.As(err, &coded):
		return coded.ExitCode()
	}
	return 1
}

// NewFlagSet returns a flag set for the command name ("wasm-callout
// inspect") whose Usage prints header, then the flags, to stdout. The flag
// package's own messages are silenced: Parse makes the one line instead.
func NewFlagSet(name string, stdout io.Writer, header string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {
		fs.SetOutput(stdout)
		defer fs.SetOutput(io.Discard)
		fmt.Fprintln(stdout, header)
		fs.PrintDefaults()
	}
	return fs
}

// Parse parses args with every flag's value checked by kind. It returns
// flag.ErrHelp after printing the usage for -h or --help (the command
// then succeeds), and a UsageError of one line for any mistake.
func Parse(fs *flag.FlagSet, args []string) error {
	var bad *badValue
	// Each value is wrapped for the parse only: PrintDefaults inspects
	// the values' own types for their zero values.
	orig := map[string]flag.Value{}
	fs.VisitAll(func(f *flag.Flag) {
		orig[f.Name] = f.Value
		cv := checkedValue{Value: f.Value, name: f.Name, bad: &bad}
		if b, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
			f.Value = &checkedBool{cv}
		} else {
			f.Value = &cv
		}
	})
	// The flag package calls Usage on every error; only -h gets it.
	usage := fs.Usage
	fs.Usage = func() {}
	err := fs.Parse(args)
	fs.Usage = usage
	fs.VisitAll(func(f *flag.Flag) { f.Value = orig[f.Name] })
	switch {
	case err == nil:
		return nil
	case errors.Is(err, flag.ErrHelp):
		fs.Usage()
		return flag.ErrHelp
	case bad != nil:
		return UsageError{bad}
	}
	// The flag package's other errors: unknown flag, missing argument.
	msg := err.Error()
	for _, p := range []struct{ prefix, say string }{
		{"flag provided but not defined: -", "unknown flag --%s (see %s -h)"},
		{"flag needs an argument: -", "flag --%s needs a value (see %s -h)"},
	} {
		if name, ok := strings.CutPrefix(msg, p.prefix); ok {
			return Usagef(p.say, name, fs.Name())
		}
	}
	return UsageError{err}
}

// badValue is a flag value that did not parse.
type badValue struct {
	flag, value string
	err         error
}

func (b *badValue) Error() string {
	return fmt.Sprintf("--%s %q: %v", b.flag, b.value, b.err)
}

// checkedValue wraps a flag's value so that a value that does not parse
// is reported with what the flag wants, by the kind of the value.
type checkedValue struct {
	flag.Value
	name string
	bad  **badValue
}

func (c *checkedValue) Set(s string) error {
	err := c.Value.Set(s)
	if err == nil {
		return nil
	}
	if w := want(c.Value); w != "" {
		err = errors.New(w)
	}
	if *c.bad == nil {
		*c.bad = &badValue{flag: c.name, value: s, err: err}
	}
	return err
}

// checkedBool is a checkedValue for a boolean flag, which the flag package
// recognises by its IsBoolFlag method (--flag alone means true).
type checkedBool struct{ checkedValue }

// IsBoolFlag reports true: the flag is a switch.
func (*checkedBool) IsBoolFlag() bool { return true }

// want says what a flag of v's kind wants, or "" when v's own error says
// it (the Func flags and the values defined here).
func want(v flag.Value) string {
	g, ok := v.(flag.Getter)
	if !ok {
		return ""
	}
	switch g.Get().(type) {
	case time.Duration:
		return "want a duration such as 500ms, 2s or 1m30s"
	case bool:
		return "want true or false"
	case int, int64:
		return "want an integer such as 16 or -1"
	case uint, uint64:
		return "want a non-negative integer such as 16"
	case float64:
		return "want a number such as 0.5"
	}
	return ""
}

// enumValue is a flag.Value that takes one of a fixed set of names.
type enumValue struct {
	p     *string
	names []string
}

// EnumVar defines a flag that takes one of names, def by default.
func EnumVar(fs *flag.FlagSet, p *string, name, def string, names []string, usage string) {
	*p = def
	fs.Var(enumValue{p, names}, name, usage)
}

func (e enumValue) String() string {
	if e.p == nil {
		return ""
	}
	return *e.p
}

func (e enumValue) Set(s string) error {
	for _, n := range e.names {
		if s == n {
			*e.p = s
			return nil
		}
	}
	return errors.New("want " + orList(e.names))
}

// orList joins names as "a, b or c".
func orList(names []string) string {
	if len(names) < 2 {
		return strings.Join(names, "")
	}
	return strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
}
