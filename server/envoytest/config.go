package envoytest

import (
	"errors"
	"fmt"
	"regexp"
	"time"

	mutationrulesv3 "github.com/envoyproxy/go-control-plane/envoy/config/common/mutation_rules/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	filterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// Defaults of the emulated filter, as in Envoy.
const (
	DefaultMessageTimeout       = 200 * time.Millisecond
	DefaultStatusOnError        = 500
	DefaultDeferredCloseTimeout = 5 * time.Second
	DefaultBufferLimit          = 1 << 20 // per_connection_buffer_limit_bytes
	DefaultMaxHeadersCount      = 100     // HCM common_http_protocol_options.max_headers_count
	DefaultMaxHeadersKB         = 60      // HCM max_request_headers_kb
)

// Route cache actions (ExternalProcessor.route_cache_action).
const (
	RouteCacheDefault = filterv3.ExternalProcessor_DEFAULT
	RouteCacheClear   = filterv3.ExternalProcessor_CLEAR
	RouteCacheRetain  = filterv3.ExternalProcessor_RETAIN
)

// Config is the emulated filter configuration: the subset of
// envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor that changes
// what the server sees or how its answers are applied. The zero value is
// Envoy's default configuration.
type Config struct {
	// ProcessingMode is the configured processing mode; nil means Envoy's
	// default (request and response headers SEND, bodies NONE, trailers
	// SKIP). Header/trailer mode DEFAULT means SEND for headers and SKIP for
	// trailers, as in Envoy.
	ProcessingMode *filterv3.ProcessingMode

	// RequestAttributes and ResponseAttributes are the values Envoy would
	// compute for the configured request_attributes / response_attributes,
	// keyed by CEL expression (e.g. "request.path"). They are sent in
	// attributes["envoy.filters.http.ext_proc"] on the first message of the
	// request and response direction respectively (an empty Struct is never
	// sent: a nil or empty map means no attributes configured). Use the
	// encoding Envoy uses: bool_value for booleans, number_value for
	// integers, string_value for everything else.
	RequestAttributes  map[string]*structpb.Value
	ResponseAttributes map[string]*structpb.Value

	// InitialMetadata is the side stream's gRPC initial metadata: the
	// filter's grpc_service.initial_metadata merged with a route's
	// ExtProcPerRoute overrides.grpc_initial_metadata (the route's win).
	InitialMetadata map[string]string

	// MetadataContext is the forwarded dynamic metadata (what
	// metadata_options.forwarding_namespaces would select). Envoy sets
	// metadata_context on every message; nil sends an empty Metadata.
	MetadataContext *corev3.Metadata

	// MessageTimeout is message_timeout; 0 means DefaultMessageTimeout.
	MessageTimeout time.Duration
	// MaxMessageTimeout is max_message_timeout; 0 disables
	// override_message_timeout (every override is ignored).
	MaxMessageTimeout time.Duration

	// FailureModeAllow is failure_mode_allow.
	FailureModeAllow bool
	// StatusOnError is status_on_error; 0 means 500.
	StatusOnError int

	// AllowModeOverride and AllowedOverrideModes are allow_mode_override and
	// allowed_override_modes.
	AllowModeOverride    bool
	AllowedOverrideModes []*filterv3.ProcessingMode

	// SendBodyWithoutWaitingForHeaderResponse is
	// send_body_without_waiting_for_header_response.
	SendBodyWithoutWaitingForHeaderResponse bool

	// ObservabilityMode is observability_mode: messages carry
	// observability_mode=true, answers are ignored and the side stream is
	// closed DeferredCloseTimeout after the request ends.
	ObservabilityMode bool
	// DeferredCloseTimeout is deferred_close_timeout; 0 means 5 s. Tests in
	// observability mode usually set it short: Do waits for it (or for the
	// server to end the stream) before returning.
	DeferredCloseTimeout time.Duration

	// BufferLimit is the stream buffer limit (Envoy's
	// per_connection_buffer_limit_bytes); 0 means 1 MiB. BUFFERED bodies over
	// it get a 413 local reply on the request path (500 on the response
	// path); BUFFERED_PARTIAL sends what it has once the queue exceeds it.
	BufferLimit int

	// MutationRules is mutation_rules; nil means the defaults (host,
	// :authority, :scheme, :method and x-envoy-* cannot be set; removing a
	// ':'-prefixed header or host is always ignored).
	MutationRules *mutationrulesv3.HeaderMutationRules

	// ReceivingNamespaces is metadata_options.receiving_namespaces.untyped:
	// only these dynamic_metadata namespaces are applied.
	ReceivingNamespaces []string

	// DisableImmediateResponse is disable_immediate_response: an
	// immediate_response is then spurious.
	DisableImmediateResponse bool

	// RouteCacheAction is route_cache_action (DEFAULT, CLEAR, RETAIN).
	RouteCacheAction filterv3.ExternalProcessor_RouteCacheAction

	// AllowContentLengthHeader is allow_content_length_header (v1.38): keep
	// content-length even in the modes where Envoy removes it.
	AllowContentLengthHeader bool

	// MaxHeadersCount and MaxHeadersKB are the HCM header limits applied to
	// mutations; 0 means 100 and 60.
	MaxHeadersCount int
	MaxHeadersKB    int

	// DisableStreamCloseOptimization turns off runtime
	// ext_proc_stream_close_optimization: the side stream is then only
	// closed when the request ends, not as soon as the last answer arrived.
	DisableStreamCloseOptimization bool

	// NoTranscript skips recording the transcript (load generation).
	NoTranscript bool
}

// compiledConfig is Config with defaults applied and regexes compiled.
type compiledConfig struct {
	Config
	mode         *filterv3.ProcessingMode
	checker      *checker
	receiving    map[string]bool
	reqAttrs     *structpb.Struct
	respAttrs    *structpb.Struct
	metadata     *corev3.Metadata
	statusOnErr  int
	msgTimeout   time.Duration
	deferedClose time.Duration
	bufferLimit  int
	maxHdrCount  int
	maxHdrBytes  int
}

func (c Config) compile() (*compiledConfig, error) {
	cc := &compiledConfig{Config: c}
	cc.mode = &filterv3.ProcessingMode{}
	if c.ProcessingMode != nil {
		cc.mode = proto.Clone(c.ProcessingMode).(*filterv3.ProcessingMode)
	}
	for _, m := range []struct {
		dir     string
		body    filterv3.ProcessingMode_BodySendMode
		trailer filterv3.ProcessingMode_HeaderSendMode
	}{
		{"request", cc.mode.GetRequestBodyMode(), cc.mode.GetRequestTrailerMode()},
		{"response", cc.mode.GetResponseBodyMode(), cc.mode.GetResponseTrailerMode()},
	} {
		switch m.body {
		case filterv3.ProcessingMode_NONE, filterv3.ProcessingMode_STREAMED, filterv3.ProcessingMode_BUFFERED,
			filterv3.ProcessingMode_BUFFERED_PARTIAL:
		case filterv3.ProcessingMode_FULL_DUPLEX_STREAMED:
			// Envoy rejects this configuration (and Envoy Gateway enforces it).
			if m.trailer != filterv3.ProcessingMode_SEND {
				return nil, fmt.Errorf("envoytest: %s body mode FULL_DUPLEX_STREAMED requires %s trailer mode SEND", m.dir, m.dir)
			}
		default:
			return nil, fmt.Errorf("envoytest: %s body mode %v is not emulated", m.dir, m.body)
		}
	}
	var err error
	if cc.checker, err = newChecker(c.MutationRules); err != nil {
		return nil, err
	}
	cc.receiving = map[string]bool{}
	for _, ns := range c.ReceivingNamespaces {
		cc.receiving[ns] = true
	}
	if len(c.RequestAttributes) > 0 {
		cc.reqAttrs = &structpb.Struct{Fields: c.RequestAttributes}
	}
	if len(c.ResponseAttributes) > 0 {
		cc.respAttrs = &structpb.Struct{Fields: c.ResponseAttributes}
	}
	cc.metadata = &corev3.Metadata{}
	if c.MetadataContext != nil {
		cc.metadata = c.MetadataContext
	}
	cc.statusOnErr = orDefault(c.StatusOnError, DefaultStatusOnError)
	if cc.statusOnErr < 200 || cc.statusOnErr > 599 {
		return nil, fmt.Errorf("envoytest: status_on_error %d out of range", cc.statusOnErr)
	}
	cc.msgTimeout = c.MessageTimeout
	if cc.msgTimeout <= 0 {
		cc.msgTimeout = DefaultMessageTimeout
	}
	cc.deferedClose = c.DeferredCloseTimeout
	if cc.deferedClose <= 0 {
		cc.deferedClose = DefaultDeferredCloseTimeout
	}
	if c.MaxMessageTimeout < 0 {
		return nil, errors.New("envoytest: negative max_message_timeout")
	}
	cc.bufferLimit = orDefault(c.BufferLimit, DefaultBufferLimit)
	cc.maxHdrCount = orDefault(c.MaxHeadersCount, DefaultMaxHeadersCount)
	cc.maxHdrBytes = orDefault(c.MaxHeadersKB, DefaultMaxHeadersKB) * 1024
	return cc, nil
}

func orDefault(v, def int) int {
	if v <= 0 {
		return def
	}
	return v
}

// checkResult is Filters::Common::MutationRules::CheckResult.
type checkResult int

const (
	checkOK checkResult = iota
	checkIgnore
	checkFail
)

// checkOp is Filters::Common::MutationRules::CheckOperation.
type checkOp int

const (
	opSet checkOp = iota
	opAppend
	opRemove
)

// checker implements Envoy's header mutation rules checker.
type checker struct {
	rules               *mutationrulesv3.HeaderMutationRules
	allowRE, disallowRE *regexp.Regexp
}

func newChecker(r *mutationrulesv3.HeaderMutationRules) (*checker, error) {
	c := &checker{rules: r}
	if r == nil {
		c.rules = &mutationrulesv3.HeaderMutationRules{}
		return c, nil
	}
	var err error
	if r.GetAllowExpression() != nil {
		if c.allowRE, err = regexp.Compile(`^(?:` + r.GetAllowExpression().GetRegex() + `)$`); err != nil {
			return nil, fmt.Errorf("envoytest: mutation_rules.allow_expression: %w", err)
		}
	}
	if r.GetDisallowExpression() != nil {
		if c.disallowRE, err = regexp.Compile(`^(?:` + r.GetDisallowExpression().GetRegex() + `)$`); err != nil {
			return nil, fmt.Errorf("envoytest: mutation_rules.disallow_expression: %w", err)
		}
	}
	return c, nil
}

func (c *checker) check(op checkOp, name, value string) checkResult {
	if c.allowed(op, name) && (op == opRemove || validValue(name, value)) {
		return checkOK
	}
	if c.rules.GetDisallowIsError().GetValue() {
		return checkFail
	}
	return checkIgnore
}

func (c *checker) allowed(op checkOp, name string) bool {
	if op == opRemove && !isModifiableHeader(name) {
		return false
	}
	if c.disallowRE != nil && c.disallowRE.MatchString(name) {
		return false
	}
	if c.allowRE != nil && c.allowRE.MatchString(name) {
		return true
	}
	if c.rules.GetDisallowAll().GetValue() {
		return false
	}
	if !c.rules.GetAllowAllRouting().GetValue() {
		switch name {
		case "host", ":authority", ":method", ":scheme":
			return false
		}
	}
	if len(name) > 0 && name[0] == ':' && (op == opAppend || c.rules.GetDisallowSystem().GetValue()) {
		return false
	}
	if !c.rules.GetAllowEnvoy().GetValue() && len(name) >= 8 && name[:8] == "x-envoy-" {
		return false
	}
	return true
}

// isModifiableHeader is Envoy's HeaderUtility::isModifiableHeader.
func isModifiableHeader(name string) bool {
	return name != "" && name[0] != ':' && name != "host"
}

// validValue is Checker::isValidValue.
func validValue(name, value string) bool {
	if (name == "" || name[0] != ':') && !headerValueValid(value) {
		return false
	}
	switch name {
	case "host", ":authority":
		return authorityValid(value)
	case ":scheme":
		return value == "http" || value == "https"
	case ":status":
		n := 0
		if value == "" || len(value) > 9 {
			return false
		}
		for _, r := range value {
			if r < '0' || r > '9' {
				return false
			}
			n = n*10 + int(r-'0')
		}
		return n >= 200
	}
	return true
}

// headerValueValid is HeaderUtility::headerValueIsValid: no NUL, CR or LF.
func headerValueValid(v string) bool {
	for i := 0; i < len(v); i++ {
		switch v[i] {
		case 0, '\r', '\n':
			return false
		}
	}
	return true
}

// headerNameValid is HeaderUtility::headerNameIsValid: an RFC 9110 token
// (upper case allowed), or ':' followed by a lower-case token.
func headerNameValid(k string) bool {
	pseudo := false
	if len(k) > 0 && k[0] == ':' {
		pseudo = true
		k = k[1:]
	}
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case c >= 'A' && c <= 'Z':
			if pseudo {
				return false
			}
		case c == '!' || c == '#' || c == '$' || c == '%' || c == '&' || c == '\'' || c == '*' ||
			c == '+' || c == '-' || c == '.' || c == '^' || c == '_' || c == '`' || c == '|' || c == '~':
		default:
			return false
		}
	}
	return true
}

// authorityValid approximates nghttp2_check_authority.
func authorityValid(v string) bool {
	if v == "" {
		return false
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		default:
			switch c {
			case '-', '.', '_', '~', '%', '!', '$', '&', '\'', '(', ')', '*', '+', ',', ';', '=', ':', '@', '[', ']':
			default:
				return false
			}
		}
	}
	return true
}
