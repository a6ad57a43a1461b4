package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/wasm-callout/wasm-callout/internal/testutil"
)

// writePEM writes blocks to path, replacing it atomically (a rename, as
// Kubernetes updates a mounted Secret), and returns path.
func writePEM(t *testing.T, path string, blocks ...*pem.Block) string {
	t.Helper()
	var b []byte
	for _, bl := range blocks {
		b = append(b, pem.EncodeToMemory(bl)...)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	return path
}

func certPEM(c *x509.Certificate) *pem.Block { return &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw} }

func keyPEM(t *testing.T, k *ecdsa.PrivateKey) *pem.Block {
	t.Helper()
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return &pem.Block{Type: "EC PRIVATE KEY", Bytes: der}
}

// mtlsCheck makes one gRPC health check on addr over TLS trusting
// serverCA, presenting client (if any).
func mtlsCheck(addr string, serverCA *x509.Certificate, client *tls.Certificate) error {
	pool := x509.NewCertPool()
	pool.AddCert(serverCA)
	conf := &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}
	if client != nil {
		conf.Certificates = []tls.Certificate{*client}
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(conf)))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	return err
}

// The client CA bundle rotates without a restart: after the file is
// replaced, clients of the new CA are served and clients of the old one
// are refused. A bundle that stops loading keeps the previous one.
func TestClientCARotation(t *testing.T) {
	dir := t.TempDir()
	serverCA, serverCAKey := newCert(t, nil, nil, "server CA", true)
	srvCert, srvKey := newCert(t, serverCA, serverCAKey, "127.0.0.1", false)
	oldCA, oldCAKey := newCert(t, nil, nil, "old client CA", true)
	newCA, newCAKey := newCert(t, nil, nil, "new client CA", true)
	clientOf := func(ca *x509.Certificate, caKey *ecdsa.PrivateKey) *tls.Certificate {
		c, k := newCert(t, ca, caKey, "envoy", false)
		return &tls.Certificate{Certificate: [][]byte{c.Raw}, PrivateKey: k}
	}
	oldClient, newClient := clientOf(oldCA, oldCAKey), clientOf(newCA, newCAKey)
	caFile := writePEM(t, filepath.Join(dir, "ca.pem"), certPEM(oldCA))
	var logs testutil.SyncBuffer
	addrs, _ := startedLogging(t, &logs, []string{"grpc-tls"}, "--plugin", edgePlugin, "--health-addr", "", "--tls-addr", "127.0.0.1:0",
		"--cert", writePEM(t, filepath.Join(dir, "srv.pem"), certPEM(srvCert)), "--key", writePEM(t, filepath.Join(dir, "srv.key"), keyPEM(t, srvKey)),
		"--client-ca", caFile)
	addr := addrs["grpc-tls"]

	if err := mtlsCheck(addr, serverCA, oldClient); err != nil {
		t.Fatalf("client of the CA in the bundle: %v", err)
	}
	if err := mtlsCheck(addr, serverCA, newClient); err == nil {
		t.Fatal("client of a CA not yet in the bundle was served")
	}

	// Rotate. The bundle is rechecked at most once a second: poll until
	// the new client gets in (the deadline only stops a broken rotation
	// from hanging the test).
	writePEM(t, caFile, certPEM(newCA))
	deadline := time.Now().Add(20 * time.Second)
	for mtlsCheck(addr, serverCA, newClient) != nil {
		if time.Now().After(deadline) {
			t.Fatal("the new CA's client is still refused after the bundle was replaced")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := mtlsCheck(addr, serverCA, oldClient); err == nil {
		t.Error("client of the rotated-out CA was served")
	}
	if !strings.Contains(logs.String(), "TLS files reloaded") {
		t.Errorf("no reload in the log:\n%s", logs.String())
	}

	// A broken bundle keeps the one serving, and says so.
	if err := os.WriteFile(caFile, []byte("not PEM"), 0o600); err != nil {
		t.Fatal(err)
	}
	for !strings.Contains(logs.String(), "do not load") {
		if time.Now().After(deadline) {
			t.Fatalf("no warning for a broken bundle:\n%s", logs.String())
		}
		if err := mtlsCheck(addr, serverCA, newClient); err != nil {
			t.Fatalf("a broken bundle stopped the client of the previous one: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := mtlsCheck(addr, serverCA, newClient); err != nil {
		t.Errorf("after a broken bundle: %v", err)
	}
}

// With --client-ca the plaintext listener is off unless --addr is given;
// given, it serves with a warning; the log says how each listener serves.
func TestClientCAPlaintext(t *testing.T) {
	dir := t.TempDir()
	ca, caKey := newCert(t, nil, nil, "CA", true)
	srvCert, srvKey := newCert(t, ca, caKey, "127.0.0.1", false)
	tlsArgs := []string{"--plugin", edgePlugin, "--health-addr", "", "--tls-addr", "127.0.0.1:0",
		"--cert", writePEM(t, filepath.Join(dir, "srv.pem"), certPEM(srvCert)), "--key", writePEM(t, filepath.Join(dir, "srv.key"), keyPEM(t, srvKey))}
	caArg := []string{"--client-ca", writePEM(t, filepath.Join(dir, "ca.pem"), certPEM(ca))}
	tests := []struct {
		name     string
		args     []string
		kinds    []string
		want     []string // in the log
		noGRPC   bool
		security string // of grpc-tls
	}{
		{"TLS only: plaintext stays on", tlsArgs, []string{"grpc-tls", "grpc"}, []string{`msg=listening kind=grpc addr=127.0.0.1:`, `security=plaintext`}, false, "tls"},
		{"mTLS: plaintext off", append(append([]string{}, tlsArgs...), caArg...), []string{"grpc-tls"},
			[]string{"plaintext gRPC listener off"}, true, "mtls"},
		{"mTLS with --addr: on, with a warning", append(append([]string{"--addr", "127.0.0.1:0"}, tlsArgs...), caArg...), []string{"grpc-tls", "grpc"},
			[]string{"level=WARN", "without client authentication", "security=plaintext"}, false, "mtls"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var logs testutil.SyncBuffer
			args := tc.args
			if tc.kinds[len(tc.kinds)-1] == "grpc" && !strings.Contains(strings.Join(args, " "), "--addr 127") {
				args = append([]string{"--addr", "127.0.0.1:0"}, args...)
			}
			addrs, stop := startedLogging(t, &logs, tc.kinds, args...)
			if err := stop(); err != nil {
				t.Fatal(err)
			}
			if _, ok := addrs["grpc"]; ok == tc.noGRPC {
				t.Errorf("plaintext listener: %v, want on = %v", addrs, !tc.noGRPC)
			}
			log := logs.String()
			for _, w := range append(tc.want, "kind=grpc-tls addr="+addrs["grpc-tls"]+" security="+tc.security) {
				if !strings.Contains(log, w) {
					t.Errorf("log lacks %q:\n%s", w, log)
				}
			}
		})
	}
}
