package policy

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/bundle"

	"github.com/tollgate/tollgate/bundles"
	"github.com/tollgate/tollgate/pdp/authn"
	"github.com/tollgate/tollgate/pdp/credential"
	"github.com/tollgate/tollgate/pdp/request"
)

// routeTestData is a route table with routes of different shapes: no
// owner, an owner, scopes and a tail, and templates of one route whose
// parameters differ in name.
func routeTestData() map[string]any {
	return map[string]any{"tollgate": map[string]any{"routes": []any{
		map[string]any{"id": "a", "methods": []any{"GET"}, "paths": []any{"/a/{x}", "/a/{x}/{y}"}, "sensitivity": "public"},
		map[string]any{"id": "b", "methods": []any{"GET", "PUT"}, "paths": []any{"/b/{y}", "/b2/{z}"}, "sensitivity": "internal", "owner": "y"},
		map[string]any{"id": "c", "methods": []any{"*"}, "paths": []any{"/c/**"}, "sensitivity": "sensitive", "scopes": []any{"s"}},
	}}}
}

// routeTestPolicies are policies that reach input.route in every way the
// route analysis tells apart. want gives, per route id and "unmatched",
// which of params (p), template (t) and caller_is_owner (o) the key holds;
// "" is none, and
// a nil want means the analysis must give up (the whole-policy key).
var routeTestPolicies = []struct {
	name string
	body string
	want map[string]string
}{
	{
		name: "an owner guard: only routes with an owner read the parameters",
		body: `route := input.route if input.route.matched
decision := {"allow": true, "status": 200, "reasons": [], "headers": {"o": v}} if {
	route.owner
	v := route.params[route.owner]
} else := {"allow": false, "status": 403, "reasons": ["x"], "headers": {}}`,
		want: map[string]string{"a": "", "b": "p", "c": "", "unmatched": ""},
	},
	{
		name: "caller_is_owner instead of the parameters",
		body: `route := input.route if input.route.matched
decision := {"allow": true, "status": 200, "reasons": [], "headers": {"u": input.identity.subject}} if {
	route.owner
	route.caller_is_owner
} else := {"allow": false, "status": 403, "reasons": ["x"], "headers": {}}`,
		want: map[string]string{"a": "", "b": "o", "c": "", "unmatched": ""},
	},
	{
		name: "caller_is_owner, and no other part of the identity",
		body: `decision := {"allow": true, "status": 200, "reasons": [], "headers": {}} if input.route.caller_is_owner
else := {"allow": false, "status": 403, "reasons": ["x"], "headers": {}}`,
		want: map[string]string{"a": "", "b": "o", "c": "", "unmatched": ""},
	},
	{
		name: "the default policy's shape: an else that needs no input.route is dead",
		body: `route := input.route if {
	input.route.matched == true
} else := {"params": {"x": input.request.path}} if {
	not input.route
}
decision := {"allow": route.sensitivity == "public", "status": 200, "reasons": [], "headers": {}}`,
		want: map[string]string{"a": "", "b": "", "c": "", "unmatched": ""},
	},
	{
		name: "a built-in reads the route whole",
		body: `decision := {"allow": true, "status": 200, "reasons": [], "headers": {"j": json.marshal(input.route)}}`,
		want: map[string]string{"a": "pt", "b": "pto", "c": "pt", "unmatched": "pt"},
	},
	{
		name: "an alias passed to a built-in",
		body: `route := input.route
decision := {"allow": true, "status": 200, "reasons": [], "headers": {"n": sprintf("%d", [count(route)]), "j": json.marshal(route)}}`,
		want: map[string]string{"a": "pt", "b": "pto", "c": "pt", "unmatched": "pt"},
	},
	{
		name: "the template",
		body: `route := input.route
decision := {"allow": true, "status": 200, "reasons": [], "headers": {"t": object.get(route, "template", "none")}} if route.id
else := {"allow": true, "status": 200, "reasons": [], "headers": {"t": route.template}}`,
		// Unmatched, route.id is missing: only the else runs.
		want: map[string]string{"a": "pt", "b": "pto", "c": "pt", "unmatched": "t"},
	},
	{
		name: "a field through a local variable, and in a comprehension",
		body: `decision := {"allow": true, "status": 200, "reasons": [], "headers": {"k": concat(",", ks), "t": t}} if {
	r := input.route
	ks := [k | some k, _ in r.params]
	t := r.template
} else := {"allow": false, "status": 403, "reasons": [], "headers": {}}`,
		want: map[string]string{"a": "pt", "b": "pt", "c": "pt", "unmatched": "pt"},
	},
	{
		name: "a function given the route",
		body: `route := input.route
f(r) := r.params.x if r.sensitivity == "public"
else := "none"
decision := {"allow": true, "status": 200, "reasons": [], "headers": {"x": f(route)}}`,
		// Unmatched, r.sensitivity is missing: only the else runs.
		want: map[string]string{"a": "p", "b": "p", "c": "p", "unmatched": ""},
	},
	{
		name: "iterating over the route, and comparing it",
		body: `route := input.route
decision := {"allow": route == {"matched": false}, "status": 200, "reasons": [], "headers": {"k": concat(",", [sprintf("%v", [v]) | some v in route])}}`,
		want: map[string]string{"a": "pt", "b": "pto", "c": "pt", "unmatched": "pt"},
	},
	{
		name: "a default makes a rule no alias",
		body: `default route := {"params": {}}
route := input.route if input.route.matched
decision := {"allow": true, "status": 200, "reasons": [], "headers": {"n": sprintf("%d", [count(route.params)])}}`,
		want: map[string]string{"a": "pt", "b": "pto", "c": "pt", "unmatched": "pt"},
	},
	{
		name: "an else with another value makes a rule no alias",
		body: `route := input.route if input.route.matched
else := {"params": {"x": "none"}}
decision := {"allow": true, "status": 200, "reasons": [], "headers": {"x": object.get(route.params, "x", "-")}}`,
		want: map[string]string{"a": "pt", "b": "pto", "c": "pt", "unmatched": "pt"},
	},
	{
		name: "the route in a set",
		body: `s contains r if r := input.route
decision := {"allow": true, "status": 200, "reasons": [], "headers": {"n": json.marshal(s)}}`,
		want: map[string]string{"a": "pt", "b": "pto", "c": "pt", "unmatched": "pt"},
	},
	{
		name: "a variable bound before is compared, not bound",
		body: `decision := {"allow": true, "status": 200, "reasons": [], "headers": {}} if {
	r := {"matched": true, "index": 0, "id": "a", "methods": ["GET"], "sensitivity": "public", "template": "/a/{x}", "params": {"x": "1"}}
	r = input.route
} else := {"allow": false, "status": 403, "reasons": [], "headers": {}}`,
		want: map[string]string{"a": "pt", "b": "pto", "c": "pt", "unmatched": "pt"},
	},
	{
		name: "a missing field in a comprehension leaves the expression alive",
		body: `route := input.route
decision := {"allow": true, "status": 200, "reasons": [], "headers": {"p": json.marshal(route.params)}} if {
	count([1 | route.owner]) == 0
} else := {"allow": false, "status": 403, "reasons": [], "headers": {}}`,
		want: map[string]string{"a": "p", "b": "p", "c": "p", "unmatched": "p"},
	},
	{
		name: "a negated missing field is no guard",
		body: `route := input.route
decision := {"allow": true, "status": 200, "reasons": [], "headers": {"p": json.marshal(route.params)}} if {
	not route.owner
} else := {"allow": false, "status": 403, "reasons": [], "headers": {}}`,
		want: map[string]string{"a": "p", "b": "p", "c": "p", "unmatched": "p"},
	},
	{
		name: "the package read whole holds the alias",
		body: `import data.tollgate.lib
decision := {"allow": true, "status": 200, "reasons": [], "headers": {"n": json.marshal(lib)}}`,
		want: map[string]string{"a": "pt", "b": "pto", "c": "pt", "unmatched": "pt"},
	},
	{
		name: "a function with a default, given a missing field",
		body: `route := input.route
default f(_) := "d"
f(x) := x
decision := {"allow": true, "status": 200, "reasons": [], "headers": {"y": y, "p": json.marshal(route.params)}} if {
	y := f(route.owner)
} else := {"allow": false, "status": 403, "reasons": [], "headers": {}}`,
		want: map[string]string{"a": "", "b": "p", "c": "", "unmatched": ""},
	},
	{
		name: "every over the parameters, and an alias in an inner comprehension",
		body: `route := input.route
default ok := false
ok if {
	r := route
	every _, v in r.params { v != "2" }
}
decision := {"allow": ok, "status": 200, "reasons": [], "headers": {"v": concat(",", vs)}} if {
	r := route
	vs := [v | some k; v := r.params[k]]
} else := {"allow": false, "status": 403, "reasons": [], "headers": {}}`,
		want: map[string]string{"a": "p", "b": "p", "c": "p", "unmatched": "p"},
	},
	{
		name: "a pattern in a function's head",
		body: `route := input.route
f({"params": p}) := json.marshal(p)
decision := {"allow": true, "status": 200, "reasons": [], "headers": {"p": f(route)}} if route.id
else := {"allow": false, "status": 403, "reasons": [], "headers": {}}`,
		// Unmatched, route.id is missing: f is never called.
		want: map[string]string{"a": "pt", "b": "pto", "c": "pt", "unmatched": ""},
	},
	{
		name: "with gives up",
		body: `route := input.route
g := x if {
	x := route.params with input.request.method as "GET"
}
decision := {"allow": true, "status": 200, "reasons": [], "headers": {"p": json.marshal(g)}}`,
	},
}

