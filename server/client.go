package server

// This file holds what differs between ext_proc clients: Envoy, and the
// proxyless gRPC clients of gRFC A93 (grpc-go's xDS ext_proc filter). They
// read header mutations differently and refuse different ones.

import (
	"encoding/base64"
	"fmt"
	"strings"

	filterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
)

// Client is the kind of ext_proc client a stream comes from.
type Client uint8

const (
	// ClientAuto decides per stream from its first message (clientOf).
	ClientAuto Client = iota
	// ClientEnvoy is Envoy's ext_proc filter: it reads only raw_value (its
	// default send_header_raw_value), and the server mirrors its mutation
	// rules (MutationRules).
	ClientEnvoy
	// ClientGRPC is a proxyless gRPC client (gRFC A93; grpc-go's xDS
	// filter): it reads value, and raw_value only for "-bin" keys, as the
	// raw bytes, and fails the whole RPC on a mutation of a pseudo-header,
	// host, a "grpc-" key, or a value that is not printable ASCII.
	ClientGRPC
)

func (c Client) String() string {
	switch c {
	case ClientEnvoy:
		return "envoy"
	case ClientGRPC:
		return "grpc"
	}
	return "auto"
}

// ParseClient parses "auto", "envoy" or "grpc".
func ParseClient(s string) (Client, error) {
	for _, c := range []Client{ClientAuto, ClientEnvoy, ClientGRPC} {
		if s == c.String() {
			return c, nil
		}
	}
	return 0, fmt.Errorf("unknown ext_proc client %q (auto, envoy or grpc)", s)
}

// clientOf tells the client from a stream's first message. A proxyless gRPC
// client (grpc-go, gRFC A93) sends flow_control_init on its first message
// unless it is in observability mode, and is the only client that asks for
// the GRPC body mode; Envoy implements neither.
func clientOf(m *extprocv3.ProcessingRequest) Client {
	pc := m.GetProtocolConfig()
	if m.GetFlowControlInit() != nil ||
		pc.GetRequestBodyMode() == filterv3.ProcessingMode_GRPC || pc.GetResponseBodyMode() == filterv3.ProcessingMode_GRPC {
		return ClientGRPC
	}
	return ClientEnvoy
}

// mutationPolicy decides how one stream's header changes are encoded and
// which are left out, for its client.
type mutationPolicy struct {
	rules  MutationRules
	client Client
}

// check returns why the client would not apply op on key with value (or
// would fail the request over it), or "" when it applies it.
func (p mutationPolicy) check(kind mapKind, op headerOp, key, value string) string {
	if p.client != ClientGRPC {
		return p.rules.check(kind, op, key, value)
	}
	// gRFC A93 / grpc-go's ApplyAdditions and ApplyRemovals: each of these
	// fails the RPC with INTERNAL, so none may be sent.
	switch {
	case !validHeaderName(key) || key[0] == ':':
		return "pseudo-header or invalid name (a gRPC client fails the RPC)"
	case key == "host":
		return "host (a gRPC client fails the RPC)"
	case strings.HasPrefix(key, "grpc-"):
		return "reserved grpc-* header (a gRPC client fails the RPC)"
	case len(key) > maxHeaderBytes || len(value) > maxHeaderBytes:
		return "header name or value longer than 16 KiB"
	case op == opRemove:
		return ""
	case strings.HasSuffix(key, "-bin"):
		if _, err := decodeBin(value); err != nil {
			return "the value of a -bin header is not base64"
		}
	case !printableASCII(value):
		return "value outside printable ASCII (a gRPC client fails the RPC)"
	}
	return ""
}

// header returns key's value in the fields the client reads: raw_value
// for Envoy; value for a gRPC client, or for its "-bin" keys raw_value
// holding the bytes the plugin's base64 text stands for (a plugin sees
// binary metadata base64-encoded, as the HTTP/2 header carries it).
func (p mutationPolicy) header(key, value string) (str string, raw []byte) {
	if p.client != ClientGRPC {
		return "", []byte(value)
	}
	if strings.HasSuffix(key, "-bin") {
		b, _ := decodeBin(value) // check refused what does not decode
		return "", b
	}
	return value, nil
}

// decodeBin decodes a binary header's value as gRPC transports write it:
// base64, padded or not.
func decodeBin(v string) ([]byte, error) {
	if b, err := base64.StdEncoding.DecodeString(v); err == nil {
		return b, nil
	}
	return base64.RawStdEncoding.DecodeString(v)
}

func printableASCII(v string) bool {
	for i := 0; i < len(v); i++ {
		if v[i] < 0x20 || v[i] > 0x7e {
			return false
		}
	}
	return true
}

// httpToGRPC maps an HTTP status to the gRPC status Envoy gives a gRPC
// request it answers locally with it (Grpc::Utility::httpToGrpcStatus,
// after the gRPC HTTP mapping document).
func httpToGRPC(httpStatus uint32) uint32 {
	switch httpStatus {
	case 400:
		return 13 // INTERNAL
	case 401:
		return 16 // UNAUTHENTICATED
	case 403:
		return 7 // PERMISSION_DENIED
	case 404:
		return 12 // UNIMPLEMENTED
	case 429, 502, 503, 504:
		return 14 // UNAVAILABLE
	}
	return 2 // UNKNOWN
}
