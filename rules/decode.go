package rules

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"reflect"
	"regexp"
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
	// pos holds where each field path stands: its key, or its value where it has no key
	// (list items, the document).
	pos map[string]Pos
	// values holds where each field path's value stands.
	values map[string]Pos
	// failed holds the paths whose values could not be read.
	failed map[string]bool

	// expanding holds the anchored nodes being decoded through an alias, so that an alias
	// inside its own anchor is an error rather than endless recursion.
	expanding map[*yaml.Node]bool
	// budget is how many more nodes may be visited: aliases can make a small file expand
	// exponentially, and that must end in an error, not in a hung controller.
	budget int
	// exhausted is set once the budget ran out and that was reported.
	exhausted bool
}

// aliasAllowance is how many nodes aliases may add to a document's own nodes. A rules
// file for a thousand workloads has some tens of thousands of nodes; aliases that repeat a
// workload's settings add a few each.
const aliasAllowance = 100_000

func newDecoder(file string, doc *yaml.Node) *decoder {
	return &decoder{
		file: file, pos: map[string]Pos{}, values: map[string]Pos{}, failed: map[string]bool{},
		expanding: map[*yaml.Node]bool{}, budget: countNodes(doc) + aliasAllowance,
	}
}

// countNodes counts the nodes of a document as written, aliases counting as one.
func countNodes(n *yaml.Node) int {
	if n == nil {
		return 0
	}
	c := 1
	for _, child := range n.Content {
		c += countNodes(child)
	}
	return c
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

// visit counts a node against the budget; false means stop, the problem being reported.
func (d *decoder) visit(n *yaml.Node, path string) bool {
	if d.budget--; d.budget >= 0 {
		return true
	}
	if !d.exhausted {
		d.exhausted = true
		d.valueErrorf(n, path, "the file expands to too many values through aliases (more than %d beyond its own); write the values out", aliasAllowance)
	}
	return false
}

// enter counts n against the budget and resolves it if it is an alias. ok is false when
// decoding must not go on (the budget ran out, or the alias refers to nothing or to a value
// that contains it), which is reported; when ok is true, leave must be called once the
// node is done with.
func (d *decoder) enter(n *yaml.Node, path string) (node *yaml.Node, leave func(), ok bool) {
	switch {
	case !d.visit(n, path):
		return nil, nil, false
	case n.Kind != yaml.AliasNode:
		return n, func() {}, true
	case n.Alias == nil:
		d.valueErrorf(n, path, "alias *%s refers to no anchor", n.Value)
		return nil, nil, false
	case d.expanding[n.Alias]:
		d.valueErrorf(n, path, "alias *%s is used inside the value it names", n.Value)
		return nil, nil, false
	}
	d.expanding[n.Alias] = true
	return n.Alias, func() { delete(d.expanding, n.Alias) }, true
}

// decode fills v (addressable) from n.
func (d *decoder) decode(n *yaml.Node, v reflect.Value, path string) {
	n, leave, ok := d.enter(n, path)
	if !ok {
		return
	}
	defer leave()
	if _, seen := d.pos[path]; !seen {
		d.pos[path] = posOf(n)
	}
	if _, seen := d.values[path]; !seen {
		d.values[path] = posOf(n)
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
		if v.Type().Key().Kind() != reflect.String {
			d.valueErrorf(n, path, "cannot be read: no decoder for %s (a bug in workerscale)", v.Type())
			return
		}
		m := reflect.MakeMapWithSize(v.Type(), len(n.Content)/2)
		seen := map[string]bool{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			p := joinPath(path, k.Value)
			if !d.checkKey(k, path, seen) {
				continue
			}
			elem := reflect.New(v.Type().Elem()).Elem()
			d.decode(val, elem, p)
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
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		if !d.expectKind(n, yaml.ScalarNode, path, "a whole number") {
			return
		}
		if want := setWhole(v, n.Value); want != "" {
			d.valueErrorf(n, path, "expected %s, got %q", want, n.Value)
		}
	case reflect.Float32, reflect.Float64:
		if !d.expectKind(n, yaml.ScalarNode, path, "a number") {
			return
		}
		f, err := strconv.ParseFloat(strings.TrimSuffix(n.Value, "%"), v.Type().Bits())
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			d.valueErrorf(n, path, "expected a finite number, got %q", n.Value)
			return
		}
		if strings.HasSuffix(n.Value, "%") {
			f /= 100
		}
		v.SetFloat(f)
	default:
		// Every kind the rules types use is handled above; a new field of another kind
		// must not turn a rules file into a crash.
		d.valueErrorf(n, path, "cannot be read: no decoder for %s (a bug in workerscale)", v.Type())
	}
}

// setWhole sets the integer v from s; when s does not fit, it returns what was expected.
func setWhole(v reflect.Value, s string) (want string) {
	bits := v.Type().Bits()
	var err error
	want = "a whole number"
	if v.CanUint() {
		want += " that is not negative"
		var u uint64
		if u, err = strconv.ParseUint(s, 10, bits); err == nil {
			v.SetUint(u)
		}
	} else {
		var i int64
		if i, err = strconv.ParseInt(s, 10, bits); err == nil {
			v.SetInt(i)
		}
	}
	switch {
	case err == nil:
		return ""
	case errors.Is(err, strconv.ErrRange):
		return fmt.Sprintf("%s that fits in %d bits", want, bits)
	}
	return want
}

// checkKey accepts a key of the mapping at parent: a plain name not given before in the
// same mapping.
func (d *decoder) checkKey(k *yaml.Node, parent string, seen map[string]bool) bool {
	path := joinPath(parent, k.Value)
	switch {
	case k.Kind != yaml.ScalarNode:
		d.errorf(k, parent, "a key must be a name, got %s", describe(k))
		return false
	case k.Tag == "!!merge":
		// The keys it would have merged are missing, so problems that may follow from
		// that are held back.
		d.valueErrorf(k, path, "merge keys (<<) are not supported; write the keys out")
		return false
	case seen[k.Value]:
		d.errorf(k, path, "key %q is given twice", k.Value)
		return false
	}
	seen[k.Value] = true
	return true
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
	case yaml.AliasNode:
		return "an alias (*" + n.Value + ")"
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
		if !d.checkKey(k, path, seen) {
			continue
		}
		f, ok := fields[k.Value]
		if !ok {
			if inline != nil {
				rest = append(rest, k, val)
				continue
			}
			d.errorf(k, p, "unknown field %q%s", k.Value, suggestField(v.Type(), k.Value))
			continue
		}
		d.pos[p] = posOf(k)
		d.decode(val, v.FieldByIndex(f.index), p)
	}
	if inline != nil {
		// The inline field is decoded even with no keys of its own, so that a type that
		// sets its own defaults (prometheus/common's HTTP client settings) always does.
		line, col := n.Line, n.Column
		if len(rest) > 0 {
			line, col = rest[0].Line, rest[0].Column
		}
		m := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Line: line, Column: col, Content: rest}
		d.decode(m, v.FieldByIndex(inline), path)
	}
}

