package engine

import (
	"net"
	"strconv"
	"strings"

	"github.com/corazawaf/coraza/v3"
	"github.com/corazawaf/coraza/v3/types"
)

// Tx is the transaction of one HTTP exchange. Its methods take headers as
// proxy-wasm gives them (pseudo-headers such as :method, :path and
// :authority first) and return the interruption the rules decided, if any.
type Tx struct {
	types.Transaction
}

// Begin starts a transaction on waf.
func Begin(waf coraza.WAF) *Tx { return &Tx{waf.NewTransaction()} }

// RequestHeaders runs phase 1: the connection (client and server
// "host:port", either may be empty), the URI and the request headers.
func (t *Tx) RequestHeaders(headers [][2]string, protocol, client, server string) *types.Interruption {
	cIP, cPort := splitAddr(client)
	sIP, sPort := splitAddr(server)
	t.ProcessConnection(cIP, cPort, sIP, sPort)
	var method, path, authority string
	for _, h := range headers {
		switch h[0] {
		case ":method":
			method = h[1]
		case ":path":
			path = h[1]
		case ":authority":
			authority = h[1]
		}
		if !strings.HasPrefix(h[0], ":") {
			t.AddRequestHeader(h[0], h[1])
		}
	}
	if protocol == "" {
		protocol = "HTTP/1.1"
	}
	t.ProcessURI(path, method, protocol)
	if authority != "" {
		// HTTP/2 carries the host in :authority; the rules read Host.
		t.AddRequestHeader("Host", authority)
		host, _ := splitHostPort(authority)
		t.SetServerName(host)
	}
	return t.ProcessRequestHeaders()
}

// RequestBody runs phase 2 over the whole request body (nil when the
// request has none).
func (t *Tx) RequestBody(body []byte) (*types.Interruption, error) {
	if len(body) > 0 && t.IsRequestBodyAccessible() {
		if it, _, err := t.WriteRequestBody(body); it != nil || err != nil {
			return it, err
		}
	}
	return t.ProcessRequestBody()
}

// ResponseHeaders runs phase 3 over the response headers (:status among
// them).
func (t *Tx) ResponseHeaders(headers [][2]string, protocol string) *types.Interruption {
	status := 0
	for _, h := range headers {
		if h[0] == ":status" {
			status, _ = strconv.Atoi(h[1])
			continue
		}
		if !strings.HasPrefix(h[0], ":") {
			t.AddResponseHeader(h[0], h[1])
		}
	}
	if protocol == "" {
		protocol = "HTTP/1.1"
	}
	return t.ProcessResponseHeaders(status, protocol)
}

// ResponseBody runs phase 4 over the whole response body (nil when the
// response has none).
func (t *Tx) ResponseBody(body []byte) (*types.Interruption, error) {
	if len(body) > 0 && t.IsResponseBodyProcessable() {
		if it, _, err := t.WriteResponseBody(body); it != nil || err != nil {
			return it, err
		}
	}
	return t.ProcessResponseBody()
}

// Done runs phase 5 (logging) and releases the transaction.
func (t *Tx) Done() {
	t.ProcessLogging()
	t.Close()
}

// MatchedRuleIDs returns the ids of the rules that matched and have a
// message, and of the interrupting rule (the ones a reader of a block
// wants), in match order.
func (t *Tx) MatchedRuleIDs() []int {
	var ids []int
	interrupting := -1
	if it := t.Interruption(); it != nil {
		interrupting = it.RuleID
	}
	for _, mr := range t.MatchedRules() {
		if id := mr.Rule().ID(); id != 0 && (mr.Message() != "" || id == interrupting) {
			ids = append(ids, id)
		}
	}
	return ids
}

// Status is the HTTP status a client gets for an interruption: its own,
// or 403.
func Status(it *types.Interruption) int {
	if it.Status >= 200 && it.Status <= 599 {
		return it.Status
	}
	return 403
}

func splitAddr(addr string) (string, int) {
	host, port := splitHostPort(addr)
	p, _ := strconv.Atoi(port)
	return host, p
}

func splitHostPort(addr string) (string, string) {
	if host, port, err := net.SplitHostPort(addr); err == nil {
		return host, port
	}
	return addr, ""
}
