package plugintest

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/wasm-callout/wasm-callout/internal/plugintest/specpb"
)

// Spec is one parsed spec file.
type Spec struct {
	// Path is the file the spec came from; relative paths in it (input
	// and matcher files, env.wasm_path, env.config_path) are resolved
	// from its directory.
	Path  string
	Suite *specpb.TestSuite
}

// Dir is the directory relative paths in the spec are taken from.
func (s *Spec) Dir() string {
	if s.Path == "" {
		return "."
	}
	return filepath.Dir(s.Path)
}

// Resolve returns p relative to the spec's directory unless it is absolute.
func (s *Spec) Resolve(p string) string {
	if filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(s.Dir(), p)
}

// ReadSpec reads and validates a spec file: YAML if its name ends in .yaml
// or .yml, protobuf text otherwise.
func ReadSpec(path string) (*Spec, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var suite *specpb.TestSuite
	switch strings.ToLower(filepath.Ext(path)) {
	case ".yaml", ".yml":
		suite, err = ParseYAML(data)
	default:
		suite, err = ParseText(data)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if err := Validate(suite); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &Spec{Path: path, Suite: suite}, nil
}

// ParseText parses a TestSuite in protobuf text format. Unknown fields are
// an error.
func ParseText(data []byte) (*specpb.TestSuite, error) {
	var s specpb.TestSuite
	if err := prototext.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("text spec: %w", err)
	}
	return &s, nil
}

// maxYAMLNodes bounds the nodes a YAML spec may expand to, aliases
// included, so that a spec cannot blow up through nested aliases.
const maxYAMLNodes = 1 << 20

// ParseYAML parses a TestSuite written in YAML with the format's field
// names. As in Google's tester, the bytes fields (value, exact, content)
// are written as plain strings, and booleans and numbers may be quoted.
// Unknown fields and values of the wrong shape are errors naming where
// they are.
func ParseYAML(data []byte) (*specpb.TestSuite, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("yaml spec: %w", err)
	}
	var s specpb.TestSuite
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return &s, nil // empty document
	}
	c := yamlConv{budget: maxYAMLNodes}
	v, err := c.message(doc.Content[0], s.ProtoReflect().Descriptor(), "")
	if err != nil {
		return nil, fmt.Errorf("yaml spec: %w", err)
	}
	js, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("yaml spec: %w", err)
	}
	if err := protojson.Unmarshal(js, &s); err != nil {
		return nil, fmt.Errorf("yaml spec: %w", err)
	}
	return &s, nil
}

// yamlConv turns a YAML tree into the JSON protojson reads, guided by the
// message descriptors, so that every scalar gets the JSON type its field
// needs.
type yamlConv struct{ budget int }

func (c *yamlConv) node(n *yaml.Node, path string) (*yaml.Node, error) {
	for n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	c.budget--
	if c.budget < 0 {
		return nil, fmt.Errorf("%s: spec too large (more than %d nodes after aliases)", where(path), maxYAMLNodes)
	}
	return n, nil
}

func where(path string) string {
	if path == "" {
		return "top level"
	}
	return path
}

func (c *yamlConv) message(n *yaml.Node, md protoreflect.MessageDescriptor, path string) (map[string]any, error) {
	n, err := c.node(n, path)
	if err != nil {
		return nil, err
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return map[string]any{}, nil
	}
	if n.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("%s (line %d): want a mapping for %s", where(path), n.Line, md.Name())
	}
	out := make(map[string]any, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, err := c.node(n.Content[i], path)
		if err != nil {
			return nil, err
		}
		name := k.Value
		fd := md.Fields().ByName(protoreflect.Name(name))
		if fd == nil {
			fd = md.Fields().ByJSONName(name)
		}
		fpath := name
		if path != "" {
			fpath = path + "." + name
		}
		if fd == nil {
			return nil, fmt.Errorf("%s (line %d): unknown field %q in %s", fpath, k.Line, name, md.Name())
		}
		v, err := c.field(n.Content[i+1], fd, fpath)
		if err != nil {
			return nil, err
		}
		if v != nil {
			out[string(fd.Name())] = v
		}
	}
	return out, nil
}

