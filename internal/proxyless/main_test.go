package proxyless

import (
	"fmt"
	"os"
	"testing"

	"github.com/wasm-callout/wasm-callout/internal/testhost"
)

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		os.Exit(runChild(os.Stdin, os.Stdout))
	}
	l, err := testhost.NewLoader("proxyless")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	loader = l
	code := m.Run()
	loader.Close()
	os.Exit(code)
}
