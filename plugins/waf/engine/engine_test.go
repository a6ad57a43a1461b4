package engine

import (
	"strings"
	"testing"
)

func TestParseConfig(t *testing.T) {
	tests := []struct {
		name, json string
		wantErr    string // substring; empty means success
		wantSets   []string
	}{
		{name: "empty", json: "  ", wantSets: nil},
		{name: "default", json: `{"directives_map":{"a":["SecRuleEngine On"]},"default_directives":"a"}`, wantSets: []string{"a"}},
		{name: "unused set is not built", json: `{"directives_map":{"a":["SecRuleEngine On"],"b":[]},"default_directives":"a"}`, wantSets: []string{"a"}},
		{name: "per authority", json: `{"directives_map":{"a":[],"b":[]},"default_directives":"a","per_authority_directives":{"x.example":"b","y.example":"b"}}`, wantSets: []string{"a", "b"}},
		{name: "deprecated rules", json: `{"rules":["SecRuleEngine On"]}`, wantSets: []string{"default"}},
		{name: "not json", json: `{"directives_map":`, wantErr: "not valid JSON"},
		{name: "trailing data", json: `{} {}`, wantErr: "trailing data"},
		{name: "wrong type", json: `{"directives_map":{"a":"SecRuleEngine On"}}`, wantErr: "not valid JSON"},
		{name: "unknown default", json: `{"directives_map":{"a":[]},"default_directives":"b"}`, wantErr: `default_directives: no directive set "b"`},
		{name: "unknown authority set", json: `{"directives_map":{"a":[]},"per_authority_directives":{"x.example":"c"}}`, wantErr: `authority "x.example" names no directive set "c"`},
		{name: "empty authority", json: `{"directives_map":{"a":[]},"per_authority_directives":{"":"a"}}`, wantErr: "empty authority"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseConfig([]byte(tc.json))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := c.usedSets(); strings.Join(got, ",") != strings.Join(tc.wantSets, ",") {
				t.Errorf("sets = %v, want %v", got, tc.wantSets)
			}
		})
	}
}

func TestBuildRefusesBadDirectives(t *testing.T) {
	for _, d := range []string{"SecNoSuchDirective On", "Include @no-such-file", `SecRule ARGS "@rx (" "id:1,deny"`} {
		c := Config{DirectivesMap: map[string][]string{"a": {d}}, DefaultDirectives: "a"}
		if _, err := Build(c, Options{}); err == nil || !strings.Contains(err.Error(), `directive set "a"`) {
			t.Errorf("%s: err = %v, want a directive set error", d, err)
		}
	}
}

func TestFor(t *testing.T) {
	w := mustBuild(t, `{"directives_map":{"d":["SecRuleEngine On"],"s":["SecRuleEngine Off"]},
		"default_directives":"d","per_authority_directives":{"s.example":"s","[::1]":"s"}}`)
	tests := []struct {
		authority string
		want      string
	}{
		{"s.example", "s"}, {"s.example:8443", "s"}, {"[::1]:80", "s"}, {"[::1]", "s"},
		{"other.example", "d"}, {"s.example:x", "d"}, {"", "d"}, {"S.example.evil", "d"},
	}
	for _, tc := range tests {
		if got := w.For(tc.authority); got != w.bySet[tc.want] {
			t.Errorf("For(%q) is not set %q", tc.authority, tc.want)
		}
	}
	if (&WAFs{}).For("x") != nil {
		t.Error("no sets: For should be nil")
	}
}

// mustBuild parses and builds a configuration.
func mustBuild(t *testing.T, config string) *WAFs {
	t.Helper()
	c, err := ParseConfig([]byte(config))
	if err != nil {
		t.Fatal(err)
	}
	w, err := Build(c, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// crsConfig is the configuration the plugin's tests and bench/waf use.
const crsConfig = `{"directives_map":{"crs":["Include @demo-conf","Include @crs-setup-demo-conf","Include @owasp_crs/*.conf"],
	"custom":["SecRuleEngine On","SecRule REQUEST_URI \"@streq /admin\" \"id:101,phase:1,deny,status:401\""]},
	"default_directives":"crs","per_authority_directives":{"custom.example":"custom"}}`

// TestCRS runs the Core Rule Set natively over the requests the plugin's
// end-to-end test sends, so a difference there is the host's.
func TestCRS(t *testing.T) {
	w := mustBuild(t, crsConfig)
	tests := []struct {
		name            string
		authority, path string
		method          string
		headers         [][2]string
		body            string
		wantStatus      int // 0: passes
		wantRule        int // a rule among the matched ones
	}{
		{name: "clean GET", authority: "app.example", path: "/index.html?q=hello", method: "GET"},
		{name: "clean POST", authority: "app.example", path: "/form", method: "POST",
			headers: [][2]string{{"content-type", "application/x-www-form-urlencoded"}}, body: "name=alice&comment=this+is+fine"},
		{name: "XSS in query", authority: "app.example", path: "/?arg=<script>alert(0)</script>", method: "GET", wantStatus: 403, wantRule: 941100},
		{name: "SQLi in query", authority: "app.example", path: "/?id=1%27%20OR%20%271%27=%271", method: "GET", wantStatus: 403, wantRule: 942100},
		{name: "SQLi in body", authority: "app.example", path: "/form", method: "POST",
			headers: [][2]string{{"content-type", "application/x-www-form-urlencoded"}}, body: "id=1%27%20ORDER%20BY%203--%2B", wantStatus: 403, wantRule: 942100},
		{name: "custom set", authority: "custom.example", path: "/admin", method: "GET", wantStatus: 401, wantRule: 101},
		{name: "custom set ignores CRS", authority: "custom.example", path: "/?arg=<script>alert(0)</script>", method: "GET"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tx := Begin(w.For(tc.authority))
			defer tx.Done()
			headers := append([][2]string{{":authority", tc.authority}, {":path", tc.path}, {":method", tc.method}, {":scheme", "http"},
				{"user-agent", "Mozilla/5.0"}, {"accept", "*/*"}}, tc.headers...)
			it := tx.RequestHeaders(headers, "HTTP/1.1", "10.0.0.1:5555", "10.0.0.2:80")
			if it == nil {
				var body []byte
				if tc.body != "" {
					body = []byte(tc.body)
				}
				var err error
				if it, err = tx.RequestBody(body); err != nil {
					t.Fatal(err)
				}
			}
			if tc.wantStatus == 0 {
				if it != nil {
					t.Fatalf("blocked by rule %d (matched %v)", it.RuleID, tx.MatchedRuleIDs())
				}
				return
			}
			if it == nil {
				t.Fatalf("passed; want %d (matched %v)", tc.wantStatus, tx.MatchedRuleIDs())
			}
			if Status(it) != tc.wantStatus {
				t.Errorf("status %d, want %d", Status(it), tc.wantStatus)
			}
			found := false
			for _, id := range tx.MatchedRuleIDs() {
				found = found || id == tc.wantRule
			}
			if !found {
				t.Errorf("matched %v, want %d among them", tx.MatchedRuleIDs(), tc.wantRule)
			}
		})
	}
}
