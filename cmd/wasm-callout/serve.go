package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/wasm-callout/wasm-callout/host"
	"github.com/wasm-callout/wasm-callout/internal/cliflags"
	"github.com/wasm-callout/wasm-callout/internal/gctune"
	"github.com/wasm-callout/wasm-callout/server"
)

// serveConfig is the serve command's flags.
type serveConfig struct {
	plugin, pluginConfig, vmConfig string
	configFile                     string
	name, rootID, vmID             string
	instances                      int
	memoryLimitPages               uint
	callTimeout, shedQueueDelay    time.Duration
	compilationCache               string
	pluginEnv                      map[string]string

	addr, tlsAddr, healthAddr string
	admin                     adminFlags
	cert, key, clientCA       string
	shutdownTimeout           time.Duration
	watch, drainTimeout       time.Duration

	failurePolicy string
	failureStatus uint

	upstreams                         []host.Upstream
	messageTimeout, maxMessageTimeout time.Duration

	modeOverride      bool
	metadataNamespace string
	allowRouting      bool
	allowEnvoy        bool

	logLevel, logFormat string
	version             bool
	gcHeadroom          int64

	limits server.Limits
	client server.Client

	nodeMetadata, listenerDirection, listenerMetadata string
	clusterName, clusterMetadata                      string
}

