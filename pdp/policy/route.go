package policy

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/tollgate/tollgate/pdp/route"
)

// RoutesPath is where a bundle keeps its route table: data.tollgate.routes.
// When a bundle has one, Activate compiles it and every evaluation gets the
// route that matches the request as input.route.
var RoutesPath = []string{"tollgate", "routes"}

// routeFields are the fields of a route copied into input.route when they
// are present, with the value the bundle gives them.
var routeFields = []string{"id", "methods", "sensitivity", "scopes", "roles", "owner"}

var (
	keyRoute    = ast.StringTerm("route")
	keyMatched  = ast.StringTerm("matched")
	keyIndex    = ast.StringTerm("index")
	keyTemplate = ast.StringTerm("template")
	keyParams   = ast.StringTerm("params")
	keyOwner    = ast.StringTerm("caller_is_owner")

	// noMatch is input.route when the table has no route for the request.
	noMatch = ast.ObjectTerm(ast.Item(keyMatched, ast.BooleanTerm(false)))
)

// routeTable is a bundle's compiled route table with the parts of each
// input.route built once: terms are never modified once built, so every
// evaluation shares them.
type routeTable struct {
	table     *route.Table
	fixed     [][][2]*ast.Term // per route: matched, index and the copied fields
	templates [][]*ast.Term    // per route and path: the template string
	names     [][][]*ast.Term  // per route, path and parameter: its name
	shapes    []routeShape     // per route: the fields its input.route has
	// owners is, per route, the name of its owner parameter as a term (the
	// claim of that name is compared with it), nil when the route has no
	// owner or names one that is not a string.
	owners []*ast.Term
}

// RouteTable reads the route table in a bundle's data
// (data.tollgate.routes, see RoutesPath) as the matcher takes it: each
// route's definition (the JSON object) and its methods and paths. It
// returns nil, nil, nil when the bundle has no table, and an error
// (wrapping route.ErrInvalid) when the table is not one the matcher
// understands; a policy then matches routes itself, in Rego. It is the one
// reader of route tables: the engine, the decision log and the offline
// evaluator all use it.
func RouteTable(data map[string]any) ([]map[string]any, []route.Route, error) {
	var v any = data
	for _, k := range RoutesPath {
		m, ok := v.(map[string]any)
		if !ok {
			return nil, nil, nil
		}
		if v, ok = m[k]; !ok {
			return nil, nil, nil
		}
	}
	list, ok := v.([]any)
	if !ok {
		return nil, nil, fmt.Errorf("%w: data.%s.%s is not an array", route.ErrInvalid, RoutesPath[0], RoutesPath[1])
	}
	defs := make([]map[string]any, len(list))
	routes := make([]route.Route, len(list))
	for i, item := range list {
		obj, ok := item.(map[string]any)
		if !ok {
			return nil, nil, fmt.Errorf("%w: route %d is not an object", route.ErrInvalid, i)
		}
		var err error
		if routes[i].Methods, err = stringList(obj["methods"]); err != nil {
			return nil, nil, fmt.Errorf("%w: route %d: methods: %w", route.ErrInvalid, i, err)
		}
		if routes[i].Paths, err = stringList(obj["paths"]); err != nil {
			return nil, nil, fmt.Errorf("%w: route %d: paths: %w", route.ErrInvalid, i, err)
		}
		defs[i] = obj
	}
	return defs, routes, nil
}

// Routes is a bundle's route table compiled as Engine compiles it, for
// tools that build input documents themselves (the offline evaluator of
// pdp/decisiontable), so that their input.route is the engine's.
type Routes struct{ rt *routeTable }

// CompileRoutes compiles the route table in a bundle's data. It returns
// nil, nil when the bundle has no table, and RouteTable's error when the
// table is not one the matcher understands.
func CompileRoutes(data map[string]any) (*Routes, error) {
	rt, err := compileRoutes(data)
	if rt == nil || err != nil {
		return nil, err
	}
	return &Routes{rt: rt}, nil
}

// Route returns input.route for a request, as Engine builds it: the route
// that matches method and segments, or {"matched": false}. claims are the
// caller's visible claims (input.identity.claims, an ast.Object; nil for a
// caller without any), which caller_is_owner compares.
func (r *Routes) Route(method string, segments []string, claims ast.Value) ast.Value {
	return r.rt.term(&arena{}, method, segments, claims).Value
}

