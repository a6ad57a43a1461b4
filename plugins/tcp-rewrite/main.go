// Command tcp-rewrite is a proxy-wasm network filter (TinyGo-era
// proxy-wasm-go-sdk v0.24.0, TcpContext) that rewrites tokens in the data a
// client sends (downstream data) before it reaches the upstream, the way a
// text-protocol rewriter does (a command, a host name, a version string).
// Upstream data passes unchanged.
//
//   - Plugin configuration: one rule per line, "FROM: TO". Each line is split
//     at its first ':' and both sides are trimmed of spaces and tabs. Either
//     side may be a double-quoted Go string literal, for tokens with spaces,
//     colons or escapes ("\r\n", "\x00"). Blank lines and '#' comments are
//     ignored. An empty FROM, a line without ':' or a bad quoted string is an
//     error, and so is a configuration without rules: OnPluginStart logs the
//     problem and fails.
//   - Rewriting is one left-to-right pass over the data: at each position
//     the first rule whose FROM starts there is replaced by its TO, and the
//     scan continues after it, so a TO is never rewritten again.
//   - A token may be split across frames: while the data ends with a proper
//     prefix of some FROM and the stream has not ended, the callback returns
//     Pause, so the host holds the bytes and calls again with the next frame
//     added. Data already held reaching 64 KiB is released anyway (a token
//     split there is not rewritten), so a client cannot make the filter
//     buffer without bound.
//   - Counter tcp_rewrite_replacements_total counts replaced tokens; each
//     rewrite logs at Debug "tcp-rewrite: N replacement(s) in B bytes".
package main

import (
	"bytes"
	"errors"
	"strconv"
	"strings"

	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm"
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/types"
)

// maxHold bounds the bytes held waiting for the rest of a split token.
const maxHold = 64 << 10

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

type rule struct {
	from, to []byte
}

type pluginContext struct {
	types.DefaultPluginContext
	rules        []rule
	replacements proxywasm.MetricCounter
}

// OnPluginStart implements types.PluginContext.
func (p *pluginContext) OnPluginStart(int) types.OnPluginStartStatus {
	config, err := proxywasm.GetPluginConfiguration()
	if err != nil && err != types.ErrorStatusNotFound {
		proxywasm.LogErrorf("tcp-rewrite: reading plugin configuration: %v", err)
		return types.OnPluginStartStatusFailed
	}
	rules, err := parseConfig(string(config))
	if err != nil {
		proxywasm.LogErrorf("tcp-rewrite: %v", err)
		return types.OnPluginStartStatusFailed
	}
	p.rules = rules
	p.replacements = proxywasm.DefineCounterMetric("tcp_rewrite_replacements_total")
	proxywasm.LogInfof("tcp-rewrite: %d rule(s)", len(rules))
	return types.OnPluginStartStatusOK
}

// parseConfig parses "FROM: TO" lines (see the package comment).
func parseConfig(config string) ([]rule, error) {
	var rules []rule
	for i, line := range strings.Split(config, "\n") {
		line = strings.Trim(line, " \t\r")
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		from, to, err := parseRule(line)
		if err != nil {
			return nil, errors.New("configuration line " + strconv.Itoa(i+1) + " " + strconv.Quote(line) + ": " + err.Error())
		}
		rules = append(rules, rule{[]byte(from), []byte(to)})
	}
	if len(rules) == 0 {
		return nil, errors.New(`no rules configured (want "FROM: TO" lines)`)
	}
	return rules, nil
}

// parseRule splits one "FROM: TO" line; either side may be quoted.
func parseRule(line string) (from, to string, err error) {
	var rest string
	if strings.HasPrefix(line, `"`) {
		q, err := strconv.QuotedPrefix(line)
		if err != nil {
			return "", "", errors.New("bad quoted FROM")
		}
		from, _ = strconv.Unquote(q)
		rest = strings.TrimLeft(line[len(q):], " \t")
		if !strings.HasPrefix(rest, ":") {
			return "", "", errors.New(`want "FROM: TO"`)
		}
		rest = rest[1:]
	} else {
		var ok bool
		from, rest, ok = strings.Cut(line, ":")
		if !ok {
			return "", "", errors.New(`want "FROM: TO"`)
		}
		from = strings.Trim(from, " \t")
	}
	if from == "" {
		return "", "", errors.New("empty FROM")
	}
	to = strings.Trim(rest, " \t")
	if strings.HasPrefix(to, `"`) {
		if to, err = strconv.Unquote(to); err != nil {
			return "", "", errors.New("bad quoted TO")
		}
	}
	return from, to, nil
}

// rewrite replaces every token in one left-to-right pass and returns the
// result and the number of replacements (0: data is returned as is).
func rewrite(data []byte, rules []rule) ([]byte, int) {
	var out []byte
	n, last := 0, 0
	for i := 0; i < len(data); {
		matched := false
		for _, r := range rules {
			if bytes.HasPrefix(data[i:], r.from) {
				if out == nil {
					out = make([]byte, 0, len(data))
				}
				out = append(append(out, data[last:i]...), r.to...)
				i += len(r.from)
				last, matched = i, true
				n++
				break
			}
		}
		if !matched {
			i++
		}
	}
	if n == 0 {
		return data, 0
	}
	return append(out, data[last:]...), n
}

// partialTail reports whether data ends with a proper prefix of some FROM:
// the rest of a token may be in the next frame.
func partialTail(data []byte, rules []rule) bool {
	for _, r := range rules {
		for k := min(len(r.from)-1, len(data)); k > 0; k-- {
			if bytes.HasSuffix(data, r.from[:k]) {
				return true
			}
		}
	}
	return false
}

// NewTcpContext implements types.PluginContext.
func (p *pluginContext) NewTcpContext(uint32) types.TcpContext {
	return &tcpContext{plugin: p}
}

type tcpContext struct {
	types.DefaultTcpContext
	plugin *pluginContext
}

// OnDownstreamData implements types.TcpContext. size is everything the
// host holds: earlier paused frames and this one.
func (c *tcpContext) OnDownstreamData(size int, endOfStream bool) types.Action {
	if size == 0 {
		return types.ActionContinue
	}
	data, err := proxywasm.GetDownstreamData(0, size)
	if err != nil {
		proxywasm.LogWarnf("tcp-rewrite: reading downstream data: %v", err)
		return types.ActionContinue
	}
	rules := c.plugin.rules
	if !endOfStream && size < maxHold && partialTail(data, rules) {
		return types.ActionPause
	}
	out, n := rewrite(data, rules)
	if n == 0 {
		return types.ActionContinue
	}
	if err := proxywasm.ReplaceDownstreamData(out); err != nil {
		proxywasm.LogWarnf("tcp-rewrite: replacing downstream data: %v", err)
		return types.ActionContinue
	}
	c.plugin.replacements.Increment(uint64(n))
	proxywasm.LogDebugf("tcp-rewrite: %d replacement(s) in %d bytes", n, size)
	return types.ActionContinue
}
