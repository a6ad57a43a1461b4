package host

import (
	"testing"
	"time"

	"github.com/wasm-callout/wasm-callout/abi"
)

func TestGetCurrentTime(t *testing.T) {
	h := newHostcall(t, "proxy_get_current_time_nanoseconds", Config{})
	before := time.Now().UnixNano()
	if st := h.run(nil, phaseNone, retP); st != abi.StatusOK {
		t.Fatal(st)
	}
	if got := int64(h.u64(retP)); got < before || got > time.Now().UnixNano() {
		t.Errorf("time %d is not the wall clock", got)
	}
	if st := h.run(nil, phaseNone, badPtr); st != abi.StatusInvalidMemoryAccess {
		t.Errorf("bad pointer: %v", st)
	}
}

// A root context's timer resumes a paused stream through
// proxy_set_effective_context and proxy_continue_stream, or replies locally;
// the stream hears it as an event, never as a concurrent call.
func TestTickResumesPausedStream(t *testing.T) {
	p := loadFile(t, "async", Config{Instances: 1})
	tests := []struct {
		name    string
		headers []abi.Pair
		want    Event
	}{
		{"continue", kv(":path", "/"), Event{Kind: EventContinue, Stream: abi.StreamHTTPRequest}},
		{"local reply", kv(":path", "/", "x-deny", "1"), Event{Kind: EventLocalResponse}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := p.NewHTTPStream(nil)
			defer s.Close()
			if r := s.RequestHeaders(tc.headers, true); r.Action != abi.ActionPause {
				t.Fatalf("headers: %+v", r)
			}
			select {
			case <-s.Notify():
			case <-time.After(10 * time.Second):
				t.Fatal("no event")
			}
			ev := s.TakeEvents()
			if len(ev) != 1 || ev[0].Kind != tc.want.Kind || ev[0].Stream != tc.want.Stream {
				t.Fatalf("events = %+v", ev)
			}
			if tc.want.Kind == EventLocalResponse && (ev[0].LocalResponse == nil || ev[0].LocalResponse.Status != 429) {
				t.Fatalf("local response = %+v", ev[0].LocalResponse)
			}
		})
	}
}

// proxy_on_queue_ready runs on the owning instance for each enqueue, even
// when the producer is another instance.
func TestQueueReady(t *testing.T) {
	shared := NewSharedState()
	owner := loadFile(t, "async", Config{Instances: 1, VMID: "vm", Shared: shared})
	enq := newHostcall(t, "proxy_enqueue_shared_queue", Config{VMID: "vm", Shared: shared})
	res := newHostcall(t, "proxy_resolve_shared_queue", Config{VMID: "vm", Shared: shared})
	v, vl := res.put(argA, []byte("vm"))
	q, ql := res.put(argB, []byte("q"))
	if st := res.run(nil, phaseNone, v, vl, q, ql, retP); st != abi.StatusOK {
		t.Fatal(st)
	}
	id := res.u32(retP)
	for i := 0; i < 5; i++ {
		p, l := enq.put(argA, []byte("item"))
		if st := enq.run(nil, phaseNone, uint64(id), p, l); st != abi.StatusOK {
			t.Fatal(st)
		}
	}
	in := owner.pool.slots[0].Load()
	waitFor(t, "five queue notifications", func() bool {
		in.mu.Lock()
		defer in.mu.Unlock()
		n, _ := in.mem.ReadUint32Le(400)
		return n == 5
	})
}

// The testbed plugin (a real SDK plugin) pauses request headers and resumes
// them from OnTick after changing a header, and counts ticks in a metric.
func TestGoPluginTickResume(t *testing.T) {
	p := loadFile(t, "plugin:testbed", Config{Instances: 2, PluginConfig: []byte("tick_ms: 5")})
	s, _ := p.NewHTTPStream(nil)
	defer s.Close()
	if r := s.RequestHeaders(kv(":path", "/", ":method", "GET", "x-testbed", "pause-headers"), true); r.Action != abi.ActionPause {
		t.Fatalf("%+v", r)
	}
	select {
	case <-s.Notify():
	case <-time.After(10 * time.Second):
		t.Fatal("never resumed")
	}
	if ev := s.TakeEvents(); len(ev) != 1 || ev[0].Kind != EventContinue || ev[0].Stream != abi.StreamHTTPRequest {
		t.Fatalf("events = %+v", ev)
	}
	ch := s.Headers(abi.MapHTTPRequestHeaders).Changes()
	if len(ch) != 1 || ch[0].Key != "x-testbed-resumed" || ch[0].Values[0] != "tick" {
		t.Errorf("changes = %+v", ch)
	}
	var ticks uint64
	for _, m := range p.Metrics().Snapshot() {
		if m.Name == "testbed_ticks_total" {
			ticks = m.Counter
		}
	}
	if ticks == 0 {
		t.Error("no tick counted")
	}
}

// Config.Now freezes the clock the plugin reads.
func TestGetCurrentTimeFrozen(t *testing.T) {
	frozen := time.Unix(123456789, 0)
	h := newHostcall(t, "proxy_get_current_time_nanoseconds", Config{Now: func() time.Time { return frozen }})
	if st := h.run(nil, phaseNone, retP); st != abi.StatusOK {
		t.Fatal(st)
	}
	if got := int64(h.u64(retP)); got != frozen.UnixNano() {
		t.Errorf("time %d, want the frozen %d", got, frozen.UnixNano())
	}
}
