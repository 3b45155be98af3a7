// Package rules reads the workerscale rules YAML: instance classes, thresholds, queries,
// rate budgets and workloads. Loading is strict: unknown keys, wrong types, unparsable
// values and inconsistent settings are all reported together, each with its file, line,
// column and field path. Loaded rules are complete, with every default filled in.
package rules

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"

	"gopkg.in/yaml.v3"
)

// Load reads, decodes, completes and validates the rules file at path. On failure the
// error is an ErrorList holding every problem, or an I/O error.
func Load(path string) (*Rules, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading rules: %w", err)
	}
	r, err := Parse(path, data)
	if err != nil {
		return nil, err
	}
	r.Prometheus.HTTP.SetDirectory(dirOf(path))
	return r, nil
}

func dirOf(path string) string { return filepath.Dir(path) }

// Parse is Load for rules already in memory; file names them in errors.
func Parse(file string, data []byte) (*Rules, error) {
	var root yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&root); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, ErrorList{{File: file, Pos: Pos{Line: 1, Column: 1}, Msg: "the file is empty"}}
		}
		return nil, ErrorList{syntaxError(file, err)}
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, ErrorList{{File: file, Pos: posOf(&extra), Msg: "the file holds more than one YAML document; put all rules in one"}}
	}
	d := newDecoder(file)
	var r Rules
	doc := &root
	if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 {
		doc = doc.Content[0]
	}
	d.decode(doc, reflect.ValueOf(&r).Elem(), "")
	r.File = file
	r.applyDefaults()
	v := &validator{file: file, pos: d.pos, failed: d.failed}
	v.validate(&r)
	if errs := append(d.errs, v.errs...); len(errs) > 0 {
		return nil, errs.sorted()
	}
	return &r, nil
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// syntaxError turns a yaml.v3 syntax error ("yaml: line 3: ...") into an *Error.
func syntaxError(file string, err error) *Error {
	e := &Error{File: file, Msg: err.Error()}
	if m := yamlLine.FindStringSubmatch(err.Error()); m != nil {
		line, _ := strconv.Atoi(m[1])
		e.Pos = Pos{Line: line, Column: 1}
		e.Msg = m[2]
	}
	return e
}
