package main

import (
	"context"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wasm-callout/wasm-callout/internal/cliflags"
	"github.com/wasm-callout/wasm-callout/internal/testplugins"
	"github.com/wasm-callout/wasm-callout/internal/testutil"
)

// A listener whose address is taken fails the command before the plugin
// compiles: the error names the flag and the address, and the log never
// says the plugin is loading. The plugin is a stock-Go one (megabytes,
// seconds to compile without the cache, which is off).
func TestListenersBoundBeforeCompile(t *testing.T) {
	dir := t.TempDir()
	ca, caKey := newCert(t, nil, nil, "CA", true)
	srvCert, srvKey := newCert(t, ca, caKey, "127.0.0.1", false)
	cert := writePEM(t, filepath.Join(dir, "srv.pem"), certPEM(srvCert))
	key := writePEM(t, filepath.Join(dir, "srv.key"), keyPEM(t, srvKey))
	plugin := testplugins.Path(t, "testbed")

	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	busy := taken.Addr().String()

	// A free port for each listener that is not the busy one, so that
	// the test can check they are closed again after the failure.
	freePort := func() string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		return l.Addr().String()
	}
	for _, flag := range []string{"--health-addr", "--admin-addr", "--addr", "--tls-addr"} {
		t.Run(flag, func(t *testing.T) {
			addrs := map[string]string{"--health-addr": freePort(), "--admin-addr": freePort(), "--addr": freePort(), "--tls-addr": freePort()}
			addrs[flag] = busy
			args := []string{"--plugin", plugin, "--compilation-cache", "", "--cert", cert, "--key", key, "--log-level", "debug"}
			for f, a := range addrs {
				args = append(args, f, a)
			}
			var logs testutil.SyncBuffer
			err := run(context.Background(), args, &strings.Builder{}, &logs)
			if err == nil {
				t.Fatal("serve started with its address taken")
			}
			if want := flag + " " + busy + ": cannot listen: bind: address already in use"; err.Error() != want {
				t.Errorf("error %q, want %q", err, want)
			}
			if cliflags.ExitCode(err) != 1 {
				t.Errorf("exit status %d, want 1 (not a usage mistake)", cliflags.ExitCode(err))
			}
			if strings.Contains(logs.String(), "loading plugin") {
				t.Errorf("the plugin was loaded before the listeners were bound:\n%s", logs.String())
			}
			// The listeners bound before the failure are closed.
			for f, a := range addrs {
				if f == flag {
					continue
				}
				l, err := net.Listen("tcp", a)
				if err != nil {
					t.Errorf("%s %s still bound after the failure: %v", f, a, err)
					continue
				}
				l.Close()
			}
		})
	}
}
