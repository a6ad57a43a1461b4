package server

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/wasm-callout/wasm-callout/host"
	"github.com/wasm-callout/wasm-callout/internal/testhost"
	"github.com/wasm-callout/wasm-callout/internal/testplugins"
	"github.com/wasm-callout/wasm-callout/server/envoytest"
)

// Loading a Go plugin compiles ~3 MB of wasm (1-2 s), so each plugin
// configuration is loaded once per test binary and shared; a compilation
// cache makes the second configuration of the same module cheap.

var (
	loader   *testhost.Loader
	cacheDir string // the loader's compilation cache, for tests that load plugins themselves
)

func TestMain(m *testing.M) {
	l, err := testhost.NewLoader("server")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	loader, cacheDir = l, l.Dir
	code := m.Run()
	loader.Close()
	os.Exit(code)
}

func testLogger() *slog.Logger { return testhost.Logger() }

// plugin returns the shared plugin: "edge" is testdata/edge.wasm, "zero"
// host/testdata/zero.wasm, any other name a Go plugin from plugins/. The
// fail status is 500, the server's flag default.
func plugin(t testing.TB, name string, policy host.FailurePolicy, config string) *host.Plugin {
	t.Helper()
	var path string
	switch name {
	case "edge":
		path = filepath.Join("testdata", "edge.wasm")
	case "zero": // the host's own cost: one header add, two guest entries
		path = filepath.Join("..", "host", "testdata", "zero.wasm")
	default:
		path = testplugins.Path(t, name)
	}
	return loader.Load(t, fmt.Sprintf("%s|%v|%s", name, policy, config), path, host.Config{
		Name: name, RootID: "root-" + name, VMID: "vm-" + name,
		PluginConfig: []byte(config), Instances: 2, FailurePolicy: policy, FailStatus: 500,
	})
}

// harness is a Server on a loopback gRPC listener.
type harness struct {
	srv  *Server
	g    *grpc.Server
	conn *grpc.ClientConn
	addr string
	once sync.Once
}

func start(t testing.TB, opts Options) *harness {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = testLogger()
	}
	srv, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(GRPCServerOptions(opts.Limits)...)
	srv.Register(g)
	go g.Serve(lis)
	conn, err := envoytest.Dial(lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{srv: srv, g: g, conn: conn, addr: lis.Addr().String()}
	t.Cleanup(h.stop)
	return h
}

// stop closes the client connection, the gRPC server and the Server (not
// the plugin). Tests that count what is left call it themselves; it is
// idempotent.
func (h *harness) stop() {
	h.once.Do(func() {
		h.conn.Close()
		h.g.Stop()
		h.srv.Close()
	})
}

// do plays one exchange through the emulated Envoy.
func (h *harness) do(t testing.TB, cfg envoytest.Config, req *envoytest.Request) *envoytest.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := envoytest.Do(ctx, h.conn, cfg, req)
	if err != nil {
		t.Fatalf("envoytest.Do: %v", err)
	}
	return res
}

func mustRead(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestFixturesInSync checks that every testdata/NAME.wasm with a .wat
// source is what wat2wasm makes of it (rebuild: wat2wasm testdata/NAME.wat
// -o testdata/NAME.wasm).
func TestFixturesInSync(t *testing.T) {
	if _, err := exec.LookPath("wat2wasm"); err != nil {
		t.Skip("wat2wasm not installed")
	}
	sources, err := filepath.Glob(filepath.Join("testdata", "*.wat"))
	if err != nil || len(sources) == 0 {
		t.Fatalf("no .wat fixtures: %v", err)
	}
	for _, src := range sources {
		wasm := strings.TrimSuffix(src, ".wat") + ".wasm"
		t.Run(filepath.Base(src), func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "out.wasm")
			if b, err := exec.Command("wat2wasm", src, "-o", out).CombinedOutput(); err != nil {
				t.Fatalf("wat2wasm: %v\n%s", err, b)
			}
			if !bytes.Equal(mustRead(t, out), mustRead(t, wasm)) {
				t.Errorf("%s is stale: run wat2wasm %s -o %s", wasm, src, wasm)
			}
		})
	}
}
