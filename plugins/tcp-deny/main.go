// Command tcp-deny is a proxy-wasm network filter (TinyGo-era
// proxy-wasm-go-sdk v0.24.0, TcpContext) that closes a connection whose
// first bytes from the client match a deny pattern: a protocol or command
// the listener must not carry (an HTTP CONNECT, a TLS ClientHello, an admin
// command).
//
//   - Plugin configuration: lines of "name: value", split at the first ':'
//     and trimmed of spaces and tabs; blank lines and '#' comments are
//     ignored.
//     deny: PATTERN   (repeatable, at least one) the connection is denied
//     when the client's data starts with PATTERN. PATTERN may be a
//     double-quoted Go string literal, for spaces or bytes ("CONNECT ",
//     "\x16\x03").
//     action: close   (default) close the connection (proxy_close_stream,
//     a FIN after flushing), or action: reset, an abortive close (what a
//     local response does on a TCP stream).
//     Anything else (unknown name, empty or badly quoted pattern) is an
//     error: OnPluginStart logs it and fails.
//   - OnDownstreamData decides once per connection. While the data held so
//     far is shorter than a pattern it could still match, and the client
//     has not ended its side, it returns Pause: the host holds the bytes
//     (Envoy would buffer them), nothing reaches the upstream, and the next
//     call sees them with the next frame. When a pattern matches it logs at
//     Warn "tcp-deny: connection denied (pattern N)", adds 1 to
//     tcp_deny_denied_total and closes. Otherwise it adds 1 to
//     tcp_deny_allowed_total and continues, releasing what it held; later
//     data passes without inspection.
//   - Upstream data always passes.
package main

import (
	"bytes"
	"errors"
	"strconv"
	"strings"

	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm"
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/types"
)

func main() {
	proxywasm.SetVMContext(&vmContext{})
}

type vmContext struct {
	types.DefaultVMContext
}

// NewPluginContext implements types.VMContext.
func (*vmContext) NewPluginContext(uint32) types.PluginContext {
	return &pluginContext{}
}

type pluginContext struct {
	types.DefaultPluginContext
	patterns        [][]byte
	reset           bool
	denied, allowed proxywasm.MetricCounter
}

// OnPluginStart implements types.PluginContext.
func (p *pluginContext) OnPluginStart(int) types.OnPluginStartStatus {
	config, err := proxywasm.GetPluginConfiguration()
	if err != nil && err != types.ErrorStatusNotFound {
		proxywasm.LogErrorf("tcp-deny: reading plugin configuration: %v", err)
		return types.OnPluginStartStatusFailed
	}
	if err := p.parseConfig(string(config)); err != nil {
		proxywasm.LogErrorf("tcp-deny: %v", err)
		return types.OnPluginStartStatusFailed
	}
	p.denied = proxywasm.DefineCounterMetric("tcp_deny_denied_total")
	p.allowed = proxywasm.DefineCounterMetric("tcp_deny_allowed_total")
	action := "close"
	if p.reset {
		action = "reset"
	}
	proxywasm.LogInfof("tcp-deny: %d pattern(s), action %s", len(p.patterns), action)
	return types.OnPluginStartStatusOK
}

// parseConfig parses the configuration (see the package comment).
func (p *pluginContext) parseConfig(config string) error {
	for i, line := range strings.Split(config, "\n") {
		line = strings.Trim(line, " \t\r")
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		bad := func(why string) error {
			return errors.New("configuration line " + strconv.Itoa(i+1) + " " + strconv.Quote(line) + ": " + why)
		}
		name, value, ok := strings.Cut(line, ":")
		if !ok {
			return bad(`want "name: value"`)
		}
		value = strings.Trim(value, " \t")
		switch strings.Trim(name, " \t") {
		case "deny":
			if strings.HasPrefix(value, `"`) {
				v, err := strconv.Unquote(value)
				if err != nil {
					return bad("bad quoted pattern")
				}
				value = v
			}
			if value == "" {
				return bad("empty pattern")
			}
			p.patterns = append(p.patterns, []byte(value))
		case "action":
			switch value {
			case "close":
				p.reset = false
			case "reset":
				p.reset = true
			default:
				return bad("action is close or reset")
			}
		default:
			return bad("unknown name (want deny or action)")
		}
	}
	if len(p.patterns) == 0 {
		return errors.New(`no deny patterns configured (want "deny: PATTERN" lines)`)
	}
	return nil
}

// verdict is what the first bytes say.
type verdict int

const (
	undecided verdict = iota // a pattern may still match: wait for more
	allow
	deny
)

// judge compares the data held so far with the patterns; n is the index of
// the matching pattern for deny.
func judge(data []byte, patterns [][]byte) (v verdict, n int) {
	v = allow
	for i, p := range patterns {
		switch {
		case len(data) >= len(p):
			if bytes.HasPrefix(data, p) {
				return deny, i
			}
		case bytes.HasPrefix(p, data):
			v = undecided
		}
	}
	return v, -1
}

// NewTcpContext implements types.PluginContext.
func (p *pluginContext) NewTcpContext(uint32) types.TcpContext {
	return &tcpContext{plugin: p}
}

type tcpContext struct {
	types.DefaultTcpContext
	plugin  *pluginContext
	decided bool
}

// OnDownstreamData implements types.TcpContext. size is everything the
// host holds: earlier paused frames and this one.
func (c *tcpContext) OnDownstreamData(size int, endOfStream bool) types.Action {
	if c.decided {
		return types.ActionContinue
	}
	var data []byte
	if size > 0 {
		var err error
		if data, err = proxywasm.GetDownstreamData(0, size); err != nil {
			proxywasm.LogWarnf("tcp-deny: reading downstream data: %v", err)
		}
	}
	p := c.plugin
	v, n := judge(data, p.patterns)
	switch {
	case v == deny:
		c.decided = true
		p.denied.Increment(1)
		proxywasm.LogWarnf("tcp-deny: connection denied (pattern %d)", n+1)
		var err error
		if p.reset {
			err = proxywasm.SendHttpResponse(403, nil, nil, -1)
		} else {
			err = proxywasm.CloseDownstream()
		}
		if err != nil {
			proxywasm.LogErrorf("tcp-deny: closing the connection: %v", err)
		}
		return types.ActionPause
	case v == undecided && !endOfStream:
		return types.ActionPause
	}
	c.decided = true
	p.allowed.Increment(1)
	return types.ActionContinue
}
