package main

import (
	"context"
	"errors"
	"io"
)

// serve is replaced by the ext_proc server once host/ and server/ land.
func serve(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return errors.New("serve: not wired yet")
}
