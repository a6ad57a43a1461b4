package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/wasm-callout/wasm-callout/internal/testplugins"
)

func TestInspect(t *testing.T) {
	tests := []struct {
		name    string
		path    string
		wantErr string
		want    []string
	}{
		{name: "basic", path: testplugins.Path(t, "basic"), want: []string{
			"toolchain:  Go (gc, wasip1 c-shared)", "abi:        0.2.0", "allocator:  proxy_on_memory_allocate",
			"entry:      [_initialize]", "served  env.proxy_add_header_map_value", "proxy_on_response_headers",
		}},
		{name: "stub imports", path: "../../host/testdata/hostcalls/proxy_call_foreign_function.wasm", want: []string{"stub  env.proxy_call_foreign_function"}},
		{name: "unknown imports", path: "../../host/testdata/bad_imports.wasm", wantErr: "unknown imports",
			want: []string{"unknown  env.proxy_inject_encoded_data_to_filter_chain", "allocator:  none"}},
		{name: "missing file", path: "nope.wasm", wantErr: "no such file"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			err := run(context.Background(), []string{"inspect", tc.path}, &out, &errOut)
			if (err != nil) != (tc.wantErr != "") || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("err = %v, want %q", err, tc.wantErr)
			}
			for _, w := range tc.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, out.String())
				}
			}
		})
	}
	if err := run(context.Background(), []string{"inspect"}, &bytes.Buffer{}, &bytes.Buffer{}); err == nil {
		t.Error("inspect without a file succeeded")
	}
}

// inspect --json prints one object, also when the plugin would not load.
func TestInspectJSON(t *testing.T) {
	for _, tc := range []struct {
		path     string
		loadable bool
		import_  string // "module.name status"
	}{
		{testplugins.Path(t, "basic"), true, "env.proxy_add_header_map_value served"},
		{"../../host/testdata/bad_imports.wasm", false, "env.proxy_inject_encoded_data_to_filter_chain unknown"},
	} {
		var out bytes.Buffer
		err := run(context.Background(), []string{"inspect", "--json", tc.path}, &out, &bytes.Buffer{})
		if (err == nil) != tc.loadable {
			t.Errorf("%s: err %v", tc.path, err)
		}
		var got inspectJSON
		dec := json.NewDecoder(&out)
		dec.DisallowUnknownFields()
		if err := dec.Decode(&got); err != nil {
			t.Fatalf("%s: %v", tc.path, err)
		}
		if got.Loadable != tc.loadable || (got.Error != "") == tc.loadable || got.Plugin != tc.path || got.Imports == nil || got.Callbacks == nil {
			t.Errorf("%s: %+v", tc.path, got)
		}
		found := false
		for _, imp := range got.Imports {
			found = found || imp.Module+"."+imp.Name+" "+imp.Status == tc.import_
		}
		if !found {
			t.Errorf("%s: no import %q in %+v", tc.path, tc.import_, got.Imports)
		}
		if dec.More() {
			t.Errorf("%s: more than one JSON value", tc.path)
		}
	}
}
