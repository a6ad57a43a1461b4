package host

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/wasm-callout/wasm-callout/abi"
)

// LocalInfo is what Envoy knows without a request: its bootstrap node and
// the listener the filter is configured on, which it answers in every
// context (proxy_on_vm_start and proxy_on_configure included), and the
// upstream cluster, which it answers only for a stream. A stream asks what
// Envoy sent first; these answer what it did not. The messages must not
// change once the plugin is loaded.
type LocalInfo struct {
	// Node is the bootstrap node: the properties node and xds.node, and
	// every path below them (node.id, node.metadata.NAME, …).
	Node *corev3.Node
	// ListenerDirection, if set, is listener_direction and
	// xds.listener_direction (int64 of the TrafficDirection enum).
	ListenerDirection *corev3.TrafficDirection
	// ListenerMetadata is listener_metadata and xds.listener_metadata.
	ListenerMetadata *corev3.Metadata
	// ClusterName and ClusterMetadata are cluster_name and
	// cluster_metadata (and their xds.* names) in streams only: Envoy
	// knows the upstream cluster only for a request.
	ClusterName     string
	ClusterMetadata *corev3.Metadata
}

// property answers a canonical (xds.*) path, or false. inStream is whether
// a stream is the effective context.
func (l *LocalInfo) property(path []string, inStream bool) ([]byte, bool) {
	if l == nil || len(path) < 2 || path[0] != "xds" {
		return nil, false
	}
	rest := path[2:]
	switch path[1] {
	case "node":
		if l.Node != nil {
			return messageProperty(l.Node.ProtoReflect(), rest)
		}
	case "listener_direction":
		if l.ListenerDirection != nil && len(rest) == 0 {
			return abi.EncodeInt64(int64(*l.ListenerDirection)), true
		}
	case "listener_metadata":
		if l.ListenerMetadata != nil {
			return messageProperty(l.ListenerMetadata.ProtoReflect(), rest)
		}
	case "cluster_name":
		if inStream && l.ClusterName != "" && len(rest) == 0 {
			return []byte(l.ClusterName), true
		}
	case "cluster_metadata":
		if inStream && l.ClusterMetadata != nil {
			return messageProperty(l.ClusterMetadata.ProtoReflect(), rest)
		}
	}
	return nil, false
}

// messageProperty walks rest into a message the way Envoy's getProperty
// walks a CEL value (source/extensions/common/wasm/context.cc): a message
// by field name (the proto name, not the JSON one), a map by key, a list by
// decimal index. The value reached is encoded as Envoy's serializeValue
// encodes it: a message as its serialized bytes, a map or a list as a pair
// serialization, scalars in their binary forms. Well-known types are first
// unwrapped as CEL unwraps them: a Struct is a map, a Value its content, a
// wrapper its scalar, a Timestamp or Duration int64 nanoseconds, an Any
// the message it holds.
func messageProperty(m protoreflect.Message, rest []string) ([]byte, bool) {
	if !m.IsValid() {
		return nil, false
	}
	name := m.Descriptor().FullName()
	switch {
	case name == "google.protobuf.Struct" || name == "google.protobuf.Value" || name == "google.protobuf.ListValue":
		return structProperty(m, rest)
	case name == "google.protobuf.Timestamp" || name == "google.protobuf.Duration":
		if len(rest) > 0 {
			return nil, false
		}
		fields := m.Descriptor().Fields()
		secs := m.Get(fields.ByName("seconds")).Int()
		nanos := m.Get(fields.ByName("nanos")).Int()
		return abi.EncodeInt64(secs*1e9 + nanos), true
	case wrapperTypes[name]:
		fd := m.Descriptor().Fields().ByName("value")
		return scalarProperty(fd, m.Get(fd), rest)
	case name == "google.protobuf.Any":
		a, ok := m.Interface().(*anypb.Any)
		if !ok {
			return nil, false
		}
		inner, err := a.UnmarshalNew()
		if err != nil {
			return nil, false // CEL cannot resolve it either
		}
		return messageProperty(inner.ProtoReflect(), rest)
	}
	if len(rest) == 0 {
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m.Interface())
		if err != nil {
			return nil, false
		}
		if b == nil {
			b = []byte{} // an empty message is there, with no bytes
		}
		return b, true
	}
	fd := m.Descriptor().Fields().ByName(protoreflect.Name(rest[0]))
	if fd == nil {
		return nil, false
	}
	v, rest := m.Get(fd), rest[1:]
	switch {
	case fd.Message() != nil && wrapperTypes[fd.Message().FullName()] && !m.Has(fd):
		return nil, false // CEL reads an unset wrapper as null
	case fd.IsMap():
		return mapFieldProperty(fd, v.Map(), rest)
	case fd.IsList():
		return listFieldProperty(fd, v.List(), rest)
	}
	return fieldValueProperty(fd, v, rest)
}

