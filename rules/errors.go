package rules

import (
	"fmt"
	"sort"
	"strings"
)

// Pos is a position in a rules file. Line and Column start at 1; zero means unknown.
type Pos struct {
	Line   int
	Column int
}

// Error is one problem in a rules file, at a field path such as
// `workloads[0].maxReplicas`.
type Error struct {
	File string
	Pos  Pos
	Path string
	Msg  string
}

// Error formats the problem as `FILE:LINE:COL: field.path: message`, the form editors and
// CI annotations understand.
func (e *Error) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		b.WriteString(":")
	}
	if e.Pos.Line > 0 {
		fmt.Fprintf(&b, "%d:%d:", e.Pos.Line, e.Pos.Column)
	}
	if b.Len() > 0 {
		b.WriteString(" ")
	}
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// ErrorList holds every problem found in one rules file, so a user sees all of them at
// once. It is returned as an error only when it is not empty.
type ErrorList []*Error

// Error joins the problems, one per line, in file order.
func (l ErrorList) Error() string {
	msgs := make([]string, len(l))
	for i, e := range l {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "\n")
}

// Unwrap lets errors.As find each *Error.
func (l ErrorList) Unwrap() []error {
	errs := make([]error, len(l))
	for i, e := range l {
		errs[i] = e
	}
	return errs
}

// sorted orders the problems by position, then path, and drops exact repeats.
func (l ErrorList) sorted() ErrorList {
	sort.SliceStable(l, func(i, j int) bool {
		a, b := l[i], l[j]
		if a.Pos.Line != b.Pos.Line {
			return a.Pos.Line < b.Pos.Line
		}
		if a.Pos.Column != b.Pos.Column {
			return a.Pos.Column < b.Pos.Column
		}
		return a.Path < b.Path
	})
	out := l[:0]
	for i, e := range l {
		if i > 0 && *e == *l[i-1] {
			continue
		}
		out = append(out, e)
	}
	return out
}
