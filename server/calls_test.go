package server

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wasm-callout/wasm-callout/host"
	"github.com/wasm-callout/wasm-callout/internal/testplugins"
	"github.com/wasm-callout/wasm-callout/server/envoytest"
)

// idp is a real HTTP authorization upstream on loopback: "Bearer good" is
// alice, "Bearer slow" is bob after 500 ms, "Bearer hang" never answers,
// anything else is refused.
func idp(t *testing.T) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Header.Get("Authorization") {
		case "Bearer good":
			w.Header().Set("X-Auth-User", "alice")
		case "Bearer slow":
			select {
			case <-time.After(500 * time.Millisecond):
			case <-r.Context().Done():
				return
			}
			w.Header().Set("X-Auth-User", "bob")
		case "Bearer hang":
			<-r.Context().Done()
			return
		default:
			w.WriteHeader(http.StatusForbidden)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

// loadAuth loads plugins/auth against upstreams with the given config.
func loadAuth(t *testing.T, us *host.Upstreams, config string) *host.Plugin {
	t.Helper()
	wasm, err := os.ReadFile(testplugins.Path(t, "auth"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := host.Load(context.Background(), wasm, host.Config{
		Name: "auth", PluginConfig: []byte(config), Instances: 2, FailStatus: 500,
		CompilationCacheDir: cacheDir, Logger: testLogger(), Upstreams: us,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close(context.Background()) })
	return p
}

func deadAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func authRequest(token string) *envoytest.Request {
	h := envoytest.H(":method", "GET", ":path", "/private", ":authority", "app", ":scheme", "http")
	if token != "" {
		h = append(h, envoytest.H("authorization", "Bearer "+token)...)
	}
	return &envoytest.Request{Headers: h, Response: &envoytest.Response{Headers: envoytest.H(":status", "200")}}
}

// The auth example end to end: Envoy's request pauses while the plugin asks
// a real upstream, and resumes, or is answered locally, when it answers.
func TestAuthPlugin(t *testing.T) {
	up := idp(t)
	us, err := host.NewUpstreams([]host.Upstream{
		{Name: "idp", URL: up.URL},
		{Name: "down", URL: "http://" + deadAddr(t), ConnectTimeout: time.Second},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer us.Close()
	tests := []struct {
		name       string
		config     string
		opts       Options
		envoy      envoytest.Config
		token      string
		wantStatus int    // a local reply's status; 0 means the request was forwarded
		wantUser   string // x-auth-user on the forwarded request
		overrides  int64
	}{
		{name: "allow", config: "cluster: idp", token: "good", wantUser: "alice"},
		{name: "deny", config: "cluster: idp", token: "bad", wantStatus: 403},
		{name: "no credentials", config: "cluster: idp", wantStatus: 401},
		{name: "upstream down denies", config: "cluster: down", token: "good", wantStatus: 503},
		{name: "upstream down allows when configured", config: "cluster: down\non_error: allow", token: "good"},
		// Slower than Envoy's 200 ms message timeout: without an override
		// Envoy gives up first (504, or continue with failure_mode_allow).
		{name: "slow, Envoy times out", config: "cluster: idp", token: "slow", wantStatus: 504},
		{name: "slow, Envoy times out open", config: "cluster: idp", token: "slow",
			envoy: envoytest.Config{FailureModeAllow: true}},
		// With max_message_timeout the server asks for the call's time.
		{name: "slow, with override", config: "cluster: idp\ntimeout_ms: 2000", token: "slow", wantUser: "bob", overrides: 1,
			opts: Options{MaxMessageTimeout: 5 * time.Second}, envoy: envoytest.Config{MaxMessageTimeout: 5 * time.Second}},
		// Slower than the plugin's own timeout: the plugin's failure
		// behaviour decides.
		{name: "hung upstream, plugin times out", config: "cluster: idp\ntimeout_ms: 300", token: "hang", wantStatus: 503, overrides: 1,
			opts: Options{MaxMessageTimeout: 5 * time.Second}, envoy: envoytest.Config{MaxMessageTimeout: 5 * time.Second}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := loadAuth(t, us, tc.config)
			tc.opts.Plugin = p
			h := start(t, tc.opts)
			res := h.do(t, tc.envoy, authRequest(tc.token))
			switch {
			case tc.wantStatus != 0:
				if res.LocalReply == nil || res.LocalReply.Status != tc.wantStatus {
					t.Fatalf("local reply = %+v, want status %d", res.LocalReply, tc.wantStatus)
				}
			case res.LocalReply != nil || !res.Request.Sent:
				t.Fatalf("request not forwarded: local reply %+v", res.LocalReply)
			default:
				if user, _ := res.Request.Headers.Get("x-auth-user"); user != tc.wantUser {
					t.Fatalf("x-auth-user = %q, want %q", user, tc.wantUser)
				}
			}
			if got := h.srv.Stats().TimeoutOverrides; got != tc.overrides {
				t.Errorf("override_message_timeout sent %d times, want %d", got, tc.overrides)
			}
			// Nothing is left behind: the stream's context and its calls
			// are gone.
			waitUntil(t, "the stream and its calls to end", func() bool {
				st := p.Stats()
				return st.LiveStreams == 0 && st.PendingCalls == 0
			})
		})
	}
}

// Calls that outlive Envoy's patience or the plugin's timeout leave
// nothing behind: once the server, the plugin and the upstream client are
// closed, the goroutine count is back where it started.
func TestAuthPluginNoLeak(t *testing.T) {
	base := runtime.NumGoroutine()
	up := idp(t)
	us, err := host.NewUpstreams([]host.Upstream{{Name: "idp", URL: up.URL}})
	if err != nil {
		t.Fatal(err)
	}
	wasm, err := os.ReadFile(testplugins.Path(t, "auth"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := host.Load(context.Background(), wasm, host.Config{Name: "auth", PluginConfig: []byte("cluster: idp\ntimeout_ms: 100"),
		Instances: 2, CompilationCacheDir: cacheDir, Logger: testLogger(), Upstreams: us})
	if err != nil {
		t.Fatal(err)
	}
	h := start(t, Options{Plugin: p})
	for round := 0; round < 3; round++ {
		var wg sync.WaitGroup
		for _, token := range []string{"hang", "slow", "good"} {
			for i := 0; i < 4; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					h.do(t, envoytest.Config{}, authRequest(token))
				}()
			}
		}
		wg.Wait()
		waitUntil(t, "calls to end", func() bool { st := p.Stats(); return st.LiveStreams == 0 && st.PendingCalls == 0 })
	}
	h.stop()
	p.Close(context.Background())
	us.Close()
	up.Close()
	waitUntil(t, fmt.Sprintf("goroutines to return to %d", base), func() bool { return runtime.NumGoroutine() <= base })
}

// 200 concurrent requests each make a call through the same two
// instances; all are authorized.
func TestAuthPluginConcurrent(t *testing.T) {
	up := idp(t)
	us, err := host.NewUpstreams([]host.Upstream{{Name: "idp", URL: up.URL}})
	if err != nil {
		t.Fatal(err)
	}
	defer us.Close()
	p := loadAuth(t, us, "cluster: idp")
	h := start(t, Options{Plugin: p})
	var wg sync.WaitGroup
	var bad atomic.Int64
	for i := 0; i < 200; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			res, err := envoytest.Do(ctx, h.conn, envoytest.Config{MessageTimeout: 10 * time.Second}, authRequest("good"))
			if err != nil || res.LocalReply != nil {
				bad.Add(1)
				return
			}
			if user, _ := res.Request.Headers.Get("x-auth-user"); user != "alice" {
				bad.Add(1)
			}
		}()
	}
	wg.Wait()
	if n := bad.Load(); n != 0 {
		t.Fatalf("%d of 200 requests were not authorized", n)
	}
	var allowed uint64
	for _, m := range p.Metrics().Snapshot() {
		if m.Name == "auth_allowed_total" {
			allowed = m.Counter
		}
	}
	if allowed != 200 {
		t.Errorf("auth_allowed_total = %d", allowed)
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
