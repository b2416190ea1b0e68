// Package route matches a request's method and path segments against a
// route table compiled once, when a policy bundle is activated, instead of
// scanning every route on every request.
//
// The semantics are those of the default policy's Rego reference
// (policies/authz.rego, matched_route), which the tests prove equal:
//
//   - the first route, in table order, whose methods and one of whose paths
//     match decides; within that route the first matching path binds the
//     parameters;
//   - a method matches when it equals the request's method after upper-casing
//     (the request's method is taken as given), and "*" matches any method;
//   - a path template is matched segment by segment: a literal segment
//     matches itself (case-sensitive), "{name}" matches exactly one
//     non-empty segment and binds it to name, and a trailing "**" matches
//     zero or more segments. Empty segments of a template ("//a//{id}",
//     "/b/") are ignored.
//
// Compile refuses a table the Rego reference would call invalid
// (route_errors) as far as matching is concerned: no methods or paths, a
// template that does not start with "/", "**" anywhere but last, "*" or
// a brace outside a "{name}" segment, a parameter name that is not an
// identifier, or a name repeated in one template.
package route

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// ErrInvalid is wrapped by every error Compile returns.
var ErrInvalid = errors.New("invalid route table")

// Route is one entry of a route table, as far as matching is concerned.
type Route struct {
	// Methods are HTTP methods in any case; "*" is any method.
	Methods []string
	// Paths are path templates, e.g. "/customers/{customer_number}/**".
	Paths []string
}

// Param is a path parameter a matched template binds: its name and the
// index of the request segment that is its value.
type Param struct {
	Name    string
	Segment int
}

// Match is the route that decides a request.
type Match struct {
	// Route is the index of the route in the table.
	Route int
	// Path is the index of the matched template in the route's Paths.
	Path int
	// Params are the template's parameters in template order. The slice is
	// shared by every match of this template: read it, never modify it.
	Params []Param
}

// Table is a compiled route table. It is immutable and safe for
// concurrent use.
type Table struct {
	root   *node
	params [][][]Param // params[route][path]
	size   int
}

// ref names one template of the table: route and path index. Refs compare
// in table order; noRef is after every real one.
type ref struct{ route, path int }

var noRef = ref{route: int(^uint(0) >> 1)}

func (r ref) before(o ref) bool {
	return r.route < o.route || (r.route == o.route && r.path < o.path)
}

// node is a trie node: the templates whose first d segments lead here.
type node struct {
	literal map[string]*node
	param   *node
	end     ends // templates with exactly these segments
	tail    ends // templates with these segments then "**"
	first   ref  // the earliest template anywhere below: prunes the walk
}

// ends are the templates that end at a node, indexed by method: for each
// method the earliest template of a route that has it, and the earliest
// template of a route with "*".
type ends struct {
	byMethod map[string]ref
	any      ref
}

func newEnds() ends { return ends{any: noRef} }

func newNode() *node {
	return &node{end: newEnds(), tail: newEnds(), first: noRef}
}

// best returns the earliest template ending here that accepts method.
func (e *ends) best(method string) ref {
	r := e.any
	if m, ok := e.byMethod[method]; ok && m.before(r) {
		r = m
	}
	return r
}

// add records template r for the (upper-cased) methods; templates are
// added in table order, so the first one recorded per method is the
// earliest.
func (e *ends) add(methods []string, r ref) {
	for _, m := range methods {
		if m == "*" {
			if r.before(e.any) {
				e.any = r
			}
			continue
		}
		if e.byMethod == nil {
			e.byMethod = make(map[string]ref)
		}
		if old, ok := e.byMethod[m]; !ok || r.before(old) {
			e.byMethod[m] = r
		}
	}
}

// paramName is a valid parameter name, as the Rego reference checks it.
var paramName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// Compile builds the matcher for routes. It returns an error wrapping
// ErrInvalid for a table the policy's bundle check refuses (see the
// package comment); the error names the route and template, never a
// request.
func Compile(routes []Route) (*Table, error) {
	t := &Table{root: newNode(), params: make([][][]Param, len(routes)), size: len(routes)}
	for i, rt := range routes {
		if len(rt.Methods) == 0 || len(rt.Paths) == 0 {
			return nil, fmt.Errorf("%w: route %d: methods and paths must be non-empty", ErrInvalid, i)
		}
		methods := make([]string, len(rt.Methods))
		for k, m := range rt.Methods {
			if m == "" {
				return nil, fmt.Errorf("%w: route %d: empty method", ErrInvalid, i)
			}
			methods[k] = strings.ToUpper(m)
		}
		t.params[i] = make([][]Param, len(rt.Paths))
		for j, path := range rt.Paths {
			segs, tail, params, err := parseTemplate(path)
			if err != nil {
				return nil, fmt.Errorf("%w: route %d: path %q: %w", ErrInvalid, i, path, err)
			}
			t.params[i][j] = params
			t.insert(segs, tail, methods, ref{i, j})
		}
	}
	return t, nil
}

