package metrics

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

// Plugin-defined metric names map as Envoy's /stats/prometheus maps Wasm
// stats: the wasmcustom namespace stripped, Istio-style TAG=.=VALUE;.;
// segments taken out as labels, other characters sanitized.
func TestEnvoyName(t *testing.T) {
	for _, tc := range []struct {
		in     string
		want   string
		labels []Label
		drop   bool
	}{
		{in: "basic_requests_total", want: "basic_requests_total"},
		{in: "my.plugin.requests", want: "my_plugin_requests"},
		{in: "a-b:c/d", want: "a_b_c_d"},
		{in: "caf\u00e9", want: "caf__"}, // each non-ASCII byte
		{in: "reporter=.=destination;.;response_code=.=200;.;istio_requests_total",
			want: "istio_requests_total", labels: []Label{{"reporter", "destination"}, {"response_code", "200"}}},
		// Tags after a prefix with no separator: the known tag name is
		// the tag, the rest of the word stays in the name.
		{in: "istio_reporter=.=source;.;requests_total",
			want: "istio_requests_total", labels: []Label{{"reporter", "source"}}},
		{in: "istio_destination_service_name=.=reviews;.;requests_total",
			want: "istio_requests_total", labels: []Label{{"destination_service_name", "reviews"}}},
		// Any word before =.= is a tag, after a separator or at the start.
		{in: "route=.=/api/v1;.;tenant=.=acme;.;auth_denied_total",
			want: "auth_denied_total", labels: []Label{{"route", "/api/v1"}, {"tenant", "acme"}}},
		{in: "calls.upstream=.=db;.;count",
			want: "calls_count", labels: []Label{{"upstream", "db"}}},
		{in: "x_total.my-tag=.=v;.;", want: "x_total_my_", labels: []Label{{"tag", "v"}}},
		// Empty values are values.
		{in: "reporter=.=;.;hits", want: "hits", labels: []Label{{"reporter", ""}}},
		// Unterminated, nameless and repeated tags stay in the name.
		{in: "reporter=.=destination_hits", want: "reporter___destination_hits"},
		{in: "=.=x;.;hits", want: "___x___hits"},
		{in: "reporter=.=a;.;reporter=.=b;.;hits", want: "reporter___b___hits", labels: []Label{{"reporter", "a"}}},
		// Names Envoy leaves out.
		{in: "", drop: true},
		{in: "200_responses", drop: true},
		{in: "reporter=.=x;.;", drop: true},
	} {
		got, labels, ok := EnvoyName(tc.in)
		if ok == tc.drop {
			t.Errorf("EnvoyName(%q): exported %v, want %v", tc.in, ok, !tc.drop)
			continue
		}
		if got != tc.want || !cmp.Equal(labels, tc.labels) {
			t.Errorf("EnvoyName(%q) = %q %v, want %q %v", tc.in, got, labels, tc.want, tc.labels)
		}
	}
}
