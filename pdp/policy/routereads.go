package policy

import (
	"fmt"
	"maps"
	"slices"

	"github.com/open-policy-agent/opa/v1/ast"
)

// A route read analysis narrows the decision cache's key for requests the
// route table matches (or does not match). analyzeReads looks at the whole
// policy at once: the default policy reads input.request.path (in its Rego
// fallback matcher) and input.route.params (for the owner check), so every
// key holds the path, and no two /products/{id} requests share a decision.
// But when Tollgate supplies input.route, the fallback never runs, and a
// route without an owner never reaches the owner check. The analysis below
// knows both, for each shape of input.route (which of its fields are
// present), by following the evaluation as topdown runs it:
//
//   - the rules reachable from the query, each rule body walked in its
//     compiled order, with every reference to input recorded as
//     analyzeReads records it;
//   - a body stops at the first expression that cannot succeed for this
//     shape: `not input.route` (input.route is always an object), or an
//     expression that refers, outside any comprehension and not negated,
//     to a field of input.route the shape lacks (undefined, so the
//     expression is). The expression itself is still walked (it runs, and
//     the rules it refers to may fail with an error); the ones after it
//     never run;
//   - a complete rule whose every live definition has input.route as its
//     value (route := input.route) is an alias of it, and so are the local
//     variables bound to input.route or an alias, and a function's
//     parameters where every call passes an alias. Through an alias, a
//     field reference (route.owner, r.params[k]) reads that field only;
//     the bare alias as an expression (route, not route) reads none (an
//     object is never false). Any other use (an argument of a built-in, a
//     comparison, an element of a collection, iteration, the value of any
//     other rule) reads input.route whole.
//
// Within a route, only input.route.template, input.route.params and
// input.route.caller_is_owner vary; its other fields are the route's own,
// fixed by its index. So the key of a matched request is the route's
// index, the template's index when the policy reads the template, the
// parameters when it reads them, whether the caller owns the route when it
// reads that, and the other parts of the input that shape reads. Anything the analysis does
// not model (a `with` modifier, a rule whose head is a general reference)
// leaves the whole-policy key in place.
type routeReads struct {
	reads            // the other parts; reads.route is unused
	template, params bool
	// owner: the policy reads input.route.caller_is_owner, which varies
	// with the parameters and the claims.
	owner bool
}

// routeShape records which fields input.route has: shapeMatched for a
// matched route (then also index, template and params), and one bit per
// routeFields entry the route defines. An unmatched request's input.route
// is {"matched": false}: the shape 0.
type routeShape uint8

const shapeMatched routeShape = 1 << 7

// shapeOf is the shape of a matched route with definition def.
func shapeOf(def map[string]any) routeShape {
	s := shapeMatched
	for i, f := range routeFields {
		if _, ok := def[f]; ok {
			s |= 1 << i
		}
	}
	return s
}

// has reports whether input.route has field for this shape.
func (s routeShape) has(field string) bool {
	switch field {
	case "matched":
		return true
	case "index", "template", "params":
		return s&shapeMatched != 0
	case "caller_is_owner":
		return s.has("owner")
	}
	i := slices.Index(routeFields, field)
	return i >= 0 && s&shapeMatched != 0 && s&(1<<i) != 0
}

// analyzeRouteReads finds what the policy compiled by c reads when query
// is evaluated with an input.route of shape. why is not empty when it
// cannot say (then the whole-policy analysis stands), and says why.
func analyzeRouteReads(c *ast.Compiler, query ast.Body, shape routeShape) (rr routeReads, why string) {
	a := &routeAnalyzer{c: c, shape: shape, sets: map[string]bool{}, active: map[string]bool{}}
	a.body(query, map[ast.Var]bool{})
	if a.why != "" {
		return routeReads{}, a.why
	}
	return a.out, ""
}