func serveFlags(stdout io.Writer) (*flag.FlagSet, *serveConfig) {
	c := &serveConfig{}
	fs := cliflags.NewFlagSet("wasm-callout", stdout, "Usage: wasm-callout [serve] --plugin PLUGIN.wasm [flags]\n"+
		"       wasm-callout [serve] --config FILE [flags]   (several plugins and chains)\n"+
		"       wasm-callout run --plugin PLUGIN.wasm [flags] [URL]   (one request through the plugin; see wasm-callout run -h)\n"+
		"       wasm-callout test --plugin PLUGIN.wasm SPEC...   (a plugin's tests.textpb or tests.yaml; see wasm-callout test -h)\n"+
		"       wasm-callout build [flags] DIR   (see wasm-callout build -h)\n"+
		"       wasm-callout inspect [--json] PLUGIN.wasm\n"+
		"       wasm-callout version [--json]\n\n"+
		"Serves a proxy-wasm plugin as an Envoy ext_proc (envoy.service.ext_proc.v3.ExternalProcessor) gRPC service,\n"+
		"and its TCP context as a network_ext_proc (envoy.service.network_ext_proc.v3.NetworkExternalProcessor) one,\n"+
		"on the same ports.\n\nFlags:")
	fs.StringVar(&c.plugin, "plugin", "", "path of the proxy-wasm plugin (.wasm) to serve (required)")
	fs.StringVar(&c.configFile, "config", "", "YAML file of named plugins and the chains they run in, for several plugins in one server "+
		"(README: Several plugins); instead of --plugin. Per-plugin flags (--instances, --call-timeout, --failure-policy...) are the defaults "+
		"of its plugins; --watch, SIGHUP and POST /reload reload it")
	fs.StringVar(&c.pluginConfig, "plugin-config", "", "plugin configuration (proxy_on_configure): a string, or @FILE to read it from FILE")
	fs.StringVar(&c.vmConfig, "vm-config", "", "VM configuration (proxy_on_vm_start): a string, or @FILE")
	fs.StringVar(&c.name, "name", "", "plugin name (property plugin_name); default: the plugin file name without .wasm")
	fs.StringVar(&c.rootID, "root-id", "", "root context id (property plugin_root_id)")
	fs.StringVar(&c.vmID, "vm-id", "", "VM id, which keys shared data and queues (property plugin_vm_id)")
	fs.IntVar(&c.instances, "instances", 0, "plugin instances (each runs one call at a time; a fault fails the streams of its instance); 0 means GOMAXPROCS, at least 4")
	fs.UintVar(&c.memoryLimitPages, "memory-limit-pages", host.DefaultMemoryLimitPages, "memory limit of each instance, in 64 KiB pages")
	fs.DurationVar(&c.callTimeout, "call-timeout", host.DefaultCallTimeout, "longest a single plugin callback may run before its instance is failed; "+
		"0 turns deadlines off for trusted plugins: faster, but a plugin that loops forever then hangs the whole process at its next "+
		"garbage collection (Go cannot preempt compiled guest code), and only /healthz failing gets it restarted")
	fs.Func("plugin-env", "NAME=VALUE in the plugin's WASI environment (Envoy's vm_config.environment_variables), e.g. GOGC=400 or "+
		"GOMEMLIMIT=160MiB for a plugin built with Go; repeatable; the host's own environment is never passed", func(v string) error {
		k, val, ok := strings.Cut(v, "=")
		if !ok || k == "" || strings.ContainsRune(v, 0) {
			return fmt.Errorf("want NAME=VALUE, got %q", v)
		}
		if c.pluginEnv == nil {
			c.pluginEnv = map[string]string{}
		}
		c.pluginEnv[k] = val
		return nil
	})
	fs.Func("upstream", "cluster a plugin may call (proxy_http_call, proxy_grpc_call): NAME=URL[,ca=FILE][,connect-timeout=DURATION] "+
		"with an http, https or h2c (cleartext gRPC) URL; repeatable", func(v string) error {
		u, err := host.ParseUpstream(v)
		if err == nil {
			c.upstreams = append(c.upstreams, u)
		}
		return err
	})
	fs.DurationVar(&c.messageTimeout, "message-timeout", 200*time.Millisecond, "the Envoy filter's message_timeout")
	fs.DurationVar(&c.maxMessageTimeout, "max-message-timeout", 0, "the Envoy filter's max_message_timeout: while a plugin's outbound call is out, "+
		"ask Envoy to wait up to this long (override_message_timeout); 0 never asks")
	fs.StringVar(&c.compilationCache, "compilation-cache", defaultCacheDir(), "directory caching compiled plugin code across restarts and reloads, "+
		"keyed by the module, wazero's version and the host's compile options; empty turns it off")
	fs.StringVar(&c.addr, "addr", ":8080", "plaintext gRPC listen address (empty disables)")
	fs.StringVar(&c.tlsAddr, "tls-addr", ":8443", "TLS gRPC listen address, enabled when --cert and --key are given (empty disables)")
	fs.StringVar(&c.cert, "cert", "", "TLS certificate chain (PEM); reloaded when the file changes")
	fs.StringVar(&c.key, "key", "", "TLS private key (PEM); reloaded when the file changes")
	fs.StringVar(&c.clientCA, "client-ca", "", "CA bundle (PEM) that client certificates must chain to; turns on mutual TLS")
	fs.StringVar(&c.healthAddr, "health-addr", ":8000", "HTTP health address: /healthz (live), /readyz and / (ready) (empty disables)")
	c.admin.register(fs)
	fs.DurationVar(&c.shutdownTimeout, "shutdown-timeout", 15*time.Second, "on SIGINT/SIGTERM, how long shutting down may take: open streams "+
		"finish, then the plugin's root contexts end; the process exits by then even if a plugin call cannot be stopped")
	fs.DurationVar(&c.watch, "watch", 0, "poll the plugin file and @FILE configurations this often and reload when their content (sha256) changes, "+
		"following symlinks afresh each time (Kubernetes ConfigMaps); 0 turns polling off. SIGHUP and POST /reload on --admin-addr reload too")
	fs.DurationVar(&c.drainTimeout, "drain-timeout", server.DefaultDrainTimeout, "after a reload, how long requests already running may finish "+
		"on the replaced plugin before they get the failure policy")
	cliflags.EnumVar(fs, &c.failurePolicy, "failure-policy", "fail-closed", []string{"fail-closed", "fail-open"}, "when the plugin fails (trap, timeout, memory) or has no healthy instance: "+
		"fail-closed answers with --failure-status, fail-open lets the request continue without the plugin")
	fs.UintVar(&c.failureStatus, "failure-status", 500, "HTTP status of the fail-closed response")
	fs.BoolVar(&c.modeOverride, "mode-override", true, "ask Envoy (mode_override) for BUFFERED bodies when the plugin has body callbacks "+
		"and the body mode is NONE; Envoy honours it with allow_mode_override: true")
	fs.StringVar(&c.metadataNamespace, "metadata-namespace", server.DefaultMetadataNamespace, "dynamic metadata namespace of the plugin's proxy_set_property writes "+
		"(list it in the filter's metadata_options.receiving_namespaces)")
	fs.Func("client", "the ext_proc client: auto (tell each stream: a proxyless gRPC client sends flow_control_init), envoy "+
		"(header values in raw_value) or grpc (gRFC A93: values in value, -bin values as bytes in raw_value); default auto", func(v string) error {
		cl, err := server.ParseClient(v)
		if err != nil {
			return errors.New("want auto, envoy or grpc")
		}
		c.client = cl
		return nil
	})
	fs.BoolVar(&c.allowRouting, "allow-routing-mutations", false, "send changes to host, :authority, :scheme and :method (only if the filter's mutation_rules.allow_all_routing is true)")
	fs.BoolVar(&c.allowEnvoy, "allow-envoy-mutations", false, "send changes to x-envoy-* headers (only if the filter's mutation_rules.allow_envoy is true)")
	fs.DurationVar(&c.shedQueueDelay, "shed-queue-delay", host.DefaultShedQueueDelay, "refuse new streams with UNAVAILABLE (Envoy then applies "+
		"its failure mode at once) while every plugin instance is busy and streams lately waited longer than this for one; "+
		"streams already open are served; 0 never sheds")
	fs.IntVar(&c.limits.MaxStreams, "max-streams", server.DefaultMaxStreams, "streams open at once, HTTP and TCP, past which new ones are refused "+
		"with RESOURCE_EXHAUSTED (Envoy then applies its failure mode); negative: no limit")
	fs.IntVar(&c.limits.MaxStreamsPerConnection, "max-streams-per-connection", server.DefaultMaxStreamsPerConnection,
		"HTTP/2 concurrent streams per client connection (Envoy opens another connection past it); negative: no limit")
	fs.Var(byteSize{&c.limits.MaxStreamBuffer}, "max-stream-buffer", "bytes one stream may hold across messages while its plugin pauses "+
		"(paused bodies, queued messages; 16Mi style suffixes allowed); past it a request gets 413, a response 500, a TCP connection is closed "+
		"(default 64Mi; negative: no limit)")
	fs.Var(byteSize{&c.limits.MaxBufferTotal}, "max-buffer-total", "bytes all streams may hold together; the stream that passes it ends "+
		"with RESOURCE_EXHAUSTED (default 1Gi; negative: no limit)")
	fs.IntVar(&c.limits.MaxQueuedMessages, "max-queued-messages", server.DefaultMaxQueuedMessages,
		"messages queued behind a paused HTTP direction, past which the stream ends with RESOURCE_EXHAUSTED; negative: no limit")
	fs.DurationVar(&c.limits.IdleTimeout, "stream-idle-timeout", server.DefaultIdleTimeout,
		"end a stream that receives no message for this long (UNAVAILABLE); Envoy's stream_idle_timeout default; negative: never")
	c.gcHeadroom = defaultGCHeadroom
	fs.Var(byteSize{&c.gcHeadroom}, "gc-headroom", "heap the Go garbage collector lets the server allocate past its live heap "+
		"before collecting: sets GOGC from the live heap, never below 100 (0: Go's default; ignored when GOGC is set)")
	fs.StringVar(&c.nodeMetadata, "node-metadata", "", "Envoy's bootstrap node (envoy.config.core.v3.Node: id, cluster, metadata, locality…) "+
		"as YAML or JSON, @FILE or inline, read at start: the node and xds.node properties in every context, proxy_on_configure included")
	fs.Func("listener-direction", "inbound, outbound or unspecified: the listener_direction "+
		"(xds.listener_direction) property in every context; default: none", func(v string) error {
		if _, err := host.ParseTrafficDirection(v); err != nil {
			return errors.New("want inbound, outbound or unspecified")
		}
		c.listenerDirection = v
		return nil
	})
	fs.StringVar(&c.listenerMetadata, "listener-metadata", "", "the listener's metadata (envoy.config.core.v3.Metadata, "+
		"filter_metadata: {NAMESPACE: {...}}) as YAML or JSON, @FILE or inline: listener_metadata in every context")
	fs.StringVar(&c.clusterName, "cluster-name", "", "upstream cluster name: cluster_name (xds.cluster_name) for streams whose "+
		"Envoy does not send it as an attribute")
	fs.StringVar(&c.clusterMetadata, "cluster-metadata", "", "upstream cluster metadata (envoy.config.core.v3.Metadata) as YAML or JSON, "+
		"@FILE or inline: cluster_metadata for streams")
	cliflags.EnumVar(fs, &c.logLevel, "log-level", "info", []string{"trace", "debug", "info", "warn", "error"},
		"log level: trace, debug, info, warn or error (plugin log levels map onto these)")
	cliflags.EnumVar(fs, &c.logFormat, "log-format", "text", []string{"text", "json"}, "log format: text, or json (every line on stdout and stderr a JSON object)")
	fs.BoolVar(&c.version, "version", false, "print the version (as the version command does) and exit")
	return fs, c
}