// insert adds one template to the trie.
func (t *Table) insert(segs []string, tail bool, methods []string, r ref) {
	n := t.root
	for _, s := range segs {
		if r.before(n.first) {
			n.first = r
		}
		if isParam(s) {
			if n.param == nil {
				n.param = newNode()
			}
			n = n.param
			continue
		}
		c := n.literal[s]
		if c == nil {
			if n.literal == nil {
				n.literal = make(map[string]*node)
			}
			c = newNode()
			n.literal[s] = c
		}
		n = c
	}
	if r.before(n.first) {
		n.first = r
	}
	if tail {
		n.tail.add(methods, r)
	} else {
		n.end.add(methods, r)
	}
}

// parseTemplate splits a template into its segments without the trailing
// "**" (tail reports it) and lists its parameters.
func parseTemplate(path string) (segs []string, tail bool, params []Param, err error) {
	if !strings.HasPrefix(path, "/") {
		return nil, false, nil, errors.New("does not start with /")
	}
	for s := range strings.SplitSeq(path, "/") {
		if s != "" {
			segs = append(segs, s)
		}
	}
	for k, s := range segs {
		switch {
		case s == "**":
			if k != len(segs)-1 {
				return nil, false, nil, errors.New(`"**" is not the last segment`)
			}
			tail = true
		case isParam(s):
			name := s[1 : len(s)-1]
			if !paramName.MatchString(name) {
				return nil, false, nil, fmt.Errorf("parameter %q is not an identifier", name)
			}
			for _, p := range params {
				if p.Name == name {
					return nil, false, nil, fmt.Errorf("parameter %q is repeated", name)
				}
			}
			params = append(params, Param{Name: name, Segment: k})
		case strings.ContainsAny(s, "{}*"):
			return nil, false, nil, fmt.Errorf("segment %q has a stray brace or star", s)
		}
	}
	if tail {
		segs = segs[:len(segs)-1]
	}
	return segs, tail, params, nil
}

func isParam(s string) bool {
	return len(s) > 2 && s[0] == '{' && s[len(s)-1] == '}'
}

// Params returns the parameters of path j of route i (nil when it has
// none, or when there is no such path). The slice is shared: read it,
// never modify it.
func (t *Table) Params(i, j int) []Param {
	if i < 0 || i >= len(t.params) || j < 0 || j >= len(t.params[i]) {
		return nil
	}
	return t.params[i][j]
}

// Len is the number of routes in the table.
func (t *Table) Len() int { return t.size }

// Match returns the route that decides a request with this method and
// these path segments (the normalized path split on "/", without empty
// segments), and false when no route matches.
//
// It walks the trie along the segments: at each segment at most a literal
// child and a parameter child, and it skips a subtree whose earliest
// template cannot beat the best match found so far. Its cost depends on the
// path and on how many templates share its shape, not on the size of the
// table. It does not allocate.
func (t *Table) Match(method string, segments []string) (Match, bool) {
	best := noRef
	t.root.walk(method, segments, 0, &best)
	if best == noRef {
		return Match{}, false
	}
	return Match{Route: best.route, Path: best.path, Params: t.params[best.route][best.path]}, true
}

func (n *node) walk(method string, segs []string, d int, best *ref) {
	if !n.first.before(*best) {
		return
	}
	if r := n.tail.best(method); r.before(*best) {
		*best = r
	}
	if d == len(segs) {
		if r := n.end.best(method); r.before(*best) {
			*best = r
		}
		return
	}
	s := segs[d]
	if c := n.literal[s]; c != nil {
		c.walk(method, segs, d+1, best)
	}
	if n.param != nil && s != "" {
		n.param.walk(method, segs, d+1, best)
	}
}