// delegate hands a foreign type (prometheus/common's HTTP client settings) to yaml.v3,
// after checking its keys against the type's yaml tags so that typos are still caught
// with their position.
func (d *decoder) delegate(n *yaml.Node, pv reflect.Value, path string) {
	before := len(d.errs)
	d.checkKeys(n, pv.Type().Elem(), path, map[reflect.Type]*shape{})
	if len(d.errs) > before {
		d.failed[path] = true
		return
	}
	err := n.Decode(pv.Interface())
	var typeErr *yaml.TypeError
	switch {
	case errors.As(err, &typeErr):
		// One problem per line yaml.v3 names, each placed at that line's first value.
		for _, msg := range typeErr.Errors {
			at, p := n, path
			if m := yamlLine.FindStringSubmatch(msg); m != nil {
				line, _ := strconv.Atoi(m[1])
				msg = m[2]
				if found, fp := nodeOnLine(n, path, line); found != nil {
					at, p = found, fp
				}
			}
			d.valueErrorf(at, p, "%s", msg)
		}
	case err != nil:
		d.valueErrorf(n, path, "%s", strings.TrimPrefix(err.Error(), "yaml: "))
	}
}

// yamlLine matches yaml.v3's "line 3: message", with or without its "yaml: " prefix.
var yamlLine = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)

