package server

import (
	"strings"
	"unicode/utf8"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/wasm-callout/wasm-callout/abi"
	"github.com/wasm-callout/wasm-callout/host"
)

// maxHeaderBytes is the largest header name or value a HeaderValue may
// carry (envoy.config.core.v3.HeaderValue: max_bytes 16384).
const maxHeaderBytes = 16384

// MutationRules mirror the parts of the Envoy filter's mutation_rules
// (envoy.config.common.mutation_rules.v3.HeaderMutationRules) that decide
// which header changes Envoy applies. The zero value is Envoy's default:
// host, :authority, :scheme, :method and x-envoy-* cannot be set or
// removed, and no ':'-prefixed header can be removed or given a second
// value. The server drops what Envoy would reject or ignore instead of
// sending it, so set these only when the Envoy filter is configured the
// same way.
type MutationRules struct {
	// AllowAllRouting is allow_all_routing: host, :authority, :scheme and
	// :method may be set.
	AllowAllRouting bool
	// AllowEnvoy is allow_envoy: x-envoy-* headers may be set and removed.
	AllowEnvoy bool
}

// headerOp is what a mutation does to one header.
type headerOp uint8

const (
	opSet    headerOp = iota // overwrite (or add) the first value
	opAppend                 // add another value
	opRemove                 // remove every value
)

// mapKind says whether a mutation targets a header or a trailer map.
type mapKind uint8

const (
	kindHeaders mapKind = iota
	kindTrailers
)

// droppedHeader is a change the server did not send, and why.
type droppedHeader struct {
	Key    string
	Reason string
	Class  DropReason
}

// Reasons check gives for changes Envoy would reject, failing the whole
// answer (the others it would ignore).
const (
	whyBadName   = "invalid header name"
	whyTooLong   = "header name or value longer than 16 KiB"
	whyBadValue  = "header value contains NUL, CR or LF"
	whyBadScheme = "invalid :scheme"
	whyBadStatus = "invalid :status"
	whyNoAuth    = "empty authority"
)

// drop returns the droppedHeader for key dropped because of why.
func drop(key, why string) droppedHeader {
	class := DropIgnored
	switch why {
	case whyBadName, whyTooLong, whyBadValue, whyBadScheme, whyBadStatus, whyNoAuth:
		class = DropRejected
	}
	return droppedHeader{key, why, class}
}

// check returns why Envoy would not apply op on key with value, or "" when
// it would. It follows Envoy's default mutation rules checker and
// MutationUtils validation (invalid names or values fail the whole
// response there, so they must never be sent).
func (r MutationRules) check(kind mapKind, op headerOp, key, value string) string {
	if !validHeaderName(key) {
		return whyBadName
	}
	if len(key) > maxHeaderBytes || len(value) > maxHeaderBytes {
		return whyTooLong
	}
	pseudo := key[0] == ':'
	if pseudo && kind == kindTrailers {
		return "pseudo-header in trailers"
	}
	if op != opRemove && !validHeaderValue(value) {
		return whyBadValue
	}
	switch key {
	case "host", ":authority", ":scheme", ":method":
		if op == opRemove {
			return "Envoy never removes host or pseudo-headers"
		}
		if !r.AllowAllRouting {
			return "routing header (mutation_rules.allow_all_routing is off)"
		}
	}
	if op == opRemove && pseudo {
		return "Envoy never removes pseudo-headers"
	}
	if op == opAppend && pseudo {
		return "a pseudo-header cannot have a second value"
	}
	if !r.AllowEnvoy && strings.HasPrefix(key, "x-envoy-") {
		return "x-envoy-* header (mutation_rules.allow_envoy is off)"
	}
	if op != opRemove {
		switch key {
		case ":scheme":
			if value != "http" && value != "https" {
				return whyBadScheme
			}
		case ":status":
			if !validStatus(value) {
				return whyBadStatus
			}
		case "host", ":authority":
			if value == "" {
				return whyNoAuth
			}
		}
	}
	return ""
}

