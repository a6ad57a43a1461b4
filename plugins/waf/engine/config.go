// Package engine is the WAF of plugins/waf without proxy-wasm: it reads
// coraza-proxy-wasm's configuration JSON, builds one Coraza WAF per
// directive set over the embedded OWASP Core Rule Set, and runs a
// transaction through the phases of an HTTP exchange. The plugin drives it
// from proxy-wasm callbacks; bench/waf drives the same code natively, so
// the two run identical rules on identical requests.
package engine

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
)

// Config is coraza-proxy-wasm's plugin configuration, read unchanged:
//
//	{
//	  "directives_map": {"default": ["Include @demo-conf", "Include @crs-setup-demo-conf", "Include @owasp_crs/*.conf"]},
//	  "default_directives": "default",
//	  "per_authority_directives": {"admin.example.com": "strict"},
//	  "metric_labels": {"owner": "team-a"}
//	}
//
// Each directive set is a list of SecLang snippets joined by newlines.
// default_directives names the set for authorities not listed (none: such
// requests pass uninspected); per_authority_directives maps an :authority
// to a set. The deprecated "rules" field (a list of snippets) is the
// "default" set when directives_map is absent.
type Config struct {
	DirectivesMap          map[string][]string `json:"directives_map"`
	DefaultDirectives      string              `json:"default_directives"`
	PerAuthorityDirectives map[string]string   `json:"per_authority_directives"`
	MetricLabels           map[string]string   `json:"metric_labels"`
	Rules                  []string            `json:"rules"`
}

// ParseConfig parses and checks a configuration. Empty input (or only
// spaces) is an empty configuration: no directive set, every request passes.
func ParseConfig(data []byte) (Config, error) {
	var c Config
	data = bytes.TrimSpace(data)
	if len(data) == 0 {
		return c, nil
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&c); err != nil {
		return Config{}, fmt.Errorf("configuration is not valid JSON: %w", err)
	}
	if dec.More() {
		return Config{}, errors.New("configuration: trailing data after the JSON object")
	}
	if len(c.DirectivesMap) == 0 && len(c.Rules) > 0 {
		c.DirectivesMap = map[string][]string{"default": c.Rules}
		if c.DefaultDirectives == "" {
			c.DefaultDirectives = "default"
		}
	}
	if c.DefaultDirectives != "" {
		if _, ok := c.DirectivesMap[c.DefaultDirectives]; !ok {
			return Config{}, fmt.Errorf("default_directives: no directive set %q in directives_map", c.DefaultDirectives)
		}
	}
	for _, a := range sortedKeys(c.PerAuthorityDirectives) {
		if a == "" {
			return Config{}, errors.New("per_authority_directives: empty authority")
		}
		name := c.PerAuthorityDirectives[a]
		if _, ok := c.DirectivesMap[name]; !ok {
			return Config{}, fmt.Errorf("per_authority_directives: authority %q names no directive set %q in directives_map", a, name)
		}
	}
	return c, nil
}

// usedSets returns the names of the directive sets some request can reach,
// sorted: a set nothing names is not built.
func (c Config) usedSets() []string {
	used := map[string]bool{}
	if c.DefaultDirectives != "" {
		used[c.DefaultDirectives] = true
	}
	for _, name := range c.PerAuthorityDirectives {
		used[name] = true
	}
	return sortedKeys(used)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
