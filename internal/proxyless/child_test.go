package proxyless

// The child's side of the harness: the proxyless client. It runs in the test
// binary re-executed with WASM_CALLOUT_PROXYLESS_CHILD=1 (TestMain), so
// that grpc-go reads GRPC_EXPERIMENTAL_XDS_EXT_PROC_ON_CLIENT and
// GRPC_XDS_BOOTSTRAP_CONFIG from its own environment at init.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	_ "google.golang.org/grpc/xds" // the xds:/// resolver and the HTTP filters, ext_proc among them
)

// runChild dials the target and makes one call per line of in, printing one
// result per line to out, until in ends and every call has ended.
func runChild(in io.Reader, out io.Writer) int {
	cc, err := grpc.NewClient(os.Getenv(childTarget),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20), grpc.MaxCallSendMsgSize(64<<20)))
	if err != nil {
		fmt.Fprintln(os.Stderr, "client:", err)
		return 1
	}
	defer cc.Close()
	// Calls run concurrently, each on its own goroutine; results are
	// printed as they end, one line each.
	var mu sync.Mutex
	var wg sync.WaitGroup
	enc := json.NewEncoder(out)
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := append([]byte(nil), sc.Bytes()...)
		wg.Add(1)
		go func() {
			defer wg.Done()
			var spec callSpec
			var r callResult
			if err := json.Unmarshal(line, &spec); err != nil {
				r.Error = err.Error()
			} else {
				r = makeCall(cc, spec)
			}
			mu.Lock()
			defer mu.Unlock()
			if err := enc.Encode(r); err != nil {
				fmt.Fprintln(os.Stderr, "client:", err)
				os.Exit(1)
			}
		}()
	}
	wg.Wait()
	return 0
}

func makeCall(cc *grpc.ClientConn, spec callSpec) callResult {
	r := callResult{ID: spec.ID, Received: []digest{}}
	md := metadata.New(spec.Metadata)
	md.Set(callHeader, spec.ID)
	timeout := childDeadline
	if spec.TimeoutMS > 0 && time.Duration(spec.TimeoutMS)*time.Millisecond < timeout {
		timeout = time.Duration(spec.TimeoutMS) * time.Millisecond
	}
	ctx, cancel := context.WithTimeout(metadata.NewOutgoingContext(context.Background(), md), timeout)
	defer cancel()
	start := time.Now()
	var err error
	switch spec.Kind {
	case "unary", "unary-stream":
		err = unary(ctx, cc, spec, &r)
	case "bidi":
		err = bidi(ctx, cc, spec, &r)
	default:
		r.Error = fmt.Sprintf("unknown kind %q", spec.Kind)
		return r
	}
	r.Millis = time.Since(start).Milliseconds()
	s := status.Convert(err)
	r.Code, r.Message = s.Code().String(), s.Message()
	return r
}

// message is a request payload, nil for a negative size (no payload).
func message(spec callSpec, i int) *testgrpc.Payload {
	if spec.Sizes[i] < 0 {
		return nil
	}
	return &testgrpc.Payload{Body: payload(spec.ID, i, spec.Sizes[i], spec.Text)}
}

func unary(ctx context.Context, cc *grpc.ClientConn, spec callSpec, r *callResult) error {
	if len(spec.Sizes) != 1 {
		return fmt.Errorf("a unary call needs one size, got %v", spec.Sizes)
	}
	req := &testgrpc.SimpleRequest{ResponseSize: int32(spec.RespSize), Payload: message(spec, 0)}
	if spec.FailCode != 0 {
		req.ResponseStatus = &testgrpc.EchoStatus{Code: int32(spec.FailCode), Message: "backend says no"}
	}
	resp := new(testgrpc.SimpleResponse)
	if spec.Kind == "unary" {
		var hdr, trl metadata.MD
		err := cc.Invoke(ctx, testgrpc.TestService_UnaryCall_FullMethodName, req, resp, grpc.Header(&hdr), grpc.Trailer(&trl))
		r.Header, r.Trailer = hdr, trl
		if err == nil {
			r.Received = append(r.Received, digestOf(resp.GetPayload().GetBody()))
		}
		return err
	}
	// The same method as a stream: Header and Trailer come from the
	// stream the interceptors return, and RecvMsg runs to io.EOF.
	s, err := cc.NewStream(ctx, &grpc.StreamDesc{StreamName: "UnaryCall"}, testgrpc.TestService_UnaryCall_FullMethodName)
	if err != nil {
		return err
	}
	if err := s.SendMsg(req); err != nil {
		r.SendErr = err.Error()
	}
	if err := s.CloseSend(); err != nil && r.SendErr == "" {
		r.SendErr = err.Error()
	}
	hdr, herr := s.Header()
	r.Header = hdr
	if herr != nil {
		r.HeaderErr = herr.Error()
	}
	for {
		if err = s.RecvMsg(resp); err != nil {
			break
		}
		r.Received = append(r.Received, digestOf(resp.GetPayload().GetBody()))
	}
	r.Trailer = s.Trailer()
	if err == io.EOF {
		err = nil
	}
	return err
}

func bidi(ctx context.Context, cc *grpc.ClientConn, spec callSpec, r *callResult) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s, err := testgrpc.NewTestServiceClient(cc).FullDuplexCall(ctx)
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	wg.Add(1)
	var sendErr error
	go func() {
		defer wg.Done()
		for i := range spec.Sizes {
			if sendErr = s.Send(&testgrpc.StreamingOutputCallRequest{Payload: message(spec, i)}); sendErr != nil {
				return
			}
		}
		sendErr = s.CloseSend()
	}()
	hdr, herr := s.Header()
	r.Header = hdr
	if herr != nil {
		r.HeaderErr = herr.Error()
	}
	for {
		resp, err2 := s.Recv()
		if err2 != nil {
			err = err2
			break
		}
		r.Received = append(r.Received, digestOf(resp.GetPayload().GetBody()))
	}
	r.Trailer = s.Trailer()
	if err != io.EOF {
		cancel() // unblocks a sender the failed stream left waiting
	}
	wg.Wait()
	if sendErr != nil && sendErr != io.EOF {
		r.SendErr = sendErr.Error()
	}
	if err == io.EOF {
		err = nil
	}
	return err
}