// refineByRoute analyzes each shape of input.route the table has, and the
// unmatched one. It returns nil and why when any cannot be analyzed.
func refineByRoute(c *ast.Compiler, query ast.Body, rt *routeTable) (byRoute []*routeReads, unmatched *routeReads, why string) {
	shapes := map[routeShape]*routeReads{}
	analyze := func(s routeShape) *routeReads {
		if rr, done := shapes[s]; done {
			return rr
		}
		r, w := analyzeRouteReads(c, query, s)
		if w != "" {
			why = w
			return nil
		}
		shapes[s] = &r
		return &r
	}
	if unmatched = analyze(0); unmatched == nil {
		return nil, nil, why
	}
	byRoute = make([]*routeReads, len(rt.shapes))
	for i, s := range rt.shapes {
		if byRoute[i] = analyze(s); byRoute[i] == nil {
			return nil, nil, why
		}
	}
	return byRoute, unmatched, ""
}

type routeAnalyzer struct {
	c     *ast.Compiler
	shape routeShape
	out   routeReads
	// why says what the analysis does not model, once it met it.
	why string
	// sets remembers each rule set analyzed (by path and which of its
	// arguments are aliases) and whether it is an alias of input.route.
	sets   map[string]bool
	active map[string]bool
}

func (a *routeAnalyzer) fail(why string) {
	if a.why == "" {
		a.why = why
	}
}

func (a *routeAnalyzer) whole() {
	a.out.template, a.out.params = true, true
	a.out.owner = a.shape.has("caller_is_owner")
}

// body walks b's expressions in order and reports whether all of them may
// succeed; it stops after one that cannot.
func (a *routeAnalyzer) body(b ast.Body, env map[ast.Var]bool) (live bool) {
	for _, e := range b {
		a.expr(e, env) // first: it analyzes the rules e refers to
		if a.why != "" || a.dead(e, env) {
			return false
		}
	}
	return true
}

// dead reports whether e cannot succeed for this shape.
func (a *routeAnalyzer) dead(e *ast.Expr, env map[ast.Var]bool) bool {
	if len(e.With) > 0 {
		return false
	}
	if e.Negated {
		t, ok := e.Terms.(*ast.Term)
		if !ok {
			return false
		}
		ref, ok := t.Value.(ast.Ref)
		return ok && len(ref) == 2 && ref.HasPrefix(inputRouteRef)
	}
	found := false
	visit := func(t *ast.Term) bool {
		if found {
			return true
		}
		switch v := t.Value.(type) {
		case *ast.ArrayComprehension, *ast.SetComprehension, *ast.ObjectComprehension:
			return true // its body failing leaves it empty, not undefined
		case ast.Ref:
			if f, ok := a.routeField(v, env); ok && !a.shape.has(f) {
				found = true
				return true
			}
		}
		return false
	}
	switch ts := e.Terms.(type) {
	case *ast.Term:
		ast.WalkTerms(ts, visit)
	case []*ast.Term:
		for _, t := range ts {
			ast.WalkTerms(t, visit)
		}
	}
	return found
}

// routeField returns the constant field of input.route that ref selects,
// directly or through an alias.
func (a *routeAnalyzer) routeField(ref ast.Ref, env map[ast.Var]bool) (string, bool) {
	suffix, isRoute := a.routeSuffix(ref, env)
	if !isRoute || len(suffix) == 0 {
		return "", false
	}
	s, ok := suffix[0].Value.(ast.String)
	return string(s), ok
}

// routeSuffix reports whether ref reads input.route, directly or through
// an alias, and what it selects under it. It analyzes the rules a
// reference to data reads.
func (a *routeAnalyzer) routeSuffix(ref ast.Ref, env map[ast.Var]bool) (suffix ast.Ref, isRoute bool) {
	head, ok := ref[0].Value.(ast.Var)
	switch {
	case !ok:
		return nil, false
	case head == ast.InputRootDocument.Value:
		if len(ref) >= 2 && ref[1].Value.Compare(ast.String("route")) == 0 {
			return ref[2:], true
		}
	case env[head]:
		return ref[1:], true
	case head == ast.DefaultRootDocument.Value:
		path, rest, ok := a.ruleSetOf(ref)
		if !ok {
			a.fail("the reference " + ref.String())
			return nil, false
		}
		if path != nil && a.ruleSet(path, a.c.GetRulesExact(path), nil) {
			return rest, true
		}
	}
	return nil, false
}

