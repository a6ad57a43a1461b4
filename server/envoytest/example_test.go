package envoytest_test

import (
	"context"
	"fmt"
	"net"
	"time"

	filterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	"google.golang.org/grpc"

	"github.com/wasm-callout/wasm-callout/internal/baseline"
	"github.com/wasm-callout/wasm-callout/server/envoytest"
)

// An integration test of an ext_proc server: serve it on a loopback port,
// connect, and play a request through the emulated Envoy filter.
func Example() {
	srv, err := baseline.New("x-hello: world") // the server under test
	if err != nil {
		panic(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	g := grpc.NewServer()
	srv.Register(g)
	go g.Serve(lis)
	defer g.Stop()

	conn, err := envoytest.Dial(lis.Addr().String())
	if err != nil {
		panic(err)
	}
	defer conn.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := envoytest.Do(ctx, conn, envoytest.Config{
		ProcessingMode: &filterv3.ProcessingMode{RequestBodyMode: filterv3.ProcessingMode_STREAMED},
	}, &envoytest.Request{
		Headers: envoytest.H(":method", "POST", ":path", "/", ":authority", "example.com", ":scheme", "http"),
		Body:    [][]byte{[]byte("hello "), []byte("world")},
		Response: &envoytest.Response{
			Headers: envoytest.H(":status", "200"),
			Body:    [][]byte{[]byte("ok")},
		},
	})
	if err != nil {
		panic(err)
	}
	v, _ := res.Response.Headers.Get("x-hello")
	fmt.Printf("upstream got %q, client got %q with x-hello=%s\n", res.Request.Body, res.Response.Body, v)
	fmt.Println("local reply:", res.LocalReply != nil, "spurious:", res.Stats.SpuriousMessages)
	for _, e := range res.Transcript {
		fmt.Print(e.Kind, " ")
	}
	fmt.Println()
	// Output:
	// upstream got "hello world", client got "ok" with x-hello=world
	// local reply: false spurious: 0
	// send recv send send recv recv send recv envoy-close
}