// serve runs the ext_proc server until ctx is cancelled. It prints one
// "wasm-callout: listening KIND ADDR" line per listener to stdout (KIND is
// grpc, grpc-tls or health) once it accepts connections there. Every value
// received on hup (SIGHUP in main; nil for none) reloads the plugin.
func serve(ctx context.Context, args []string, stdout, stderr io.Writer, hup <-chan os.Signal) error {
	if len(args) > 0 && args[0] == "serve" {
		args = args[1:]
	}
	fs, c := serveFlags(stdout)
	if err := cliflags.Parse(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return cliflags.Usagef("unexpected argument %q (flags only; see wasm-callout -h)", fs.Arg(0))
	}
	if c.version {
		return printVersion(stdout, false)
	}
	logger, err := newLogger(stderr, c.logLevel, c.logFormat)
	if err != nil {
		return cliflags.AsUsage(err)
	}
	grpcLogger.Store(logger)
	return logExit(logger, c.logFormat, serveWith(ctx, fs, c, logger, stdout, hup))
}

// serveWith is serve once the flags are parsed and the logger made.
func serveWith(ctx context.Context, fs *flag.FlagSet, c *serveConfig, logger *slog.Logger, stdout io.Writer, hup <-chan os.Signal) error {
	hc, err := c.hostConfig()
	if err != nil {
		return cliflags.AsUsage(err)
	}
	if !flagSet(fs, "compilation-cache") && hc.CompilationCacheDir != "" {
		// The default cache is a convenience: a read-only or home-less
		// container starts without it rather than not at all.
		if err := os.MkdirAll(hc.CompilationCacheDir, 0o755); err != nil {
			logger.Warn("no compilation cache: the default directory is not writable; set --compilation-cache", "err", err)
			hc.CompilationCacheDir = ""
		}
	}
	hc.Logger = logger
	tlsConf, err := c.tlsConfig(logger)
	if err != nil {
		return cliflags.AsUsage(err)
	}
	if err := c.admin.check(); err != nil {
		return cliflags.AsUsage(err)
	}
	// Every listener is bound before the plugin compiles (listeners.go).
	ls, err := c.listenPlan(fs, tlsConf, logger)
	if err != nil {
		return err
	}
	if err := ls.bind(); err != nil {
		return err
	}
	defer ls.close()
	announceTo := stdout
	if c.logFormat == "json" {
		announceTo = nil // stdout carries JSON only
	}

	c.tuneGC(ctx, logger)

	// Liveness answers while the plugin loads; readiness once it serves.
	// The admin endpoints are on their own listener (admin.go).
	rl := newReloader(ctx, c, logger)
	var srvp atomic.Pointer[server.Server]
	if lis := ls.get("health"); lis != nil {
		healthSrv := &http.Server{Handler: healthHandler(&srvp), ReadHeaderTimeout: 5 * time.Second,
			ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelWarn)}
		go healthSrv.Serve(lis)
		defer healthSrv.Close()
		ls.announce(announceTo, logger, "health")
	}

	upstreams, err := host.NewUpstreams(c.upstreams)
	if err != nil {
		return err
	}
	defer upstreams.Close()
	hc.Upstreams = upstreams

	// One metrics registry and one set of host counts for every
	// generation: values survive reloads.
	hc.Metrics = host.NewMetrics()
	hc.Telemetry = host.NewTelemetry()
	if lis := ls.get("admin"); lis != nil {
		adminSrv, err := startAdmin(lis, &c.admin, &srvp, rl, hc, upstreams, logger)
		if err != nil {
			return err
		}
		defer adminSrv.Close()
		ls.announce(announceTo, logger, "admin")
	}
	rl.base = hc
	initial, err := rl.start()
	defer rl.cfg.closeUpstreams()
	if err != nil {
		if ctx.Err() != nil {
			return nil // cancelled while loading
		}
		return err
	}
	// The server owns the plugins it replaces; the ones current at the end
	// are closed here, after the server.
	current := func() []*host.Plugin {
		if initial.Plugin != nil {
			return []*host.Plugin{initial.Plugin}
		}
		return initial.Plugins
	}
	shutDown := false // the bounded shutdown below closed the plugins
	defer func() {
		if !shutDown {
			for _, p := range current() {
				p.Close(context.Background())
			}
		}
	}()
	if c.configFile != "" {
		logger.Info("plugins loaded", "config", c.configFile, "plugins", len(initial.Plugins))
	} else {
		logger.Info("plugin loaded", "plugin", hc.Name, "path", c.plugin, "failure_policy", hc.FailurePolicy)
	}

	srv, err := server.New(server.Options{
		Plugin:              initial.Plugin,
		Plugins:             initial.Plugins,
		Chains:              initial.Chains,
		Logger:              logger,
		DisableModeOverride: !c.modeOverride,
		MetadataNamespace:   c.metadataNamespace,
		MutationRules:       server.MutationRules{AllowAllRouting: c.allowRouting, AllowEnvoy: c.allowEnvoy},
		MessageTimeout:      c.messageTimeout,
		MaxMessageTimeout:   c.maxMessageTimeout,
		DrainTimeout:        c.drainTimeout,
		Limits:              c.limits,
		Client:              c.client,
	})
	if err != nil {
		return err
	}
	current = srv.Plugins
	defer func() {
		if !shutDown {
			srv.Close()
		}
	}()

	var servers []*grpc.Server
	errc := make(chan error, 2)
	for _, kind := range []string{"grpc", "grpc-tls"} {
		lis := ls.get(kind)
		if lis == nil {
			continue
		}
		opts := server.GRPCServerOptions(c.limits)
		if kind == "grpc-tls" {
			opts = append(opts, grpc.Creds(credentials.NewTLS(tlsConf)))
		}
		g := grpc.NewServer(opts...)
		srv.Register(g)
		servers = append(servers, g)
		go func() {
			if err := g.Serve(lis); err != nil {
				errc <- fmt.Errorf("%s server: %w", kind, err)
			}
		}()
	}
	srvp.Store(srv)
	rl.serving(srv)
	// The listening lines are printed once readiness can answer, so that
	// whoever waits for them finds the server ready.
	ls.announce(announceTo, logger, "grpc")
	ls.announce(announceTo, logger, "grpc-tls")
	watchCtx, stopWatch := context.WithCancel(ctx)
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		rl.watch(watchCtx, c.watch, hup)
	}()
	defer func() {
		stopWatch()
		<-watchDone
	}()

	var serveErr error
	select {
	case <-ctx.Done():
		logger.Info("shutting down", "timeout", c.shutdownTimeout)
	case serveErr = <-errc:
		logger.Error("gRPC server failed; shutting down", "err", serveErr)
	}
	rl.serving(nil) // reloads answer 503 from now on
	srv.Drain()
	shutDown = true
	shutdown(servers, srv, current, c.shutdownTimeout, logger)
	st := srv.Stats()
	logger.Info("stopped", "streams", st.StreamsStarted, "immediate_responses", st.ImmediateResponses,
		"plugin_failures", st.PluginFailures, "protocol_errors", st.ProtocolErrors, "dropped_mutations", st.DroppedMutations,
		"generation", st.Generation, "reload_failures", st.ReloadFailures)
	return serveErr
}

