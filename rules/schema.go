package rules

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
)

// SchemaDraft is the JSON Schema dialect of the rules file's schema: draft-07, the one
// yaml-language-server (the YAML support of VS Code, Neovim, Helix, ...) supports best.
const SchemaDraft = "http://json-schema.org/draft-07/schema#"

//go:embed schema.json
var schemaJSON []byte

// Schema returns the JSON Schema of the rules file, as checked in at rules/schema.json.
// It is generated from the rules types by generateSchema, with the types' doc comments as
// descriptions (TestSchemaIsGenerated keeps it in sync). Editors use it through the
// `# yaml-language-server: $schema=...` line that the examples start with. It checks the
// shape of a file: keys, types, enums, duration and quantity forms; what needs the whole
// file (references, order of levels, PromQL) is the loader's to report.
func Schema() []byte { return bytes.Clone(schemaJSON) }

// schemaEnums are the fixed sets the validation accepts, by Go type and field (or by type
// alone, for a named string type).
var schemaEnums = map[string][]string{
	"Target.Kind":               {DefaultKind, "StatefulSet"},
	"Queries.Preset":            PresetNames(),
	"Queries.PodWorkload":       PodWorkloads(),
	"Query.Match":               {MatchQueue, MatchTarget, MatchPod},
	"Horizontal.Sizing":         {SizingDrain, SizingSeed},
	"Horizontal.BusyOrdinals":   {BusyOrdinalsRemove, BusyOrdinalsHold},
	"ScalingRules.SelectPolicy": {SelectMax, SelectMin, SelectDisabled},
	"ScalingPolicy.Type":        {PolicyPods, PolicyPercent},
	"Direction":                 {string(HigherIsWorse), string(LowerIsWorse)},
}

// schemaRequired are the keys the validation requires, by Go type.
var schemaRequired = map[string][]string{
	"Rules":         {"prometheus", "classes", "workloads"},
	"Prometheus":    {"url"},
	"Class":         {"name", "cpu", "memory"},
	"RateBudget":    {"name", "keys", "safeRequestsPerSecond"},
	"Workload":      {"name", "maxReplicas"},
	"Query":         {"query"},
	"ScalingPolicy": {"type", "value"},
}

// schemaAliases are the fields that take the HPA's name as well as the rules' own, by Go
// type: one of the two may be given, not both.
var schemaAliases = map[string][2]string{
	"ScalingRules":  {"stabilizationWindow", "stabilizationWindowSeconds"},
	"ScalingPolicy": {"period", "periodSeconds"},
}

// schemaOneRequired are aliases of which one must be given.
var schemaOneRequired = map[string]bool{"ScalingPolicy": true}

// schemaBounds are the fixed bounds of whole numbers the validation checks, by Go type
// and field: minimum and maximum, nil for none.
var schemaBounds = map[string][2]*float64{
	"Class.Concurrency":                       {ptr(1.0), nil},
	"Class.TenantConcurrency":                 {ptr(1.0), nil},
	"Class.MaxReplicas":                       {ptr(0.0), nil},
	"RateBudget.Keys":                         {ptr(1.0), nil},
	"Workload.MinReplicas":                    {ptr(0.0), nil},
	"Workload.MaxReplicas":                    {ptr(1.0), nil},
	"Workload.FallbackReplicas":               {ptr(0.0), nil},
	"Concurrency.Global":                      {ptr(1.0), nil},
	"Concurrency.Tenant":                      {ptr(1.0), nil},
	"Concurrency.Min":                         {ptr(1.0), nil},
	"Concurrency.Max":                         {ptr(1.0), nil},
	"ScalingRules.StabilizationWindowSeconds": {ptr(0.0), ptr(maxStabilizationWindow.Seconds())},
	"ScalingPolicy.Value":                     {ptr(1.0), nil},
	"ScalingPolicy.PeriodSeconds":             {ptr(1.0), ptr(maxPolicyPeriod.Seconds())},
}

// schemaMapKeys are the keys of maps that editors may offer, by Go type and field: the
// metrics the engine knows (others may be added).
var schemaMapKeys = map[string][]string{
	"Rules.Thresholds":     ActedOnMetrics(),
	"Workload.Thresholds":  ActedOnMetrics(),
	"Queries.Templates":    knownMetrics(),
	"Workload.Queries":     knownMetrics(),
	"Queries.PodTemplates": PodMetrics(),
	"Workload.PodQueries":  PodMetrics(),
}