// routeTestLib is a second package, read whole by one of the policies.
const routeTestLib = "package tollgate.lib\n\nroute := input.route\n"

// TestRouteReads checks, for policies that reach input.route in every way
// the analysis tells apart, which parts of input.route the key holds for
// each route.
func TestRouteReads(t *testing.T) {
	for _, tc := range routeTestPolicies {
		t.Run(tc.name, func(t *testing.T) {
			var log strings.Builder
			e := activeEngine(t, Options{Logger: slog.New(slog.NewTextHandler(&log, nil))},
				testBundle("r1", routeTestData(), "package tollgate.authz\n\n"+tc.body, routeTestLib))
			c := e.active.Load().cache
			if c == nil {
				t.Fatal("no decision cache")
			}
			if tc.want == nil {
				if c.byRoute != nil {
					t.Fatalf("the analysis did not give up: %+v", c.byRoute)
				}
				if !strings.Contains(log.String(), "not by route") || !strings.Contains(log.String(), "does not model a with modifier") ||
					!strings.Contains(log.String(), "decision_cache_key=policy") {
					t.Errorf("the log does not say why the key is not by route:\n%s", log.String())
				}
				return
			}
			if strings.Contains(log.String(), "not by route") || !strings.Contains(log.String(), "decision_cache_key=route") {
				t.Errorf("the activation log does not say the key is by route:\n%s", log.String())
			}
			if c.byRoute == nil {
				t.Fatal("the analysis gave up")
			}
			parts := func(rr *routeReads) string {
				s := ""
				if rr.params {
					s += "p"
				}
				if rr.template {
					s += "t"
				}
				if rr.owner {
					s += "o"
				}
				return s
			}
			got := map[string]string{"unmatched": parts(c.unmatched)}
			for i, id := range []string{"a", "b", "c"} {
				got[id] = parts(c.byRoute[i])
			}
			for k, want := range tc.want {
				if got[k] != want {
					t.Errorf("%s: key holds %q of input.route, want %q (all: %v)", k, got[k], want, got)
				}
			}
		})
	}
}

