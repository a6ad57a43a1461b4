package main

// The --config file: named plugins and the chains they run in, for what
// flags cannot say (several plugins in one server). It is YAML, read
// strictly: an unknown field, a duplicate plugin name, a chain naming an
// unknown plugin, or a bad value fails with the file, plugin and field
// named.

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/wasm-callout/wasm-callout/host"
	"github.com/wasm-callout/wasm-callout/server"
)

// fileConfig is the --config file.
type fileConfig struct {
	// Plugins are the named plugins, in order.
	Plugins []pluginConfig `yaml:"plugins"`
	// Chains maps a chain name to the names of its plugins, in request
	// order.
	Chains map[string][]string `yaml:"chains"`
	// DefaultChain is the chain of streams that name none; empty means
	// "default".
	DefaultChain string `yaml:"default_chain"`
}

// pluginConfig is one plugin of the --config file. Unset fields take the
// value of the flag of the same name (--instances, --call-timeout, ...).
type pluginConfig struct {
	Name string `yaml:"name"`
	// File is the .wasm path, relative to the configuration file's
	// directory unless absolute.
	File string `yaml:"file"`
	// Config and VMConfig are the plugin and VM configuration: a string,
	// or @FILE (relative to the configuration file's directory).
	Config   string `yaml:"config"`
	VMConfig string `yaml:"vm_config"`
	RootID   string `yaml:"root_id"`
	VMID     string `yaml:"vm_id"`

	Instances        *int           `yaml:"instances"`
	MemoryLimitPages *uint          `yaml:"memory_limit_pages"`
	CallTimeout      *time.Duration `yaml:"call_timeout"`
	ShedQueueDelay   *time.Duration `yaml:"shed_queue_delay"`
	FailurePolicy    string         `yaml:"failure_policy"`
	FailureStatus    *uint          `yaml:"failure_status"`
	// Upstreams are clusters only this plugin may call, NAME=URL[,...] as
	// --upstream takes them, added to the --upstream ones.
	Upstreams []string `yaml:"upstreams"`
}

// parseFileConfig decodes and checks a configuration file's content.
func parseFileConfig(name string, data []byte) (*fileConfig, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var fc fileConfig
	if err := dec.Decode(&fc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("--config %s: empty file", name)
		}
		return nil, fmt.Errorf("--config %s: %w", name, err)
	}
	if err := fc.check(); err != nil {
		return nil, fmt.Errorf("--config %s: %w", name, err)
	}
	return &fc, nil
}

func (fc *fileConfig) check() error {
	if len(fc.Plugins) == 0 {
		return errors.New("no plugins")
	}
	seen := map[string]bool{}
	for i, p := range fc.Plugins {
		switch {
		case p.Name == "":
			return fmt.Errorf("plugins[%d]: no name", i)
		case seen[p.Name]:
			return fmt.Errorf("plugins[%d]: two plugins named %q", i, p.Name)
		case p.File == "":
			return fmt.Errorf("plugin %q: no file", p.Name)
		}
		seen[p.Name] = true
		if p.FailurePolicy != "" && p.FailurePolicy != "fail-closed" && p.FailurePolicy != "fail-open" {
			return fmt.Errorf("plugin %q: failure_policy %q: want fail-closed or fail-open", p.Name, p.FailurePolicy)
		}
		for _, u := range p.Upstreams {
			if _, err := host.ParseUpstream(u); err != nil {
				return fmt.Errorf("plugin %q: %w", p.Name, err)
			}
		}
	}
	if len(fc.Chains) == 0 {
		if len(fc.Plugins) > 1 {
			return errors.New("no chains: with several plugins, say which run together (chains: {default: [a, b]})")
		}
		fc.Chains = map[string][]string{server.DefaultChain: {fc.Plugins[0].Name}}
	}
	for name, members := range fc.Chains {
		if len(members) == 0 {
			return fmt.Errorf("chain %q: no plugins", name)
		}
		for i, m := range members {
			if !seen[m] {
				return fmt.Errorf("chain %q: no plugin named %q", name, m)
			}
			if slices.Contains(members[:i], m) {
				return fmt.Errorf("chain %q: plugin %q twice", name, m)
			}
		}
	}
	def := fc.DefaultChain
	if def == "" {
		def = server.DefaultChain
	}
	if fc.Chains[def] == nil {
		return fmt.Errorf("no chain named %q for streams that name none (set default_chain)", def)
	}
	return nil
}

// chains returns the file's chains for the server.
func (fc *fileConfig) chains() server.Chains {
	return server.Chains{Default: fc.DefaultChain, Chains: fc.Chains}
}

