package plugintest

import (
	"time"

	"github.com/wasm-callout/wasm-callout/abi"
	"github.com/wasm-callout/wasm-callout/host"
)

// Await waits, after a phase r paused, for the plugin to resume it (from an
// outbound call's answer, a timer or a queue), reply locally, close the
// stream or fail, for up to timeout. It updates r with what the plugin did
// meanwhile (headers changed, body released) and reports whether the
// stream was resumed or ended; false means it is still paused, and a body
// phase's held bytes are then released as its output (TakeHeld).
func (st *Stream) Await(r *Record, request bool, timeout time.Duration) bool {
	if r.Action != abi.ActionPause || st.Replied != nil {
		return true
	}
	dir, m := abi.StreamHTTPResponse, abi.MapHTTPResponseHeaders
	if request {
		dir, m = abi.StreamHTTPRequest, abi.MapHTTPRequestHeaders
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	done := false
	st.h.record(r, func() {
		for !done {
			select {
			case <-st.s.Notify():
			case <-deadline.C:
				return
			}
			for _, ev := range st.s.TakeEvents() {
				switch ev.Kind {
				case host.EventContinue:
					if ev.Stream != dir {
						continue
					}
					r.Action, done = abi.ActionContinue, true
					if r.IsBody {
						data, _ := st.s.TakeBody(dir)
						r.BodyOut = append(r.BodyOut, data...)
					}
				case host.EventLocalResponse:
					r.Local, done = ev.LocalResponse, true
				case host.EventClose:
					done = true
				case host.EventFailed:
					r.Failure, r.Local, done = ev.Result.Failure, nil, true
				}
				if done {
					break
				}
			}
		}
	})
	if !done {
		st.TakeHeld(r)
	}
	if !r.IsBody {
		if hm := st.s.Headers(m); hm != nil {
			r.HeadersOut = append([]abi.Pair(nil), hm.Pairs()...)
		}
		r.Changes = mergeChanges(r.Changes, st.s.TakeHeaderChanges(m))
	}
	if r.Local != nil || r.Failure != nil || (done && r.Action != abi.ActionContinue) {
		st.Replied = r
	}
	return done
}

// mergeChanges adds later changes to earlier ones; a key's last change
// wins.
func mergeChanges(a, b []host.HeaderChange) []host.HeaderChange {
	for _, c := range b {
		replaced := false
		for i := range a {
			if a[i].Key == c.Key {
				a[i], replaced = c, true
			}
		}
		if !replaced {
			a = append(a, c)
		}
	}
	return a
}

// TCP is a TCP connection through a Harness's plugin.
type TCP struct {
	h *Harness
	s *host.TCPStream
	// Closed is set once the plugin (or the failure policy) closed the
	// connection.
	Closed *Record
}

// OpenTCP opens a TCP context (stream_init) and runs
// proxy_on_new_connection (new_connection).
func (h *Harness) OpenTCP(props host.PropertySource) (*TCP, []Record, error) {
	r := Record{Phase: "stream_init"}
	var s *host.TCPStream
	var err error
	h.record(&r, func() { s, err = h.Plugin.NewTCPStream(props) })
	if err != nil {
		r.Failure = err
		return nil, []Record{r}, err
	}
	c := &TCP{h: h, s: s}
	nc := Record{Phase: "new_connection"}
	var res host.Result
	h.record(&nc, func() { res = s.NewConnection() })
	c.result(&nc, res)
	return c, []Record{r, nc}, nil
}

// Data runs downstream (read, client to upstream) or upstream (write)
// data through the plugin.
func (c *TCP) Data(downstream bool, data []byte, eos bool) Record {
	r := Record{Phase: "upstream_data", IsBody: true, BodyIn: data, Chunks: 1}
	dir := abi.StreamUpstream
	if downstream {
		r.Phase, dir = "downstream_data", abi.StreamDownstream
	}
	var res host.Result
	c.h.record(&r, func() {
		if downstream {
			res = c.s.DownstreamData(data, eos)
		} else {
			res = c.s.UpstreamData(data, eos)
		}
	})
	if res.Action == abi.ActionContinue && !res.Close {
		r.BodyOut = res.Body
	} else if held, _ := c.s.TakeData(dir); len(held) > 0 && !res.Close {
		r.BodyOut, r.Held = held, true
	}
	c.result(&r, res)
	return r
}

func (c *TCP) result(r *Record, res host.Result) {
	r.Action, r.Failure = res.Action, res.Failure
	if res.Close || res.Failure != nil {
		c.Closed = r
	}
}

// Close runs the close callbacks (downstream closed by the client) and
// ends the context (stream_destroy).
func (c *TCP) Close() Record {
	r := Record{Phase: "stream_destroy"}
	c.h.record(&r, func() {
		c.s.DownstreamClose(abi.PeerRemote)
		c.s.Close()
	})
	return r
}
