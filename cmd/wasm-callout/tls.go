package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// TLS material is read from files and reread when they change, so that a
// certificate, its key or the client CA bundle rotates without a restart
// (cert-manager and Kubernetes Secrets replace the files in place). A
// rotation that fails to load keeps what was serving.

// tlsConfig builds the TLS server configuration, or nil without --cert.
// Rotations are logged, and so are rotations that fail.
// With --client-ca, every handshake verifies the client's certificate
// against the bundle as it is now (GetConfigForClient), and asks for
// certificates from the CAs in it.
func (c *serveConfig) tlsConfig(logger *slog.Logger) (*tls.Config, error) {
	if c.cert == "" && c.key == "" {
		if c.clientCA != "" {
			return nil, errors.New("--client-ca needs --cert and --key")
		}
		return nil, nil
	}
	if c.cert == "" || c.key == "" {
		return nil, errors.New("--cert and --key go together")
	}
	kp := newKeyPair(c.cert, c.key)
	kp.log = logger
	if _, err := kp.get(); err != nil {
		return nil, err
	}
	conf := &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return kp.get() },
	}
	if c.clientCA == "" {
		return conf, nil
	}
	ca := newCAPool(c.clientCA)
	ca.log = logger
	if _, err := ca.get(); err != nil {
		return nil, err
	}
	base := conf.Clone()
	base.ClientAuth = tls.RequireAndVerifyClientCert
	conf.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		pool, err := ca.get()
		if err != nil {
			return nil, err
		}
		hc := base.Clone()
		hc.ClientCAs = pool
		return hc, nil
	}
	// Without GetConfigForClient (a caller that drops it) the
	// configuration still demands certificates from the bundle at start.
	conf.ClientAuth = tls.RequireAndVerifyClientCert
	conf.ClientCAs, _ = ca.get()
	return conf, nil
}

// newKeyPair serves a certificate chain and key from files.
func newKeyPair(cert, key string) *watchedFiles[*tls.Certificate] {
	return &watchedFiles[*tls.Certificate]{what: "TLS key pair", paths: []string{cert, key},
		load: func() (*tls.Certificate, error) {
			pair, err := tls.LoadX509KeyPair(cert, key)
			return &pair, err
		}}
}

// newCAPool serves a CA bundle from a file.
func newCAPool(path string) *watchedFiles[*x509.CertPool] {
	return &watchedFiles[*x509.CertPool]{what: "--client-ca " + path, paths: []string{path},
		load: func() (*x509.CertPool, error) {
			pem, err := os.ReadFile(path)
			if err != nil {
				return nil, err
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, errors.New("no PEM certificate found")
			}
			return pool, nil
		}}
}

// recheckEvery is how often at most watchedFiles looks at its files: a
// handshake costs at most a stat per file per second.
const recheckEvery = time.Second

// watchedFiles serves a value loaded from files, loading it again when any
// file's modification time changes. A load that fails keeps the previous
// value; only the first load's failure is an error.
type watchedFiles[T any] struct {
	what  string // for errors
	paths []string
	load  func() (T, error)
	log   *slog.Logger // nil: silent

	mu         sync.Mutex
	cur        T
	loaded     bool
	mods       []time.Time
	failedMods []time.Time
	lastCheck  time.Time
}

func (w *watchedFiles[T]) get() (T, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.loaded && time.Since(w.lastCheck) < recheckEvery {
		return w.cur, nil
	}
	w.lastCheck = time.Now()
	mods := make([]time.Time, len(w.paths))
	var errs []error
	for i, p := range w.paths {
		fi, err := os.Stat(p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		mods[i] = fi.ModTime()
	}
	if err := errors.Join(errs...); err != nil {
		if w.loaded {
			return w.cur, nil
		}
		return w.cur, fmt.Errorf("%s: %w", w.what, err)
	}
	if w.loaded && (equalTimes(mods, w.mods) || equalTimes(mods, w.failedMods)) {
		return w.cur, nil
	}
	v, err := w.load()
	if err != nil {
		if !w.loaded {
			return w.cur, fmt.Errorf("%s: %w", w.what, err)
		}
		// Warn once per version of the files, and try again when they
		// change (a writer may be halfway through).
		if !equalTimes(mods, w.failedMods) && w.log != nil {
			w.log.Warn("TLS files changed but do not load; serving the previous ones", "what", w.what, "err", err)
		}
		w.failedMods = mods
		return w.cur, nil
	}
	if w.loaded && w.log != nil {
		w.log.Info("TLS files reloaded", "what", w.what)
	}
	w.cur, w.mods, w.loaded = v, mods, true
	return v, nil
}

func equalTimes(a, b []time.Time) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !a[i].Equal(b[i]) {
			return false
		}
	}
	return true
}