// shutdown stops serving within timeout, whatever the plugin does: open
// streams get most of it to finish, then the plugin generations are closed
// (their root contexts end) with what is left. A plugin call that cannot be
// stopped (deadlines off) does not hold the process: at the timeout the
// closing is abandoned, and the process exits with it still running.
func shutdown(servers []*grpc.Server, srv *server.Server, current func() []*host.Plugin, timeout time.Duration, logger *slog.Logger) {
	deadline := time.Now().Add(timeout)
	reserve := min(timeout/4, 2*time.Second)
	done := make(chan struct{})
	go func() {
		defer close(done)
		// A cut stream's handler returns only once its plugin call does.
		gracefulStop(servers, timeout-reserve, logger)
		srv.Close()
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		defer cancel()
		for _, p := range current() {
			if err := p.Close(ctx); err != nil {
				logger.Warn("closing the plugin", "plugin", p.Config().Name, "err", err)
			}
		}
	}()
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		logger.Error("shutdown timeout reached while the plugin was still closing; exiting without waiting for it")
	}
}

// gracefulStop lets open streams finish for up to timeout, then cuts them.
func gracefulStop(servers []*grpc.Server, timeout time.Duration, logger *slog.Logger) {
	var wg sync.WaitGroup
	for _, g := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			g.GracefulStop()
		}()
	}
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(timeout):
		logger.Warn("streams still open after the shutdown timeout; closing them")
		for _, g := range servers {
			g.Stop()
		}
		<-done
	}
}

