package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/wasm-callout/wasm-callout/host"
	"github.com/wasm-callout/wasm-callout/server"
	"github.com/wasm-callout/wasm-callout/server/envoytest"
)

// edgePlugin is the server package's small WAT test plugin: it loads in
// milliseconds and adds x-wat: resp to every response.
const edgePlugin = "../../server/testdata/edge.wasm"

// started runs run() with args, waits for the listening lines of the given
// kinds and returns the addresses printed, by kind, and a stop function
// that cancels run and returns its error.
// withoutAdmin turns the admin listener off in serve's args unless they
// set --admin-addr: its default, 127.0.0.1:9901, is one port that tests
// running in parallel (and any other wasm-callout on the machine) share.
func withoutAdmin(args []string) []string {
	for _, a := range args {
		if a == "--admin-addr" || strings.HasPrefix(a, "--admin-addr=") {
			return args
		}
	}
	return append(args[:len(args):len(args)], "--admin-addr", "")
}

func started(t *testing.T, kinds []string, args ...string) (addrs map[string]string, stop func() error) {
	t.Helper()
	return startedLogging(t, io.Discard, kinds, args...)
}

// startedLogging is started with the command's stderr (its log) written
// to stderr.
func startedLogging(t *testing.T, stderr io.Writer, kinds []string, args ...string) (addrs map[string]string, stop func() error) {
	t.Helper()
	args = withoutAdmin(args)
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := run(ctx, args, pw, stderr)
		pw.CloseWithError(io.EOF)
		done <- err
	}()
	addrs = map[string]string{}
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	want := len(kinds)
	timeout := time.After(20 * time.Second)
	for len(addrs) < want {
		select {
		case line, ok := <-lines:
			if !ok {
				cancel()
				t.Fatalf("run ended before listening: %v", <-done)
			}
			if f := strings.Fields(line); len(f) == 4 && f[1] == "listening" {
				addrs[f[2]] = f[3]
			}
		case <-timeout:
			cancel()
			t.Fatalf("no listening lines; got %v", addrs)
		}
	}
	go func() {
		for range lines {
		}
	}()
	stopped := false
	stop = func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(20 * time.Second):
			t.Fatal("run did not return after cancel")
			return nil
		}
	}
	t.Cleanup(func() { stop() })
	return addrs, stop
}

func httpStatus(t *testing.T, url string) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		return -1
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestRunServesAndShutsDown(t *testing.T) {
	addrs, stop := started(t, []string{"grpc", "health"}, "serve", "--plugin", edgePlugin, "--addr", "127.0.0.1:0", "--tls-addr", "",
		"--health-addr", "127.0.0.1:0", "--admin-addr", "", "--log-level", "error", "--instances", "1")
	if got := httpStatus(t, "http://"+addrs["health"]+"/healthz"); got != 200 {
		t.Errorf("/healthz: %d", got)
	}
	if got := httpStatus(t, "http://"+addrs["health"]+"/readyz"); got != 200 {
		t.Errorf("/readyz: %d", got)
	}

	conn, err := envoytest.Dial(addrs["grpc"])
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := envoytest.Do(ctx, conn, envoytest.Config{}, &envoytest.Request{Headers: envoytest.H(":method", "GET", ":path", "/")})
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := res.Response.Headers.Get("x-wat"); v != "resp" || res.LocalReply != nil {
		t.Errorf("exchange: headers %v, local reply %+v", res.Response.Headers, res.LocalReply)
	}
	hr, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: server.ServiceName})
	if err != nil || hr.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("gRPC health: %v, %v", hr, err)
	}

	if err := stop(); err != nil {
		t.Fatalf("run returned %v after cancel", err)
	}
	if got := httpStatus(t, "http://"+addrs["health"]+"/healthz"); got != -1 {
		t.Errorf("health endpoint still answers after shutdown: %d", got)
	}
	if c, err := net.DialTimeout("tcp", addrs["grpc"], time.Second); err == nil {
		c.Close()
		t.Error("gRPC listener still open after shutdown")
	}
}

