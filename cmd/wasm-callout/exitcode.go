package main

import "fmt"

// exitError asks main to exit with code. An empty msg prints nothing more:
// the subcommand has reported already.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string {
	if e.msg == "" {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.msg
}

// ExitCode is the process's exit status (see cliflags.ExitCode).
func (e *exitError) ExitCode() int { return e.code }
