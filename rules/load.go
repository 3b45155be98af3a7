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
	"runtime/debug"
	"strconv"

	"gopkg.in/yaml.v3"
)

// Load reads, decodes, completes and validates the rules file at path. On failure the
// error is an ErrorList holding every problem, an I/O error, or an *InternalError.
func Load(path string) (*Rules, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading rules: %w", err)
	}
	return loadData(path, data)
}

// loadData is Load for the content of the file at path: Parse, and relative file names
// of the Prometheus client settings resolved against the file's directory.
func loadData(path string, data []byte) (r *Rules, err error) {
	defer recoverInto(path, &r, &err)
	r, err = parse(path, data)
	if err != nil {
		return nil, err
	}
	r.Prometheus.HTTP.SetDirectory(dirOf(path))
	return r, nil
}

func dirOf(path string) string { return filepath.Dir(path) }

// InternalError is a panic while loading rules: a bug in workerscale that some input
// triggered. It is returned as an error so that no rules file can crash the controller
// (which keeps its old rules) or check.
type InternalError struct {
	File  string
	Panic any
	Stack []byte
}

// Error says what happened, without the stack.
func (e *InternalError) Error() string {
	return fmt.Sprintf("%s: internal error while loading the rules, a bug in workerscale (please report it with the file): %v", e.File, e.Panic)
}

// recoverInto turns a panic of the function it is deferred in into an *InternalError.
func recoverInto(file string, r **Rules, err *error) {
	if p := recover(); p != nil {
		*r, *err = nil, &InternalError{File: file, Panic: p, Stack: debug.Stack()}
	}
}

// Parse is Load for rules already in memory; file names them in errors.
func Parse(file string, data []byte) (r *Rules, err error) {
	defer recoverInto(file, &r, &err)
	return parse(file, data)
}

func parse(file string, data []byte) (*Rules, error) {
	var root yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&root); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, ErrorList{{File: file, Pos: Pos{Line: 1, Column: 1}, Msg: "the file is empty"}}
		}
		return nil, ErrorList{syntaxError(file, err)}
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case err == nil:
		return nil, ErrorList{{File: file, Pos: posOf(&extra), Msg: "the file holds more than one YAML document; put all rules in one"}}
	case !errors.Is(err, io.EOF):
		return nil, ErrorList{syntaxError(file, err)}
	}
	var r Rules
	doc := &root
	if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 {
		doc = doc.Content[0]
	}
	d := newDecoder(file, doc)
	d.decode(doc, reflect.ValueOf(&r).Elem(), "")
	if d.exhausted {
		// Decoding stopped part way: what validation would find is mostly the values
		// that were never read.
		return nil, d.errs.sorted()
	}
	r.File = file
	r.applyDefaults()
	v := newValidator(file, d)
	v.validate(&r)
	if errs := append(d.errs, v.errs...); len(errs) > 0 {
		return nil, errs.sorted()
	}
	return &r, nil
}

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