// healthHandler serves /healthz (200 while the process can make progress:
// no plugin call is stuck past its deadline; see server.Live) and /readyz
// (200 once the plugin's pool is started, while an instance is healthy and
// until shutdown begins), and answers GET / as /readyz (a GCP load
// balancer's health check asks for / by default). Neither ever waits for a
// plugin call.
func healthHandler(srv *atomic.Pointer[server.Server]) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		if s := srv.Load(); s != nil && !s.Live() {
			http.Error(w, "stalled: a plugin call outlived its deadline", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ok\n")
	})
	ready := func(w http.ResponseWriter, _ *http.Request) {
		if s := srv.Load(); s != nil && s.Ready() {
			io.WriteString(w, "ready\n")
			return
		}
		http.Error(w, "not ready", http.StatusServiceUnavailable)
	}
	mux.HandleFunc("GET /readyz", ready)
	mux.HandleFunc("GET /{$}", ready)
	return mux
}

func (c *serveConfig) hostConfig() (host.Config, error) {
	if c.plugin == "" && c.configFile == "" {
		return host.Config{}, errors.New("--plugin is required (or --config FILE)")
	}
	if c.configFile != "" {
		for _, f := range []struct{ name, v string }{{"plugin", c.plugin}, {"plugin-config", c.pluginConfig},
			{"vm-config", c.vmConfig}, {"name", c.name}, {"root-id", c.rootID}, {"vm-id", c.vmID}} {
			if f.v != "" {
				return host.Config{}, fmt.Errorf("--%s and --config do not go together: set it on the plugin in the configuration file", f.name)
			}
		}
	}
	var hc host.Config
	switch c.failurePolicy {
	case "fail-closed":
		hc.FailurePolicy = host.FailClosed
	case "fail-open":
		hc.FailurePolicy = host.FailOpen
	default:
		return hc, fmt.Errorf("--failure-policy %q: want fail-closed or fail-open", c.failurePolicy)
	}
	if c.failureStatus < 200 || c.failureStatus > 599 {
		return hc, fmt.Errorf("--failure-status %d: want an HTTP status from 200 to 599", c.failureStatus)
	}
	if c.instances < 0 {
		return hc, fmt.Errorf("--instances %d: want 0 (the default) or more", c.instances)
	}
	if c.memoryLimitPages == 0 || c.memoryLimitPages > 65536 {
		return hc, fmt.Errorf("--memory-limit-pages %d: want 1 to 65536", c.memoryLimitPages)
	}
	if c.callTimeout < 0 {
		return hc, fmt.Errorf("--call-timeout %v: want a positive duration, or 0 for none", c.callTimeout)
	}
	if c.watch < 0 {
		return hc, fmt.Errorf("--watch %v: want a poll interval, or 0 for none", c.watch)
	}
	if c.drainTimeout <= 0 {
		return hc, fmt.Errorf("--drain-timeout %v: want a positive duration", c.drainTimeout)
	}
	pluginConfig, err := stringOrFile("--plugin-config", c.pluginConfig)
	if err != nil {
		return hc, err
	}
	vmConfig, err := stringOrFile("--vm-config", c.vmConfig)
	if err != nil {
		return hc, err
	}
	hc.Name = c.name
	if hc.Name == "" {
		hc.Name = strings.TrimSuffix(filepath.Base(c.plugin), ".wasm")
	}
	hc.RootID, hc.VMID = c.rootID, c.vmID
	hc.PluginConfig, hc.VMConfig = pluginConfig, vmConfig
	hc.Instances = c.instances
	hc.MemoryLimitPages = uint32(c.memoryLimitPages)
	hc.CallTimeout = c.callTimeout
	hc.ShedQueueDelay = c.shedQueueDelay
	if c.shedQueueDelay <= 0 {
		hc.ShedQueueDelay = -1 // host: negative never sheds
	}
	if c.callTimeout == 0 {
		hc.CallTimeout = -1 // host: negative turns deadlines off
	}
	hc.CompilationCacheDir = c.compilationCache
	hc.Env = c.pluginEnv
	hc.FailStatus = uint32(c.failureStatus)
	if hc.Local, err = c.localInfo(); err != nil {
		return hc, err
	}
	return hc, nil
}