// MessageProperty answers the property at path inside m as Envoy's
// getProperty answers it inside a message-valued attribute: walked and
// encoded as messageProperty says. A server uses it for what Envoy sends as
// messages (metadata_context, Struct attributes).
func MessageProperty(m proto.Message, path []string) ([]byte, bool) {
	return messageProperty(m.ProtoReflect(), path)
}

// wrapperTypes are the wrappers CEL reads as their scalar.
var wrapperTypes = map[protoreflect.FullName]bool{
	"google.protobuf.BoolValue": true, "google.protobuf.Int32Value": true, "google.protobuf.Int64Value": true,
	"google.protobuf.UInt32Value": true, "google.protobuf.UInt64Value": true, "google.protobuf.FloatValue": true,
	"google.protobuf.DoubleValue": true, "google.protobuf.StringValue": true, "google.protobuf.BytesValue": true,
}

// fieldValueProperty is one value of field fd: a singular field's, a list
// element or a map value.
func fieldValueProperty(fd protoreflect.FieldDescriptor, v protoreflect.Value, rest []string) ([]byte, bool) {
	if fd.Kind() == protoreflect.MessageKind || fd.Kind() == protoreflect.GroupKind {
		return messageProperty(v.Message(), rest)
	}
	return scalarProperty(fd, v, rest)
}

// scalarProperty encodes a scalar as CEL types it: every signed integer
// and enum as int64, every unsigned one as uint64, float and double as
// double.
func scalarProperty(fd protoreflect.FieldDescriptor, v protoreflect.Value, rest []string) ([]byte, bool) {
	if len(rest) > 0 {
		return nil, false
	}
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return abi.EncodeBool(v.Bool()), true
	case protoreflect.EnumKind:
		return abi.EncodeInt64(int64(v.Enum())), true
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind,
		protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return abi.EncodeInt64(v.Int()), true
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind, protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return abi.EncodeUint64(v.Uint()), true
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		return abi.EncodeDouble(v.Float()), true
	case protoreflect.StringKind:
		return []byte(v.String()), true
	case protoreflect.BytesKind:
		return append([]byte{}, v.Bytes()...), true
	}
	return nil, false
}

// mapFieldProperty is a map field: walked by key (a CEL map looked up with
// a string, so only string-keyed maps have entries to walk to), or the
// whole map as pairs, keys sorted so the bytes are stable (Envoy's order is
// the map's own).
func mapFieldProperty(fd protoreflect.FieldDescriptor, m protoreflect.Map, rest []string) ([]byte, bool) {
	kd, vd := fd.MapKey(), fd.MapValue()
	if len(rest) > 0 {
		if kd.Kind() != protoreflect.StringKind {
			return nil, false
		}
		v := m.Get(protoreflect.ValueOfString(rest[0]).MapKey())
		if !v.IsValid() {
			return nil, false
		}
		return fieldValueProperty(vd, v, rest[1:])
	}
	type entry struct {
		key   string
		value []byte
	}
	var entries []entry
	m.Range(func(k protoreflect.MapKey, v protoreflect.Value) bool {
		kb, ok := scalarProperty(kd, k.Value(), nil)
		if !ok {
			return true
		}
		if vb, ok := fieldValueProperty(vd, v, nil); ok {
			entries = append(entries, entry{string(kb), vb})
		}
		return true
	})
	slices.SortFunc(entries, func(a, b entry) int { return strings.Compare(a.key, b.key) })
	pairs := make([]abi.Pair, len(entries))
	for i, e := range entries {
		pairs[i] = abi.Pair{Key: e.key, Value: string(e.value)}
	}
	return abi.EncodeMap(pairs), true
}

// listFieldProperty is a repeated field: walked by index, or the whole list
// as pairs with each element as a key.
func listFieldProperty(fd protoreflect.FieldDescriptor, l protoreflect.List, rest []string) ([]byte, bool) {
	if len(rest) > 0 {
		i, err := strconv.Atoi(rest[0])
		if err != nil || i < 0 || i >= l.Len() {
			return nil, false
		}
		return fieldValueProperty(fd, l.Get(i), rest[1:])
	}
	items := make([]string, 0, l.Len())
	for i := range l.Len() {
		if b, ok := fieldValueProperty(fd, l.Get(i), nil); ok {
			items = append(items, string(b))
		}
	}
	return abi.EncodeList(items), true
}

