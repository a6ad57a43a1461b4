package main

import (
	"bytes"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wasm-callout/wasm-callout/host"
	"github.com/wasm-callout/wasm-callout/server"
	"github.com/wasm-callout/wasm-callout/server/metrics"
)

// The admin listener (--admin-addr, Envoy's 127.0.0.1:9901 by default)
// serves what only an operator should reach: GET /metrics, POST /reload,
// GET /plugin and, with --admin-pprof, /debug/pprof/. The health listener,
// which load balancers probe, keeps only the probes. Exposing admin beyond
// loopback takes a bearer token file.

// adminFlags are the admin listener's flags.
type adminFlags struct {
	addr, tokenFile string
	pprof           bool
}

func (a *adminFlags) register(fs interface {
	StringVar(*string, string, string, string)
	BoolVar(*bool, string, bool, string)
}) {
	fs.StringVar(&a.addr, "admin-addr", "127.0.0.1:9901", "HTTP admin address: GET /metrics (Prometheus), POST /reload, GET /plugin, "+
		"and /debug/pprof/ with --admin-pprof (empty disables); an address beyond loopback needs --admin-token-file")
	fs.StringVar(&a.tokenFile, "admin-token-file", "", "file holding the bearer token every admin request must send (Authorization: Bearer TOKEN); "+
		"re-read when it changes; required when --admin-addr is not a loopback address")
	fs.BoolVar(&a.pprof, "admin-pprof", false, "serve Go's profiles (/debug/pprof/) on --admin-addr")
}

// check refuses an admin address beyond loopback without a token file.
func (a *adminFlags) check() error {
	if a.addr == "" || a.tokenFile != "" || isLoopback(a.addr) {
		return nil
	}
	return fmt.Errorf("--admin-addr %s is reachable beyond this host: set --admin-token-file (a bearer token), or use 127.0.0.1", a.addr)
}

// isLoopback reports whether addr (host:port) only listens on loopback.
func isLoopback(addr string) bool {
	h, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// startAdmin serves the admin endpoints on lis, bound by the serve
// command (listeners.go); check has passed.
func startAdmin(lis net.Listener, a *adminFlags, srv *atomic.Pointer[server.Server], rl *reloader, hc host.Config, upstreams *host.Upstreams,
	logger *slog.Logger) (*http.Server, error) {
	var token *bearerToken
	if a.tokenFile != "" {
		token = &bearerToken{path: a.tokenFile, log: logger}
		if _, err := token.get(); err != nil {
			return nil, err
		}
	}
	reg := metrics.NewRegistry(metrics.Options{Server: srv.Load, Metrics: hc.Metrics, Upstreams: upstreams})
	hs := &http.Server{Handler: adminHandler(metrics.Handler(reg), rl.routes, a.pprof, token), ReadHeaderTimeout: 5 * time.Second,
		ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelWarn)}
	go hs.Serve(lis)
	return hs, nil
}

// adminHandler serves /metrics, what routes adds (POST /reload, GET
// /plugin) and, if pprof, Go's profiles; with token, only to requests that
// carry it.
func adminHandler(metricsHandler http.Handler, routes func(*http.ServeMux), withPprof bool, token *bearerToken) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", metricsHandler)
	routes(mux)
	if withPprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	if token == nil {
		return mux
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !token.allows(r) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="wasm-callout admin"`)
			http.Error(w, "unauthorized: send Authorization: Bearer with the token of --admin-token-file", http.StatusUnauthorized)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// bearerToken is the admin token, read from a file and re-read when the
// file's size or modification time changes (checked at most once a
// second), so that a rotated Kubernetes Secret takes effect without a
// restart. A file that cannot be read or is empty keeps the last good
// token.
type bearerToken struct {
	path string
	log  *slog.Logger

	mu      sync.Mutex
	cur     []byte
	mod     time.Time
	size    int64
	checked time.Time
}

func (b *bearerToken) get() ([]byte, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cur != nil && time.Since(b.checked) < time.Second {
		return b.cur, nil
	}
	b.checked = time.Now()
	fi, err := os.Stat(b.path)
	if err == nil && b.cur != nil && fi.ModTime().Equal(b.mod) && fi.Size() == b.size {
		return b.cur, nil
	}
	var tok []byte
	if err == nil {
		var raw []byte
		if raw, err = os.ReadFile(b.path); err == nil {
			if tok = bytes.TrimSpace(raw); len(tok) == 0 {
				err = errors.New("the file is empty")
			}
		}
	}
	if err != nil {
		if b.cur != nil {
			b.log.Warn("admin token file unreadable; keeping the previous token", "path", b.path, "err", err)
			return b.cur, nil
		}
		return nil, fmt.Errorf("--admin-token-file %s: %w", b.path, err)
	}
	b.cur, b.mod, b.size = tok, fi.ModTime(), fi.Size()
	return b.cur, nil
}

// allows reports whether r carries the token, compared in constant time.
func (b *bearerToken) allows(r *http.Request) bool {
	want, err := b.get()
	if err != nil {
		return false
	}
	scheme, got, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(strings.TrimSpace(got)), want) == 1
}
