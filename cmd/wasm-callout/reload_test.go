package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/wasm-callout/wasm-callout/server/envoytest"
)

// gentagPlugin tags the request (x-gen-req) and the response (x-gen) with
// its plugin configuration; it refuses an empty configuration and traps on
// "trap".
const gentagPlugin = "../../server/testdata/gentag.wasm"

// serving is a serve command run by a test, with its reload hook.
type serving struct {
	grpc, adminAddr string
	hup             chan os.Signal
	conn            interface{ Close() error }
	emu             *envoytest.Emulator
}

// startServing runs the serve command with args plus loopback listeners,
// and a SIGHUP channel the test writes to.
func startServing(t *testing.T, args ...string) *serving {
	t.Helper()
	s := &serving{hup: make(chan os.Signal, 1)}
	args = append([]string{"--addr", "127.0.0.1:0", "--tls-addr", "", "--health-addr", "", "--admin-addr", "127.0.0.1:0",
		"--log-level", "error", "--instances", "1"}, args...)
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := runWithReload(ctx, args, pw, io.Discard, s.hup)
		pw.CloseWithError(io.EOF)
		done <- err
	}()
	addrs := map[string]string{}
	sc := bufio.NewScanner(pr)
	for len(addrs) < 2 && sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 4 && f[1] == "listening" {
			addrs[f[2]] = f[3]
		}
	}
	if len(addrs) < 2 {
		cancel()
		t.Fatalf("serve ended before listening: %v", <-done)
	}
	go io.Copy(io.Discard, pr)
	s.grpc, s.adminAddr = addrs["grpc"], addrs["admin"]
	conn, err := envoytest.Dial(s.grpc)
	if err != nil {
		t.Fatal(err)
	}
	s.conn = conn
	// A reload compiles on the cores that serve: under -race on a small
	// machine Envoy's 200 ms message_timeout can run out while a request
	// waits for CPU, which is not what these tests are about.
	if s.emu, err = envoytest.New(conn, envoytest.Config{NoTranscript: true, MessageTimeout: 10 * time.Second}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return s
}

// tag plays one request and returns its x-gen tag, checking that request
// and response were tagged alike.
func (s *serving) tag(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := s.emu.Do(ctx, &envoytest.Request{Headers: envoytest.H(":method", "GET", ":path", "/", ":authority", "a", ":scheme", "http")})
	if err != nil {
		t.Fatal(err)
	}
	if res.LocalReply != nil {
		t.Fatalf("local reply %+v", res.LocalReply)
	}
	req, _ := res.Request.Headers.Get("x-gen-req")
	resp, _ := res.Response.Headers.Get("x-gen")
	if req != resp {
		t.Errorf("request tagged %q, response %q", req, resp)
	}
	return resp
}

// status is the part of GET /plugin the tests read.
type status struct {
	Generation uint64 `json:"generation"`
	Trigger    string `json:"trigger"`
	ABI        string `json:"abi"`
	Toolchain  string `json:"toolchain"`
	LoadedAt   string `json:"loaded_at"`
	Plugin     struct {
		Path, Resolved, SHA256 string
	} `json:"plugin"`
	PluginConfig struct {
		Path, Resolved, SHA256 string
	} `json:"plugin_config"`
	Swaps           int64 `json:"swaps"`
	ReloadFailures  int64 `json:"reload_failures"`
	LastReloadError *struct {
		Error, Trigger, At string
	} `json:"last_reload_error"`
	Error string `json:"error"`
}

func (s *serving) admin(t *testing.T, method, path string) (int, status) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+s.adminAddr+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatalf("%s %s: %d, body not JSON: %v", method, path, resp.StatusCode, err)
	}
	return resp.StatusCode, st
}

