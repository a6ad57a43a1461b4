package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/wasm-callout/wasm-callout/host"
	"github.com/wasm-callout/wasm-callout/server"
)

// Hot-swap triggers: --watch polls the plugin and configuration files,
// SIGHUP and POST /reload reload on demand. All three go through one
// reloader, one reload at a time, and the server's Reload, which keeps the
// current generation when the new one cannot be prepared.

// Reload triggers, as reported by GET /plugin and in logs.
const (
	triggerStart  = "start"
	triggerWatch  = "watch"
	triggerSIGHUP = "sighup"
	triggerAdmin  = "admin"
)

// input is one thing a generation is built from: a file (the plugin, or a
// configuration given as @FILE) or a literal configuration flag.
type input struct {
	// Path is the path given on the command line; empty for a literal.
	Path string `json:"path,omitempty"`
	// Resolved is the file Path led to when it was read, symlinks
	// followed (a Kubernetes ConfigMap or Secret mounts files as symlinks
	// into a directory it swaps atomically).
	Resolved string `json:"resolved,omitempty"`
	// SHA256 is the hex digest of the content.
	SHA256 string `json:"sha256"`
	// Bytes is the content's length.
	Bytes int `json:"bytes"`

	// data is the content, kept only until it is loaded: a plugin's
	// module can be tens of MiB (Coraza with the CRS is 31 MiB), and the
	// records of what serves need only its digest.
	data []byte
}

// readInput reads path, resolving symlinks afresh, and hashes it.
func readInput(flagName, path string) (input, error) {
	resolved, err := filepath.EvalSymlinks(path)
	if err != nil {
		return input{}, fmt.Errorf("%s: %w", flagName, err)
	}
	// Reading the resolved name reads the file that Resolved reports,
	// even if the link moves meanwhile.
	data, err := os.ReadFile(resolved)
	if err != nil {
		return input{}, fmt.Errorf("%s: %w", flagName, err)
	}
	return newInput(path, resolved, data), nil
}

func newInput(path, resolved string, data []byte) input {
	sum := sha256.Sum256(data)
	return input{Path: path, Resolved: resolved, SHA256: hex.EncodeToString(sum[:]), Bytes: len(data), data: data}
}

// readConfigInput reads a configuration flag: @FILE, or a literal value.
func readConfigInput(flagName, v string) (input, error) {
	if name, ok := strings.CutPrefix(v, "@"); ok {
		return readInput(flagName, name)
	}
	return newInput("", "", []byte(v)), nil
}

// source is everything a generation is built from, as read at one moment.
type source struct {
	Plugin       input `json:"plugin"`
	PluginConfig input `json:"plugin_config"`
	VMConfig     input `json:"vm_config"`
}

func readSource(c *serveConfig) (*source, error) {
	var s source
	var err error
	if s.Plugin, err = readInput("--plugin", c.plugin); err != nil {
		return nil, err
	}
	if s.PluginConfig, err = readConfigInput("--plugin-config", c.pluginConfig); err != nil {
		return nil, err
	}
	if s.VMConfig, err = readConfigInput("--vm-config", c.vmConfig); err != nil {
		return nil, err
	}
	return &s, nil
}

// key identifies the source's content: equal keys build equal generations.
func (s *source) key() string {
	return s.Plugin.SHA256 + "/" + s.PluginConfig.SHA256 + "/" + s.VMConfig.SHA256
}

// loaded describes the generation serving now.
type loaded struct {
	Generation uint64    `json:"generation"`
	LoadedAt   time.Time `json:"loaded_at"`
	Trigger    string    `json:"trigger"`
	LoadMS     float64   `json:"load_ms"`
	ABI        string    `json:"abi"`
	Toolchain  string    `json:"toolchain"`
	source
}

// reloadError is the last reload that failed.
type reloadError struct {
	Error   string    `json:"error"`
	At      time.Time `json:"at"`
	Trigger string    `json:"trigger"`
}

// errNotServing answers reloads before the server starts or after it stops.
var errNotServing = errors.New("not serving yet, or shutting down")

// reloader loads generations from the command line's files and hands them
// to the server.
type reloader struct {
	c    *serveConfig
	base host.Config // the configurations are replaced by what each load reads
	log  *slog.Logger
	// ctx bounds every load: the serve command's, cancelled at shutdown,
	// so that an admin client that goes away does not abort a reload.
	ctx context.Context

	// mu serialises reloads; it guards attempted, the key of the last
	// source tried (or of the last read error), so that --watch tries a
	// broken version once, not at every poll.
	mu        sync.Mutex
	attempted string

	// stateMu guards what GET /plugin reads, so that it answers while a
	// reload compiles.
	stateMu sync.Mutex
	srv     *server.Server
	cur     *loaded
	lastErr *reloadError
	// cfg is the --config mode's state (configreload.go); cur is nil then.
	cfg configState
}

