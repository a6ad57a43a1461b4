package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wasm-callout/wasm-callout/internal/testutil"
	"github.com/wasm-callout/wasm-callout/server/envoytest"
)

func TestServe(t *testing.T) {
	config := filepath.Join(t.TempDir(), "basic.conf")
	if err := os.WriteFile(config, []byte("# test\nx-served-by: baseline\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var out testutil.SyncBuffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"-addr", "127.0.0.1:0", "-config", config}, &out, &out) }()

	var addr string
	for deadline := time.Now().Add(10 * time.Second); addr == "" && time.Now().Before(deadline); {
		if a, ok := strings.CutPrefix(strings.TrimSpace(out.String()), "listening on "); ok {
			addr = a
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if addr == "" {
		cancel()
		t.Fatalf("no listening line: %q (%v)", out.String(), <-done)
	}
	conn, err := envoytest.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	res, err := envoytest.Do(ctx, conn, envoytest.Config{MessageTimeout: 10 * time.Second}, &envoytest.Request{
		Headers: envoytest.H(":method", "GET", ":path", "/", ":authority", "a", ":scheme", "http")})
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := res.Response.Headers.Get("x-served-by"); v != "baseline" {
		t.Errorf("response headers %v", res.Response.Headers)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
}

func TestBadArguments(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.conf")
	if err := os.WriteFile(bad, []byte("no colon here\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"-config", bad},
		{"-config", filepath.Join(t.TempDir(), "missing")},
		{"-addr", "not an address"},
		{"extra"},
		{"-nope"},
	} {
		if err := run(context.Background(), args, &bytes.Buffer{}, &bytes.Buffer{}); err == nil {
			t.Errorf("%q accepted", args)
		}
	}
}
