package host

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/tetratelabs/wazero/api"

	"github.com/wasm-callout/wasm-callout/abi"
)

// Outbound calls. A plugin names a cluster, as in Envoy; Config.Upstreams
// maps names to addresses. Responses are delivered by the instance's
// executor, one callback at a time, never concurrently with a stream
// callback. The calls a context issued are cancelled when it goes away.

// MaxCallResponseBytes bounds the body an outbound call may return; a
// larger one fails the call, as Envoy's buffer limit would.
const MaxCallResponseBytes = 16 << 20

// outboundCall is one HTTP call, gRPC call or gRPC stream in flight.
type outboundCall struct {
	token    uint32
	owner    uint32    // the context that issued it
	deadline time.Time // zero when the call has no timeout
	cancel   context.CancelFunc
	grpc     *grpcStream // set for gRPC streams
}

// callResponse is what the plugin may read while a call's callback runs:
// maps 6 and 7 (or 4 and 5 for gRPC) and buffer 4 (or 5).
type callResponse struct {
	headers, trailers *HeaderMap
	body              []byte
	grpc              bool
}

// callStatus is what proxy_get_status reports: the last call's outcome.
type callStatus struct {
	code uint32
	msg  string
}

// newToken issues a call token of the given kind: Envoy's numbering, where
// the low two bits tell HTTP calls (4, 8…), gRPC calls (5, 9…) and gRPC
// streams (6, 10…) apart. Tokens in use are skipped. Caller holds mu.
func (in *instance) newToken(kind uint32) uint32 {
	for {
		in.nextToken++
		t := in.nextToken<<2 | kind
		if in.nextToken<<2 != 0 && in.calls[t] == nil {
			return t
		}
	}
}

// startCall registers a call issued by the effective context and returns
// the context its work must run under. Caller holds mu.
func (in *instance) startCall(kind uint32, timeout time.Duration) (*outboundCall, context.Context) {
	ctx, cancel := context.WithCancel(context.Background())
	c := &outboundCall{token: in.newToken(kind), owner: in.effective}
	if timeout > 0 {
		c.deadline = time.Now().Add(timeout)
		ctx, cancel = context.WithDeadline(context.Background(), c.deadline)
	}
	c.cancel = cancel
	if in.calls == nil {
		in.calls = map[uint32]*outboundCall{}
	}
	in.calls[c.token] = c
	in.pendingCalls.Store(int64(len(in.calls)))
	return c, ctx
}

// PendingCall reports whether the stream has an outbound call in flight
// and, if so, when the last of them times out (zero: one has no timeout).
// A server whose answer waits on the call uses it to ask the proxy for
// more time.
func (s *stream) PendingCall() (deadline time.Time, pending bool) {
	s.in.lock()
	defer s.in.mu.Unlock()
	for _, c := range s.in.calls {
		if c.owner != s.id {
			continue
		}
		if c.deadline.IsZero() {
			return time.Time{}, true
		}
		if !pending || c.deadline.After(deadline) {
			deadline = c.deadline
		}
		pending = true
	}
	return deadline, pending
}

// cancelCalls cancels every call owned by context id (every call when id
// is 0), so that none of their callbacks runs. Caller holds mu.
func (in *instance) cancelCalls(id uint32) {
	for t, c := range in.calls {
		if id == 0 || c.owner == id {
			c.cancel()
			in.dropCall(t)
		}
	}
}

// dropCall forgets call token. Caller holds mu.
func (in *instance) dropCall(token uint32) {
	delete(in.calls, token)
	in.pendingCalls.Store(int64(len(in.calls)))
}

// deliver runs fn on the executor if the call is still live. It blocks
// until the executor accepts the task, so responses are never dropped and
// each call's callbacks run in order. last removes the call afterwards.
func (in *instance) deliver(token uint32, last bool, fn func(c *outboundCall)) {
	in.postWait(func() {
		c := in.calls[token]
		if c == nil {
			return // cancelled
		}
		if last {
			in.dropCall(token)
			c.cancel()
		}
		fn(c)
	})
}

// withResponse exposes r to the plugin for the duration of fn. Caller holds
// mu.
func (in *instance) withResponse(r *callResponse, fn func()) {
	in.callResp = r
	fn()
	in.callResp = nil
}