// knownMetrics are the metrics the engine reads: the graded ones and its inputs.
func knownMetrics() []string {
	return append(ActedOnMetrics(), Throughput, ActiveJobs, OOMKills)
}

// schemaMinItems are the lists the validation requires at least one item of.
var schemaMinItems = map[string]int{"Rules.Classes": 1, "Rules.Workloads": 1}

func ptr[T any](v T) *T { return &v }

// The forms of the scalar types, as the loader reads them.
const (
	// durationPattern is Go's duration form and Prometheus's, and 0.
	durationPattern = `^(0|[-+]?(([0-9]+(\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h|d|w|y))+)$`
	// quantityPattern is Kubernetes's resource quantity.
	quantityPattern = `^[+-]?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE][+-]?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$`
	// percentPattern is a number written as a percentage, which the loader divides by 100.
	percentPattern = `^[-+]?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))([eE][-+]?[0-9]+)?%$`
)

// schemaNode is one JSON Schema; its fields are written in this order.
type schemaNode struct {
	Schema               string        `json:"$schema,omitempty"`
	Ref                  string        `json:"$ref,omitempty"`
	Title                string        `json:"title,omitempty"`
	Description          string        `json:"description,omitempty"`
	Type                 string        `json:"type,omitempty"`
	Enum                 []string      `json:"enum,omitempty"`
	Pattern              string        `json:"pattern,omitempty"`
	Minimum              *float64      `json:"minimum,omitempty"`
	Maximum              *float64      `json:"maximum,omitempty"`
	MinItems             *int          `json:"minItems,omitempty"`
	Items                *schemaNode   `json:"items,omitempty"`
	Properties           *schemaProps  `json:"properties,omitempty"`
	Required             []string      `json:"required,omitempty"`
	AdditionalProperties any           `json:"additionalProperties,omitempty"`
	AllOf                []*schemaNode `json:"allOf,omitempty"`
	AnyOf                []*schemaNode `json:"anyOf,omitempty"`
	Not                  *schemaNode   `json:"not,omitempty"`
	Definitions          *schemaProps  `json:"definitions,omitempty"`
}

// schemaProps are named schemas, written in the order they were added (a struct's fields
// in their order) rather than sorted.
type schemaProps struct {
	names []string
	m     map[string]*schemaNode
}

func (p *schemaProps) add(name string, s *schemaNode) {
	if p.m == nil {
		p.m = map[string]*schemaNode{}
	}
	if _, ok := p.m[name]; !ok {
		p.names = append(p.names, name)
	}
	p.m[name] = s
}

