package rules

import (
	"fmt"
	"maps"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// scalarDecoder is implemented by rules types that parse themselves from one YAML
// scalar, such as Duration and Quantity.
type scalarDecoder interface {
	decodeScalar(value string) error
}

// v2Unmarshaler is the yaml.v2-style interface that prometheus/common's types implement;
// yaml.v3 still honours it, so such types are handed to yaml.v3 after their keys are
// checked here.
type v2Unmarshaler interface {
	UnmarshalYAML(unmarshal func(any) error) error
}

var (
	scalarDecoderType = reflect.TypeFor[scalarDecoder]()
	v2UnmarshalerType = reflect.TypeFor[v2Unmarshaler]()
	v3UnmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()
)

// decoder turns a yaml.v3 node tree into rules types strictly: every unknown key, wrong
// type and unparsable value becomes an *Error with its line, column and field path, and
// decoding goes on so that all of them are reported together. It also remembers where
// each field path stands, so that validation can point at the same places.
type decoder struct {
	file string
	errs ErrorList
	pos  map[string]Pos
	// failed holds the paths whose values could not be read.
	failed map[string]bool
}

func newDecoder(file string) *decoder {
	return &decoder{file: file, pos: map[string]Pos{}, failed: map[string]bool{}}
}

func posOf(n *yaml.Node) Pos { return Pos{Line: n.Line, Column: n.Column} }

func (d *decoder) errorf(n *yaml.Node, path, format string, args ...any) {
	d.errs = append(d.errs, &Error{File: d.file, Pos: posOf(n), Path: path, Msg: fmt.Sprintf(format, args...)})
}

// valueErrorf reports a value that could not be read, which validation then leaves alone.
func (d *decoder) valueErrorf(n *yaml.Node, path, format string, args ...any) {
	d.failed[path] = true
	d.errorf(n, path, format, args...)
}

// decode fills v (addressable) from n.
func (d *decoder) decode(n *yaml.Node, v reflect.Value, path string) {
	for n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if _, seen := d.pos[path]; !seen {
		d.pos[path] = posOf(n)
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return // an explicit null leaves the default in place
	}
	if v.Kind() == reflect.Pointer {
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		d.decode(n, v.Elem(), path)
		return
	}
	pv := v.Addr()
	switch {
	case pv.Type().Implements(scalarDecoderType):
		if !d.expectKind(n, yaml.ScalarNode, path, "a value") {
			return
		}
		if err := pv.Interface().(scalarDecoder).decodeScalar(n.Value); err != nil {
			d.valueErrorf(n, path, "%v", err)
		}
		return
	case pv.Type().Implements(v2UnmarshalerType) || pv.Type().Implements(v3UnmarshalerType):
		d.delegate(n, pv, path)
		return
	}
	switch v.Kind() {
	case reflect.Struct:
		d.decodeStruct(n, v, path)
	case reflect.Slice:
		if !d.expectKind(n, yaml.SequenceNode, path, "a list") {
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			d.decode(item, s.Index(i), fmt.Sprintf("%s[%d]", path, i))
		}
		v.Set(s)
	case reflect.Map:
		if !d.expectKind(n, yaml.MappingNode, path, "a mapping") {
			return
		}
		m := reflect.MakeMapWithSize(v.Type(), len(n.Content)/2)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			elem := reflect.New(v.Type().Elem()).Elem()
			d.decode(val, elem, joinPath(path, k.Value))
			m.SetMapIndex(reflect.ValueOf(k.Value).Convert(v.Type().Key()), elem)
		}
		v.Set(m)
	case reflect.String:
		if d.expectKind(n, yaml.ScalarNode, path, "a string") {
			v.SetString(n.Value)
		}
	case reflect.Bool:
		if !d.expectKind(n, yaml.ScalarNode, path, "true or false") {
			return
		}
		b, err := strconv.ParseBool(n.Value)
		if err != nil || n.Tag != "!!bool" {
			d.valueErrorf(n, path, "expected true or false, got %q", n.Value)
			return
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int32, reflect.Int64:
		if !d.expectKind(n, yaml.ScalarNode, path, "a whole number") {
			return
		}
		i, err := strconv.ParseInt(n.Value, 10, v.Type().Bits())
		if err != nil {
			d.valueErrorf(n, path, "expected a whole number, got %q", n.Value)
			return
		}
		v.SetInt(i)
	case reflect.Float64:
		if !d.expectKind(n, yaml.ScalarNode, path, "a number") {
			return
		}
		f, err := strconv.ParseFloat(strings.TrimSuffix(n.Value, "%"), 64)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			d.valueErrorf(n, path, "expected a finite number, got %q", n.Value)
			return
		}
		if strings.HasSuffix(n.Value, "%") {
			f /= 100
		}
		v.SetFloat(f)
	default:
		panic(fmt.Sprintf("rules: no decoder for %s at %s", v.Type(), path))
	}
}