func (c *yamlConv) field(n *yaml.Node, fd protoreflect.FieldDescriptor, path string) (any, error) {
	n, err := c.node(n, path)
	if err != nil {
		return nil, err
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return nil, nil
	}
	if fd.IsList() {
		if n.Kind != yaml.SequenceNode {
			return nil, fmt.Errorf("%s (line %d): want a list", path, n.Line)
		}
		out := make([]any, 0, len(n.Content))
		for i, e := range n.Content {
			v, err := c.single(e, fd, fmt.Sprintf("%s[%d]", path, i))
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
		return out, nil
	}
	return c.single(n, fd, path)
}

func (c *yamlConv) single(n *yaml.Node, fd protoreflect.FieldDescriptor, path string) (any, error) {
	n, err := c.node(n, path)
	if err != nil {
		return nil, err
	}
	if fd.Kind() == protoreflect.MessageKind {
		return c.message(n, fd.Message(), path)
	}
	if n.Kind != yaml.ScalarNode {
		return nil, fmt.Errorf("%s (line %d): want a scalar value", path, n.Line)
	}
	s := n.Value
	switch fd.Kind() {
	case protoreflect.BytesKind:
		return base64.StdEncoding.EncodeToString([]byte(s)), nil
	case protoreflect.StringKind:
		return s, nil
	case protoreflect.BoolKind:
		switch s {
		case "true", "True", "TRUE":
			return true, nil
		case "false", "False", "FALSE":
			return false, nil
		}
		return nil, fmt.Errorf("%s (line %d): want true or false, got %q", path, n.Line, s)
	case protoreflect.EnumKind:
		if fd.Enum().Values().ByName(protoreflect.Name(s)) != nil {
			return s, nil
		}
		if i, err := strconv.ParseInt(s, 10, 32); err == nil && fd.Enum().Values().ByNumber(protoreflect.EnumNumber(i)) != nil {
			return i, nil
		}
		return nil, fmt.Errorf("%s (line %d): %q is not a %s", path, n.Line, s, fd.Enum().Name())
	case protoreflect.Int32Kind, protoreflect.Int64Kind, protoreflect.Sint32Kind, protoreflect.Sint64Kind,
		protoreflect.Sfixed32Kind, protoreflect.Sfixed64Kind:
		i, err := strconv.ParseInt(s, 0, 64)
		if err != nil {
			return nil, fmt.Errorf("%s (line %d): want an integer, got %q", path, n.Line, s)
		}
		return json.Number(strconv.FormatInt(i, 10)), nil
	case protoreflect.Uint32Kind, protoreflect.Uint64Kind, protoreflect.Fixed32Kind, protoreflect.Fixed64Kind:
		u, err := strconv.ParseUint(s, 0, 64)
		if err != nil {
			return nil, fmt.Errorf("%s (line %d): want a non-negative integer, got %q", path, n.Line, s)
		}
		return json.Number(strconv.FormatUint(u, 10)), nil
	}
	return nil, fmt.Errorf("%s: unsupported field kind %v", path, fd.Kind())
}

// Validate checks what the format's schema cannot: chunking plans, inputs
// given twice, regular expressions. The error names the test and field.
func Validate(s *specpb.TestSuite) error {
	var errs []error
	for i, t := range s.GetTest() {
		name := t.GetName()
		if name == "" {
			name = fmt.Sprintf("#%d", i+1)
		}
		bad := func(format string, args ...any) {
			errs = append(errs, fmt.Errorf("test %s: %s", name, fmt.Sprintf(format, args...)))
		}
		switch plan := t.GetBodyChunkingPlan().(type) {
		case *specpb.Test_NumChunks:
			if plan.NumChunks <= 0 {
				bad("num_chunks must be positive, got %d", plan.NumChunks)
			}
		case *specpb.Test_ChunkSize:
			if plan.ChunkSize <= 0 {
				bad("chunk_size must be positive, got %d", plan.ChunkSize)
			}
		}
		if t.GetBodyChunkingPlan() != nil {
			if len(t.GetRequestBody()) > 1 || len(t.GetResponseBody()) > 1 {
				bad("a chunking plan (num_chunks or chunk_size) needs exactly one request_body and one response_body invocation at most")
			}
		}
		for _, p := range t.GetProperties() {
			if p.GetPath() == "" {
				bad("properties: a property without a path")
			}
		}
		check := func(phase string, inv *specpb.Invocation) {
			if inv == nil {
				return
			}
			in := inv.GetInput()
			n := 0
			if len(in.GetHeader()) > 0 {
				n++
			}
			if len(in.GetContent()) > 0 {
				n++
			}
			if in.GetFile() != "" {
				n++
			}
			if n > 1 {
				bad("%s: input takes one of header, content and file", phase)
			}
			if err := validateExpectation(inv.GetResult()); err != nil {
				bad("%s: %v", phase, err)
			}
		}
		check("request_headers", t.GetRequestHeaders())
		for _, inv := range t.GetRequestBody() {
			check("request_body", inv)
			if len(inv.GetInput().GetHeader()) > 0 {
				bad("request_body: a body input takes content or file, not header")
			}
		}
		check("response_headers", t.GetResponseHeaders())
		for _, inv := range t.GetResponseBody() {
			check("response_body", inv)
			if len(inv.GetInput().GetHeader()) > 0 {
				bad("response_body: a body input takes content or file, not header")
			}
		}
		for phase, e := range map[string]*specpb.Expectation{"plugin_init": t.GetPluginInit(), "stream_init": t.GetStreamInit(), "stream_destroy": t.GetStreamDestroy()} {
			if err := validateExpectation(e); err != nil {
				bad("%s: %v", phase, err)
			}
		}
	}
	return errors.Join(errs...)
}

func validateExpectation(e *specpb.Expectation) error {
	for _, h := range append(append([]*specpb.Header(nil), e.GetHasHeader()...), e.GetNoHeader()...) {
		if h.GetKey() == "" {
			return errors.New("a has_header or no_header without a key")
		}
	}
	for _, list := range [][]*specpb.StringMatcher{e.GetHeaders(), e.GetBody(), e.GetLog()} {
		for _, m := range list {
			switch x := m.GetMatcher().(type) {
			case nil:
				return errors.New("a matcher needs one of exact, regex and file")
			case *specpb.StringMatcher_Regex:
				if _, err := regexp.Compile(x.Regex); err != nil {
					return fmt.Errorf("bad regex %q: %v", x.Regex, err)
				}
			}
		}
	}
	return nil
}
