package metrics

import (
	"sort"
	"strings"
)

// Plugin-defined metrics are named as Envoy's /stats/prometheus names the
// stats a Wasm plugin defines, so that dashboards and alerts written for a
// plugin running inside Envoy keep working:
//
//  1. Envoy files the stat under its custom namespace: "wasmcustom." +
//     the name the plugin gave proxy_define_metric
//     (source/extensions/common/wasm/context.cc).
//  2. Its tag extractors (stats_config.stats_tags) take tags out of the
//     name. Istio configures one per label, each of the form
//     `(TAG=\.=(.*?);\.;)`: the text `TAG=.=VALUE;.;` is removed from the
//     name and VALUE becomes the tag TAG. The Istio stats plugin builds its
//     names that way, e.g.
//     "istio_requests_total" with "reporter=.=destination;.;" and
//     "response_code=.=200;.;" segments.
//  3. The Prometheus formatter strips the registered custom namespace
//     ("wasmcustom.") and, for those stats only, adds no "envoy_" prefix;
//     it replaces every character outside [a-zA-Z0-9_] with '_' in names
//     and tag names, and leaves out a stat whose name is then empty or
//     starts with a digit (source/server/admin/prometheus_stats.cc).
//
// So "basic_requests_total" is exported as basic_requests_total, and
// "reporter=.=destination;.;response_code=.=200;.;istio_requests_total" as
// istio_requests_total{reporter="destination",response_code="200"}.

// Separators of a tag embedded in a stat name (Istio's convention).
const (
	tagValueSep = "=.="
	tagEnd      = ";.;"
)

// knownTags are the tag names Istio's bootstrap configures extractors for.
// A tag written right after a name prefix with no separator
// ("istio_reporter=.=…") is ambiguous: Envoy's unanchored regex for
// "reporter" takes "reporter" and leaves "istio_" in the name. When the
// word before "=.=" ends with one of these names, that name is the tag;
// otherwise the whole word is.
var knownTags = []string{
	"reporter",
	"source_namespace", "source_workload", "source_workload_namespace", "source_principal",
	"source_app", "source_version", "source_cluster", "source_canonical_service", "source_canonical_revision",
	"destination_namespace", "destination_workload", "destination_workload_namespace", "destination_principal",
	"destination_app", "destination_version", "destination_service", "destination_service_name",
	"destination_service_namespace", "destination_port", "destination_cluster",
	"destination_canonical_service", "destination_canonical_revision",
	"request_protocol", "request_operation", "request_host",
	"response_code", "response_flags", "grpc_response_status", "connection_security_policy",
}

// Label is one tag of a plugin-defined metric.
type Label struct{ Name, Value string }

// EnvoyName returns the Prometheus name and labels Envoy's
// /stats/prometheus gives a metric a Wasm plugin defined as name, and false
// when Envoy leaves it out (its name is empty or starts with a digit once
// sanitized). Labels are sorted by name. A tag given twice keeps its first
// value and the second stays in the name, as each of Envoy's extractors
// takes its first match only.
func EnvoyName(name string) (string, []Label, bool) {
	var labels []Label
	seen := map[string]bool{}
	var rest strings.Builder
	for {
		i := strings.Index(name, tagValueSep)
		if i < 0 {
			break
		}
		j := strings.Index(name[i+len(tagValueSep):], tagEnd)
		if j < 0 {
			break
		}
		value := name[i+len(tagValueSep) : i+len(tagValueSep)+j]
		word := i
		for word > 0 && isNameByte(name[word-1]) {
			word--
		}
		tag := longestKnownSuffix(name[word:i])
		end := i + len(tagValueSep) + j + len(tagEnd)
		if tag == "" || seen[tag] {
			// No extractor matches a nameless tag, and each extractor
			// takes only the first of its tag: the text stays.
			rest.WriteString(name[:end])
		} else {
			seen[tag] = true
			rest.WriteString(name[:i-len(tag)])
			labels = append(labels, Label{Name: sanitize(tag), Value: value})
		}
		name = name[end:]
	}
	rest.WriteString(name)
	out := sanitize(rest.String())
	if out == "" || out[0] >= '0' && out[0] <= '9' {
		return "", nil, false
	}
	sort.Slice(labels, func(a, b int) bool { return labels[a].Name < labels[b].Name })
	return out, labels, true
}

// longestKnownSuffix returns the longest of knownTags that word ends with,
// or word itself when it ends with none.
func longestKnownSuffix(word string) string {
	best := ""
	for _, k := range knownTags {
		if len(k) > len(best) && strings.HasSuffix(word, k) {
			best = k
		}
	}
	if best == "" {
		return word
	}
	return best
}

func isNameByte(c byte) bool {
	return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// sanitize replaces every byte outside [a-zA-Z0-9_] with '_', as Envoy's
// Prometheus formatter does.
func sanitize(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !isNameByte(c) {
			b[i] = '_'
		}
	}
	return string(b)
}
