package main

import (
	"io"
	"maps"
	"strings"
	"testing"
)

func TestPluginEnvFlag(t *testing.T) {
	tests := []struct {
		args    []string
		want    map[string]string
		wantErr string
	}{
		{args: nil, want: nil},
		{args: []string{"--plugin-env", "GOGC=400", "--plugin-env", "GOMEMLIMIT=160MiB"}, want: map[string]string{"GOGC": "400", "GOMEMLIMIT": "160MiB"}},
		{args: []string{"--plugin-env", "A=b=c", "--plugin-env", "EMPTY="}, want: map[string]string{"A": "b=c", "EMPTY": ""}},
		{args: []string{"--plugin-env", "A=1", "--plugin-env", "A=2"}, want: map[string]string{"A": "2"}},
		{args: []string{"--plugin-env", "GOGC"}, wantErr: "want NAME=VALUE"},
		{args: []string{"--plugin-env", "=1"}, wantErr: "want NAME=VALUE"},
		{args: []string{"--plugin-env", "A=\x00"}, wantErr: "want NAME=VALUE"},
	}
	for _, tc := range tests {
		fs, c := serveFlags(io.Discard)
		err := fs.Parse(tc.args)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%q: err = %v, want %q", tc.args, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%q: %v", tc.args, err)
		}
		c.plugin = edgePlugin
		hc, err := c.hostConfig()
		if err != nil {
			t.Fatal(err)
		}
		if !maps.Equal(hc.Env, tc.want) {
			t.Errorf("%q: Env = %v, want %v", tc.args, hc.Env, tc.want)
		}
	}
}
