package rules

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// schemaFile is where the generated schema is checked in; the examples point at it.
const schemaFile = "schema.json"

// updating reports -update, the flag that rules_test.go (in package rules_test, linked
// into the same test binary) defines for the golden files.
func updating() bool {
	f := flag.Lookup("update")
	return f != nil && f.Value.String() == "true"
}

// TestSchemaIsGenerated keeps rules/schema.json in sync with the rules types and their doc
// comments: go test ./rules -run TestSchemaIsGenerated -update rewrites it.
func TestSchemaIsGenerated(t *testing.T) {
	got, err := generateSchema(readDocs(t, "types.go"))
	if err != nil {
		t.Fatal(err)
	}
	if updating() {
		if err := os.WriteFile(schemaFile, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(schemaFile)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("rules/%s is not what the rules types generate: run go test ./rules -run TestSchemaIsGenerated -update", schemaFile)
	}
	if !bytes.Equal(Schema(), want) {
		t.Errorf("Schema() is not rules/%s", schemaFile)
	}
}

// readDocs reads the doc comments of the types in file and of their fields, as
// generateSchema takes them. Go's names in them become what a rules file writes: a field
// of the same type becomes its YAML key (`SafeRPS` is `safeRequestsPerSecond`), and a
// string constant of the file its value (`SizingDrain` is `drain`).
func readDocs(t *testing.T, file string) schemaDocs {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), file, nil, parser.ParseComments)
	if err != nil {
		t.Fatal(err)
	}
	consts := map[string]string{}
	for _, decl := range f.Decls {
		if gd, ok := decl.(*ast.GenDecl); ok && gd.Tok == token.CONST {
			for _, spec := range gd.Specs {
				vs := spec.(*ast.ValueSpec)
				for i, name := range vs.Names {
					if i < len(vs.Values) {
						if lit, ok := vs.Values[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
							consts[name.Name], _ = strconv.Unquote(lit.Value)
						}
					}
				}
			}
		}
	}
	docs := schemaDocs{}
	for _, decl := range f.Decls {
		gd, ok := decl.(*ast.GenDecl)
		if !ok || gd.Tok != token.TYPE {
			continue
		}
		for _, spec := range gd.Specs {
			ts := spec.(*ast.TypeSpec)
			doc := ts.Doc
			if doc == nil && len(gd.Specs) == 1 {
				doc = gd.Doc
			}
			keys := map[string]string{}
			st, isStruct := ts.Type.(*ast.StructType)
			if isStruct {
				for _, field := range st.Fields.List {
					if field.Tag == nil {
						continue
					}
					tag, _ := strconv.Unquote(field.Tag.Value)
					key, _, _ := strings.Cut(reflect.StructTag(tag).Get("yaml"), ",")
					for _, n := range field.Names {
						if key != "" && key != "-" {
							keys[n.Name] = key
						}
					}
				}
			}
			// rename replaces the field's Go name that starts its doc, the Go names of the
			// type's fields written in camel case elsewhere (a plain word such as
			// Prometheus or Warning may mean the thing, not the field), and the constants.
			rename := func(text string, field bool) string {
				words := strings.Fields(text)
				for i, w := range words {
					start := strings.IndexFunc(w, func(r rune) bool { return r != '(' && r != '"' && r != '`' })
					if start < 0 {
						continue
					}
					core := strings.TrimRight(w[start:], ".,;:)\"`")
					end := start + len(core)
					if k, ok := keys[core]; ok && ((field && i == 0) || camel(core)) {
						words[i] = w[:start] + k + w[end:]
					} else if v, ok := consts[core]; ok {
						words[i] = w[:start] + v + w[end:]
					}
				}
				return strings.Join(words, " ")
			}
			if doc != nil {
				docs[ts.Name.Name] = rename(doc.Text(), false)
			}
			if isStruct {
				for _, field := range st.Fields.List {
					for _, n := range field.Names {
						if field.Doc != nil {
							docs[ts.Name.Name+"."+n.Name] = rename(field.Doc.Text(), true)
						}
					}
				}
			}
		}
	}
	return docs
}