// localInfo reads the node, listener and cluster flags; nil if none is set.
func (c *serveConfig) localInfo() (*host.LocalInfo, error) {
	if c.nodeMetadata == "" && c.listenerDirection == "" && c.listenerMetadata == "" && c.clusterName == "" && c.clusterMetadata == "" {
		return nil, nil
	}
	l := &host.LocalInfo{ClusterName: c.clusterName}
	if c.nodeMetadata != "" {
		b, err := stringOrFile("--node-metadata", c.nodeMetadata)
		if err != nil {
			return nil, err
		}
		if l.Node, err = host.ParseNode(b); err != nil {
			return nil, fmt.Errorf("--node-metadata %s: %w", flagSource(c.nodeMetadata), err)
		}
	}
	if c.listenerDirection != "" {
		d, err := host.ParseTrafficDirection(c.listenerDirection)
		if err != nil {
			return nil, fmt.Errorf("--listener-direction %w", err)
		}
		l.ListenerDirection = &d
	}
	for _, md := range []struct {
		flag, v string
		dst     **corev3.Metadata
	}{{"--listener-metadata", c.listenerMetadata, &l.ListenerMetadata}, {"--cluster-metadata", c.clusterMetadata, &l.ClusterMetadata}} {
		if md.v == "" {
			continue
		}
		b, err := stringOrFile(md.flag, md.v)
		if err != nil {
			return nil, err
		}
		if *md.dst, err = host.ParseMetadata(b); err != nil {
			return nil, fmt.Errorf("%s %s: %w", md.flag, flagSource(md.v), err)
		}
	}
	return l, nil
}

