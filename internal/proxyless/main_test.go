package proxyless

import (
	"context"
	"fmt"
	"os"
	"testing"
)

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		os.Exit(runChild(os.Stdin, os.Stdout))
	}
	dir, err := os.MkdirTemp("", "proxyless-test-cache")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	cacheDir = dir
	code := m.Run()
	pluginsMu.Lock()
	for _, p := range plugins {
		p.Close(context.Background())
	}
	pluginsMu.Unlock()
	os.RemoveAll(dir)
	os.Exit(code)
}
