package engine

import (
	"fmt"
	"strings"

	"github.com/corazawaf/coraza/v3"
	"github.com/corazawaf/coraza/v3/types"
)

// WAFs are the built directive sets of one configuration.
type WAFs struct {
	bySet       map[string]coraza.WAF
	byAuthority map[string]coraza.WAF
	def         coraza.WAF
	// Sets names the built sets, sorted.
	Sets []string
}

// Options tune how the WAFs are built.
type Options struct {
	// OnMatch, when set, is called for every matched rule that logs
	// (Coraza's error callback).
	OnMatch func(types.MatchedRule)
}

// Build builds one Coraza WAF per directive set that the default or an
// authority names (a set named twice is built once) over RootFS.
func Build(c Config, opts Options) (*WAFs, error) {
	w := &WAFs{bySet: map[string]coraza.WAF{}, byAuthority: map[string]coraza.WAF{}}
	for _, name := range c.usedSets() {
		cfg := coraza.NewWAFConfig().
			WithRootFS(RootFS).
			WithDirectives(strings.Join(c.DirectivesMap[name], "\n"))
		if opts.OnMatch != nil {
			cfg = cfg.WithErrorCallback(opts.OnMatch)
		}
		waf, err := coraza.NewWAF(cfg)
		if err != nil {
			return nil, fmt.Errorf("directive set %q: %w", name, err)
		}
		w.bySet[name] = waf
		w.Sets = append(w.Sets, name)
	}
	for a, name := range c.PerAuthorityDirectives {
		w.byAuthority[a] = w.bySet[name]
	}
	if c.DefaultDirectives != "" {
		w.def = w.bySet[c.DefaultDirectives]
	}
	return w, nil
}

// For returns the WAF for a request's :authority: the set named for it
// exactly, else for its host without the port (so "example.com:443" does
// not slip past a set named for "example.com"), else the default set. nil
// means no set applies and the request passes uninspected.
func (w *WAFs) For(authority string) coraza.WAF {
	if waf, ok := w.byAuthority[authority]; ok {
		return waf
	}
	if host, ok := stripPort(authority); ok {
		if waf, ok := w.byAuthority[host]; ok {
			return waf
		}
	}
	return w.def
}

// stripPort returns authority without a trailing ":port".
func stripPort(authority string) (string, bool) {
	i := strings.LastIndexByte(authority, ':')
	if i < 0 {
		return "", false
	}
	if host := authority[:i]; strings.Contains(host, ":") && !strings.HasSuffix(host, "]") {
		return "", false // a bare IPv6 address
	}
	for _, c := range authority[i+1:] {
		if c < '0' || c > '9' {
			return "", false
		}
	}
	return authority[:i], true
}