// headerMutation encodes the plugin's changes to one header or trailer map
// as a HeaderMutation Envoy applies exactly: values in raw_value only; the
// first value of a changed key overwrites (append_action
// OVERWRITE_IF_EXISTS_OR_ADD, append unset: Envoy's ext_proc reads only
// append, default false, and other clients only append_action), further
// values append (APPEND_IF_EXISTS_OR_ADD with append true); a key without
// values is removed. Changes Envoy would reject or ignore are left out and
// returned in dropped. skipContentLength leaves out content-length sets
// (Envoy ignores them in the body modes where it removes content-length).
// It returns nil when nothing is left to send.
func headerMutation(changes []host.HeaderChange, kind mapKind, rules mutationPolicy, skipContentLength bool) (m *extprocv3.HeaderMutation, dropped []droppedHeader) {
	for _, ch := range changes {
		key := lowerASCII(ch.Key)
		if len(ch.Values) == 0 {
			if why := rules.check(kind, opRemove, key, ""); why != "" {
				dropped = append(dropped, drop(key, why))
				continue
			}
			if m == nil {
				m = &extprocv3.HeaderMutation{}
			}
			m.RemoveHeaders = append(m.RemoveHeaders, key)
			continue
		}
		if skipContentLength && key == "content-length" {
			dropped = append(dropped, drop(key, "Envoy removes content-length in this body mode"))
			continue
		}
		for i, v := range ch.Values {
			op := opSet
			if i > 0 {
				op = opAppend
			}
			if why := rules.check(kind, op, key, v); why != "" {
				dropped = append(dropped, drop(key, why))
				if i == 0 {
					break // without its first value the rest would append to a stale one
				}
				continue
			}
			if m == nil {
				m = &extprocv3.HeaderMutation{}
			}
			m.SetHeaders = append(m.SetHeaders, rules.headerOption(key, v, op == opAppend))
		}
	}
	return m, dropped
}

// headerOption is one set_headers entry in the portable encoding, with the
// value in the field the client reads.
func (p mutationPolicy) headerOption(key, value string, appendValue bool) *corev3.HeaderValueOption {
	str, raw := p.header(key, value)
	o := &corev3.HeaderValueOption{
		Header:       &corev3.HeaderValue{Key: key, Value: str, RawValue: raw},
		AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
	}
	if appendValue {
		o.AppendAction = corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD
		o.Append = wrapperspb.Bool(true)
	}
	return o
}

// immediateResponse turns a local response (the plugin's, or the failure
// policy's) into an ImmediateResponse. Headers keep their order; a key
// seen again appends. Pseudo-headers (the status is a field) and headers
// the mutation rules refuse are dropped.
func immediateResponse(lr *host.LocalResponse, rules mutationPolicy) (*extprocv3.ImmediateResponse, []droppedHeader) {
	ir := &extprocv3.ImmediateResponse{
		Status:  &typev3.HttpStatus{Code: typev3.StatusCode(lr.Status)},
		Body:    lr.Body,
		Details: lr.Details,
	}
	if lr.GRPCStatus >= 0 {
		ir.GrpcStatus = &extprocv3.GrpcStatus{Status: uint32(lr.GRPCStatus)}
	}
	if rules.client == ClientGRPC {
		// As Envoy answers a gRPC request locally: the status from the
		// HTTP status when the plugin gave none, the body as the message.
		if ir.GrpcStatus == nil {
			ir.GrpcStatus = &extprocv3.GrpcStatus{Status: httpToGRPC(lr.Status)}
		}
		if len(lr.Body) > 0 {
			ir.Details = strings.TrimRight(string(lr.Body), "\r\n")
		}
	}
	var dropped []droppedHeader
	seen := map[string]bool{}
	for _, p := range lr.Headers {
		key := lowerASCII(p.Key)
		if strings.HasPrefix(key, ":") {
			dropped = append(dropped, drop(key, "pseudo-header in a local response"))
			continue
		}
		op := opSet
		if seen[key] {
			op = opAppend
		}
		if why := rules.check(kindHeaders, op, key, p.Value); why != "" {
			dropped = append(dropped, drop(key, why))
			continue
		}
		seen[key] = true
		if ir.Headers == nil {
			ir.Headers = &extprocv3.HeaderMutation{}
		}
		ir.Headers.SetHeaders = append(ir.Headers.SetHeaders, rules.headerOption(key, p.Value, op == opAppend))
	}
	return ir, dropped
}