// proxy_http_call(upstream_ptr, upstream_size, headers_ptr, headers_size,
// body_ptr, body_size, trailers_ptr, trailers_size, timeout_ms,
// ret_token_ptr) sends an HTTP request to the named cluster and writes the
// call's token (u32). The headers must hold :method, :path and :authority,
// as Envoy requires; timeout 0 means none. The response arrives in
// proxy_on_http_call_response(root, token, headers, body_size, trailers);
// a failed call (connect error, timeout, oversized body) arrives with zero
// headers, and proxy_get_status then says BROKEN_CONNECTION.
// Statuses: OK; BAD_ARGUMENT for an unknown cluster (logged), missing
// pseudo-headers or malformed pairs; INVALID_MEMORY_ACCESS. Also registered
// as proxy_dispatch_http_call.
func httpCall(ctx context.Context, _ api.Module, stack []uint64) {
	in := instanceFrom(ctx)
	cluster, ok := in.readString(u32(stack, 0), u32(stack, 1))
	hdrs, ok2 := in.read(u32(stack, 2), u32(stack, 3))
	body, ok3 := in.read(u32(stack, 4), u32(stack, 5))
	trls, ok4 := in.read(u32(stack, 6), u32(stack, 7))
	if !ok || !ok2 || !ok3 || !ok4 || !in.writable(u32(stack, 9), 4) {
		ret(stack, abi.StatusInvalidMemoryAccess)
		return
	}
	up := in.plugin.cfg.Upstreams.lookup(cluster)
	if up == nil {
		in.plugin.cfg.Logger.Warn("plugin called an unknown cluster; map it with --upstream NAME=URL",
			"plugin", in.plugin.cfg.Name, "cluster", cluster)
		ret(stack, abi.StatusBadArgument)
		return
	}
	headers, err1 := abi.DecodePairs(hdrs)
	trailers, err2 := abi.DecodePairs(trls)
	if err1 != nil || err2 != nil {
		ret(stack, abi.StatusBadArgument)
		return
	}
	req, err := up.httpRequest(headers, bytes.Clone(body), trailers)
	if err != nil {
		in.plugin.cfg.Logger.Warn("plugin made an invalid http call", "plugin", in.plugin.cfg.Name, "cluster", cluster, "err", err)
		ret(stack, abi.StatusBadArgument)
		return
	}
	c, cctx := in.startCall(abi.TokenHTTPCall, time.Duration(u32(stack, 8))*time.Millisecond)
	in.writeU32(u32(stack, 9), c.token)
	go in.runHTTPCall(cctx, c.token, up, req.WithContext(cctx))
	ret(stack, abi.StatusOK)
}

func (in *instance) runHTTPCall(ctx context.Context, token uint32, up *upstream, req *http.Request) {
	start := time.Now()
	resp, err := up.client.Do(req)
	var r *callResponse
	if err == nil {
		r, err = readHTTPResponse(resp)
	}
	up.observe(kindHTTP, start, err)
	in.deliver(token, true, func(*outboundCall) {
		var nh, nt int
		if err != nil {
			in.status = callStatus{code: uint32(abi.StatusBrokenConnection), msg: "reset: " + err.Error()}
			r = &callResponse{}
		} else {
			in.status = callStatus{}
			nh, nt = len(r.headers.pairs), len(r.trailers.pairs)
		}
		in.withResponse(r, func() {
			in.callCtx(in.fns.onHTTPCallResponse, in.rootID, uint64(token), uint64(nh), uint64(len(r.body)), uint64(nt))
		})
	})
}

// readHTTPResponse reads a whole response, bounded by MaxCallResponseBytes.
// Headers start with :status, as Envoy gives them to plugins.
func readHTTPResponse(resp *http.Response) (*callResponse, error) {
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxCallResponseBytes+1))
	if err != nil {
		return nil, err
	}
	if len(body) > MaxCallResponseBytes {
		return nil, fmt.Errorf("response body exceeds %d bytes", MaxCallResponseBytes)
	}
	headers := []abi.Pair{{Key: ":status", Value: strconv.Itoa(resp.StatusCode)}}
	headers = append(headers, headerPairs(resp.Header)...)
	return &callResponse{headers: newHeaderMap(headers), body: body, trailers: newHeaderMap(headerPairs(resp.Trailer))}, nil
}

// headerPairs flattens an http.Header into lower-case pairs, sorted by name
// for a stable order.
func headerPairs(h http.Header) []abi.Pair {
	names := make([]string, 0, len(h))
	for k := range h {
		names = append(names, k)
	}
	sort.Strings(names)
	var out []abi.Pair
	for _, k := range names {
		for _, v := range h[k] {
			out = append(out, abi.Pair{Key: strings.ToLower(k), Value: v})
		}
	}
	return out
}

// proxy_get_status(ret_code_ptr, ret_message_ptr_ptr, ret_message_size_ptr)
// writes the outcome of the last outbound call as a u32 code and a message
// in memory from the plugin's allocator: for gRPC, its status code and
// message; for a failed HTTP call, BROKEN_CONNECTION; with no call made,
// 0 and an empty message. Statuses: OK, INVALID_MEMORY_ACCESS.
func getStatus(ctx context.Context, _ api.Module, stack []uint64) {
	in := instanceFrom(ctx)
	if !in.writeU32(u32(stack, 0), in.status.code) {
		ret(stack, abi.StatusInvalidMemoryAccess)
		return
	}
	ret(stack, in.copyOut([]byte(in.status.msg), u32(stack, 1), u32(stack, 2)))
}

// proxy_call_foreign_function(name_ptr, name_size, args_ptr, args_size,
// ret_results_ptr_ptr, ret_results_size_ptr) calls a host extension by
// name. This host registers none: Envoy's built-ins act on Envoy's own
// state. Statuses: NOT_FOUND (unknown function), INVALID_MEMORY_ACCESS.
func callForeignFunction(ctx context.Context, _ api.Module, stack []uint64) {
	in := instanceFrom(ctx)
	name, ok1 := in.readString(u32(stack, 0), u32(stack, 1))
	_, ok2 := in.read(u32(stack, 2), u32(stack, 3))
	if !ok1 || !ok2 {
		ret(stack, abi.StatusInvalidMemoryAccess)
		return
	}
	in.plugin.cfg.Logger.Debug("plugin called an unknown foreign function", "plugin", in.plugin.cfg.Name, "function", name)
	ret(stack, abi.StatusNotFound)
}