// newReloader returns a reloader for c's files; set base before start.
func newReloader(ctx context.Context, c *serveConfig, log *slog.Logger) *reloader {
	return &reloader{c: c, log: log, ctx: ctx}
}

// load reads the sources and starts a generation from them.
func (r *reloader) load(ctx context.Context, src *source) (*host.Plugin, error) {
	cfg := r.base
	cfg.PluginConfig, cfg.VMConfig = src.PluginConfig.data, src.VMConfig.data
	// Compiling a large plugin without a cached copy takes seconds: say so
	// before it starts (liveness already answers; readiness waits).
	r.log.Info("loading plugin: compiling (fast when the compilation cache has it) and starting instances",
		"path", src.Plugin.Resolved, "bytes", len(src.Plugin.data), "compilation_cache", cfg.CompilationCacheDir)
	p, err := host.Load(ctx, src.Plugin.data, cfg)
	if err != nil {
		return nil, fmt.Errorf("loading %s (sha256 %.12s): %w", src.Plugin.Resolved, src.Plugin.SHA256, err)
	}
	return p, nil
}

// start loads the first generation, before the server exists: the
// plugin of the flags, or every plugin and chain of the --config file.
func (r *reloader) start() (server.Options, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.c.configFile != "" {
		return r.startConfig()
	}
	src, err := readSource(r.c)
	if err != nil {
		return server.Options{}, err
	}
	begin := time.Now()
	p, err := r.load(r.ctx, src)
	if err != nil {
		return server.Options{}, err
	}
	r.attempted = src.key()
	cur := r.record(1, triggerStart, src, p, time.Since(begin))
	r.stateMu.Lock()
	r.cur = cur
	r.stateMu.Unlock()
	return server.Options{Plugin: p}, nil
}

func (r *reloader) record(gen uint64, trigger string, src *source, p *host.Plugin, took time.Duration) *loaded {
	info := p.Info()
	// The plugin's bytes are compiled: let go of them (the record keeps
	// their digest), and hand a large module's heap back now.
	size := len(src.Plugin.data)
	src.Plugin.data = nil
	defer host.ReleaseGarbage(size)
	l := &loaded{Generation: gen, LoadedAt: time.Now(), Trigger: trigger, LoadMS: float64(took.Microseconds()) / 1000,
		ABI: string(info.ABI), Toolchain: info.Toolchain, source: *src}
	if l.ABI == "" {
		l.ABI = "unknown"
	}
	r.log.Info("plugin generation loaded", "generation", gen, "trigger", trigger, "path", src.Plugin.Resolved,
		"sha256", src.Plugin.SHA256, "plugin_config_sha256", src.PluginConfig.SHA256, "vm_config_sha256", src.VMConfig.SHA256,
		"abi", l.ABI, "toolchain", info.Toolchain, "instances", p.Stats().Instances, "took", took.Round(time.Millisecond))
	return l
}

// serving hands the server to the reloader: reloads work from now on
// (until serving(nil)).
func (r *reloader) serving(srv *server.Server) {
	r.stateMu.Lock()
	r.srv = srv
	r.stateMu.Unlock()
}

// state returns the server and the current generation.
func (r *reloader) state() (*server.Server, *loaded) {
	r.stateMu.Lock()
	defer r.stateMu.Unlock()
	return r.srv, r.cur
}

// reload reads the sources and switches to a new generation built from
// them, changed or not: it is what the operator asked for.
func (r *reloader) reload(trigger string) (*loaded, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	srv, _ := r.state()
	if srv == nil {
		return nil, errNotServing
	}
	if r.c.configFile != "" {
		return nil, r.reloadConfig(srv, trigger)
	}
	src, err := readSource(r.c)
	r.attempted = attemptKey(src, err)
	return r.apply(srv, trigger, src, err)
}

// poll reloads if the sources changed since the current generation and
// since the last attempt.
func (r *reloader) poll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	srv, cur := r.state()
	if srv == nil {
		return
	}
	if r.c.configFile != "" {
		r.pollConfig(srv)
		return
	}
	src, err := readSource(r.c)
	if r.worthTrying(attemptKey(src, err), cur.key(), err) {
		r.apply(srv, triggerWatch, src, err)
	}
}

// worthTrying reports whether a poll should apply what it read (key, or
// the read error): not what serves, nor what the last attempt tried. It
// records the attempt. Caller holds mu.
func (r *reloader) worthTrying(key, serving string, readErr error) bool {
	if readErr == nil && key == serving {
		// Back to what serves (after a broken version, say): a later
		// change to that broken version is worth another attempt.
		r.attempted = key
		return false
	}
	if key == r.attempted {
		return false
	}
	r.attempted = key
	return true
}