// camel says whether a Go name is written in camel case: an upper-case letter after a
// lower-case one (SafeRPS, StabilizationWindow; not URL, nor Warning).
func camel(name string) bool {
	for i := 1; i < len(name); i++ {
		if name[i] >= 'A' && name[i] <= 'Z' && name[i-1] >= 'a' && name[i-1] <= 'z' {
			return true
		}
	}
	return false
}

// TestSchemaAcceptsTheGoodFiles: every example and good file, which the loader accepts,
// is valid against the schema.
func TestSchemaAcceptsTheGoodFiles(t *testing.T) {
	schema := loadSchema(t)
	files, _ := filepath.Glob("testdata/good/*.yaml")
	examples, _ := filepath.Glob("examples/*.yaml")
	if len(files) == 0 || len(examples) == 0 {
		t.Fatal("no good files")
	}
	for _, file := range append(files, examples...) {
		t.Run(file, func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			if problems := schemaProblems(t, schema, data); len(problems) > 0 {
				t.Errorf("not valid against rules/%s:\n%s", schemaFile, strings.Join(problems, "\n"))
			}
		})
	}
}

// TestSchemaRejects: the schema is not vacuous. Each mistake, which the loader refuses
// too, makes a valid file invalid, at the path named.
func TestSchemaRejects(t *testing.T) {
	const base = `prometheus:
  url: http://prometheus:9090
queries: {preset: bullmq}
classes:
  - {name: small, cpu: "1", memory: 2Gi}
workloads:
  - name: render
    maxReplicas: 10
`
	schema := loadSchema(t)
	if problems := schemaProblems(t, schema, []byte(base)); len(problems) > 0 {
		t.Fatalf("the base is invalid: %v", problems)
	}
	for _, tc := range []struct {
		name, old, new, path string
	}{
		{"an unknown top-level key", "queries:", "pollingInterval: 30\nqueries:", "/pollingInterval"},
		{"KEDA's name for minReplicas", "    maxReplicas: 10\n", "    maxReplicas: 10\n    minReplicaCount: 0\n", "/workloads/0/minReplicaCount"},
		{"a misspelled key in prometheus/common's settings", "  url: http://prometheus:9090\n", "  url: http://prometheus:9090\n  tls_config: {insecure_skip_verfy: true}\n", "/prometheus/tls_config/insecure_skip_verfy"},
		{"a select policy that is not one", "    maxReplicas: 10\n", "    maxReplicas: 10\n    behavior: {scaleUp: {selectPolicy: Fastest}}\n", "/workloads/0/behavior/scaleUp/selectPolicy"},
		{"a kind that is not one", "    maxReplicas: 10\n", "    maxReplicas: 10\n    target: {kind: Job}\n", "/workloads/0/target/kind"},
		{"an unknown preset", "{preset: bullmq}", "{preset: sidekiq}", "/queries/preset"},
		{"a direction that is not one", "queries:", "thresholds: {cpu: {direction: up}}\nqueries:", "/thresholds/cpu/direction"},
		{"both names of the window", "    maxReplicas: 10\n", "    maxReplicas: 10\n    behavior: {scaleDown: {stabilizationWindow: 5m, stabilizationWindowSeconds: 300}}\n", "/workloads/0/behavior/scaleDown"},
		{"both names of the period", "    maxReplicas: 10\n", "    maxReplicas: 10\n    behavior: {scaleDown: {policies: [{type: Pods, value: 1, period: 15s, periodSeconds: 15}]}}\n", "/workloads/0/behavior/scaleDown/policies/0"},
		{"a policy without a period", "    maxReplicas: 10\n", "    maxReplicas: 10\n    behavior: {scaleDown: {policies: [{type: Pods, value: 1}]}}\n", "/workloads/0/behavior/scaleDown/policies/0"},
		{"a window past the HPA's hour", "    maxReplicas: 10\n", "    maxReplicas: 10\n    behavior: {scaleDown: {stabilizationWindowSeconds: 3601}}\n", "/workloads/0/behavior/scaleDown/stabilizationWindowSeconds"},
		{"a duration in words", "queries:", "interval: 5 minutes\nqueries:", "/interval"},
		{"a quantity in words", "memory: 2Gi", "memory: 2 gigs", "/classes/0/memory"},
		{"a word for a number", "maxReplicas: 10", "maxReplicas: many", "/workloads/0/maxReplicas"},
		{"no maxReplicas", "    maxReplicas: 10\n", "    minReplicas: 1\n", "/workloads/0"},
		{"no workload", "workloads:\n  - name: render\n    maxReplicas: 10\n", "workloads: []\n", "/workloads"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.Contains(base, tc.old) {
				t.Fatalf("%q is not in the base", tc.old)
			}
			doc := strings.Replace(base, tc.old, tc.new, 1)
			if _, err := Parse("t.yaml", []byte(doc)); err == nil {
				t.Fatalf("the loader accepts it; the schema must not be stricter:\n%s", doc)
			}
			problems := schemaProblems(t, schema, []byte(doc))
			if !slices.ContainsFunc(problems, func(p string) bool { return strings.HasPrefix(p, tc.path+": ") }) {
				t.Errorf("problems %q, want one at %s\n%s", problems, tc.path, doc)
			}
		})
	}
}