// nodeOnLine finds the first value on a line within n, and its field path.
func nodeOnLine(n *yaml.Node, path string, line int) (*yaml.Node, string) {
	switch {
	case n.Line == line && n.Kind != yaml.MappingNode:
		return n, path
	case n.Kind == yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			if found, p := nodeOnLine(n.Content[i+1], joinPath(path, n.Content[i].Value), line); found != nil {
				return found, p
			}
		}
	case n.Kind == yaml.SequenceNode:
		for i, item := range n.Content {
			if found, p := nodeOnLine(item, fmt.Sprintf("%s[%d]", path, i), line); found != nil {
				return found, p
			}
		}
	}
	return nil, ""
}

// shape is what checkKeys knows of a struct type: its keys, inline ones included.
type shape struct {
	keys map[string]reflect.Type
	// rest is the value type of an inline map, which takes every other key; nil when
	// the struct has none.
	rest reflect.Type
	// tagged is false for a struct none of whose fields has a yaml tag: such a type
	// reads itself from another form (config.URL from a string), so its fields say
	// nothing about the keys it accepts.
	tagged bool
}

// checkKeys reports every key of n that type t does not have, and every value of the wrong
// kind (a list for a mapping, ...), following t's shape: struct fields by their yaml tags
// (inline structs and inline maps included), map values and list items. What is left,
// such as a value that does not parse, is yaml.v3's to report when it decodes.
func (d *decoder) checkKeys(n *yaml.Node, t reflect.Type, path string, shapes map[reflect.Type]*shape) {
	n, leave, ok := d.enter(n, path)
	if !ok {
		return
	}
	defer leave()
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return // yaml.v3 leaves the zero value
	}
	custom := reflect.PointerTo(t).Implements(v2UnmarshalerType) || reflect.PointerTo(t).Implements(v3UnmarshalerType)
	if custom && t.Kind() != reflect.Struct {
		return // it reads itself, in whatever form it takes
	}
	switch t.Kind() {
	case reflect.Slice, reflect.Array:
		if !d.expectKind(n, yaml.SequenceNode, path, "a list") {
			return
		}
		for i, item := range n.Content {
			d.checkKeys(item, t.Elem(), fmt.Sprintf("%s[%d]", path, i), shapes)
		}
	case reflect.String, reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Float32, reflect.Float64:
		d.expectKind(n, yaml.ScalarNode, path, "a value")
	case reflect.Map:
		d.checkMapping(n, path, &shape{rest: t.Elem()}, shapes)
	case reflect.Struct:
		if s := shapeOf(t, shapes); s.tagged {
			d.checkMapping(n, path, s, shapes)
		}
	}
}

// checkMapping checks a mapping's keys against s, and its values against their types.
func (d *decoder) checkMapping(n *yaml.Node, path string, s *shape, shapes map[reflect.Type]*shape) {
	if !d.expectKind(n, yaml.MappingNode, path, "a mapping") {
		return
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i]
		p := joinPath(path, k.Value)
		if !d.checkKey(k, path, seen) {
			continue
		}
		d.pos[p] = posOf(k)
		ft, ok := s.keys[k.Value]
		if !ok && s.rest != nil {
			ft, ok = s.rest, true
		}
		if !ok {
			d.errorf(k, p, "unknown field %q%s", k.Value, suggest(k.Value, slices.Collect(maps.Keys(s.keys))))
			continue
		}
		d.checkKeys(n.Content[i+1], ft, p, shapes)
	}
}

// shapeOf reads the YAML keys of struct type t, memoized in shapes.
func shapeOf(t reflect.Type, shapes map[reflect.Type]*shape) *shape {
	if s, ok := shapes[t]; ok {
		return s
	}
	s := &shape{keys: map[string]reflect.Type{}}
	shapes[t] = s // before the fields: an inline field of t's own type ends here
	for i := range t.NumField() {
		f := t.Field(i)
		if _, has := f.Tag.Lookup("yaml"); has {
			s.tagged = true
		}
		name, inline, skip := yamlKey(f)
		switch {
		case skip:
		case inline:
			ft := f.Type
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			switch ft.Kind() {
			case reflect.Struct:
				in := shapeOf(ft, shapes)
				maps.Copy(s.keys, in.keys)
				if in.rest != nil {
					s.rest = in.rest
				}
			case reflect.Map:
				s.rest = ft.Elem()
			}
		default:
			s.keys[name] = f.Type
		}
	}
	return s
}

