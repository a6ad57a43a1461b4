package host

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/tetratelabs/wazero/api"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/wasm-callout/wasm-callout/abi"
)

// rawCodec passes messages through as bytes: plugins send and receive
// serialized protobuf messages.
type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	b, ok := v.(*[]byte)
	if !ok {
		return nil, errors.New("raw codec: want *[]byte")
	}
	return mem.BufferSlice{mem.SliceBuffer(*b)}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	b, ok := v.(*[]byte)
	if !ok {
		return errors.New("raw codec: want *[]byte")
	}
	*b = data.Materialize()
	return nil
}

func (rawCodec) Name() string { return "proto" }

// grpcCluster reads the service argument of proxy_grpc_call and
// proxy_grpc_stream: a cluster name, or, as Envoy also accepts, a
// serialized envoy.config.core.v3.GrpcService naming one.
func grpcCluster(svc []byte) string {
	var gs corev3.GrpcService
	if proto.Unmarshal(svc, &gs) == nil {
		if name := gs.GetEnvoyGrpc().GetClusterName(); name != "" {
			return name
		}
	}
	return string(svc)
}

// grpcArgs reads the arguments proxy_grpc_call and proxy_grpc_stream share.
func (in *instance) grpcArgs(stack []uint64) (up *upstream, method string, md metadata.MD, st abi.Status) {
	svc, ok1 := in.read(u32(stack, 0), u32(stack, 1))
	service, ok2 := in.readString(u32(stack, 2), u32(stack, 3))
	meth, ok3 := in.readString(u32(stack, 4), u32(stack, 5))
	mdb, ok4 := in.read(u32(stack, 6), u32(stack, 7))
	if !ok1 || !ok2 || !ok3 || !ok4 {
		return nil, "", nil, abi.StatusInvalidMemoryAccess
	}
	cluster := grpcCluster(svc)
	if up = in.plugin.cfg.Upstreams.lookup(cluster); up == nil {
		in.plugin.cfg.Logger.Warn("plugin called an unknown gRPC cluster; map it with --upstream NAME=h2c://HOST:PORT",
			"plugin", in.plugin.cfg.Name, "cluster", cluster)
		return nil, "", nil, abi.StatusParseFailure
	}
	pairs, err := abi.DecodePairs(mdb)
	if err != nil || service == "" || meth == "" {
		return nil, "", nil, abi.StatusParseFailure
	}
	md = metadata.MD{}
	for _, p := range pairs {
		md.Append(p.Key, p.Value)
	}
	return up, "/" + service + "/" + meth, md, abi.StatusOK
}

// proxy_grpc_call(service_ptr, service_size, service_name_ptr,
// service_name_size, method_ptr, method_size, initial_metadata_ptr,
// initial_metadata_size, message_ptr, message_size, timeout_ms,
// ret_token_ptr) makes a unary gRPC call with a serialized message to the
// named cluster and writes the call's token (u32). As in Envoy, a success
// arrives as proxy_on_grpc_receive(root, token, size) with the reply in
// buffer 5, and a failure as proxy_on_grpc_close(root, token, status) with
// the message from proxy_get_status. Statuses: OK; PARSE_FAILURE for an
// unknown cluster or malformed metadata; INVALID_MEMORY_ACCESS.
func grpcCall(ctx context.Context, _ api.Module, stack []uint64) {
	in := instanceFrom(ctx)
	up, method, md, st := in.grpcArgs(stack)
	msg, ok := in.read(u32(stack, 8), u32(stack, 9))
	if !ok || !in.writable(u32(stack, 11), 4) {
		st = abi.StatusInvalidMemoryAccess
	}
	if st != abi.StatusOK {
		ret(stack, st)
		return
	}
	conn, err := up.grpcConn()
	if err != nil {
		in.plugin.cfg.Logger.Warn("gRPC upstream unusable", "plugin", in.plugin.cfg.Name, "cluster", up.Name, "err", err)
		ret(stack, abi.StatusInternalFailure)
		return
	}
	c, cctx := in.startCall(abi.TokenGRPCCall, time.Duration(u32(stack, 10))*time.Millisecond)
	in.writeU32(u32(stack, 11), c.token)
	req := append([]byte(nil), msg...)
	go func() {
		var reply []byte
		start := time.Now()
		err := conn.Invoke(metadata.NewOutgoingContext(cctx, md), method, &req, &reply, grpc.ForceCodecV2(rawCodec{}))
		up.observe(kindGRPC, start, err)
		in.deliver(c.token, true, func(*outboundCall) {
			if err != nil {
				in.grpcClosed(c.token, err)
				return
			}
			in.status = callStatus{}
			in.withResponse(&callResponse{body: reply, grpc: true}, func() {
				in.callCtx(in.fns.onGRPCReceive, in.rootID, uint64(c.token), uint64(len(reply)))
			})
		})
	}()
	ret(stack, abi.StatusOK)
}