// MarshalJSON writes the schemas in their order.
func (p *schemaProps) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, name := range p.names {
		if i > 0 {
			b.WriteByte(',')
		}
		k, err := marshalJSON(name)
		if err != nil {
			return nil, err
		}
		v, err := marshalJSON(p.m[name])
		if err != nil {
			return nil, err
		}
		b.Write(k)
		b.WriteByte(':')
		b.Write(v)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// schemaDocs are the doc comments the descriptions come from: "Type" for a type's,
// "Type.Field" for a field's, in Go's names. They are read from the source (types.go) when
// the schema is generated, never at run time.
type schemaDocs map[string]string

// schemaGen is one generation of the schema.
type schemaGen struct {
	docs schemaDocs
	defs schemaProps
	// used are the entries of the tables above that applied, so that one naming a field
	// that no longer exists is an error rather than silently lost.
	used map[string]bool
	// visiting are the foreign struct types being written inline, against recursion.
	visiting map[reflect.Type]bool
}

// generateSchema builds the rules file's JSON Schema (draft-07) from the rules types by
// reflection: the keys of their yaml tags, with additionalProperties false where the loader
// is strict (everywhere, prometheus/common's HTTP client settings included), the fixed sets
// of the validation as enums, the required keys, durations and quantities in their written
// forms, numbers that may be written as percentages, and docs as descriptions.
func generateSchema(docs schemaDocs) ([]byte, error) {
	g := &schemaGen{docs: docs, used: map[string]bool{}, visiting: map[reflect.Type]bool{}}
	root, err := g.structSchema(reflect.TypeFor[Rules]())
	if err != nil {
		return nil, err
	}
	root.Schema = SchemaDraft
	root.Title = "workerscale rules"
	root.Description = "A workerscale rules file: instance classes, thresholds, queries, rate budgets and workloads (README.md, \"The rules YAML\")."
	root.Definitions = &g.defs
	for _, table := range []map[string]bool{keysOf(schemaEnums), keysOf(schemaRequired), keysOf(schemaAliases), keysOf(schemaBounds), keysOf(schemaMapKeys), keysOf(schemaMinItems)} {
		for k := range table {
			if !g.used[k] {
				return nil, fmt.Errorf("schema: %s is in a table but is not a rules type or field", k)
			}
		}
	}
	flat, err := marshalJSON(root)
	if err != nil {
		return nil, fmt.Errorf("schema: %w", err)
	}
	var out bytes.Buffer
	if err := json.Indent(&out, flat, "", "  "); err != nil {
		return nil, fmt.Errorf("schema: %w", err)
	}
	out.WriteByte('\n')
	return out.Bytes(), nil
}

// marshalJSON is json.Marshal without HTML escaping, so that the descriptions read as
// they are written.
func marshalJSON(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

func keysOf[V any](m map[string]V) map[string]bool {
	out := map[string]bool{}
	for k := range m {
		out[k] = true
	}
	return out
}

// rulesType says whether t is one of this package's named types.
func rulesType(t reflect.Type) bool {
	return t.PkgPath() == reflect.TypeFor[Rules]().PkgPath() && t.Name() != ""
}

// description is the doc of a field ("Type.Field") or of a type ("Type").
func (g *schemaGen) description(key string) string {
	return strings.Join(strings.Fields(g.docs[key]), " ")
}

// ref points at the definition name, building it first if need be.
func (g *schemaGen) ref(name string, build func() (*schemaNode, error)) (*schemaNode, error) {
	if _, ok := g.defs.m[name]; !ok {
		g.defs.add(name, nil) // a placeholder: in its place, and against recursion
		s, err := build()
		if err != nil {
			return nil, err
		}
		if s.Description == "" {
			s.Description = g.description(name)
		}
		g.defs.m[name] = s
	}
	return &schemaNode{Ref: "#/definitions/" + name}, nil
}

// typeSchema is the schema of a value of type t.
func (g *schemaGen) typeSchema(t reflect.Type) (*schemaNode, error) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t {
	case reflect.TypeFor[Duration]():
		return g.ref(t.Name(), func() (*schemaNode, error) {
			return &schemaNode{AnyOf: []*schemaNode{{Type: "string", Pattern: durationPattern}, {Type: "integer", Minimum: ptr(0.0), Maximum: ptr(0.0)}}}, nil
		})
	case reflect.TypeFor[Quantity]():
		return g.ref(t.Name(), func() (*schemaNode, error) {
			return &schemaNode{AnyOf: []*schemaNode{{Type: "string", Pattern: quantityPattern}, {Type: "number", Minimum: ptr(0.0)}}}, nil
		})
	}
	pt := reflect.PointerTo(t)
	custom := pt.Implements(v2UnmarshalerType) || pt.Implements(v3UnmarshalerType)
	switch t.Kind() {
	case reflect.Struct:
		switch {
		case rulesType(t):
			return g.ref(t.Name(), func() (*schemaNode, error) { return g.structSchema(t) })
		case custom && !shapeOf(t, map[reflect.Type]*shape{}).tagged:
			// It reads itself from a string (prometheus/common's URL).
			return &schemaNode{Type: "string"}, nil
		case g.visiting[t]:
			return nil, fmt.Errorf("schema: %s contains itself", t)
		}
		g.visiting[t] = true
		defer delete(g.visiting, t)
		return g.structSchema(t)
	case reflect.Slice, reflect.Array:
		items, err := g.typeSchema(t.Elem())
		if err != nil {
			return nil, err
		}
		return &schemaNode{Type: "array", Items: items}, nil
	case reflect.Map:
		if t.Key().Kind() != reflect.String {
			return nil, fmt.Errorf("schema: no schema for %s", t)
		}
		values, err := g.typeSchema(t.Elem())
		if err != nil {
			return nil, err
		}
		return &schemaNode{Type: "object", AdditionalProperties: values}, nil
	case reflect.String:
		if enum, ok := schemaEnums[t.Name()]; ok && rulesType(t) {
			g.used[t.Name()] = true
			return g.ref(t.Name(), func() (*schemaNode, error) { return &schemaNode{Type: "string", Enum: enum}, nil })
		}
		return &schemaNode{Type: "string"}, nil
	case reflect.Bool:
		return &schemaNode{Type: "boolean"}, nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		if custom {
			return &schemaNode{Type: "string"}, nil // prometheus/common's TLS version, "TLS12"
		}
		return &schemaNode{Type: "integer"}, nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		if custom {
			return &schemaNode{Type: "string"}, nil
		}
		return &schemaNode{Type: "integer", Minimum: ptr(0.0)}, nil
	case reflect.Float32, reflect.Float64:
		return g.ref("Number", func() (*schemaNode, error) {
			return &schemaNode{
				Description: "A number; a fraction may be written as a percentage (80% is 0.8).",
				AnyOf:       []*schemaNode{{Type: "number"}, {Type: "string", Pattern: percentPattern}},
			}, nil
		})
	case reflect.Interface:
		return &schemaNode{}, nil // any value
	}
	return nil, fmt.Errorf("schema: no schema for %s", t)
}

// structSchema is the schema of a struct: its yaml keys, inline fields included.
func (g *schemaGen) structSchema(t reflect.Type) (*schemaNode, error) {
	s := &schemaNode{Type: "object", Properties: &schemaProps{}, AdditionalProperties: false}
	if err := g.addFields(s, t, ""); err != nil {
		return nil, err
	}
	if len(s.Properties.names) == 0 {
		s.Properties = nil // a map written inline (prometheus/common's http_headers)
	}
	if !rulesType(t) {
		return s, nil
	}
	name := t.Name()
	if req, ok := schemaRequired[name]; ok {
		g.used[name] = true
		s.Required = req
	}
	if pair, ok := schemaAliases[name]; ok {
		g.used[name] = true
		both := &schemaNode{Required: []string{pair[0], pair[1]}}
		s.Not = both
		if schemaOneRequired[name] {
			s.AnyOf = []*schemaNode{{Required: []string{pair[0]}}, {Required: []string{pair[1]}}}
		}
	}
	return s, nil
}

// addFields adds the properties of t's fields to s, inline ones merged in; those of an
// inline field of another package's type take the inline field's doc as description.
func (g *schemaGen) addFields(s *schemaNode, t reflect.Type, doc string) error {
	for i := range t.NumField() {
		f := t.Field(i)
		name, inline, skip := yamlKey(f)
		if skip {
			continue
		}
		ft := f.Type
		for ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		if inline {
			switch ft.Kind() {
			case reflect.Struct:
				inner := doc
				if rulesType(t) {
					inner = g.description(t.Name() + "." + f.Name)
				}
				if err := g.addFields(s, ft, inner); err != nil {
					return err
				}
			case reflect.Map:
				values, err := g.typeSchema(ft.Elem())
				if err != nil {
					return err
				}
				s.AdditionalProperties = values
			default:
				return fmt.Errorf("schema: inline %s in %s", ft, t)
			}
			continue
		}
		p, err := g.fieldSchema(t, f)
		if err != nil {
			return err
		}
		if p.Description == "" && doc != "" {
			if p.Ref != "" {
				p = &schemaNode{AllOf: []*schemaNode{p}}
			}
			p.Description = doc
		}
		s.Properties.add(name, p)
	}
	return nil
}

// fieldSchema is the schema of one field: its type's, with the field's description,
// enum, bounds and list size.
func (g *schemaGen) fieldSchema(owner reflect.Type, f reflect.StructField) (*schemaNode, error) {
	s, err := g.typeSchema(f.Type)
	if err != nil {
		return nil, err
	}
	if !rulesType(owner) {
		return s, nil
	}
	key := owner.Name() + "." + f.Name
	if s.Ref != "" {
		s = &schemaNode{AllOf: []*schemaNode{s}} // draft-07 ignores the siblings of $ref
	}
	s.Description = g.description(key)
	if enum, ok := schemaEnums[key]; ok {
		g.used[key] = true
		s.Enum = enum
	}
	if b, ok := schemaBounds[key]; ok {
		g.used[key] = true
		s.Minimum, s.Maximum = b[0], b[1]
	}
	if names, ok := schemaMapKeys[key]; ok {
		g.used[key] = true
		s.Properties = &schemaProps{}
		for _, name := range names {
			s.Properties.add(name, s.AdditionalProperties.(*schemaNode))
		}
	}
	if n, ok := schemaMinItems[key]; ok {
		g.used[key] = true
		s.MinItems = &n
	}
	if s.AllOf != nil && s.Description == "" && s.Enum == nil {
		s = s.AllOf[0] // nothing beside the reference
	}
	return s, nil
}