// foreignKeys are keys of KEDA's ScaledObject and of the HPA that users bring along, by
// the rules type they are written in, with where the rules take that setting. The HPA's
// names that mean the same here (stabilizationWindowSeconds, periodSeconds, selectPolicy,
// policies, type, value, minReplicas, maxReplicas) are accepted, not listed.
var foreignKeys = map[reflect.Type]map[string]string{
	reflect.TypeFor[Rules](): {
		"pollingInterval": `did you mean "interval"? pollingInterval is KEDA's name for it`,
		"cooldownPeriod":  `KEDA's cooldownPeriod, the wait before scaling to zero, is a workload's behavior.scaleDown.stabilizationWindow here`,
		"triggers":        `the metrics are read by "queries", a preset and templates, not by KEDA's triggers`,
	},
	reflect.TypeFor[Workload](): {
		"pollingInterval":                `did you mean the top level's "interval"? KEDA's pollingInterval is one interval for every workload here`,
		"cooldownPeriod":                 `did you mean "behavior.scaleDown.stabilizationWindow"? KEDA's cooldownPeriod, the wait before scaling to zero, is the scale-down window here`,
		"minReplicaCount":                `did you mean "minReplicas"? minReplicaCount is KEDA's name for it`,
		"maxReplicaCount":                `did you mean "maxReplicas"? maxReplicaCount is KEDA's name for it`,
		"idleReplicaCount":               `KEDA's idleReplicaCount has no equivalent: minReplicas 0 with horizontal.activationQueueDepth scales to zero`,
		"activationThreshold":            `did you mean "horizontal.activationQueueDepth"? it is KEDA's activationThreshold on the queue depth`,
		"scaleTargetRef":                 `did you mean "target"? scaleTargetRef is the HPA's and KEDA's name for it`,
		"advanced":                       `KEDA's advanced block: put the behavior block of its horizontalPodAutoscalerConfig under the workload's "behavior"`,
		"horizontalPodAutoscalerConfig":  `put its behavior block under the workload's "behavior"`,
		"fallback":                       `did you mean "fallbackReplicas"? it is KEDA's fallback.replicas, which applies while metrics are missing`,
		"triggers":                       `the metrics are read by the workload's "queries" or the file's queries.templates, not by KEDA's triggers`,
		"metrics":                        `the metrics are read by the workload's "queries" or the file's queries.templates, not by the HPA's metrics`,
		"targetCPUUtilizationPercentage": `did you mean "thresholds.cpu.target"? a fraction of the request (80 % is 0.8 or 80%)`,
	},
	reflect.TypeFor[Horizontal](): {
		"activationThreshold": `did you mean "activationQueueDepth"? it is KEDA's activationThreshold on the queue depth`,
	},
	reflect.TypeFor[ScalingRules](): {
		"tolerance": `did you mean the workload's "horizontal.tolerance"? one tolerance applies both ways here`,
	},
}

// suggestField says where the rules take an unknown key of struct type t: KEDA's or the
// HPA's name for a setting, a typo of a key of t, or a key of one of t's objects written a
// level too high (`utilization` for `horizontal.utilization`).
func suggestField(t reflect.Type, key string) string {
	if hint, ok := foreignKeys[t][key]; ok {
		return " (" + hint + ")"
	}
	fields, _ := structFields(t)
	if s := suggest(key, slices.Collect(maps.Keys(fields))); s != "" {
		return s
	}
	var nested []string
	for name, f := range fields {
		ft := t.FieldByIndex(f.index).Type
		for ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		if ft.Kind() != reflect.Struct || reflect.PointerTo(ft).Implements(scalarDecoderType) {
			continue
		}
		sub, _ := structFields(ft)
		for subName := range sub {
			if strings.EqualFold(subName, key) {
				nested = append(nested, strconv.Quote(name+"."+subName))
			}
		}
	}
	if len(nested) == 0 {
		return ""
	}
	slices.Sort(nested)
	return " (did you mean " + strings.Join(nested, " or ") + "?)"
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