// bodyMutation replaces a body (or a STREAMED chunk) with out: clear_body
// when out is empty, else body.
func bodyMutation(out []byte) *extprocv3.BodyMutation {
	if len(out) == 0 {
		return &extprocv3.BodyMutation{Mutation: &extprocv3.BodyMutation_ClearBody{ClearBody: true}}
	}
	return &extprocv3.BodyMutation{Mutation: &extprocv3.BodyMutation_Body{Body: out}}
}

// streamedBody is a FULL_DUPLEX_STREAMED body answer.
func streamedBody(out []byte, eos bool) *extprocv3.BodyMutation {
	return &extprocv3.BodyMutation{Mutation: &extprocv3.BodyMutation_StreamedResponse{
		StreamedResponse: &extprocv3.StreamedBodyResponse{Body: out, EndOfStream: eos},
	}}
}

// pairsFromProto converts Envoy's header map to plugin pairs: raw_value
// when set (Envoy's default), else value; keys lower-cased.
func pairsFromProto(m *corev3.HeaderMap) []abi.Pair {
	hs := m.GetHeaders()
	pairs := make([]abi.Pair, len(hs))
	for i, h := range hs {
		v := string(h.GetRawValue())
		if len(h.GetRawValue()) == 0 {
			v = h.GetValue()
		}
		pairs[i] = abi.Pair{Key: lowerASCII(h.GetKey()), Value: v}
	}
	return pairs
}

// validHeaderName is Envoy's HeaderUtility::headerNameIsValid for
// lower-case names: an RFC 9110 token, or ':' and a token.
func validHeaderName(k string) bool {
	k = strings.TrimPrefix(k, ":")
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		switch {
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// validHeaderValue is HeaderUtility::headerValueIsValid: no NUL, CR or LF.
func validHeaderValue(v string) bool {
	return strings.IndexAny(v, "\x00\r\n") < 0
}

// validStatus accepts what Envoy accepts in a :status mutation: 3 to 9
// digits with a value of at least 200.
func validStatus(v string) bool {
	if len(v) < 3 || len(v) > 9 {
		return false
	}
	n := 0
	for i := 0; i < len(v); i++ {
		if v[i] < '0' || v[i] > '9' {
			return false
		}
		n = n*10 + int(v[i]-'0')
	}
	return n >= 200
}

// lowerASCII lower-cases a header name without allocating when it already
// is lower case.
func lowerASCII(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; 'A' <= c && c <= 'Z' {
			return strings.ToLower(s)
		}
	}
	return s
}

// DefaultMetadataNamespace is the dynamic metadata namespace that carries
// the plugin's proxy_set_property writes when Options.MetadataNamespace is
// empty. Envoy applies it only if the filter lists it in
// metadata_options.receiving_namespaces.untyped.
const DefaultMetadataNamespace = "envoy.filters.http.wasm"

// propertyMetadata turns the property writes not sent yet (new keys, or
// keys whose value changed since sent) into dynamic_metadata: one Struct
// under ns, keyed by the dotted property path, each value a string. sent is
// updated. Values that are not valid UTF-8 cannot be a protobuf string and
// are returned in skipped. It returns nil when there is nothing new.
func propertyMetadata(ns string, writes map[string][]byte, sent map[string]string) (md *structpb.Struct, skipped []string) {
	var fields map[string]*structpb.Value
	for _, k := range sortedKeys(writes) {
		v := writes[k]
		if old, ok := sent[k]; ok && old == string(v) {
			continue
		}
		sent[k] = string(v)
		if !utf8.Valid(v) || !utf8.ValidString(k) {
			skipped = append(skipped, k)
			continue
		}
		if fields == nil {
			fields = map[string]*structpb.Value{}
		}
		fields[k] = structpb.NewStringValue(string(v))
	}
	if fields == nil {
		return nil, skipped
	}
	return &structpb.Struct{Fields: map[string]*structpb.Value{
		ns: structpb.NewStructValue(&structpb.Struct{Fields: fields}),
	}}, skipped
}