// grpcClosed delivers proxy_on_grpc_close with err's status. Caller holds
// mu.
func (in *instance) grpcClosed(token uint32, err error) {
	st := grpcstatus.Convert(err)
	if errors.Is(err, io.EOF) {
		st = grpcstatus.New(codes.OK, "")
	}
	in.status = callStatus{code: uint32(st.Code()), msg: st.Message()}
	in.callCtx(in.fns.onGRPCClose, in.rootID, uint64(token), uint64(st.Code()))
}

// grpcStream is a bidirectional stream's send side: messages the plugin
// sent, waiting for the stream's sender goroutine.
type grpcStream struct {
	mu    sync.Mutex
	queue [][]byte
	half  bool // the plugin half-closed
	wake  chan struct{}
}

func (g *grpcStream) send(msg []byte, end bool) {
	g.mu.Lock()
	if msg != nil {
		g.queue = append(g.queue, msg)
	}
	g.half = g.half || end
	g.mu.Unlock()
	select {
	case g.wake <- struct{}{}:
	default:
	}
}

// proxy_grpc_stream(service_ptr, service_size, service_name_ptr,
// service_name_size, method_ptr, method_size, initial_metadata_ptr,
// initial_metadata_size, ret_token_ptr) opens a bidirectional stream and
// writes its token (u32). The reply headers arrive in
// proxy_on_grpc_receive_initial_metadata (map 4), each message in
// proxy_on_grpc_receive (buffer 5), the trailers in
// proxy_on_grpc_receive_trailing_metadata (map 5), and the end in
// proxy_on_grpc_close. Statuses: as proxy_grpc_call.
func grpcStreamFn(ctx context.Context, _ api.Module, stack []uint64) {
	in := instanceFrom(ctx)
	up, method, md, st := in.grpcArgs(stack)
	if st == abi.StatusOK && !in.writable(u32(stack, 8), 4) {
		st = abi.StatusInvalidMemoryAccess
	}
	if st != abi.StatusOK {
		ret(stack, st)
		return
	}
	conn, err := up.grpcConn()
	if err != nil {
		ret(stack, abi.StatusInternalFailure)
		return
	}
	c, cctx := in.startCall(abi.TokenGRPCStream, 0)
	c.grpc = &grpcStream{wake: make(chan struct{}, 1)}
	in.writeU32(u32(stack, 8), c.token)
	go in.runGRPCStream(metadata.NewOutgoingContext(cctx, md), up, conn, method, c.token, c.grpc)
	ret(stack, abi.StatusOK)
}