// waitGeneration polls GET /plugin until the generation is at least want.
func (s *serving) waitGeneration(t *testing.T, want uint64) status {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		_, st := s.admin(t, "GET", "/plugin")
		if st.Generation >= want {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("generation %d, want %d; last status %+v", st.Generation, want, st)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// k8sVolume lays files out as Kubernetes mounts a ConfigMap: DIR/NAME is a
// symlink to ..data/NAME, and ..data a symlink to a versioned directory
// that an update replaces with one atomic rename.
type k8sVolume struct {
	dir     string
	version int
}

func newK8sVolume(t *testing.T, files map[string]string) *k8sVolume {
	v := &k8sVolume{dir: t.TempDir()}
	v.update(t, files)
	for name := range files {
		if err := os.Symlink(filepath.Join("..data", name), filepath.Join(v.dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	return v
}

func (v *k8sVolume) update(t *testing.T, files map[string]string) {
	t.Helper()
	v.version++
	ver := filepath.Join(v.dir, "..v"+string(rune('0'+v.version)))
	if err := os.Mkdir(ver, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, content := range files {
		if strings.HasPrefix(content, "@") {
			b, err := os.ReadFile(content[1:])
			if err != nil {
				t.Fatal(err)
			}
			content = string(b)
		}
		write(t, filepath.Join(ver, name), content)
	}
	tmp := filepath.Join(v.dir, "..data_tmp")
	if err := os.Symlink(filepath.Base(ver), tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(v.dir, "..data")); err != nil {
		t.Fatal(err)
	}
}

// TestReloadTriggers: each trigger switches to a new generation built from
// the files as they are now, and a broken one is refused with the reason
// while the current generation serves on.
func TestReloadTriggers(t *testing.T) {
	t.Run("watch a Kubernetes volume", func(t *testing.T) {
		vol := newK8sVolume(t, map[string]string{"plugin.wasm": "@" + gentagPlugin, "config": "v1"})
		s := startServing(t, "--plugin", filepath.Join(vol.dir, "plugin.wasm"),
			"--plugin-config", "@"+filepath.Join(vol.dir, "config"), "--watch", "20ms")
		if got := s.tag(t); got != "v1" {
			t.Fatalf("tag %q, want v1", got)
		}
		first := s.waitGeneration(t, 1)

		vol.update(t, map[string]string{"plugin.wasm": "@" + gentagPlugin, "config": "v2"})
		st := s.waitGeneration(t, 2)
		if got := s.tag(t); got != "v2" {
			t.Errorf("tag after the volume update %q, want v2", got)
		}
		if st.Trigger != triggerWatch || st.Plugin.SHA256 != first.Plugin.SHA256 ||
			st.PluginConfig.SHA256 == first.PluginConfig.SHA256 || !strings.Contains(st.PluginConfig.Resolved, "..v2") {
			t.Errorf("status after the update: %+v (before: %+v)", st, first)
		}

		// A broken version is refused once, not at every poll, and the
		// current generation keeps serving.
		vol.update(t, map[string]string{"plugin.wasm": "@" + gentagPlugin, "config": "trap"})
		deadline := time.Now().Add(15 * time.Second)
		for {
			if _, st = s.admin(t, "GET", "/plugin"); st.ReloadFailures > 0 || time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		time.Sleep(200 * time.Millisecond) // ten more polls
		_, st = s.admin(t, "GET", "/plugin")
		if st.Generation != 2 || st.ReloadFailures != 1 || st.LastReloadError == nil ||
			st.LastReloadError.Trigger != triggerWatch || !strings.Contains(st.LastReloadError.Error, "unreachable") {
			t.Errorf("after a broken update: %+v, last error %+v", st, st.LastReloadError)
		}
		if got := s.tag(t); got != "v2" {
			t.Errorf("tag after a broken update %q, want v2", got)
		}

		// Fixing it reloads.
		vol.update(t, map[string]string{"plugin.wasm": "@" + gentagPlugin, "config": "v3"})
		s.waitGeneration(t, 3)
		if got := s.tag(t); got != "v3" {
			t.Errorf("tag after the fix %q, want v3", got)
		}
	})

	t.Run("SIGHUP", func(t *testing.T) {
		config := filepath.Join(t.TempDir(), "config")
		write(t, config, "h1")
		s := startServing(t, "--plugin", gentagPlugin, "--plugin-config", "@"+config)
		write(t, config, "h2")
		if got := s.tag(t); got != "h1" {
			t.Fatalf("tag before SIGHUP %q, want h1 (no --watch)", got)
		}
		s.hup <- syscall.SIGHUP
		if st := s.waitGeneration(t, 2); st.Generation != 2 || st.Trigger != triggerSIGHUP {
			t.Errorf("trigger %q", st.Trigger)
		}
		if got := s.tag(t); got != "h2" {
			t.Errorf("tag after SIGHUP %q, want h2", got)
		}
		// Unchanged files still reload: the operator asked.
		s.hup <- syscall.SIGHUP
		s.waitGeneration(t, 3)
	})

	t.Run("POST /reload and GET /plugin", func(t *testing.T) {
		config := filepath.Join(t.TempDir(), "config")
		write(t, config, "a1")
		s := startServing(t, "--plugin", gentagPlugin, "--plugin-config", "@"+config)
		code, st := s.admin(t, "GET", "/plugin")
		if code != 200 || st.Generation != 1 || st.Trigger != triggerStart || st.ABI != "0.2.1" || st.LoadedAt == "" ||
			st.Plugin.Path != gentagPlugin || len(st.Plugin.SHA256) != 64 || st.PluginConfig.Path != config || st.LastReloadError != nil {
			t.Errorf("GET /plugin: %d %+v", code, st)
		}

		write(t, config, "a2")
		code, st = s.admin(t, "POST", "/reload")
		if code != 200 || st.Generation != 2 || st.Trigger != triggerAdmin || st.Swaps != 1 {
			t.Errorf("POST /reload: %d %+v", code, st)
		}
		if got := s.tag(t); got != "a2" {
			t.Errorf("tag after POST /reload %q, want a2", got)
		}

		for _, tt := range []struct{ config, want string }{
			{"trap", "unreachable"},
			{"", "proxy_on_configure returned false"},
		} {
			write(t, config, tt.config)
			code, st = s.admin(t, "POST", "/reload")
			if code != http.StatusUnprocessableEntity || !strings.Contains(st.Error, tt.want) {
				t.Errorf("POST /reload with config %q: %d %q, want 422 and %q", tt.config, code, st.Error, tt.want)
			}
			_, st = s.admin(t, "GET", "/plugin")
			if st.Generation != 2 || st.LastReloadError == nil || !strings.Contains(st.LastReloadError.Error, tt.want) {
				t.Errorf("GET /plugin after a refused reload: %+v", st)
			}
			if got := s.tag(t); got != "a2" {
				t.Errorf("tag after a refused reload %q, want a2", got)
			}
		}
		os.Remove(config)
		if code, st = s.admin(t, "POST", "/reload"); code != http.StatusUnprocessableEntity || !strings.Contains(st.Error, "--plugin-config") {
			t.Errorf("POST /reload without the config file: %d %q", code, st.Error)
		}
		if _, st = s.admin(t, "GET", "/plugin"); st.ReloadFailures != 3 {
			t.Errorf("reload failures %d, want 3", st.ReloadFailures)
		}
		resp, err := http.Get("http://" + s.adminAddr + "/reload")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("GET /reload: %d, want 405", resp.StatusCode)
		}
	})
}

// TestReloadUnderTraffic: reloads triggered by all three means while
// clients stream never fail a request.
func TestReloadUnderTraffic(t *testing.T) {
	config := filepath.Join(t.TempDir(), "config")
	write(t, config, "t0")
	s := startServing(t, "--plugin", gentagPlugin, "--plugin-config", "@"+config, "--watch", "10ms")
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				res, err := s.emu.Do(ctx, &envoytest.Request{Headers: envoytest.H(":method", "GET", ":path", "/", ":authority", "a", ":scheme", "http")})
				cancel()
				if err == nil && (res.LocalReply != nil || len(res.Response.Headers.Values("x-gen")) != 1) {
					err = io.ErrUnexpectedEOF
				}
				if err != nil {
					select {
					case errs <- err:
					default:
					}
				}
			}
		}()
	}
	gen := uint64(1)
	for i := 1; i <= 15; i++ {
		write(t, config, "t"+string(rune('a'+i)))
		switch i % 3 {
		case 0:
			s.hup <- syscall.SIGHUP
		case 1:
			if code, st := s.admin(t, "POST", "/reload"); code != 200 {
				t.Fatalf("POST /reload: %d %s", code, st.Error)
			}
		}
		// case 2: the watcher sees the change (it may also see a
		// change before the other triggers do, or a half-written file).
		gen = s.waitGeneration(t, gen+1).Generation
	}
	close(stop)
	wg.Wait()
	select {
	case err := <-errs:
		t.Errorf("a request failed during reloads: %v", err)
	default:
	}
}
