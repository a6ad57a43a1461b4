// Command tcp-count is a proxy-wasm network filter (TinyGo-era
// proxy-wasm-go-sdk v0.24.0, TcpContext) that counts the bytes of every
// connection in each direction and passes them through unchanged. It is the
// L4 benchmark plugin: a native equivalent (internal/baseline) does the same
// counting.
//
//   - No configuration.
//   - OnPluginStart defines the counters tcp_count_connections_total,
//     tcp_count_downstream_bytes_total and tcp_count_upstream_bytes_total.
//   - OnNewConnection adds 1 to tcp_count_connections_total.
//   - OnDownstreamData and OnUpstreamData add the frame's size to the
//     direction's counter and to the connection's own count, and continue.
//     (The size is what the host buffered for the callback; this plugin
//     never pauses, so it is the frame.)
//   - OnDownstreamClose and OnUpstreamClose log at Debug which side closed.
//   - OnStreamDone logs at Debug "tcp-count: connection N: downstream D
//     bytes, upstream U bytes", N counting this plugin instance's
//     connections from 1 (Debug, so that a busy listener logs nothing by
//     default and the benchmark measures the counting, not the logging).
package main

import (
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm"
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/types"
)

func main() {
	proxywasm.SetVMContext(&vmContext{})
}

type vmContext struct {
	types.DefaultVMContext
}

// NewPluginContext implements types.VMContext.
func (*vmContext) NewPluginContext(uint32) types.PluginContext {
	return &pluginContext{}
}

type pluginContext struct {
	types.DefaultPluginContext
	connections, down, up proxywasm.MetricCounter
	seen                  uint64 // connections of this instance, for logs
}

// OnPluginStart implements types.PluginContext.
func (p *pluginContext) OnPluginStart(int) types.OnPluginStartStatus {
	p.connections = proxywasm.DefineCounterMetric("tcp_count_connections_total")
	p.down = proxywasm.DefineCounterMetric("tcp_count_downstream_bytes_total")
	p.up = proxywasm.DefineCounterMetric("tcp_count_upstream_bytes_total")
	return types.OnPluginStartStatusOK
}

// NewTcpContext implements types.PluginContext.
func (p *pluginContext) NewTcpContext(uint32) types.TcpContext {
	p.seen++
	return &tcpContext{plugin: p, n: p.seen}
}

type tcpContext struct {
	types.DefaultTcpContext
	plugin   *pluginContext
	n        uint64
	down, up uint64
}

// OnNewConnection implements types.TcpContext.
func (c *tcpContext) OnNewConnection() types.Action {
	c.plugin.connections.Increment(1)
	return types.ActionContinue
}

// OnDownstreamData implements types.TcpContext.
func (c *tcpContext) OnDownstreamData(size int, _ bool) types.Action {
	if size > 0 {
		c.down += uint64(size)
		c.plugin.down.Increment(uint64(size))
	}
	return types.ActionContinue
}

// OnUpstreamData implements types.TcpContext.
func (c *tcpContext) OnUpstreamData(size int, _ bool) types.Action {
	if size > 0 {
		c.up += uint64(size)
		c.plugin.up.Increment(uint64(size))
	}
	return types.ActionContinue
}

// OnDownstreamClose implements types.TcpContext.
func (c *tcpContext) OnDownstreamClose(peer types.PeerType) {
	proxywasm.LogDebugf("tcp-count: connection %d: downstream closed (peer %d)", c.n, peer)
}

// OnUpstreamClose implements types.TcpContext.
func (c *tcpContext) OnUpstreamClose(peer types.PeerType) {
	proxywasm.LogDebugf("tcp-count: connection %d: upstream closed (peer %d)", c.n, peer)
}

// OnStreamDone implements types.TcpContext.
func (c *tcpContext) OnStreamDone() {
	proxywasm.LogDebugf("tcp-count: connection %d: downstream %d bytes, upstream %d bytes", c.n, c.down, c.up)
}
