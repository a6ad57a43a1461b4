package host

import (
	"bytes"
	"errors"
	"log/slog"
	"testing"

	"github.com/wasm-callout/wasm-callout/abi"
)

// TestStreamFail: a stream failed from outside gets the failure policy as
// one EventFailed, and the plugin is never called for it again, not even
// to end it.
func TestStreamFail(t *testing.T) {
	errRetired := errors.New("retired")
	for _, tc := range []struct {
		policy FailurePolicy
		check  func(t *testing.T, r Result)
	}{
		{FailClosed, func(t *testing.T, r Result) {
			if r.LocalResponse == nil || r.LocalResponse.Status != DefaultFailStatus || r.Action != abi.ActionPause {
				t.Errorf("fail-closed result %+v, want a %d local response", r, DefaultFailStatus)
			}
		}},
		{FailOpen, func(t *testing.T, r Result) {
			if r.LocalResponse != nil || r.Action != abi.ActionContinue {
				t.Errorf("fail-open result %+v, want continue", r)
			}
		}},
	} {
		t.Run(tc.policy.String(), func(t *testing.T) {
			tr := &tracer{}
			p := loadFile(t, "lifecycle", Config{Instances: 1, FailurePolicy: tc.policy, listeners: tr})
			s, err := p.NewHTTPStream(nil)
			if err != nil {
				t.Fatal(err)
			}
			s.RequestHeaders(kv(":path", "/"), false)
			tr.take()

			s.Fail(errRetired)
			s.Fail(errRetired) // once only
			<-s.Notify()
			evs := s.TakeEvents()
			if len(evs) != 1 || evs[0].Kind != EventFailed || !errors.Is(evs[0].Result.Failure, errRetired) {
				t.Fatalf("events %+v, want one EventFailed with the error", evs)
			}
			tc.check(t, evs[0].Result)

			r := s.RequestBody([]byte("x"), true)
			if !errors.Is(r.Failure, errRetired) && tc.policy == FailClosed {
				t.Errorf("a call after Fail: %+v", r)
			}
			if tc.policy == FailOpen && (r.Action != abi.ActionContinue || string(r.Body) != "x") {
				t.Errorf("fail-open body after Fail: %+v, want the chunk to pass", r)
			}
			s.ResponseHeaders(kv(":status", "200"), true)
			s.Close()
			if got := tr.take(); len(got) != 0 {
				t.Errorf("the plugin was called after Fail: %q", got)
			}
		})
	}
}

// TestStreamOnClosedPlugin: a stream whose plugin was closed under it gets
// the failure policy without calling the closed module or reporting an
// instance failure; closed plugins leave no live instance.
func TestStreamOnClosedPlugin(t *testing.T) {
	before := LiveInstances()
	var logs bytes.Buffer
	p := loadFile(t, "lifecycle", Config{Instances: 2, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if n := LiveInstances() - before; n != 2 {
		t.Errorf("live instances after Load: %d more, want 2", n)
	}
	s, err := p.NewHTTPStream(nil)
	if err != nil {
		t.Fatal(err)
	}
	p.Close(t.Context())
	if n := LiveInstances(); n != before {
		t.Errorf("live instances after Close: %d, want %d", n, before)
	}
	r := s.RequestHeaders(kv(":path", "/"), true)
	if !errors.Is(r.Failure, errClosed) || r.LocalResponse == nil {
		t.Errorf("a call on a closed plugin: %+v, want the fail-closed answer", r)
	}
	s.Close()
	if bytes.Contains(logs.Bytes(), []byte("instance failed")) {
		t.Errorf("a closed plugin was reported as failed:\n%s", logs.Bytes())
	}
}
