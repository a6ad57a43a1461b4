package envoytest

import (
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// Header is one header field. Keys of headers given to the emulator must be
// lower-case (as Envoy's header maps are); pseudo-headers start with ':'.
type Header struct {
	Key   string
	Value string
}

// Headers is an ordered header map that may hold a key more than once, like
// Envoy's HeaderMap. Pseudo-headers are kept before regular headers.
type Headers []Header

// H builds Headers from alternating keys and values. A trailing key without a
// value gets the empty value.
func H(kv ...string) Headers {
	h := make(Headers, 0, (len(kv)+1)/2)
	for i := 0; i < len(kv); i += 2 {
		v := ""
		if i+1 < len(kv) {
			v = kv[i+1]
		}
		h = append(h, Header{Key: kv[i], Value: v})
	}
	return h
}

// Get returns the first value of key and whether key is present.
func (h Headers) Get(key string) (string, bool) {
	for _, f := range h {
		if f.Key == key {
			return f.Value, true
		}
	}
	return "", false
}

// Values returns every value of key, in order.
func (h Headers) Values(key string) []string {
	var vs []string
	for _, f := range h {
		if f.Key == key {
			vs = append(vs, f.Value)
		}
	}
	return vs
}

// Has reports whether key is present.
func (h Headers) Has(key string) bool {
	_, ok := h.Get(key)
	return ok
}

// Clone returns a copy of h (nil stays nil).
func (h Headers) Clone() Headers {
	if h == nil {
		return nil
	}
	return append(Headers{}, h...)
}

// String renders h as "k: v" lines, for messages.
func (h Headers) String() string {
	var b strings.Builder
	for i, f := range h {
		if i > 0 {
			b.WriteString("\n")
		}
		b.WriteString(f.Key)
		b.WriteString(": ")
		b.WriteString(f.Value)
	}
	return b.String()
}

// byteSize is Envoy's HeaderMap::byteSize: the sum of key and value lengths.
func (h Headers) byteSize() int {
	n := 0
	for _, f := range h {
		n += len(f.Key) + len(f.Value)
	}
	return n
}

// remove deletes every field named key.
func (h *Headers) remove(key string) {
	out := (*h)[:0]
	for _, f := range *h {
		if f.Key != key {
			out = append(out, f)
		}
	}
	*h = out
}

// add appends a field, keeping pseudo-headers before regular ones.
func (h *Headers) add(key, value string) {
	if strings.HasPrefix(key, ":") {
		i := 0
		for i < len(*h) && strings.HasPrefix((*h)[i].Key, ":") {
			i++
		}
		*h = append(*h, Header{})
		copy((*h)[i+1:], (*h)[i:])
		(*h)[i] = Header{Key: key, Value: value}
		return
	}
	*h = append(*h, Header{Key: key, Value: value})
}

// set replaces the first field named key (dropping the others) or adds it.
func (h *Headers) set(key, value string) {
	for i, f := range *h {
		if f.Key == key {
			(*h)[i].Value = value
			rest := (*h)[:i+1]
			for _, g := range (*h)[i+1:] {
				if g.Key != key {
					rest = append(rest, g)
				}
			}
			*h = rest
			return
		}
	}
	h.add(key, value)
}

// toProto converts h the way Envoy's MutationUtils::headersToProto does with
// send_header_raw_value on: key plus raw_value, value left empty.
func (h Headers) toProto() *corev3.HeaderMap {
	m := &corev3.HeaderMap{Headers: make([]*corev3.HeaderValue, 0, len(h))}
	for _, f := range h {
		m.Headers = append(m.Headers, &corev3.HeaderValue{Key: f.Key, RawValue: []byte(f.Value)})
	}
	return m
}

// HeadersFromProto converts a HeaderMap as a server would read it: raw_value
// when set, otherwise value.
func HeadersFromProto(m *corev3.HeaderMap) Headers {
	if m == nil {
		return nil
	}
	h := make(Headers, 0, len(m.GetHeaders()))
	for _, hv := range m.GetHeaders() {
		v := string(hv.GetRawValue())
		if len(hv.GetRawValue()) == 0 {
			v = hv.GetValue()
		}
		h = append(h, Header{Key: hv.GetKey(), Value: v})
	}
	return h
}
