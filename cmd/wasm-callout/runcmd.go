package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/wasm-callout/wasm-callout/abi"
	"github.com/wasm-callout/wasm-callout/host"
	"github.com/wasm-callout/wasm-callout/internal/cliflags"
	"github.com/wasm-callout/wasm-callout/internal/plugintest"
	"github.com/wasm-callout/wasm-callout/internal/tryrun"
)

// runCmd pushes one request or connection through a plugin and shows
// every phase (wasm-callout run). It exits 0 when the request went
// upstream, 1 when the plugin answered locally, 2 when the plugin failed.
func runCmd(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := cliflags.NewFlagSet("wasm-callout run", stdout, `Usage: wasm-callout run --plugin p.wasm [flags] [URL]
       wasm-callout run --plugin p.wasm --raw request.http
       wasm-callout run --plugin tcp.wasm --tcp --read DATA --write DATA
Pushes one HTTP request (or TCP exchange) through the plugin and shows each phase.
Exit status: 0 the request went upstream, 1 the plugin answered locally (or closed or held the stream), 2 the plugin failed.

Flags:`)
	var (
		plugin       = fs.String("plugin", "", "the plugin .wasm (required)")
		pluginConfig = fs.String("plugin-config", "", "plugin configuration, inline or @FILE")
		method       = fs.String("X", "", "request method (default GET, or POST with a body)")
		body         = fs.String("body", "", "request body: inline, @FILE, or - for stdin")
		respStatus   = fs.Int("response-status", 200, "the upstream's response status")
		respBody     = fs.String("response-body", "", "the upstream's response body: inline or @FILE")
		chunks       = fs.Int("chunks", 0, "split each body into N chunks (streamed and duplex modes)")
		chunkSize    = fs.Int("chunk-size", 0, "split each body into chunks of N bytes (streamed and duplex modes)")
		mode         = fs.String("mode", "", "body delivery: headers, buffered, streamed or duplex (default buffered; streamed with --chunks/--chunk-size)")
		raw          = fs.String("raw", "", "read the request as HTTP/1 text (request line, headers, blank line, body) from FILE, or - for stdin")
		tcp          = fs.Bool("tcp", false, "run a TCP connection instead of an HTTP request")
		read         = fs.String("read", "", "TCP: the bytes the client sends (inline or @FILE)")
		write        = fs.String("write", "", "TCP: the bytes the upstream answers (inline or @FILE)")
		nodeMetadata = fs.String("node-metadata", "", "Envoy's bootstrap node (envoy.config.core.v3.Node) as YAML or JSON, inline or @FILE")
		asJSON       = fs.Bool("json", false, "print the report as one JSON object")
		verbose      = fs.Bool("v", false, "show the host calls the plugin made")
		logLevel     = fs.String("log-level", "trace", "lowest plugin log level shown (and answered to proxy_get_log_level): trace, debug, info, warn, error, critical")
		wait         = fs.Duration("wait", 5*time.Second, "how long a paused phase waits for the plugin to resume it")
		timeout      = fs.Duration("call-timeout", time.Second, "deadline of each plugin call")
		cache        = fs.String("compilation-cache", defaultCacheDir(), "directory caching compiled plugin code; empty: a temporary one")
		headers      []abi.Pair
		respHeaders  []abi.Pair
		props        = plugintest.Properties{}
		upstreams    []host.Upstream
	)
	header := func(dst *[]abi.Pair) func(string) error {
		return func(v string) error {
			k, val, ok := strings.Cut(v, ":")
			if k, val = strings.TrimSpace(k), strings.TrimSpace(val); !ok || k == "" {
				return fmt.Errorf("want 'name: value', got %q", v)
			}
			if strings.HasPrefix(v, ":") { // a pseudo-header, ":path: /x"
				k2, val2, ok := strings.Cut(v[1:], ":")
				if !ok {
					return fmt.Errorf("want ':name: value', got %q", v)
				}
				k, val = ":"+strings.TrimSpace(k2), strings.TrimSpace(val2)
			}
			*dst = append(*dst, abi.Pair{Key: strings.ToLower(k), Value: val})
			return nil
		}
	}
	fs.Func("H", "request header 'name: value' (repeatable)", header(&headers))
	fs.Func("response-header", "the upstream's response header 'name: value' (repeatable)", header(&respHeaders))
	fs.Func("property", "property PATH=VALUE the plugin reads with proxy_get_property (repeatable), e.g. source.address=10.0.0.1:5000", func(v string) error {
		k, val, ok := strings.Cut(v, "=")
		if !ok || k == "" {
			return fmt.Errorf("want PATH=VALUE, got %q", v)
		}
		props.Set(k, []byte(val))
		return nil
	})
	fs.Func("upstream", "cluster a plugin may call (proxy_http_call, proxy_grpc_call): NAME=URL[,ca=FILE][,connect-timeout=DURATION] (repeatable)", func(v string) error {
		u, err := host.ParseUpstream(v)
		if err != nil {
			return err
		}
		upstreams = append(upstreams, u)
		return nil
	})
	if err := cliflags.Parse(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	usage := func(format string, a ...any) error {
		return cliflags.Usagef("run: "+format, a...)
	}
	if *plugin == "" {
		return usage("--plugin is required")
	}
	if fs.NArg() > 1 {
		return usage("one URL at most, got %q", fs.Args())
	}
	wasm, err := os.ReadFile(*plugin)
	if err != nil {
		return usage("--plugin: %v", err)
	}
	level, err := parseLogLevel(*logLevel)
	if err != nil {
		return usage("--log-level: %v", err)
	}
	cfg := plugintest.HarnessConfig{
		Wasm: wasm, Name: strings.TrimSuffix(filepath.Base(*plugin), ".wasm"), LogLevel: level,
		Trace: true, CallTimeout: *timeout,
	}
	dir, cleanup, err := toolCache(*cache)
	if err != nil {
		return err
	}
	defer cleanup()
	cfg.CacheDir = dir
	if cfg.PluginConfig, err = stringOrFile("--plugin-config", *pluginConfig); err != nil {
		return usage("%v", err)
	}
	if *nodeMetadata != "" {
		b, err := stringOrFile("--node-metadata", *nodeMetadata)
		if err != nil {
			return usage("%v", err)
		}
		node, err := host.ParseNode(b)
		if err != nil {
			return usage("--node-metadata: %v", err)
		}
		cfg.Local = &host.LocalInfo{Node: node}
	}
	if len(upstreams) > 0 {
		us, err := host.NewUpstreams(upstreams)
		if err != nil {
			return usage("--upstream: %v", err)
		}
		defer us.Close()
		cfg.Upstreams = us
	}

	var rep *tryrun.Report
	if *tcp {
		r, err := stringOrFile("--read", *read)
		if err != nil {
			return usage("%v", err)
		}
		w, err := stringOrFile("--write", *write)
		if err != nil {
			return usage("%v", err)
		}
		rep = tryrun.RunTCP(ctx, cfg, props, tryrun.TCP{Read: r, Write: w})
	} else {
		req := tryrun.HTTP{Mode: *mode, Chunks: *chunks, ChunkSize: *chunkSize, Wait: *wait}
		switch req.Mode {
		case "":
			req.Mode = tryrun.ModeBuffered
			if *chunks > 0 || *chunkSize > 0 {
				req.Mode = tryrun.ModeStreamed
			}
		case tryrun.ModeHeaders, tryrun.ModeBuffered, tryrun.ModeStreamed, tryrun.ModeDuplex:
		default:
			return usage("--mode: want headers, buffered, streamed or duplex, got %q", req.Mode)
		}
		if *raw != "" {
			text, err := readArg(*raw, stdin)
			if err != nil {
				return usage("--raw: %v", err)
			}
			if req.Headers, req.Body, err = parseRaw(text); err != nil {
				return usage("--raw: %v", err)
			}
			req.Headers = append(req.Headers, headers...)
		} else {
			if *body == "-" {
				req.Body, err = io.ReadAll(stdin)
			} else {
				req.Body, err = stringOrFile("--body", *body)
			}
			if err != nil {
				return usage("%v", err)
			}
			target := "http://localhost/"
			if fs.NArg() == 1 {
				target = fs.Arg(0)
			}
			m := *method
			if m == "" {
				m = "GET"
				if len(req.Body) > 0 {
					m = "POST"
				}
			}
			if req.Headers, err = requestHeaders(m, target, headers, len(req.Body)); err != nil {
				return usage("%v", err)
			}
		}
		if req.ResponseBody, err = stringOrFile("--response-body", *respBody); err != nil {
			return usage("%v", err)
		}
		req.ResponseHeaders = append([]abi.Pair{{Key: ":status", Value: strconv.Itoa(*respStatus)}}, respHeaders...)
		if len(req.ResponseBody) > 0 && !hasHeader(respHeaders, "content-length") {
			req.ResponseHeaders = append(req.ResponseHeaders, abi.Pair{Key: "content-length", Value: strconv.Itoa(len(req.ResponseBody))})
		}
		rep = tryrun.RunHTTP(ctx, cfg, props, req)
	}
	if *asJSON {
		if err := rep.WriteJSON(stdout); err != nil {
			return err
		}
	} else {
		rep.WriteText(stdout, *verbose)
	}
	if rep.Outcome.Code != 0 {
		return &exitError{code: rep.Outcome.Code}
	}
	return nil
}

// requestHeaders builds the request's pseudo-headers from method and URL,
// then the -H headers (a Host header becomes :authority).
func requestHeaders(method, target string, extra []abi.Pair, bodyLen int) ([]abi.Pair, error) {
	u, err := url.Parse(target)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, fmt.Errorf("URL: want http(s)://host/path, got %q", target)
	}
	authority := u.Host
	var rest []abi.Pair
	for _, h := range extra {
		if h.Key == "host" || h.Key == ":authority" {
			authority = h.Value
			continue
		}
		rest = append(rest, h)
	}
	out := []abi.Pair{{Key: ":method", Value: method}, {Key: ":scheme", Value: u.Scheme},
		{Key: ":authority", Value: authority}, {Key: ":path", Value: u.RequestURI()}}
	out = append(out, rest...)
	if bodyLen > 0 && !hasHeader(rest, "content-length") {
		out = append(out, abi.Pair{Key: "content-length", Value: strconv.Itoa(bodyLen)})
	}
	return out, nil
}