// TestExamplesPointAtTheSchema: every example starts with the line that makes
// yaml-language-server check it against the schema, by a path relative to the example.
func TestExamplesPointAtTheSchema(t *testing.T) {
	examples, _ := filepath.Glob("examples/*.yaml")
	for _, file := range examples {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		first, _, _ := strings.Cut(string(data), "\n")
		ref, ok := strings.CutPrefix(first, "# yaml-language-server: $schema=")
		if !ok {
			t.Errorf("%s: the first line is %q, want # yaml-language-server: $schema=../%s", file, first, schemaFile)
			continue
		}
		if got, want := filepath.Clean(filepath.Join(filepath.Dir(file), ref)), schemaFile; got != want {
			t.Errorf("%s: $schema=%s is %s, want rules/%s", file, ref, got, want)
		}
	}
}

// TestSchemaDocumentsEveryKey: every key has a description, so that an editor's hover
// says what it is (prometheus/common's keys, which have no doc comments here, aside).
func TestSchemaDocumentsEveryKey(t *testing.T) {
	schema := loadSchema(t)
	defs := schema["definitions"].(map[string]any)
	for name, def := range defs {
		d := def.(map[string]any)
		if d["description"] == nil {
			t.Errorf("definition %s has no description", name)
		}
		props, _ := d["properties"].(map[string]any)
		for key, p := range props {
			pm := p.(map[string]any)
			if pm["description"] == nil && pm["$ref"] == nil {
				t.Errorf("%s.%s has no description", name, key)
			}
		}
	}
	for key, p := range schema["properties"].(map[string]any) {
		if p.(map[string]any)["description"] == nil {
			t.Errorf("%s has no description", key)
		}
	}
}

func loadSchema(t *testing.T) map[string]any {
	t.Helper()
	var schema map[string]any
	if err := json.Unmarshal(Schema(), &schema); err != nil {
		t.Fatalf("rules/%s: %v", schemaFile, err)
	}
	return schema
}

// schemaProblems validates a YAML document against the schema, read as JSON.
func schemaProblems(t *testing.T, schema map[string]any, data []byte) []string {
	t.Helper()
	var doc any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	js, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	var value any
	if err := json.Unmarshal(js, &value); err != nil {
		t.Fatal(err)
	}
	v := &schemaValidator{t: t, root: schema}
	v.check(schema, value, "")
	return v.problems
}

// schemaValidator is a JSON Schema validator for the keywords generateSchema writes, and
// no more: a keyword it does not know fails the test, so the schema cannot say more than
// is checked here.
type schemaValidator struct {
	t        *testing.T
	root     map[string]any
	problems []string
}

// schemaKeywords are the keywords the validator knows; annotations are among them.
var schemaKeywords = []string{"$schema", "$ref", "title", "description", "definitions", "type", "enum", "pattern",
	"minimum", "maximum", "minItems", "items", "properties", "required", "additionalProperties", "allOf", "anyOf", "not"}