// hostConfig is the host configuration of plugin p: the flags' values
// (base) overridden by what p sets, with its configurations read from src.
func (p *pluginConfig) hostConfig(base host.Config, src *pluginSource) (host.Config, error) {
	hc := base
	hc.Name, hc.RootID, hc.VMID = p.Name, p.RootID, p.VMID
	hc.PluginConfig, hc.VMConfig = src.PluginConfig.data, src.VMConfig.data
	if p.Instances != nil {
		if *p.Instances < 0 {
			return hc, fmt.Errorf("plugin %q: instances %d: want 0 (the default) or more", p.Name, *p.Instances)
		}
		hc.Instances = *p.Instances
	}
	if p.MemoryLimitPages != nil {
		if *p.MemoryLimitPages == 0 || *p.MemoryLimitPages > 65536 {
			return hc, fmt.Errorf("plugin %q: memory_limit_pages %d: want 1 to 65536", p.Name, *p.MemoryLimitPages)
		}
		hc.MemoryLimitPages = uint32(*p.MemoryLimitPages)
	}
	if p.CallTimeout != nil {
		switch d := *p.CallTimeout; {
		case d < 0:
			return hc, fmt.Errorf("plugin %q: call_timeout %v: want a positive duration, or 0 for none", p.Name, d)
		case d == 0:
			hc.CallTimeout = -1 // host: negative turns deadlines off
		default:
			hc.CallTimeout = d
		}
	}
	if p.ShedQueueDelay != nil {
		hc.ShedQueueDelay = *p.ShedQueueDelay
		if hc.ShedQueueDelay <= 0 {
			hc.ShedQueueDelay = -1 // host: negative never sheds
		}
	}
	switch p.FailurePolicy {
	case "fail-closed":
		hc.FailurePolicy = host.FailClosed
	case "fail-open":
		hc.FailurePolicy = host.FailOpen
	}
	if p.FailureStatus != nil {
		if *p.FailureStatus < 200 || *p.FailureStatus > 599 {
			return hc, fmt.Errorf("plugin %q: failure_status %d: want an HTTP status from 200 to 599", p.Name, *p.FailureStatus)
		}
		hc.FailStatus = uint32(*p.FailureStatus)
	}
	return hc, nil
}

// upstreams is the plugin's clusters: the --upstream ones and its own.
func (p *pluginConfig) upstreams(c *serveConfig) ([]host.Upstream, error) {
	list := slices.Clone(c.upstreams)
	for _, s := range p.Upstreams {
		u, err := host.ParseUpstream(s)
		if err != nil {
			return nil, fmt.Errorf("plugin %q: %w", p.Name, err)
		}
		list = append(list, u)
	}
	return list, nil
}

// pluginSource is what one plugin of the file is built from, as read at
// one moment.
type pluginSource struct {
	Name         string `json:"name"`
	Plugin       input  `json:"plugin"`
	PluginConfig input  `json:"plugin_config"`
	VMConfig     input  `json:"vm_config"`
	// entry is the plugin's entry in the file, re-encoded: a change to any
	// of its settings makes a new generation.
	entry string
}

// key identifies the plugin's content and settings.
func (ps *pluginSource) key() string {
	sum := sha256.Sum256([]byte(ps.entry))
	return ps.Plugin.SHA256 + "/" + ps.PluginConfig.SHA256 + "/" + ps.VMConfig.SHA256 + "/" + hex.EncodeToString(sum[:])
}

// configSource is everything the --config file leads to, as read at one
// moment.
type configSource struct {
	File    input           `json:"config"`
	Plugins []*pluginSource `json:"plugins"`
	fc      *fileConfig
}

// readConfigSource reads the configuration file and every file it names,
// resolving relative paths against its directory.
func readConfigSource(path string) (*configSource, error) {
	f, err := readInput("--config", path)
	if err != nil {
		return nil, err
	}
	fc, err := parseFileConfig(path, f.data)
	if err != nil {
		return nil, err
	}
	dir := filepath.Dir(path)
	rel := func(p string) string {
		if filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(dir, p)
	}
	cs := &configSource{File: f, fc: fc}
	for i := range fc.Plugins {
		p := &fc.Plugins[i]
		what := fmt.Sprintf("--config %s: plugin %q", path, p.Name)
		ps := &pluginSource{Name: p.Name}
		if ps.Plugin, err = readInput(what+" file", rel(p.File)); err != nil {
			return nil, err
		}
		for _, x := range []struct {
			field, v string
			dst      *input
		}{{"config", p.Config, &ps.PluginConfig}, {"vm_config", p.VMConfig, &ps.VMConfig}} {
			v := x.v
			if name, ok := strings.CutPrefix(v, "@"); ok {
				v = "@" + rel(name)
			}
			if *x.dst, err = readConfigInput(what+" "+x.field, v); err != nil {
				return nil, err
			}
		}
		entry, err := yaml.Marshal(p)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		ps.entry = string(entry)
		cs.Plugins = append(cs.Plugins, ps)
	}
	return cs, nil
}

// key identifies the whole configuration's content.
func (cs *configSource) key() string {
	var b strings.Builder
	b.WriteString(cs.File.SHA256)
	for _, ps := range cs.Plugins {
		b.WriteString("|" + ps.key())
	}
	return b.String()
}