// TestRouteReadsOfTheDefaultPolicy: with the default policy, no route
// keys a parameter or the path, and a route with an owner keys whether the
// caller owns it: /products/7 and /products/8 share a decision, and so do
// customer 42's requests for /customers/7 and /customers/8, but not for
// /customers/42.
func TestRouteReadsOfTheDefaultPolicy(t *testing.T) {
	ctx := context.Background()
	b, err := bundles.Load(ctx, "embedded")
	if err != nil {
		t.Fatal(err)
	}
	e := activeEngine(t, Options{}, b)
	c := e.active.Load().cache
	if c == nil || c.byRoute == nil {
		t.Fatal("no decision cache by route for the default policy")
	}
	defs, _, err := RouteTable(b.Data)
	if err != nil {
		t.Fatal(err)
	}
	for i, def := range defs {
		_, owner := def["owner"]
		rr := c.byRoute[i]
		if rr.owner != owner || rr.params || rr.template || rr.method || rr.path {
			t.Errorf("route %v: owner %t params %t template %t method %t path %t; want the owner only with an owner", def["id"], rr.owner, rr.params, rr.template, rr.method, rr.path)
		}
	}
	key := func(target string) string {
		in := benchInputFor(target)
		k, ok := c.key(nil, in)
		if !ok {
			t.Fatalf("%s: not cacheable", target)
		}
		return string(k)
	}
	if key("/products/7") != key("/products/8") {
		t.Error("/products/7 and /products/8 have different keys")
	}
	if key("/customers/7") != key("/customers/8") {
		t.Error("customer 42's /customers/7 and /customers/8 have different keys")
	}
	if key("/customers/42") == key("/customers/7") {
		t.Error("customer 42's /customers/42 and /customers/7 have one key")
	}
	if key("/products/7") == key("/customers/7") {
		t.Error("two routes have one key")
	}
}

