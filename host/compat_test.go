package host

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/wasm-callout/wasm-callout/abi"
)

// hostcallFixture names the testdata/hostcalls fixture of an envFuncs
// entry: the function's name for its first (full) signature, NAME_N for a
// later variant with N parameters.
func hostcallFixture(hf hostFunc) string {
	for _, h := range envFuncs {
		if h.name == hf.name {
			if signature(h.params, h.results) == signature(hf.params, hf.results) {
				return hf.name
			}
			break
		}
	}
	return fmt.Sprintf("%s_%d", hf.name, len(hf.params))
}

// A pre-0.1.0 plugin (no ABI marker, callbacks exported) loads with a
// warning, in the log and in Info, and runs by its callbacks' signatures.
// Envoy refuses it; README's compatibility table says so.
func TestNoABIMarkerLoadsWithWarning(t *testing.T) {
	rec := &recorder{level: slog.LevelInfo}
	p := loadFile(t, "no_abi_marker", Config{Instances: 1, PluginConfig: []byte("pre"), Logger: slog.New(rec)})
	info := p.Info()
	if info.ABI != abi.VersionUnknown || info.HeaderArity != 2 || len(info.Warnings) != 1 ||
		!strings.Contains(info.Warnings[0], "no ABI marker exported") {
		t.Errorf("info: ABI %q, arity %d, warnings %q", info.ABI, info.HeaderArity, info.Warnings)
	}
	if got := strings.Join(rec.messages(), "|"); !strings.Contains(got, "WARN") || !strings.Contains(got, "no ABI marker") {
		t.Errorf("no warning logged: %q", got)
	}
	s, err := p.NewHTTPStream(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if r := s.RequestHeaders(kv(":path", "/"), true); r.Action != abi.ActionContinue || r.Failure != nil {
		t.Errorf("request headers: %+v", r)
	}
	if v, _ := s.Headers(abi.MapHTTPRequestHeaders).Get("x-pre-abi"); v != "yes" {
		t.Errorf("x-pre-abi = %q", v)
	}
	// The configuration reached proxy_on_configure through the 0.1.0
	// proxy_get_configuration: another one is refused.
	_, err = Load(context.Background(), readFixture(t, "no_abi_marker"), Config{Instances: 1, PluginConfig: []byte("post"), Logger: quietLogger()})
	if err == nil || !strings.Contains(err.Error(), "proxy_on_configure returned false") {
		t.Errorf("wrong configuration: err = %v", err)
	}
}

// The AssemblyScript SDK's 10-parameter proxy_grpc_call and 7-parameter
// proxy_grpc_stream link as variants and answer as the full signatures do.
func TestGRPCSignatureVariants(t *testing.T) {
	for _, tc := range []struct {
		name       string
		full       int // parameters of the full signature
		variant    int
		variantArg func(h *hostcall) []uint64
		fullArg    func(h *hostcall) []uint64
	}{
		{name: "proxy_grpc_call", full: 12, variant: 10,
			variantArg: func(h *hostcall) []uint64 {
				sp, sn := h.put(argA, []byte("no_such_cluster"))
				np, nn := h.put(argB, []byte("svc.Echo"))
				mp, mn := h.put(argC, []byte("Say"))
				return []uint64{sp, sn, np, nn, mp, mn, mp, mn, 1000, retP}
			},
			fullArg: func(h *hostcall) []uint64 {
				sp, sn := h.put(argA, []byte("no_such_cluster"))
				np, nn := h.put(argB, []byte("svc.Echo"))
				mp, mn := h.put(argC, []byte("Say"))
				return []uint64{sp, sn, np, nn, mp, mn, 0, 0, mp, mn, 1000, retP}
			}},
		{name: "proxy_grpc_stream", full: 9, variant: 7,
			variantArg: func(h *hostcall) []uint64 {
				sp, sn := h.put(argA, []byte("no_such_cluster"))
				np, nn := h.put(argB, []byte("svc.Echo"))
				mp, mn := h.put(argC, []byte("Say"))
				return []uint64{sp, sn, np, nn, mp, mn, retP}
			},
			fullArg: func(h *hostcall) []uint64 {
				sp, sn := h.put(argA, []byte("no_such_cluster"))
				np, nn := h.put(argB, []byte("svc.Echo"))
				mp, mn := h.put(argC, []byte("Say"))
				return []uint64{sp, sn, np, nn, mp, mn, 0, 0, retP}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// selectEnvFuncs links the signature the guest imports.
			for _, n := range []int{tc.full, tc.variant} {
				sig := "(" + strings.TrimSuffix(strings.Repeat("i32,", n), ",") + ")->i32"
				var got []string
				for _, hf := range selectEnvFuncs(map[string]string{tc.name: sig}) {
					if hf.name == tc.name {
						got = append(got, signature(hf.params, hf.results))
					}
				}
				if len(got) != 1 || got[0] != sig {
					t.Errorf("guest importing %s gets %v", sig, got)
				}
			}
			full := newHostcall(t, tc.name, Config{})
			variant := newHostcall(t, fmt.Sprintf("%s_%d", tc.name, tc.variant), Config{})
			want := full.run(nil, phaseNone, tc.fullArg(full)...)
			if got := variant.run(nil, phaseNone, tc.variantArg(variant)...); got != want {
				t.Errorf("variant answered %s, the full signature %s", got, want)
			}
			if want != abi.StatusParseFailure {
				t.Errorf("unknown cluster answered %s, want PARSE_FAILURE (Envoy's answer)", want)
			}
			// A bad pointer gets the same answer through both.
			vargs, fargs := tc.variantArg(variant), tc.fullArg(full)
			vargs[0], fargs[0] = badPtr, badPtr
			if got, want := variant.run(nil, phaseNone, vargs...), full.run(nil, phaseNone, fargs...); got != want {
				t.Errorf("bad service pointer: variant %s, full signature %s", got, want)
			}
		})
	}
}

// guessToolchain names each shape it knows, including AssemblyScript
// built with --use abort=abort_proc_exit (no env.abort import) and a Go
// command module (not c-shared).
func TestGuessToolchain(t *testing.T) {
	for fixture, want := range map[string]string{
		"assemblyscript_shape": "AssemblyScript",
		"go_command":           "Go (gc, wasip1 command)",
		"start_only":           "TinyGo",
		"malloc_only":          "C++ (Emscripten)",
		"no_entry":             "unknown",
		"no_abi_marker":        "unknown",
	} {
		info, _ := Inspect(context.Background(), readFixture(t, fixture))
		if info == nil || info.Toolchain != want {
			t.Errorf("%s: toolchain %v, want %q", fixture, info, want)
		}
	}
	info, err := Inspect(context.Background(), readFixture(t, "assemblyscript_shape"))
	if err != nil || len(info.Entry) != 0 || info.Allocator != abi.FuncMalloc {
		t.Errorf("assemblyscript_shape: %v, entry %v, allocator %q", err, info.Entry, info.Allocator)
	}
}