// expr walks one expression.
func (a *routeAnalyzer) expr(e *ast.Expr, env map[ast.Var]bool) {
	if len(e.With) > 0 {
		a.fail("a with modifier") // the analysis does not model replaced values
		return
	}
	switch ts := e.Terms.(type) {
	case *ast.Term:
		if a.alias(ts, env) {
			return // truthiness: an object is never false
		}
		a.term(ts, env)
	case []*ast.Term:
		a.call(ts, env)
	case *ast.SomeDecl:
		for _, t := range ts.Symbols {
			a.term(t, env)
		}
	case *ast.Every:
		inner := maps.Clone(env)
		a.term(ts.Domain, env)
		a.term(ts.Key, inner)
		a.term(ts.Value, inner)
		a.body(ts.Body, inner)
	default:
		a.fail(fmt.Sprintf("an expression of type %T", e.Terms))
	}
}

// call walks a call: unification binds aliases; a function of the policy
// is analyzed with the aliases it is passed; a built-in reads its
// arguments whole.
func (a *routeAnalyzer) call(ts []*ast.Term, env map[ast.Var]bool) {
	op, ok := ts[0].Value.(ast.Ref)
	if !ok {
		a.fail("a call of " + ts[0].String())
		return
	}
	args := ts[1:]
	if (op.Equal(ast.Equality.Ref()) || op.Equal(ast.Assign.Ref())) && len(args) == 2 {
		for i, j := range [2]int{1, 0} {
			// Only a variable seen for the first time is bound; one bound
			// before is compared with the value, which reads it whole.
			if v, isVar := args[i].Value.(ast.Var); isVar && !seen(env, v) && a.alias(args[j], env) {
				env[v] = true
				return
			}
		}
	}
	if op[0].Value.Compare(ast.DefaultRootDocument.Value) == 0 {
		if rules := a.c.GetRulesExact(op); len(rules) > 0 && len(rules[0].Head.Args) > 0 {
			aliases := make([]bool, len(rules[0].Head.Args))
			for i, t := range args {
				if i < len(aliases) && a.alias(t, env) {
					aliases[i] = true
					continue
				}
				a.term(t, env)
			}
			a.ruleSet(op, rules, aliases)
			return
		}
	}
	a.term(ts[0], env)
	for _, t := range args {
		a.term(t, env)
	}
}

// alias reports whether t is input.route or an alias of it, analyzing the
// rules it refers to.
func (a *routeAnalyzer) alias(t *ast.Term, env map[ast.Var]bool) bool {
	switch v := t.Value.(type) {
	case ast.Var:
		return env[v]
	case ast.Ref:
		suffix, isRoute := a.routeSuffix(v, env)
		return isRoute && len(suffix) == 0
	}
	return false
}

var inputRouteRef = ast.MustParseRef("input.route")

// seen reports whether v occurred before in the body (env holds every
// variable seen: true for an alias, false for any other).
func seen(env map[ast.Var]bool, v ast.Var) bool {
	_, ok := env[v]
	return ok
}

// term walks t as a value: every read it makes is recorded, and an alias
// used as a value reads input.route whole.
func (a *routeAnalyzer) term(t *ast.Term, env map[ast.Var]bool) {
	if t == nil || a.why != "" {
		return
	}
	switch v := t.Value.(type) {
	case ast.Var:
		if env[v] {
			a.whole()
		} else {
			env[v] = false // seen: bound from here on
		}
	case ast.Ref:
		a.ref(v, env)
	case *ast.Array:
		v.Foreach(func(x *ast.Term) { a.term(x, env) })
	case ast.Set:
		v.Foreach(func(x *ast.Term) { a.term(x, env) })
	case ast.Object:
		v.Foreach(func(k, x *ast.Term) { a.term(k, env); a.term(x, env) })
	case *ast.ArrayComprehension:
		inner := maps.Clone(env)
		a.body(v.Body, inner)
		a.term(v.Term, inner)
	case *ast.SetComprehension:
		inner := maps.Clone(env)
		a.body(v.Body, inner)
		a.term(v.Term, inner)
	case *ast.ObjectComprehension:
		inner := maps.Clone(env)
		a.body(v.Body, inner)
		a.term(v.Key, inner)
		a.term(v.Value, inner)
	case ast.Call:
		a.call(v, env)
	}
}