func (in *instance) runGRPCStream(ctx context.Context, up *upstream, conn *grpc.ClientConn, method string, token uint32, g *grpcStream) {
	start := time.Now()
	cs, err := conn.NewStream(ctx, &grpc.StreamDesc{ClientStreams: true, ServerStreams: true}, method, grpc.ForceCodecV2(rawCodec{}))
	if err != nil {
		up.observe(kindGRPC, start, err)
		in.deliver(token, true, func(*outboundCall) { in.grpcClosed(token, err) })
		return
	}
	// Sender: forwards what the plugin sends, in order, then half-closes.
	go func() {
		for {
			g.mu.Lock()
			queue, half := g.queue, g.half
			g.queue = nil
			g.mu.Unlock()
			for _, m := range queue {
				if cs.SendMsg(&m) != nil {
					return // the receiver sees the error
				}
			}
			if half {
				cs.CloseSend()
				return
			}
			select {
			case <-g.wake:
			case <-ctx.Done():
				return
			}
		}
	}()
	// Receiver: delivers headers, messages, trailers and the end.
	if hdr, err := cs.Header(); err == nil && len(hdr) > 0 {
		pairs := mdPairs(hdr)
		in.deliver(token, false, func(*outboundCall) {
			in.withResponse(&callResponse{headers: newHeaderMap(pairs), grpc: true}, func() {
				in.callCtx(in.fns.onGRPCReceiveInitialMetadata, in.rootID, uint64(token), uint64(len(pairs)))
			})
		})
	}
	for {
		var msg []byte
		if err = cs.RecvMsg(&msg); err != nil {
			break
		}
		in.deliver(token, false, func(*outboundCall) {
			in.withResponse(&callResponse{body: msg, grpc: true}, func() {
				in.callCtx(in.fns.onGRPCReceive, in.rootID, uint64(token), uint64(len(msg)))
			})
		})
	}
	if trl := mdPairs(cs.Trailer()); len(trl) > 0 {
		in.deliver(token, false, func(*outboundCall) {
			in.withResponse(&callResponse{trailers: newHeaderMap(trl), grpc: true}, func() {
				in.callCtx(in.fns.onGRPCReceiveTrailingMetadata, in.rootID, uint64(token), uint64(len(trl)))
			})
		})
	}
	up.observe(kindGRPC, start, err)
	in.deliver(token, true, func(*outboundCall) { in.grpcClosed(token, err) })
}

// mdPairs flattens gRPC metadata into pairs sorted by key.
func mdPairs(md metadata.MD) []abi.Pair {
	var out []abi.Pair
	for _, p := range headerPairs(mdHeader(md)) {
		out = append(out, abi.Pair{Key: strings.ToLower(p.Key), Value: p.Value})
	}
	return out
}

func mdHeader(md metadata.MD) map[string][]string { return md }

// lookupStream finds a live gRPC stream by token. Caller holds mu.
func (in *instance) lookupStream(token uint32) (*outboundCall, abi.Status) {
	c := in.calls[token]
	switch {
	case c == nil:
		return nil, abi.StatusNotFound
	case c.grpc == nil:
		return c, abi.StatusBadArgument
	}
	return c, abi.StatusOK
}

// proxy_grpc_send(token, message_ptr, message_size, end_of_stream) sends a
// serialized message on a gRPC stream, half-closing it when end_of_stream is
// non-zero. It reads the message from guest memory. Statuses: OK;
// BAD_ARGUMENT for a token that is not a stream; NOT_FOUND for no such
// token; INVALID_MEMORY_ACCESS.
func grpcSend(ctx context.Context, _ api.Module, stack []uint64) {
	in := instanceFrom(ctx)
	msg, ok := in.read(u32(stack, 1), u32(stack, 2))
	if !ok {
		ret(stack, abi.StatusInvalidMemoryAccess)
		return
	}
	c, st := in.lookupStream(u32(stack, 0))
	if st == abi.StatusOK {
		c.grpc.send(append([]byte(nil), msg...), u32(stack, 3) != 0)
	}
	ret(stack, st)
}

// proxy_grpc_cancel(token) cancels a gRPC call or stream; no callback for it
// runs afterwards. Statuses: OK; NOT_FOUND for no such token.
func grpcCancel(ctx context.Context, _ api.Module, stack []uint64) {
	in := instanceFrom(ctx)
	c := in.calls[u32(stack, 0)]
	if c == nil || c.token&3 == abi.TokenHTTPCall {
		ret(stack, abi.StatusNotFound)
		return
	}
	c.cancel()
	in.dropCall(c.token)
	ret(stack, abi.StatusOK)
}

// proxy_grpc_close(token) half-closes a gRPC stream (the reply still
// arrives); on a unary call it cancels, as in Envoy. Statuses: OK;
// NOT_FOUND for no such token.
func grpcClose(ctx context.Context, m api.Module, stack []uint64) {
	in := instanceFrom(ctx)
	c := in.calls[u32(stack, 0)]
	switch {
	case c == nil || c.token&3 == abi.TokenHTTPCall:
		ret(stack, abi.StatusNotFound)
	case c.grpc != nil:
		c.grpc.send(nil, true)
		ret(stack, abi.StatusOK)
	default:
		grpcCancel(ctx, m, stack)
	}
}