// structProperty answers a Struct, Value or ListValue, which CEL sees as a
// map, a dynamic value and a list.
func structProperty(m protoreflect.Message, rest []string) ([]byte, bool) {
	var v *structpb.Value
	switch x := m.Interface().(type) {
	case *structpb.Struct:
		v = structpb.NewStructValue(x)
	case *structpb.Value:
		v = x
	case *structpb.ListValue:
		v = structpb.NewListValue(x)
	default:
		return nil, false
	}
	for _, seg := range rest {
		switch k := v.GetKind().(type) {
		case *structpb.Value_StructValue:
			var ok bool
			if v, ok = k.StructValue.GetFields()[seg]; !ok {
				return nil, false
			}
		case *structpb.Value_ListValue:
			i, err := strconv.Atoi(seg)
			if err != nil || i < 0 || i >= len(k.ListValue.GetValues()) {
				return nil, false
			}
			v = k.ListValue.GetValues()[i]
		default:
			return nil, false
		}
	}
	return encodeStructValue(v)
}

// encodeStructValue encodes a google.protobuf.Value as Envoy serializes
// its CEL value: strings raw, numbers as doubles, booleans one byte,
// structs as maps and lists as lists. A null is absent: Envoy cannot
// serialize it (SERIALIZATION_FAILURE, and so for any map or list holding
// one); here it is NOT_FOUND alone and left out of maps and lists.
func encodeStructValue(v *structpb.Value) ([]byte, bool) {
	switch k := v.GetKind().(type) {
	case *structpb.Value_StringValue:
		return []byte(k.StringValue), true
	case *structpb.Value_NumberValue:
		return abi.EncodeDouble(k.NumberValue), true
	case *structpb.Value_BoolValue:
		return abi.EncodeBool(k.BoolValue), true
	case *structpb.Value_StructValue:
		fields := k.StructValue.GetFields()
		keys := make([]string, 0, len(fields))
		for key := range fields {
			keys = append(keys, key)
		}
		slices.Sort(keys)
		pairs := make([]abi.Pair, 0, len(keys))
		for _, key := range keys {
			if b, ok := encodeStructValue(fields[key]); ok {
				pairs = append(pairs, abi.Pair{Key: key, Value: string(b)})
			}
		}
		return abi.EncodeMap(pairs), true
	case *structpb.Value_ListValue:
		items := make([]string, 0, len(k.ListValue.GetValues()))
		for _, e := range k.ListValue.GetValues() {
			if b, ok := encodeStructValue(e); ok {
				items = append(items, string(b))
			}
		}
		return abi.EncodeList(items), true
	}
	return nil, false
}

// ParseNode decodes an envoy.config.core.v3.Node given as YAML or JSON (as
// in an Envoy bootstrap's node: section), strictly: an unknown field or a
// value Envoy's validation refuses is an error.
func ParseNode(data []byte) (*corev3.Node, error) {
	n := &corev3.Node{}
	if err := parseMessage(data, n); err != nil {
		return nil, err
	}
	return n, nil
}

// ParseMetadata decodes an envoy.config.core.v3.Metadata (filter_metadata:
// {NAMESPACE: {...}}) given as YAML or JSON, strictly.
func ParseMetadata(data []byte) (*corev3.Metadata, error) {
	md := &corev3.Metadata{}
	if err := parseMessage(data, md); err != nil {
		return nil, err
	}
	return md, nil
}

// ParseTrafficDirection parses a listener direction: inbound, outbound or
// unspecified, in any case.
func ParseTrafficDirection(s string) (corev3.TrafficDirection, error) {
	v, ok := corev3.TrafficDirection_value[strings.ToUpper(s)]
	if !ok {
		return 0, fmt.Errorf("%q: want inbound, outbound or unspecified", s)
	}
	return corev3.TrafficDirection(v), nil
}

