package deploy

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// This file holds the strict decoders every manifest test uses. Each one
// fails on a field its schema does not have; TestValidatorsAreStrict proves
// it for each by misspelling a field of a shipped file.

// readFile reads a file relative to the repository root.
func readFile(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// splitYAML splits a multi-document YAML stream at its "---" lines,
// dropping documents that hold only comments.
func splitYAML(b []byte) [][]byte {
	var docs [][]byte
	for _, d := range regexp.MustCompile(`(?m)^---[ \t]*$`).Split(string(b), -1) {
		content := false
		for l := range strings.Lines(d) {
			if s := strings.TrimSpace(l); s != "" && !strings.HasPrefix(s, "#") {
				content = true
			}
		}
		if content {
			docs = append(docs, []byte(d))
		}
	}
	return docs
}

// strictJSON decodes JSON into v as the Kubernetes API server does
// (sigs.k8s.io/json): field names match case-sensitively, and unknown or
// duplicate fields fail. encoding/json would accept "readOnlyRootFileSystem"
// for readOnlyRootFilesystem, since it matches names case-insensitively.
func strictJSON(b []byte, v any) error {
	strictErrs, err := kjson.UnmarshalStrict(b, v, kjson.DisallowDuplicateFields, kjson.DisallowUnknownFields)
	if err != nil {
		return err
	}
	return errors.Join(strictErrs...)
}

// strictYAML converts one YAML document to JSON (as kubectl does) and
// decodes it strictly into v; duplicate keys fail too.
func strictYAML(doc []byte, v any) error {
	j, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return err
	}
	return strictJSON(j, v)
}

// protoYAML decodes one YAML document into m with protojson, which rejects
// unknown fields and unresolvable Any types, then validates m and every
// message packed in an Any inside it (see validateProto).
func protoYAML(doc []byte, m proto.Message) error {
	j, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return err
	}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: false}).Unmarshal(j, m); err != nil {
		return err
	}
	return validateProto(m)
}

// validateProto runs protoc-gen-validate's ValidateAll on m, where m has it,
// and recurses into every set message field, unpacking google.protobuf.Any
// values (typed_config): ValidateAll checks an Any only as an Any, so an
// invalid filter configuration inside one would otherwise pass.
func validateProto(m proto.Message) error {
	if v, ok := m.(interface{ ValidateAll() error }); ok {
		if err := v.ValidateAll(); err != nil {
			return fmt.Errorf("%s: %w", m.ProtoReflect().Descriptor().FullName(), err)
		}
	}
	var errs []error
	var walk func(protoreflect.Message)
	walk = func(msg protoreflect.Message) {
		msg.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
			if fd.Kind() != protoreflect.MessageKind && fd.Kind() != protoreflect.GroupKind {
				return true
			}
			visit := func(sub protoreflect.Message) {
				if a, ok := sub.Interface().(*anypb.Any); ok {
					inner, err := a.UnmarshalNew()
					if err != nil {
						errs = append(errs, fmt.Errorf("%s: %w", a.GetTypeUrl(), err))
						return
					}
					if err := validateProto(inner); err != nil {
						errs = append(errs, err)
					}
					return
				}
				walk(sub)
			}
			switch {
			case fd.IsList():
				for i := range v.List().Len() {
					visit(v.List().Get(i).Message())
				}
			case fd.IsMap():
				if fd.MapValue().Kind() == protoreflect.MessageKind {
					v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
						visit(mv.Message())
						return true
					})
				}
			default:
				visit(v.Message())
			}
			return true
		})
	}
	walk(m.ProtoReflect())
	return errors.Join(errs...)
}

// typeMeta reads a Kubernetes object's apiVersion and kind.
func typeMeta(doc []byte) (apiVersion, kind string, err error) {
	var tm struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
	}
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return "", "", err
	}
	if tm.APIVersion == "" || tm.Kind == "" {
		return "", "", errors.New("no apiVersion or kind")
	}
	return tm.APIVersion, tm.Kind, nil
}

// yamlFences returns the bodies of the ```yaml fenced blocks of a Markdown
// file.
func yamlFences(md []byte) [][]byte {
	var out [][]byte
	for _, m := range regexp.MustCompile("(?ms)^```ya?ml\n(.*?)^```").FindAllSubmatch(md, -1) {
		out = append(out, m[1])
	}
	return out
}