// compileRoutes compiles the route table in a bundle's data. It returns
// nil, nil when the bundle has no table, and RouteTable's error when the
// table is not one the matcher understands.
func compileRoutes(data map[string]any) (*routeTable, error) {
	defs, routes, err := RouteTable(data)
	if defs == nil || err != nil {
		return nil, err
	}
	rt := &routeTable{
		fixed:     make([][][2]*ast.Term, len(defs)),
		templates: make([][]*ast.Term, len(defs)),
		names:     make([][][]*ast.Term, len(defs)),
		shapes:    make([]routeShape, len(defs)),
		owners:    make([]*ast.Term, len(defs)),
	}
	for i, obj := range defs {
		rt.shapes[i] = shapeOf(obj)
		if owner, ok := obj["owner"].(string); ok {
			rt.owners[i] = ast.StringTerm(owner)
		}
		fixed := [][2]*ast.Term{
			ast.Item(keyMatched, ast.BooleanTerm(true)),
			ast.Item(keyIndex, ast.IntNumberTerm(i)),
		}
		for _, f := range routeFields {
			fv, ok := obj[f]
			if !ok {
				continue
			}
			val, err := ast.InterfaceToValue(fv)
			if err != nil {
				return nil, fmt.Errorf("%w: route %d: %s: %w", route.ErrInvalid, i, f, err)
			}
			fixed = append(fixed, ast.Item(ast.StringTerm(f), ast.NewTerm(val)))
		}
		rt.fixed[i] = fixed
		rt.templates[i] = make([]*ast.Term, len(routes[i].Paths))
		for j, p := range routes[i].Paths {
			rt.templates[i][j] = ast.StringTerm(p)
		}
	}
	table, err := route.Compile(routes)
	if err != nil {
		return nil, err
	}
	rt.table = table
	for i := range routes {
		rt.names[i] = make([][]*ast.Term, len(routes[i].Paths))
		for j := range routes[i].Paths {
			params := table.Params(i, j)
			names := make([]*ast.Term, len(params))
			for k, p := range params {
				names[k] = ast.StringTerm(p.Name)
			}
			rt.names[i][j] = names
		}
	}
	return rt, nil
}

// stringList reads a non-empty list of non-empty strings.
func stringList(v any) ([]string, error) {
	list, ok := v.([]any)
	if !ok || len(list) == 0 {
		return nil, errors.New("not a non-empty array")
	}
	out := make([]string, len(list))
	for i, x := range list {
		s, ok := x.(string)
		if !ok || s == "" {
			return nil, errors.New("item " + strconv.Itoa(i) + " is not a non-empty string")
		}
		out[i] = s
	}
	return out, nil
}

// term returns input.route for a request: the matched route, its template
// and parameters, whether the caller owns it (a route with an owner), or
// {"matched": false}. claims are the visible identity's claims.
func (rt *routeTable) term(a *arena, method string, segments []string, claims ast.Value) *ast.Term {
	m, ok := rt.table.Match(method, segments)
	if !ok {
		return noMatch
	}
	names := rt.names[m.Route][m.Path]
	params := make([][2]*ast.Term, len(m.Params))
	for k, p := range m.Params {
		params[k] = ast.Item(names[k], a.str(segments[p.Segment]))
	}
	fixed := rt.fixed[m.Route]
	items := make([][2]*ast.Term, 0, len(fixed)+3)
	items = append(items, fixed...)
	items = append(items,
		ast.Item(keyTemplate, rt.templates[m.Route][m.Path]),
		ast.Item(keyParams, a.term(ast.NewObject(params...))),
	)
	if rt.shapes[m.Route].has("owner") {
		items = append(items, ast.Item(keyOwner, ast.InternedTerm(rt.callerIsOwner(m, segments, claims))))
	}
	return a.term(ast.NewObject(items...))
}

// callerIsOwner is input.route.caller_is_owner for a match of a route with
// an owner: whether the caller's claim named by the route's owner equals
// the path parameter of that name. A string claim equals the parameter
// when it is the same string. A numeric claim (42, 42.0) equals it when the
// parameter is an integer in canonical form of at most 15 digits ("42",
// "-7"; not "042" or "+42") and the two are the same number, as Rego's ==
// compares numbers. Anything else, no claims or an owner that is not a
// parameter of the path, is false. The policy's Rego reference
// (matched_route in policies/authz.rego) says the same, and the
// differential tests hold the two equal.
func (rt *routeTable) callerIsOwner(m route.Match, segments []string, claims ast.Value) bool {
	owner := rt.owners[m.Route]
	obj, ok := claims.(ast.Object)
	if owner == nil || !ok {
		return false
	}
	name := string(owner.Value.(ast.String))
	param, found := "", false
	for _, p := range m.Params {
		if p.Name == name {
			param, found = segments[p.Segment], true
			break
		}
	}
	claim := obj.Get(owner)
	if !found || claim == nil {
		return false
	}
	switch v := claim.Value.(type) {
	case ast.String:
		return string(v) == param
	case ast.Number:
		return canonicalInt(param) && ast.NumberCompare(v, ast.Number(param)) == 0
	}
	return false
}

// canonicalInt reports whether s is an integer of at most 15 digits
// written as JSON writes it: no sign but a minus, no leading zero.
func canonicalInt(s string) bool {
	digits := strings.TrimPrefix(s, "-")
	if digits == "" || len(digits) > 15 || (digits[0] == '0' && (len(digits) > 1 || len(s) > 1)) {
		return false
	}
	for i := range len(digits) {
		if digits[i] < '0' || digits[i] > '9' {
			return false
		}
	}
	return true
}