// parseMessage decodes JSON, or YAML converted as Envoy converts its YAML
// bootstrap, with protojson (unknown fields are errors), then runs the
// message's protoc-gen-validate rules, as Envoy validates its bootstrap.
func parseMessage(data []byte, m interface {
	proto.Message
	ValidateAll() error
}) error {
	name := m.ProtoReflect().Descriptor().FullName()
	js := data
	if !json.Valid(data) {
		var doc yaml.Node
		if err := yaml.Unmarshal(data, &doc); err != nil {
			return fmt.Errorf("not YAML or JSON: %w", err)
		}
		v, err := yamlValue(&doc)
		if err != nil {
			return err
		}
		if js, err = protojson.Marshal(v); err != nil {
			return err
		}
	}
	if t := strings.TrimSpace(string(js)); t == "null" || t == "" {
		return fmt.Errorf("empty: want an %s", name)
	}
	if err := protojson.Unmarshal(js, m); err != nil {
		if !json.Valid(data) {
			// protojson's positions are in the JSON made from the YAML.
			err = errors.New(jsonPosition.ReplaceAllString(err.Error(), ""))
		}
		var top map[string]json.RawMessage
		if name == "envoy.config.core.v3.Node" && json.Unmarshal(js, &top) == nil && top["node"] != nil {
			return fmt.Errorf("not an %s (%w); this looks like a whole Envoy bootstrap: give its node: section", name, err)
		}
		return fmt.Errorf("not an %s: %w", name, err)
	}
	if err := m.ValidateAll(); err != nil {
		return fmt.Errorf("invalid %s: %w", name, err)
	}
	return nil
}

// jsonPosition is where protojson says an error is.
var jsonPosition = regexp.MustCompile(`\(line \d+:\d+\): `)

// yamlValue converts a YAML document as Envoy's parseYamlNode does
// (source/common/protobuf/yaml_utility.cc), so that node metadata gets the
// types it gets in Envoy: a quoted scalar is a string; a plain one is null,
// a boolean (yaml-cpp's y/yes/true/on and n/no/false/off), an integer
// (a number within int32, its decimal string beyond), or else a string,
// floats included (protojson still reads "0.5" into a double field). Keys
// are strings as written.
func yamlValue(n *yaml.Node) (*structpb.Value, error) {
	switch n.Kind {
	case 0:
		return structpb.NewNullValue(), nil
	case yaml.DocumentNode:
		if len(n.Content) == 0 {
			return structpb.NewNullValue(), nil
		}
		return yamlValue(n.Content[0])
	case yaml.AliasNode:
		return yamlValue(n.Alias)
	case yaml.SequenceNode:
		l := &structpb.ListValue{}
		for _, c := range n.Content {
			v, err := yamlValue(c)
			if err != nil {
				return nil, err
			}
			l.Values = append(l.Values, v)
		}
		return structpb.NewListValue(l), nil
	case yaml.MappingNode:
		st := &structpb.Struct{Fields: map[string]*structpb.Value{}}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			if k.Tag == "!ignore" {
				continue
			}
			v, err := yamlValue(n.Content[i+1])
			if err != nil {
				return nil, err
			}
			st.Fields[k.Value] = v
		}
		return structpb.NewStructValue(st), nil
	case yaml.ScalarNode:
		if n.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle|yaml.LiteralStyle|yaml.FoldedStyle) != 0 ||
			(n.Style&yaml.TaggedStyle != 0 && n.Tag == "!!str") {
			return structpb.NewStringValue(n.Value), nil
		}
		if n.Tag == "!!null" {
			return structpb.NewNullValue(), nil
		}
		if b, ok := yamlCppBool(n.Value); ok {
			return structpb.NewBoolValue(b), nil
		}
		if i, ok := yamlCppInt(n.Value); ok {
			if i >= math.MinInt32 && i <= math.MaxInt32 {
				return structpb.NewNumberValue(float64(i)), nil
			}
			return structpb.NewStringValue(strconv.FormatInt(i, 10)), nil
		}
		return structpb.NewStringValue(n.Value), nil
	}
	return nil, fmt.Errorf("line %d: unsupported YAML node", n.Line)
}

// yamlCppBool is yaml-cpp's convert<bool>: y, yes, true, on and n, no,
// false, off, in lower case, upper case or capitalized.
func yamlCppBool(s string) (bool, bool) {
	lower := strings.ToLower(s)
	if s != lower && s != strings.ToUpper(s) && s != strings.ToUpper(s[:1])+lower[1:] {
		return false, false
	}
	switch lower {
	case "y", "yes", "true", "on":
		return true, true
	case "n", "no", "false", "off":
		return false, true
	}
	return false, false
}

// yamlCppInt is yaml-cpp's convert<int64_t>: decimal, or 0x hexadecimal,
// or 0o octal.
func yamlCppInt(s string) (int64, bool) {
	base, digits := 10, s
	if len(s) > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'o') {
		base, digits = map[byte]int{'x': 16, 'o': 8}[s[1]], s[2:]
	}
	if digits == "" || strings.ContainsAny(digits, "_ ") || (base != 10 && strings.ContainsAny(digits[:1], "+-")) {
		return 0, false
	}
	i, err := strconv.ParseInt(digits, base, 64)
	return i, err == nil
}