// parseRaw splits HTTP/1 request text into headers and body.
func parseRaw(text []byte) ([]abi.Pair, []byte, error) {
	head, body := text, []byte(nil)
	if i := bytes.Index(text, []byte("\r\n\r\n")); i >= 0 {
		head, body = text[:i], text[i+4:]
	} else if i := bytes.Index(text, []byte("\n\n")); i >= 0 {
		head, body = text[:i], text[i+2:]
	}
	pairs, err := plugintest.ParseHTTP1(head, true)
	if err != nil {
		return nil, nil, err
	}
	hasAuthority := false
	for _, p := range pairs {
		hasAuthority = hasAuthority || p.Key == ":authority"
	}
	if !hasHeader(pairs, ":scheme") {
		pairs = append(pairs[:1:1], append([]abi.Pair{{Key: ":scheme", Value: "http"}}, pairs[1:]...)...)
	}
	if !hasAuthority {
		return nil, nil, errors.New("no Host header and no absolute URI")
	}
	return pairs, body, nil
}

func hasHeader(pairs []abi.Pair, key string) bool {
	for _, p := range pairs {
		if strings.EqualFold(p.Key, key) {
			return true
		}
	}
	return false
}

// readArg reads FILE, or stdin for "-".
func readArg(name string, stdin io.Reader) ([]byte, error) {
	if name == "-" {
		return io.ReadAll(bufio.NewReader(stdin))
	}
	return os.ReadFile(name)
}

func parseLogLevel(s string) (abi.LogLevel, error) {
	names := map[string]abi.LogLevel{"trace": abi.LogTrace, "debug": abi.LogDebug, "info": abi.LogInfo, "warn": abi.LogWarn, "error": abi.LogError, "critical": abi.LogCritical}
	if l, ok := names[strings.ToLower(s)]; ok {
		return l, nil
	}
	return 0, fmt.Errorf("unknown level %q", s)
}