// check validates value at path (a JSON pointer) against s, and says whether it is valid.
func (v *schemaValidator) check(s map[string]any, value any, path string) bool {
	before := len(v.problems)
	fail := func(format string, args ...any) {
		v.problems = append(v.problems, fmt.Sprintf("%s: %s", path, fmt.Sprintf(format, args...)))
	}
	for k := range s {
		if !slices.Contains(schemaKeywords, k) {
			v.t.Fatalf("the schema uses %q, which the test's validator does not check", k)
		}
	}
	if ref, ok := s["$ref"].(string); ok {
		name, ok := strings.CutPrefix(ref, "#/definitions/")
		def, found := v.root["definitions"].(map[string]any)[name].(map[string]any)
		if !ok || !found {
			v.t.Fatalf("$ref %q points at nothing", ref)
		}
		v.check(def, value, path)
	}
	for _, sub := range list(s["allOf"]) {
		v.check(sub, value, path)
	}
	if anyOf := list(s["anyOf"]); anyOf != nil {
		ok := slices.ContainsFunc(anyOf, func(sub map[string]any) bool { return v.quiet(sub, value, path) })
		if !ok {
			fail("matches none of the forms allowed")
		}
	}
	if not, ok := s["not"].(map[string]any); ok && v.quiet(not, value, path) {
		fail("matches what is not allowed (%v)", not)
	}
	if typ, ok := s["type"].(string); ok && !hasType(value, typ) {
		fail("expected %s, got %v", typ, value)
		return false
	}
	if enum, ok := s["enum"].([]any); ok && !slices.Contains(enum, value) {
		fail("%v is not one of %v", value, enum)
	}
	if pattern, ok := s["pattern"].(string); ok {
		if str, isStr := value.(string); isStr && !regexp.MustCompile(pattern).MatchString(str) {
			fail("%q does not match %s", str, pattern)
		}
	}
	if n, isNum := value.(float64); isNum {
		if lo, ok := s["minimum"].(float64); ok && n < lo {
			fail("%v is below %v", n, lo)
		}
		if hi, ok := s["maximum"].(float64); ok && n > hi {
			fail("%v is above %v", n, hi)
		}
	}
	if arr, isArr := value.([]any); isArr {
		if n, ok := s["minItems"].(float64); ok && float64(len(arr)) < n {
			fail("has %d items, want at least %v", len(arr), n)
		}
		if items, ok := s["items"].(map[string]any); ok {
			for i, item := range arr {
				v.check(items, item, fmt.Sprintf("%s/%d", path, i))
			}
		}
	}
	if obj, isObj := value.(map[string]any); isObj {
		required, _ := s["required"].([]any)
		for _, r := range required {
			if _, ok := obj[r.(string)]; !ok {
				fail("%s is required", r)
			}
		}
		props, _ := s["properties"].(map[string]any)
		for k, val := range obj {
			p := path + "/" + k
			if sub, ok := props[k].(map[string]any); ok {
				v.check(sub, val, p)
				continue
			}
			switch extra := s["additionalProperties"].(type) {
			case bool:
				if !extra {
					v.problems = append(v.problems, p+": is not allowed")
				}
			case map[string]any:
				v.check(extra, val, p)
			}
		}
	}
	return len(v.problems) == before
}

// quiet validates without keeping the problems, for anyOf and not.
func (v *schemaValidator) quiet(s map[string]any, value any, path string) bool {
	kept := v.problems
	v.problems = nil
	ok := v.check(s, value, path)
	v.problems = kept
	return ok
}

func list(x any) []map[string]any {
	var out []map[string]any
	items, _ := x.([]any)
	for _, item := range items {
		out = append(out, item.(map[string]any))
	}
	return out
}

func hasType(value any, typ string) bool {
	switch typ {
	case "object":
		_, ok := value.(map[string]any)
		return ok
	case "array":
		_, ok := value.([]any)
		return ok
	case "string":
		_, ok := value.(string)
		return ok
	case "boolean":
		_, ok := value.(bool)
		return ok
	case "number":
		_, ok := value.(float64)
		return ok
	case "integer":
		n, ok := value.(float64)
		return ok && n == math.Trunc(n)
	}
	return false
}