// ref walks a reference used as a value.
func (a *routeAnalyzer) ref(ref ast.Ref, env map[ast.Var]bool) {
	for _, k := range ref[1:] {
		a.term(k, env) // keys are values too: input.identity.claims[route.owner]
	}
	if _, isVar := ref[0].Value.(ast.Var); !isVar {
		a.term(ref[0], env) // a call or a collection, indexed
		return
	}
	suffix, isRoute := a.routeSuffix(ref, env)
	switch {
	case !isRoute && ref[0].Value.Compare(ast.InputRootDocument.Value) == 0:
		if !a.out.add(ref) {
			a.fail("the reference " + ref.String())
		}
		return
	case !isRoute:
		return // base data, another rule, a local variable, a built-in's name
	case len(suffix) == 0:
		a.whole()
		return
	}
	switch f, ok := suffix[0].Value.(ast.String); {
	case !ok:
		a.whole()
	case f == "params":
		a.out.params = true
	case f == "template":
		a.out.template = true
	case f == "caller_is_owner":
		a.out.owner = a.shape.has("caller_is_owner")
	}
}

// ruleSetOf splits a reference to data into the rule set it reads and the
// rest. path is nil for base data. ok is false when the reference may read
// several rule sets (a prefix of them, or a variable key): then each is
// analyzed, an alias among them read whole.
func (a *routeAnalyzer) ruleSetOf(ref ast.Ref) (path, rest ast.Ref, ok bool) {
	if rules := a.c.GetRulesForVirtualDocument(ref); len(rules) > 0 {
		path = rules[0].Ref()
		for _, r := range rules {
			if !r.Ref().Equal(path) || !path.IsGround() {
				return nil, nil, false
			}
		}
		return path, ref[len(path):], true
	}
	prefix := ref.GroundPrefix()
	under := a.c.GetRulesWithPrefix(prefix)
	if len(under) == 0 {
		return nil, nil, true
	}
	seen := map[string]bool{}
	for _, r := range under {
		p := r.Ref()
		if !p.IsGround() {
			return nil, nil, false
		}
		if seen[p.String()] {
			continue
		}
		seen[p.String()] = true
		if len(r.Head.Args) == 0 && a.ruleSet(p, a.c.GetRulesExact(p), nil) {
			a.whole() // the alias is part of a document read whole
		}
	}
	return nil, nil, a.why == ""
}

func setKey(path ast.Ref, aliases []bool) string {
	k := path.String()
	for _, al := range aliases {
		if al {
			k += "+"
		} else {
			k += "-"
		}
	}
	return k
}

// ruleSet analyzes the definitions of one rule (or function, with the
// arguments that are aliases) and reports whether its value is an alias
// of input.route.
func (a *routeAnalyzer) ruleSet(path ast.Ref, rules []*ast.Rule, aliases []bool) bool {
	key := setKey(path, aliases)
	if is, done := a.sets[key]; done {
		return is
	}
	if a.active[key] || len(rules) == 0 {
		a.fail("the rules of " + path.String()) // recursion, which Rego forbids, or none
		return false
	}
	a.active[key] = true
	defer delete(a.active, key)
	complete := true
	var producers []bool // per live definition: its value is an alias
	for _, r := range rules {
		if !r.Head.Ref().IsGround() || r.Head.Key != nil || len(r.Head.Args) > 0 {
			complete = false
		}
		for def := r; def != nil; def = def.Else {
			env := map[ast.Var]bool{}
			for i, arg := range def.Head.Args {
				if v, isVar := arg.Value.(ast.Var); isVar && i < len(aliases) && aliases[i] {
					env[v] = true
					continue
				}
				if i < len(aliases) && aliases[i] {
					a.whole() // a pattern matched against it
				}
				a.term(arg, env)
			}
			live := a.body(def.Body, env)
			if a.why != "" {
				return false
			}
			if !live {
				continue // its head is never evaluated
			}
			a.term(def.Head.Key, env)
			if v := def.Head.Value; v != nil && a.alias(v, env) {
				producers = append(producers, true)
			} else {
				a.term(v, env)
				producers = append(producers, false)
			}
		}
	}
	is := complete && len(producers) > 0 && !slices.Contains(producers, false)
	if !is && slices.Contains(producers, true) {
		a.whole() // an alias is part of another value
	}
	a.sets[key] = is
	return is
}