func (d *decoder) expectKind(n *yaml.Node, kind yaml.Kind, path, what string) bool {
	if n.Kind == kind {
		return true
	}
	d.valueErrorf(n, path, "expected %s, got %s", what, describe(n))
	return false
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return strconv.Quote(n.Value)
	default:
		return "something else"
	}
}

// field is one YAML key of a struct.
type field struct {
	index []int
	name  string
}

// yamlKey reads a struct field's yaml tag: its key, whether it is inlined, and whether the
// field is not YAML at all.
func yamlKey(f reflect.StructField) (name string, inline, skip bool) {
	tag := f.Tag.Get("yaml")
	if tag == "-" || !f.IsExported() {
		return "", false, true
	}
	name, opts, _ := strings.Cut(tag, ",")
	if strings.Contains(opts, "inline") {
		return "", true, false
	}
	if name == "" {
		name = strings.ToLower(f.Name)
	}
	return name, false, false
}

// structFields lists a struct's YAML keys; inline is the field that takes every other key.
func structFields(t reflect.Type) (fields map[string]field, inline []int) {
	fields = map[string]field{}
	for i := range t.NumField() {
		f := t.Field(i)
		switch name, in, skip := yamlKey(f); {
		case skip:
		case in:
			inline = f.Index
		default:
			fields[name] = field{index: f.Index, name: name}
		}
	}
	return fields, inline
}

func (d *decoder) decodeStruct(n *yaml.Node, v reflect.Value, path string) {
	if !d.expectKind(n, yaml.MappingNode, path, "a mapping") {
		return
	}
	fields, inline := structFields(v.Type())
	var rest []*yaml.Node
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		p := joinPath(path, k.Value)
		if seen[k.Value] {
			d.errorf(k, p, "key %q is given twice", k.Value)
			continue
		}
		seen[k.Value] = true
		f, ok := fields[k.Value]
		if !ok {
			if inline != nil {
				rest = append(rest, k, val)
				continue
			}
			d.errorf(k, p, "unknown field %q%s", k.Value, suggest(k.Value, slices.Collect(maps.Keys(fields))))
			continue
		}
		d.pos[p] = posOf(k)
		d.decode(val, v.FieldByIndex(f.index), p)
	}
	if inline != nil && len(rest) > 0 {
		m := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Line: rest[0].Line, Column: rest[0].Column, Content: rest}
		d.decode(m, v.FieldByIndex(inline), path)
	}
}

// delegate hands a foreign type (prometheus/common's HTTP client settings) to yaml.v3,
// after checking its keys against the type's yaml tags so that typos are still caught
// with their position.
func (d *decoder) delegate(n *yaml.Node, pv reflect.Value, path string) {
	before := len(d.errs)
	d.checkKeys(n, pv.Type().Elem(), path)
	if len(d.errs) > before {
		return
	}
	if err := n.Decode(pv.Interface()); err != nil {
		d.valueErrorf(n, path, "%s", strings.TrimPrefix(err.Error(), "yaml: "))
	}
}

func (d *decoder) checkKeys(n *yaml.Node, t reflect.Type, path string) {
	for n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct || n.Kind != yaml.MappingNode {
		return
	}
	known := allKeys(t)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i]
		p := joinPath(path, k.Value)
		d.pos[p] = posOf(k)
		ft, ok := known[k.Value]
		if !ok {
			d.errorf(k, p, "unknown field %q%s", k.Value, suggest(k.Value, slices.Collect(maps.Keys(known))))
			continue
		}
		d.checkKeys(n.Content[i+1], ft, p)
	}
}

// allKeys maps every YAML key of t, inline fields included, to its field's type.
func allKeys(t reflect.Type) map[string]reflect.Type {
	keys := map[string]reflect.Type{}
	for i := range t.NumField() {
		f := t.Field(i)
		switch name, inline, skip := yamlKey(f); {
		case skip:
		case inline:
			ft := f.Type
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			maps.Copy(keys, allKeys(ft))
		default:
			keys[name] = f.Type
		}
	}
	return keys
}

// suggest names the closest known key when the unknown one looks like a typo of it.
func suggest(key string, names []string) string {
	best, bestDist := "", 3
	for _, name := range names {
		if dist := editDistance(strings.ToLower(key), strings.ToLower(name)); dist < bestDist || (dist == bestDist && name < best) {
			best, bestDist = name, dist
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}
