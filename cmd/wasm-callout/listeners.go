package main

import (
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"

	"github.com/wasm-callout/wasm-callout/internal/cliflags"
)

// Every listener is bound before the plugin compiles, which can take
// seconds: a port in use, or an address that cannot be bound, fails the
// command in milliseconds with the flag and address named, instead of
// after a compile, and nothing is compiled for nothing.

// How a listener serves, in its "listening" log record.
const (
	securityPlaintext = "plaintext"
	securityTLS       = "tls"
	securityMTLS      = "mtls"                   // TLS with client certificates verified against --client-ca
	securityToken     = "plaintext+bearer-token" // the admin listener with --admin-token-file
)

// listener is one address the serve command listens on.
type listener struct {
	flag     string // the flag that set addr, as an operator types it: "--addr"
	kind     string // grpc, grpc-tls, health, admin: the word in the listening line
	security string // plaintext, tls or mtls
	addr     string // "" when off
	lis      net.Listener
}

// listeners is every listener of the serve command, bound by bind.
type listeners []*listener

// listenPlan lists the serve command's listeners from its flags; an
// address left empty is off. With --client-ca, whose point is that every
// client proves who it is, the plaintext --addr is off unless given on the
// command line, and then served with a warning.
func (c *serveConfig) listenPlan(fs *flag.FlagSet, tlsConf *tls.Config, logger *slog.Logger) (listeners, error) {
	plain := c.addr
	if c.clientCA != "" && plain != "" {
		if flagSet(fs, "addr") {
			logger.Warn("--addr serves plaintext gRPC without client authentication next to mutual TLS on --tls-addr", "addr", plain)
		} else {
			logger.Info("plaintext gRPC listener off: --client-ca asks for client certificates; give --addr explicitly to serve plaintext too",
				"default_addr", plain)
			plain = ""
		}
	}
	tlsAddr, tlsSecurity := "", securityTLS
	if tlsConf != nil {
		tlsAddr = c.tlsAddr
		if c.clientCA != "" {
			tlsSecurity = securityMTLS
		}
	}
	if plain == "" && tlsAddr == "" {
		if c.clientCA != "" {
			return nil, cliflags.Usagef("no gRPC listener: --tls-addr is empty, and with --client-ca the plaintext --addr is off unless given explicitly")
		}
		return nil, cliflags.Usagef("no gRPC listener: set --addr, or --tls-addr with --cert and --key")
	}
	adminSecurity := securityPlaintext
	if c.admin.tokenFile != "" {
		adminSecurity = securityToken
	}
	return listeners{
		{flag: "--health-addr", kind: "health", security: securityPlaintext, addr: c.healthAddr},
		{flag: "--admin-addr", kind: "admin", security: adminSecurity, addr: c.admin.addr},
		{flag: "--addr", kind: "grpc", security: securityPlaintext, addr: plain},
		{flag: "--tls-addr", kind: "grpc-tls", security: tlsSecurity, addr: tlsAddr},
	}, nil
}

// bind binds every listener that is on, in order. On the first failure it
// closes those already bound and returns an error naming the flag and the
// address.
func (ls listeners) bind() error {
	for _, l := range ls {
		if l.addr == "" {
			continue
		}
		lis, err := net.Listen("tcp", l.addr)
		if err != nil {
			ls.close()
			var op *net.OpError
			if errors.As(err, &op) && op.Err != nil {
				err = op.Err // "bind: address already in use", without repeating the address
			}
			return fmt.Errorf("%s %s: cannot listen: %w", l.flag, l.addr, err)
		}
		l.lis = lis
	}
	return nil
}

// get returns the bound listener of kind, or nil if it is off.
func (ls listeners) get(kind string) net.Listener {
	for _, l := range ls {
		if l.kind == kind && l.lis != nil {
			return l.lis
		}
	}
	return nil
}

// close closes every bound listener. Servers close the listeners they
// serve; this is for those never handed to one (an error before serving).
func (ls listeners) close() {
	for _, l := range ls {
		if l.lis != nil {
			l.lis.Close()
		}
	}
}

// announce says that kind accepts connections: a "wasm-callout: listening
// KIND ADDR" line on stdout (nil with JSON logs, which keep stdout for
// JSON only) and a log record that says how it serves.
func (ls listeners) announce(stdout io.Writer, logger *slog.Logger, kind string) {
	for _, l := range ls {
		if l.kind != kind || l.lis == nil {
			continue
		}
		if stdout != nil {
			fmt.Fprintf(stdout, "wasm-callout: listening %s %s\n", l.kind, l.lis.Addr())
		}
		logger.Info("listening", "kind", l.kind, "addr", l.lis.Addr().String(), "security", l.security, "flag", l.flag)
	}
}
