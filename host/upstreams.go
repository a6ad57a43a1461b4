package host

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/wasm-callout/wasm-callout/abi"
)

// Upstream maps a cluster name, as a plugin passes it to proxy_http_call or
// proxy_grpc_call, to a real address. It plays the part of an Envoy
// cluster.
type Upstream struct {
	// Name is the cluster name plugins use.
	Name string
	// URL is where calls go: http:// or https:// for HTTP calls, h2c://
	// (cleartext HTTP/2) or https:// for gRPC calls. A path in the URL is
	// prefixed to every HTTP call's :path.
	URL string
	// CAFile, for https, is a PEM bundle of the CAs to trust instead of
	// the system's.
	CAFile string
	// ConnectTimeout bounds connection set-up (default 5 s).
	ConnectTimeout time.Duration
}

// ParseUpstream parses the --upstream flag's form,
// NAME=URL[,ca=FILE][,connect-timeout=DURATION].
func ParseUpstream(s string) (Upstream, error) {
	fields := strings.Split(s, ",")
	name, u, ok := strings.Cut(fields[0], "=")
	if !ok || name == "" || u == "" {
		return Upstream{}, fmt.Errorf("upstream %q: want NAME=URL[,ca=FILE][,connect-timeout=DURATION]", s)
	}
	up := Upstream{Name: name, URL: u}
	for _, f := range fields[1:] {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "ca":
			up.CAFile = v
		case "connect-timeout":
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				return Upstream{}, fmt.Errorf("upstream %q: bad connect-timeout %q", name, v)
			}
			up.ConnectTimeout = d
		default:
			return Upstream{}, fmt.Errorf("upstream %q: unknown option %q (want ca= or connect-timeout=)", name, k)
		}
	}
	return up, nil
}

// Upstreams is the set of clusters plugins may call, with their clients.
// Build it once and share it across plugin reloads; it is safe for
// concurrent use.
type Upstreams struct {
	byName  map[string]*upstream
	unknown atomic.Int64 // calls to names not in byName
}

type upstream struct {
	Upstream
	base   *url.URL
	tls    *tls.Config // nil for cleartext
	client *http.Client

	mu   sync.Mutex
	conn *grpc.ClientConn // created on first gRPC call

	stats callStats
}

// NewUpstreams validates the upstreams and builds their HTTP clients. gRPC
// connections are made on first use.
func NewUpstreams(list []Upstream) (*Upstreams, error) {
	us := &Upstreams{byName: map[string]*upstream{}}
	for _, u := range list {
		if _, dup := us.byName[u.Name]; dup {
			return nil, fmt.Errorf("upstream %q is defined twice", u.Name)
		}
		base, err := url.Parse(u.URL)
		if err != nil {
			return nil, fmt.Errorf("upstream %q: %w", u.Name, err)
		}
		if base.Host == "" {
			return nil, fmt.Errorf("upstream %q: URL %q has no host", u.Name, u.URL)
		}
		if u.ConnectTimeout <= 0 {
			u.ConnectTimeout = 5 * time.Second
		}
		up := &upstream{Upstream: u, base: base}
		tr := &http.Transport{
			DialContext:         (&net.Dialer{Timeout: u.ConnectTimeout}).DialContext,
			TLSHandshakeTimeout: u.ConnectTimeout,
			MaxIdleConnsPerHost: 64,
			IdleConnTimeout:     90 * time.Second,
		}
		switch base.Scheme {
		case "http":
		case "h2c":
			tr.Protocols = new(http.Protocols)
			tr.Protocols.SetUnencryptedHTTP2(true)
		case "https":
			up.tls = &tls.Config{MinVersion: tls.VersionTLS12}
			if u.CAFile != "" {
				pem, err := os.ReadFile(u.CAFile)
				if err != nil {
					return nil, fmt.Errorf("upstream %q: %w", u.Name, err)
				}
				pool := x509.NewCertPool()
				if !pool.AppendCertsFromPEM(pem) {
					return nil, fmt.Errorf("upstream %q: no certificates in %s", u.Name, u.CAFile)
				}
				up.tls.RootCAs = pool
			}
			tr.TLSClientConfig = up.tls
			tr.ForceAttemptHTTP2 = true
		default:
			return nil, fmt.Errorf("upstream %q: scheme %q is not http, https or h2c", u.Name, base.Scheme)
		}
		up.client = &http.Client{
			Transport: tr,
			// A plugin sees the upstream's answer as Envoy would give it:
			// redirects are not followed.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
		us.byName[u.Name] = up
	}
	return us, nil
}

func (us *Upstreams) get(name string) *upstream {
	if us == nil {
		return nil
	}
	return us.byName[name]
}

// Names lists the configured cluster names.
func (us *Upstreams) Names() []string {
	if us == nil {
		return nil
	}
	out := make([]string, 0, len(us.byName))
	for n := range us.byName {
		out = append(out, n)
	}
	return out
}

// httpRequest builds the request a plugin asked for: method, path and
// Host from the pseudo-headers, the other headers as they are, and trailers
// when there are any. As in Envoy, the three pseudo-headers must be present
// but :authority may be empty (the Go SDK's multiple_dispatches example
// sends ""): the request then goes with the upstream's own host.
func (u *upstream) httpRequest(headers []abi.Pair, body []byte, trailers []abi.Pair) (*http.Request, error) {
	var method, path, authority string
	hasAuthority := false
	h := http.Header{}
	for _, p := range headers {
		switch p.Key {
		case ":method":
			method = p.Value
		case ":path":
			path = p.Value
		case ":authority":
			authority, hasAuthority = p.Value, true
		default:
			if !strings.HasPrefix(p.Key, ":") {
				h.Add(p.Key, p.Value)
			}
		}
	}
	if method == "" || path == "" || !hasAuthority {
		return nil, errors.New("an http call needs :method, :path and :authority")
	}
	rel, err := url.ParseRequestURI(path)
	if err != nil {
		return nil, fmt.Errorf(":path %q: %w", path, err)
	}
	target := *u.base
	target.Path = strings.TrimSuffix(u.base.Path, "/") + rel.Path
	target.RawPath = ""
	target.RawQuery = rel.RawQuery
	if target.Scheme == "h2c" {
		target.Scheme = "http"
	}
	req, err := http.NewRequest(method, target.String(), bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header = h
	req.Host = authority
	req.ContentLength = int64(len(body))
	if len(trailers) > 0 {
		req.Trailer = http.Header{}
		for _, p := range trailers {
			req.Trailer.Add(p.Key, p.Value)
		}
		req.ContentLength = -1 // trailers need a chunked body
	}
	return req, nil
}

// grpcConn returns the upstream's gRPC connection, creating it on first use.
func (u *upstream) grpcConn() (*grpc.ClientConn, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.conn != nil {
		return u.conn, nil
	}
	if u.base.Scheme == "http" {
		return nil, errors.New("gRPC needs an h2c:// or https:// upstream")
	}
	creds := insecure.NewCredentials()
	if u.tls != nil {
		creds = credentials.NewTLS(u.tls)
	}
	conn, err := grpc.NewClient(u.base.Host, grpc.WithTransportCredentials(creds))
	if err != nil {
		return nil, err
	}
	u.conn = conn
	return conn, nil
}

// Close releases the upstreams' connections.
func (us *Upstreams) Close() error {
	if us == nil {
		return nil
	}
	var errs []error
	for _, u := range us.byName {
		u.client.CloseIdleConnections()
		u.mu.Lock()
		if u.conn != nil {
			errs = append(errs, u.conn.Close())
			u.conn = nil
		}
		u.mu.Unlock()
	}
	return errors.Join(errs...)
}