func benchInputFor(target string) Input {
	in := benchInput()
	id := *in.Identity
	id.ContentKey = "jwt:alice"
	in.Identity = &id
	req, err := request.Normalize(request.Raw{Method: "GET", Target: target})
	if err != nil {
		panic(err)
	}
	in.Request = req
	return in
}

// TestRouteKeysAreInvisible is the differential test of the narrowed keys:
// for each policy above, an engine with the decision cache gives exactly
// the decisions of one without it, over generated requests that hit every
// route and template, repeat, and differ in one part.
func TestRouteKeysAreInvisible(t *testing.T) {
	ctx := context.Background()
	for _, tc := range routeTestPolicies {
		t.Run(tc.name, func(t *testing.T) {
			b := func() *bundle.Bundle {
				return testBundle("r1", routeTestData(), "package tollgate.authz\n\n"+tc.body, routeTestLib)
			}
			cached, plain := activeEngine(t, Options{}, b()), activeEngine(t, Options{DecisionCacheEntries: -1}, b())
			rng := rand.New(rand.NewPCG(3, 4))
			inputs := make([]Input, 400)
			for i := range inputs {
				inputs[i] = randomRouteInput(rng)
			}
			hits := 0
			for pass := range 2 {
				for i, in := range inputs {
					want, werr := plain.Evaluate(ctx, in)
					if _, hit, _ := cached.active.Load().cache.lookup(in); hit {
						hits++
					}
					got, gerr := cached.Evaluate(ctx, in)
					if (werr == nil) != (gerr == nil) || !sameDecision(got, want) {
						t.Fatalf("pass %d input %d (%s):\n cached %+v (%v)\n plain  %+v (%v)", pass, i, describe(in), got, gerr, want, werr)
					}
				}
			}
			if hits < len(inputs)/10 {
				t.Errorf("only %d hits over %d inputs asked twice: the cache is not used", hits, 2*len(inputs))
			}
		})
	}
}

func randomRouteInput(rng *rand.Rand) Input {
	pick := func(s ...string) string { return s[rng.IntN(len(s))] }
	target := pick("/a/1", "/a/2", "/a/1/2", "/a/2/1", "/b/1", "/b/2", "/b2/1", "/b2/2", "/c/x", "/c/x/y", "/other", "/")
	req, err := request.Normalize(request.Raw{Method: pick("GET", "PUT", "POST"), Target: target})
	if err != nil {
		panic(err)
	}
	in := Input{Request: req, Credential: credential.None(), Status: StatusAbsent}
	if rng.IntN(2) == 0 {
		customer := pick("1", "2")
		// the owner claim as a string or a number: either may own /b/1
		var claim any = customer
		if rng.IntN(3) == 0 {
			claim = json.Number(customer)
		}
		in.Credential = credential.Credential{Type: credential.TypeBearer, Placement: credential.PlacementHeader, Name: "authorization", Secret: credential.NewSecret("t")}
		in.Status = StatusValid
		in.Identity = &authn.Identity{Kind: authn.KindUser, Subject: "u" + customer, Claims: map[string]any{"y": claim},
			ContentKey: fmt.Sprintf("jwt:%T:%s", claim, customer), Scopes: strings.Fields(pick("s", ""))}
	}
	return in
}