func TestHealthHandler(t *testing.T) {
	wasm, err := os.ReadFile(edgePlugin)
	if err != nil {
		t.Fatal(err)
	}
	p, err := host.Load(context.Background(), wasm, host.Config{Instances: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(context.Background())
	srv, err := server.New(server.Options{Plugin: p})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()

	var ptr atomicServer
	h := healthHandler(&ptr.p)
	get := func(path string) int {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		return rec.Code
	}
	steps := []struct {
		what            string
		do              func()
		healthz, readyz int
	}{
		{"while the plugin loads", func() {}, 200, 503},
		{"once serving", func() { ptr.p.Store(srv) }, 200, 200},
		{"while draining", srv.Drain, 200, 503},
	}
	for _, s := range steps {
		s.do()
		if got := get("/healthz"); got != s.healthz {
			t.Errorf("%s: /healthz %d, want %d", s.what, got, s.healthz)
		}
		if got := get("/readyz"); got != s.readyz {
			t.Errorf("%s: /readyz %d, want %d", s.what, got, s.readyz)
		}
	}
}

func TestRunFlagErrors(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		args []string
		want string
	}{
		{[]string{}, "--plugin is required"},
		{[]string{"--plugin", edgePlugin, "--failure-policy", "maybe"}, "--failure-policy"},
		{[]string{"--plugin", edgePlugin, "--failure-status", "42"}, "--failure-status"},
		{[]string{"--plugin", edgePlugin, "--log-level", "loud"}, "--log-level"},
		{[]string{"--plugin", edgePlugin, "--log-format", "xml"}, "--log-format"},
		{[]string{"--plugin", edgePlugin, "--cert", "c.pem"}, "--cert and --key go together"},
		{[]string{"--plugin", edgePlugin, "--client-ca", "ca.pem"}, "--client-ca needs --cert"},
		{[]string{"--plugin", edgePlugin, "--plugin-config", "@" + filepath.Join(dir, "missing")}, "--plugin-config"},
		{[]string{"--plugin", filepath.Join(dir, "missing.wasm"), "--addr", "127.0.0.1:0", "--health-addr", "", "--admin-addr", ""}, "missing.wasm"},
		{[]string{"--plugin", edgePlugin, "--addr", "", "--health-addr", "", "--admin-addr", ""}, "no gRPC listener"},
		{[]string{"--plugin", edgePlugin, "extra"}, "unexpected argument"},
		{[]string{"--plugin", edgePlugin, "--watch", "-1s"}, "--watch"},
		{[]string{"--plugin", edgePlugin, "--drain-timeout", "0"}, "--drain-timeout"},
		{[]string{"--no-such-flag"}, "no-such-flag"},
		{[]string{"--plugin", edgePlugin, "--max-stream-buffer", "lots"}, "want a byte count"},
		{[]string{"--plugin", edgePlugin, "--max-buffer-total", "1Ti"}, "want a byte count"},
	}
	for _, tt := range tests {
		err := run(context.Background(), withoutAdmin(tt.args), io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("run %q = %v, want an error mentioning %q", tt.args, err, tt.want)
		}
	}
	if err := run(context.Background(), []string{"-h"}, io.Discard, io.Discard); err != nil {
		t.Errorf("-h: %v", err)
	}
}

func TestStringOrFile(t *testing.T) {
	f := filepath.Join(t.TempDir(), "config")
	os.WriteFile(f, []byte("from file"), 0o644)
	for in, want := range map[string]string{"": "", "inline": "inline", "@" + f: "from file"} {
		got, err := stringOrFile("--x", in)
		if err != nil || string(got) != want {
			t.Errorf("stringOrFile(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

// TestRunMutualTLS: with --cert, --key and --client-ca the TLS listener
// serves clients with a certificate from the CA and refuses others.
func TestRunMutualTLS(t *testing.T) {
	dir := t.TempDir()
	ca, caKey := newCert(t, nil, nil, "test CA", true)
	srvCert, srvKey := newCert(t, ca, caKey, "127.0.0.1", false)
	cliCert, cliKey := newCert(t, ca, caKey, "envoy", false)
	write := func(name string, blocks ...*pem.Block) string {
		return writePEM(t, filepath.Join(dir, name), blocks...)
	}
	addrs, _ := started(t, []string{"grpc-tls"}, "--plugin", edgePlugin, "--addr", "", "--health-addr", "", "--admin-addr", "", "--log-level", "error",
		"--tls-addr", "127.0.0.1:0", "--cert", write("srv.pem", certPEM(srvCert)), "--key", write("srv.key", keyPEM(t, srvKey)),
		"--client-ca", write("ca.pem", certPEM(ca)))

	client := tls.Certificate{Certificate: [][]byte{cliCert.Raw}, PrivateKey: cliKey}
	if err := mtlsCheck(addrs["grpc-tls"], ca, &client); err != nil {
		t.Errorf("client with a certificate from the CA: %v", err)
	}
	if err := mtlsCheck(addrs["grpc-tls"], ca, nil); err == nil {
		t.Error("client without a certificate was served")
	}
}

// newCert makes a certificate signed by parent (self-signed without one).
func newCert(t *testing.T, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, name string, isCA bool) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  isCA,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	if ip := net.ParseIP(name); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

type atomicServer struct{ p atomic.Pointer[server.Server] }

// SIGTERM (here, cancelling run) ends the process within
// --shutdown-timeout while a plugin call loops, and health answers at once
// throughout. The call timeout is longer than the shutdown timeout, so
// only shutdown itself can stop the loop.
func TestShutdownWhileLooping(t *testing.T) {
	addrs, stop := started(t, []string{"grpc", "health", "admin"}, "serve", "--plugin", "../../host/testdata/faults.wasm",
		"--addr", "127.0.0.1:0", "--tls-addr", "", "--health-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--log-level", "error",
		"--instances", "2", "--call-timeout", "30s", "--shutdown-timeout", "2s")
	conn, err := envoytest.Dial(addrs["grpc"])
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	looping := make(chan error, 1)
	go func() {
		_, err := envoytest.Do(ctx, conn, envoytest.Config{}, &envoytest.Request{Headers: envoytest.H(":method", "GET", ":path", "/", "x-fault", "loop")})
		looping <- err
	}()
	// Health and admin answer at once while the call loops, and the other
	// instance serves.
	time.Sleep(100 * time.Millisecond)
	for _, url := range []string{
		"http://" + addrs["health"] + "/healthz", "http://" + addrs["health"] + "/readyz",
		// The admin endpoints read counters and atomics only: a scrape
		// never waits for the looping call either.
		"http://" + addrs["admin"] + "/metrics", "http://" + addrs["admin"] + "/plugin",
	} {
		path := url
		t0 := time.Now()
		if got := httpStatus(t, url); got != 200 {
			t.Errorf("%s during a loop: %d", path, got)
		}
		if d := time.Since(t0); d > time.Second {
			t.Errorf("%s took %v during a loop", path, d)
		}
	}
	res, err := envoytest.Do(ctx, conn, envoytest.Config{}, &envoytest.Request{Headers: envoytest.H(":method", "GET", ":path", "/")})
	if err != nil || res.LocalReply != nil {
		t.Errorf("a good request during a loop: %+v, %v", res, err)
	}
	t0 := time.Now()
	if err := stop(); err != nil {
		t.Fatalf("run: %v", err)
	}
	if d := time.Since(t0); d > 3*time.Second {
		t.Errorf("shutdown took %v with --shutdown-timeout 2s", d)
	}
	<-looping
}

// The compilation cache is on by default, in the user's cache directory,
// under a directory keyed by the host's compile options; a default
// directory that cannot be written is skipped with a warning, not fatal.
func TestDefaultCompilationCache(t *testing.T) {
	cache := t.TempDir()
	t.Setenv("XDG_CACHE_HOME", cache)
	_, stop := started(t, []string{"grpc"}, "serve", "--plugin", edgePlugin, "--addr", "127.0.0.1:0", "--tls-addr", "",
		"--health-addr", "", "--admin-addr", "", "--log-level", "error", "--instances", "1")
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(filepath.Join(cache, "wasm-callout"))
	if err != nil || len(entries) != 1 || !strings.HasPrefix(entries[0].Name(), "host-") {
		t.Fatalf("default cache directory holds %v (%v), want one host-* directory", entries, err)
	}

	blocked := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(blocked, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("XDG_CACHE_HOME", blocked) // a file: no directory can be made under it
	_, stop = started(t, []string{"grpc"}, "serve", "--plugin", edgePlugin, "--addr", "127.0.0.1:0", "--tls-addr", "",
		"--health-addr", "", "--admin-addr", "", "--log-level", "error", "--instances", "1")
	if err := stop(); err != nil {
		t.Fatalf("an unwritable default cache stopped the server: %v", err)
	}
}

// The limit flags reach the server, sizes with binary suffixes.
func TestLimitFlags(t *testing.T) {
	fs, c := serveFlags(io.Discard)
	err := fs.Parse([]string{"--max-streams", "7", "--max-streams-per-connection", "3", "--max-stream-buffer", "16Mi",
		"--max-buffer-total", "2Gi", "--max-queued-messages", "9", "--stream-idle-timeout", "3s", "--shed-queue-delay", "0"})
	if err != nil {
		t.Fatal(err)
	}
	want := server.Limits{MaxStreams: 7, MaxStreamsPerConnection: 3, MaxStreamBuffer: 16 << 20, MaxBufferTotal: 2 << 30,
		MaxQueuedMessages: 9, IdleTimeout: 3 * time.Second}
	if c.limits != want {
		t.Errorf("limits %+v, want %+v", c.limits, want)
	}
	c.plugin = edgePlugin
	hc, err := c.hostConfig()
	if err != nil {
		t.Fatal(err)
	}
	if hc.ShedQueueDelay >= 0 {
		t.Errorf("--shed-queue-delay 0 gave host ShedQueueDelay %v, want negative (never shed)", hc.ShedQueueDelay)
	}
	for in, want := range map[string]int64{"0": 0, "512": 512, "4Ki": 4 << 10, "-1": -1} {
		var v int64
		if err := (byteSize{&v}).Set(in); err != nil || v != want {
			t.Errorf("byte size %q = %d, %v; want %d", in, v, err, want)
		}
	}
}

func TestClientFlag(t *testing.T) {
	for _, tc := range []struct {
		arg  string
		want server.Client
	}{{"auto", server.ClientAuto}, {"envoy", server.ClientEnvoy}, {"grpc", server.ClientGRPC}} {
		fs, c := serveFlags(io.Discard)
		if err := fs.Parse([]string{"--client", tc.arg}); err != nil || c.client != tc.want {
			t.Errorf("--client %s: %v, %v", tc.arg, c.client, err)
		}
	}
	fs, _ := serveFlags(io.Discard)
	if err := fs.Parse([]string{"--client", "istio"}); err == nil {
		t.Error("--client istio accepted")
	}
}
