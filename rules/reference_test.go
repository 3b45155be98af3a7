package rules

import (
	"os"
	"reflect"
	"strings"
	"testing"
)

// TestReadmeDocumentsEveryKey keeps the README's rules reference accurate: every YAML key
// of the rules types must be named there.
func TestReadmeDocumentsEveryKey(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string]bool{}
	collectKeys(reflect.TypeFor[Rules](), keys, map[reflect.Type]bool{})
	if len(keys) < 40 {
		t.Fatalf("found only %d keys; the walk is broken", len(keys))
	}
	for k := range keys {
		if !strings.Contains(string(readme), "`"+k+"`") {
			t.Errorf("README.md does not document the rules key `%s`", k)
		}
	}
}

func collectKeys(t reflect.Type, keys map[string]bool, seen map[reflect.Type]bool) {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Map {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct || seen[t] || t.PkgPath() != reflect.TypeFor[Rules]().PkgPath() {
		return
	}
	seen[t] = true
	for i := range t.NumField() {
		f := t.Field(i)
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" || opts == "inline" || !f.IsExported() || f.Anonymous {
			continue
		}
		keys[name] = true
		collectKeys(f.Type, keys, seen)
	}
}