// attemptKey identifies what a read found: its content, or its error.
func attemptKey[S interface{ key() string }](src S, err error) string {
	if err != nil {
		return "error: " + err.Error()
	}
	return src.key()
}

// apply prepares and switches to the generation of src (readErr if it
// could not be read) through the server's Reload, which logs and counts
// failures. Caller holds mu.
func (r *reloader) apply(srv *server.Server, trigger string, src *source, readErr error) (*loaded, error) {
	begin := time.Now()
	var p *host.Plugin
	gen, err := srv.Reload(r.ctx, func(ctx context.Context) (*host.Plugin, error) {
		if readErr != nil {
			return nil, readErr
		}
		var err error
		p, err = r.load(ctx, src)
		return p, err
	})
	if err != nil {
		if !errors.Is(err, server.ErrClosed) {
			r.stateMu.Lock()
			r.lastErr = &reloadError{Error: err.Error(), At: time.Now(), Trigger: trigger}
			r.stateMu.Unlock()
		}
		return nil, err
	}
	cur := r.record(gen, trigger, src, p, time.Since(begin))
	r.stateMu.Lock()
	r.cur = cur
	r.stateMu.Unlock()
	return cur, nil
}

// watch runs the triggers that do not come from HTTP until ctx is done:
// a poll every interval (0: none) and a reload per value on hup.
func (r *reloader) watch(ctx context.Context, interval time.Duration, hup <-chan os.Signal) {
	var tick <-chan time.Time
	if interval > 0 {
		t := time.NewTicker(interval)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick:
			r.poll()
		case <-hup:
			r.log.Info("SIGHUP: reloading the plugin (or the --config file)")
			r.reload(triggerSIGHUP)
		}
	}
}

// pluginStatus is the body of GET /plugin and of a successful POST /reload.
type pluginStatus struct {
	*loaded
	Watch               string       `json:"watch"`
	Instances           int          `json:"instances"`
	HealthyInstances    int          `json:"healthy_instances"`
	LiveStreams         int64        `json:"live_streams"`
	Swaps               int64        `json:"swaps"`
	ReloadFailures      int64        `json:"reload_failures"`
	DrainingGenerations int64        `json:"draining_generations"`
	DrainExpired        int64        `json:"drain_expired_streams"`
	LastReloadError     *reloadError `json:"last_reload_error,omitempty"`

	// With --config: the file, its chains and every plugin.
	Config       *input              `json:"config,omitempty"`
	Chains       map[string][]string `json:"chains,omitempty"`
	DefaultChain string              `json:"default_chain,omitempty"`
	Plugins      []namedStatus       `json:"plugins,omitempty"`
}

func (r *reloader) status() (*pluginStatus, error) {
	r.stateMu.Lock()
	defer r.stateMu.Unlock()
	if r.srv == nil {
		return nil, errNotServing
	}
	st := r.srv.Stats()
	ps := r.srv.Plugin().Stats()
	watch := "off"
	if r.c.watch > 0 {
		watch = r.c.watch.String()
	}
	out := &pluginStatus{
		loaded: r.cur, Watch: watch,
		Instances: ps.Instances, HealthyInstances: ps.Healthy, LiveStreams: ps.LiveStreams,
		Swaps: st.Swaps, ReloadFailures: st.ReloadFailures, DrainingGenerations: st.DrainingGenerations,
		DrainExpired: st.DrainExpired, LastReloadError: r.lastErr,
	}
	if r.c.configFile != "" {
		r.configStatus(out)
	}
	return out, nil
}

// routes adds the reload endpoints to the admin mux: POST /reload reloads
// synchronously (200 with the new generation's status; 422 with the reason
// when the new generation cannot be prepared, the current one serving on;
// 503 before serving or while stopping); GET /plugin describes the
// current generation and the last reload failure.
func (r *reloader) routes(mux *http.ServeMux) {
	mux.HandleFunc("POST /reload", func(w http.ResponseWriter, _ *http.Request) {
		if _, err := r.reload(triggerAdmin); err != nil {
			code := http.StatusUnprocessableEntity
			if errors.Is(err, errNotServing) || errors.Is(err, server.ErrClosed) {
				code = http.StatusServiceUnavailable
			}
			writeJSON(w, code, map[string]string{"error": err.Error()})
			return
		}
		r.serveStatus(w)
	})
	mux.HandleFunc("GET /plugin", func(w http.ResponseWriter, _ *http.Request) { r.serveStatus(w) })
}

func (r *reloader) serveStatus(w http.ResponseWriter) {
	st, err := r.status()
	if err != nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, st)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	w.Write(append(b, '\n'))
}