// flagSource names where a @FILE-or-inline flag's value came from.
func flagSource(v string) string {
	if strings.HasPrefix(v, "@") {
		return v
	}
	return "(inline)"
}

// stringOrFile returns v, or the contents of the file v names after '@'.
func stringOrFile(flagName, v string) ([]byte, error) {
	if name, ok := strings.CutPrefix(v, "@"); ok {
		b, err := os.ReadFile(name)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", flagName, err)
		}
		return b, nil
	}
	if v == "" {
		return nil, nil
	}
	return []byte(v), nil
}

// byteSize is a flag.Value for a byte count with an optional binary suffix
// (Ki, Mi, Gi).
type byteSize struct{ v *int64 }

func (b byteSize) String() string {
	if b.v == nil {
		return "0"
	}
	return strconv.FormatInt(*b.v, 10)
}

func (b byteSize) Set(s string) error {
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}} {
		if n, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = n, u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return fmt.Errorf("want a byte count such as 1048576 or 16Mi")
	}
	*b.v = n * mult
	return nil
}

// defaultGCHeadroom is --gc-headroom's default. Serving the zero-work
// plugin at 16 streams in flight (about 2 MB live), it cut the server's
// CPU per request by about a quarter for about 28 MB more RSS;
// RATIONALE.md has the figures.
const defaultGCHeadroom = 16 << 20

// tuneGC starts the collector's tuner (internal/gctune) for the server's
// life, unless --gc-headroom is 0 or the operator set GOGC.
func (c *serveConfig) tuneGC(ctx context.Context, logger *slog.Logger) {
	if c.gcHeadroom <= 0 {
		return
	}
	if v, ok := os.LookupEnv("GOGC"); ok {
		logger.Debug("GOGC is set; --gc-headroom does not apply", "GOGC", v)
		return
	}
	t := &gctune.Tuner{Headroom: uint64(c.gcHeadroom), Interval: time.Second}
	go t.Run(ctx)
}

// defaultCacheDir is the user's cache directory for wasm-callout
// (os.UserCacheDir: $XDG_CACHE_HOME or ~/.cache on Linux), or "" if there
// is none.
func defaultCacheDir() string {
	dir, err := os.UserCacheDir()
	if err != nil {
		return ""
	}
	return filepath.Join(dir, "wasm-callout")
}

// flagSet reports whether the flag name was given on the command line.
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}
