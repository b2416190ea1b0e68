package policies_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage/inmem"

	"github.com/tollgate/tollgate/pdp/authn"
	"github.com/tollgate/tollgate/pdp/credential"
	"github.com/tollgate/tollgate/pdp/policy"
	"github.com/tollgate/tollgate/pdp/request"
	"github.com/tollgate/tollgate/policies"
)

// The native route matcher (pdp/route, handed to the policy as
// input.route) against the policy's Rego reference (matched_route),
// evaluated by OPA: same route, template, parameters and fields, on the
// embedded table and generated ones, for generated and fuzzed requests.

// echoPolicy answers every request with the input.route Tollgate built,
// as base64-encoded JSON in a header (a fuzzed path may hold any
// character), so a test sees exactly what a policy sees.
const echoPolicy = `package tollgate.echo

decision := {"allow": true, "status": 200, "reasons": [], "headers": {"x-route": base64.encode(json.marshal(object.get(input, "route", "absent")))}}
`

// noMatch is input.route, as JSON, when no route matches.
const noMatch = `{"matched":false}`

// routeOracle holds one route table twice: compiled by Tollgate's engine,
// and as data for OPA evaluating the Rego reference.
type routeOracle struct {
	engine    *policy.Engine
	reference rego.PreparedEvalQuery
}

func authzSource(t testing.TB) string {
	t.Helper()
	src, err := fs.ReadFile(policies.FS(), "authz.rego")
	if err != nil {
		t.Fatal(err)
	}
	return string(src)
}

func embeddedRoutes(t testing.TB) []any {
	t.Helper()
	raw, err := fs.ReadFile(policies.FS(), "tollgate/routes/data.json")
	if err != nil {
		t.Fatal(err)
	}
	var routes []any
	if err := json.Unmarshal(raw, &routes); err != nil {
		t.Fatal(err)
	}
	return routes
}

func newRouteOracle(t testing.TB, routes []any) *routeOracle {
	t.Helper()
	ctx := context.Background()
	src := authzSource(t)
	data := map[string]any{"tollgate": map[string]any{"routes": routes}}
	b := &bundle.Bundle{
		Manifest: bundle.Manifest{Revision: "routes-test", Roots: &[]string{"tollgate"}},
		Data:     data,
		Modules: []bundle.ModuleFile{
			{Path: "authz.rego", URL: "authz.rego", Raw: []byte(src)},
			{Path: "echo.rego", URL: "echo.rego", Raw: []byte(echoPolicy)},
		},
	}
	// The engine's check query is the default one: the generated table must
	// pass the policy's own bundle_errors.
	e := policy.NewEngine(policy.Options{Query: "data.tollgate.echo.decision"})
	if err := e.Activate(ctx, b); err != nil {
		t.Fatalf("activating the route table: %v", err)
	}
	pq, err := rego.New(
		rego.Query("json.marshal(data.tollgate.authz.matched_route)"),
		rego.Module("authz.rego", src),
		rego.Store(inmem.NewFromObject(data)),
		rego.SetRegoVersion(ast.RegoV1),
		rego.StrictBuiltinErrors(true),
	).PrepareForEval(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return &routeOracle{engine: e, reference: pq}
}

// compare matches one request both ways and reports a difference. claims
// are the caller's (nil: no credential), which caller_is_owner compares
// with the owner parameter. It returns whether a route matched.
func (o *routeOracle) compare(t testing.TB, method string, segs []string, claims map[string]any) bool {
	t.Helper()
	ctx := context.Background()
	in := policy.Input{
		Request: &request.Request{Method: method, Path: "/" + strings.Join(segs, "/"), Segments: segs},
		Status:  policy.StatusAbsent,
	}
	if claims != nil {
		in.Status = policy.StatusValid
		in.Credential = credential.Credential{Type: credential.TypeBearer, Placement: credential.PlacementHeader, Name: "authorization"}
		in.Identity = &authn.Identity{Kind: authn.KindUser, Subject: "u", Claims: claims}
	}
	d, err := o.engine.Evaluate(ctx, in)
	if err != nil {
		t.Fatalf("%s %v: engine: %v", method, segs, err)
	}
	raw, err := base64.StdEncoding.DecodeString(d.Headers["x-route"])
	if err != nil {
		t.Fatal(err)
	}
	native := string(raw)

	rs, err := o.reference.Eval(ctx, rego.EvalParsedInput(in.Value()))
	if err != nil {
		t.Fatalf("%s %v: reference: %v", method, segs, err)
	}
	reference := noMatch
	if len(rs) == 1 {
		reference = rs[0].Expressions[0].Value.(string)
	}
	if native != reference {
		t.Fatalf("%s %q, claims %v:\n native    %s\n reference %s", method, segs, claims, native, reference)
	}
	return native != noMatch
}

// generateRoutes returns a valid route table of n routes over a small
// vocabulary, so that templates share prefixes, overlap and shadow each
// other, and a generator of requests that mostly match one of them.
func generateRoutes(rng *rand.Rand, n int) (routes []any, requests func() (string, []string)) {
	words := []string{"a", "b", "customers", "orders", "items", "v1", "x.json", "A"}
	methods := []string{"GET", "get", "PUT", "POST", "PATCH", "DELETE", "GET", "*"}
	sensitivities := []string{"public", "internal", "sensitive"}
	var templates []string
	for i := range n {
		var ms []any
		for range 1 + rng.IntN(2) {
			ms = append(ms, methods[rng.IntN(len(methods))])
		}
		var paths []any
		owner := rng.IntN(2) == 0
		for range 1 + rng.IntN(3) {
			var sb strings.Builder
			if rng.IntN(6) == 0 {
				sb.WriteString("/") // a doubled slash
			}
			// a literal first segment, so that few templates match everything
			sb.WriteString("/" + words[rng.IntN(len(words))])
			if owner {
				sb.WriteString("/{owner}")
			}
			for k := range rng.IntN(3) {
				sb.WriteString("/")
				if rng.IntN(3) == 0 {
					fmt.Fprintf(&sb, "{p%d}", k)
				} else {
					sb.WriteString(words[rng.IntN(len(words))])
				}
			}
			if rng.IntN(3) == 0 {
				sb.WriteString("/**")
			}
			paths = append(paths, sb.String())
			templates = append(templates, sb.String())
		}
		r := map[string]any{"methods": ms, "paths": paths, "sensitivity": sensitivities[rng.IntN(3)]}
		if rng.IntN(2) == 0 {
			r["id"] = fmt.Sprintf("r%d", i)
		}
		if r["sensitivity"] != "public" {
			r["scopes"] = []any{"s1"}
			if owner {
				r["owner"] = "owner"
			}
			if rng.IntN(4) == 0 {
				r["roles"] = []any{"admin"}
			}
		}
		routes = append(routes, r)
	}
	reqMethods := []string{"GET", "PUT", "POST", "PATCH", "DELETE", "HEAD", "PURGE"}
	values := append([]string{"42", "{p0}", "**", "*", "-7", "042", "1234567890123456"}, words...)
	requests = func() (string, []string) {
		var segs []string
		if rng.IntN(10) == 0 {
			return "GET", nil // the root
		}
		for _, s := range strings.Split(templates[rng.IntN(len(templates))], "/") {
			switch {
			case s == "":
			case s == "**":
				for range rng.IntN(3) {
					segs = append(segs, values[rng.IntN(len(values))])
				}
			case strings.HasPrefix(s, "{") || rng.IntN(8) == 0:
				segs = append(segs, values[rng.IntN(len(values))])
			default:
				segs = append(segs, s)
			}
		}
		if rng.IntN(8) == 0 && len(segs) > 0 { // one segment too few
			segs = segs[:len(segs)-1]
		}
		if rng.IntN(8) == 0 { // one too many
			segs = append(segs, values[rng.IntN(len(values))])
		}
		return reqMethods[rng.IntN(len(reqMethods))], segs
	}
	return routes, requests
}

// ownerClaims are claims for a caller of a request with segments segs:
// the owner claims of the embedded table (customer_number) and of the
// generated ones (owner), equal to one of the segments or not, as a string
// or as a number.
func ownerClaims(rng *rand.Rand, segs []string) map[string]any {
	v := ownerValues[rng.IntN(len(ownerValues))]
	if len(segs) > 0 && rng.IntN(2) == 0 {
		v = segs[rng.IntN(len(segs))]
	}
	claim := any(v)
	if n, ok := jsonNumber(v); ok && rng.IntN(2) == 0 {
		claim = n
	}
	return map[string]any{"customer_number": claim, "owner": claim, "sub": "u"}
}

// ownerValues are values a claim and a path segment may hold: integers in
// canonical form and not, and one of each length around the limit of 15
// digits.
var ownerValues = []string{"42", "42.0", "-7", "0", "-0", "042", "+42", "4e1", "4.2e1", "123456789012345", "1234567890123456", "x"}

// jsonNumber returns s as a JSON number, when it is one.
func jsonNumber(s string) (json.Number, bool) {
	d := json.NewDecoder(strings.NewReader(s))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil || d.More() {
		return "", false
	}
	n, ok := v.(json.Number)
	return n, ok
}

// largeRoutes is n routes: n/5 services, each with the embedded table's
// five routes under its own prefix.
func largeRoutes(t testing.TB, n int) []any {
	embedded := embeddedRoutes(t)
	routes := make([]any, 0, n)
	for s := range n / len(embedded) {
		for _, item := range embedded {
			r := map[string]any{}
			for k, v := range item.(map[string]any) {
				r[k] = v
			}
			var paths []any
			for _, p := range r["paths"].([]any) {
				paths = append(paths, fmt.Sprintf("/svc%d%s", s, p))
			}
			r["paths"] = paths
			if id, ok := r["id"].(string); ok {
				r["id"] = fmt.Sprintf("svc%d-%s", s, id)
			}
			routes = append(routes, r)
		}
	}
	return routes
}

func TestNativeRouteMatchEqualsRegoReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	scale := 1
	if testing.Short() {
		scale = 10
	}

	t.Run("embedded table", func(t *testing.T) {
		o := newRouteOracle(t, embeddedRoutes(t))
		paths := []string{"/", "/public", "/public/a/b", "/publicity", "/products", "/products/7", "/products/7/x",
			"/customers", "/customers/42", "/customers/42/orders/7", "/admin", "/admin/x", "/administrator", "/Products", "/x/y/z"}
		for _, p := range paths {
			for _, m := range []string{"GET", "HEAD", "PUT", "PATCH", "DELETE", "POST", "PURGE", "get"} {
				segs := strings.FieldsFunc(p, func(r rune) bool { return r == '/' })
				o.compare(t, m, segs, nil)
				o.compare(t, m, segs, ownerClaims(rng, segs))
			}
		}
	})

	t.Run("generated tables", func(t *testing.T) {
		total, matched := 0, 0
		for range 10 {
			routes, requests := generateRoutes(rng, 5+rng.IntN(300))
			o := newRouteOracle(t, routes)
			for range 300 / scale {
				m, segs := requests()
				if o.compare(t, m, segs, nil) {
					matched++
				}
				o.compare(t, m, segs, ownerClaims(rng, segs))
				total++
			}
		}
		t.Logf("%d of %d generated requests matched a route", matched, total)
		if matched < total/4 || matched > total*9/10 {
			t.Errorf("%d of %d generated requests matched: the generator tests too little", matched, total)
		}
	})

	t.Run("10000 routes", func(t *testing.T) {
		if testing.Short() {
			t.Skip("the Rego reference scans 10,000 routes per request")
		}
		routes := largeRoutes(t, 10000)
		o := newRouteOracle(t, routes)
		for _, s := range []int{0, 1, 977, 1998, 1999, 2000} { // 2000 does not exist
			for _, p := range []string{"/customers/42/orders", "/public", "/products/7", "/admin/users", "/nowhere"} {
				m := []string{"GET", "PATCH", "DELETE"}[rng.IntN(3)]
				segs := strings.FieldsFunc(fmt.Sprintf("/svc%d%s", s, p), func(r rune) bool { return r == '/' })
				o.compare(t, m, segs, ownerClaims(rng, segs))
			}
		}
	})
}

// FuzzRouteMatch compares the native matcher with the Rego reference on
// fuzzed requests, against the embedded table and a generated one, for a
// caller without a credential and one whose owner claims are claim, as a
// string and, when claim is a JSON number, as that number.
func FuzzRouteMatch(f *testing.F) {
	for _, seed := range []struct{ method, path, claim string }{
		{"GET", "/customers/42/orders", "42"}, {"PATCH", "/customers/42", "42.0"}, {"GET", "/public", ""},
		{"DELETE", "/admin/x/y", "x"}, {"GET", "/products/7", "7"}, {"get", "/products", ""}, {"GET", "/", ""},
		{"GET", "//customers//42", "4.2e1"}, {"PUT", "/a/b/c/d/e", "b"}, {"GET", "/{p0}/**", "{p0}"}, {"*", "/v1/x.json", "-0"},
		{"GET", "/customers/-7", "-7"}, {"GET", "/customers/042", "42"}, {"GET", "/customers/123456789012345", "123456789012345"},
	} {
		f.Add(seed.method, seed.path, seed.claim)
	}
	embedded := newRouteOracle(f, embeddedRoutes(f))
	routes, _ := generateRoutes(rand.New(rand.NewPCG(3, 5)), 120)
	generated := newRouteOracle(f, routes)
	f.Fuzz(func(t *testing.T, method, path, claim string) {
		if !utf8.ValidString(method) || !utf8.ValidString(path) || !utf8.ValidString(claim) || len(path) > 512 || len(claim) > 64 {
			t.Skip("outside the request contract")
		}
		segs := strings.FieldsFunc(path, func(r rune) bool { return r == '/' })
		claims := []map[string]any{nil, {"customer_number": claim, "owner": claim}}
		if n, ok := jsonNumber(claim); ok {
			claims = append(claims, map[string]any{"customer_number": n, "owner": n})
		}
		for _, c := range claims {
			embedded.compare(t, method, segs, c)
			generated.compare(t, method, segs, c)
		}
	})
}

// TestEngineDecisionsEqualRegoReference: the default policy decides the
// same with Tollgate's input.route as on its own (as OPA runs it), for
// every combination of a set of requests and callers.
func TestEngineDecisionsEqualRegoReference(t *testing.T) {
	ctx := context.Background()
	b := readEmbedded(t)
	e := policy.NewEngine(policy.Options{})
	if err := e.Activate(ctx, b); err != nil {
		t.Fatal(err)
	}
	pq, err := rego.New(
		rego.Query("data.tollgate.authz.decision"),
		rego.Module("authz.rego", authzSource(t)),
		rego.Store(inmem.NewFromObject(map[string]any{"tollgate": map[string]any{"routes": embeddedRoutes(t)}})),
		rego.SetRegoVersion(ast.RegoV1),
		rego.StrictBuiltinErrors(true),
	).PrepareForEval(ctx)
	if err != nil {
		t.Fatal(err)
	}

	user := func(placement credential.Placement, scopes, roles []string, claims map[string]any) policy.Input {
		return policy.Input{
			Credential: credential.Credential{Type: credential.TypeBearer, Placement: placement, Name: "authorization"},
			Status:     policy.StatusValid,
			Identity: &authn.Identity{Kind: authn.KindUser, Subject: "alice", Issuer: "https://idp.example.com/",
				Claims: claims, Scopes: scopes, Roles: roles},
		}
	}
	callers := map[string]policy.Input{
		"anonymous":        {Credential: credential.None(), Status: policy.StatusAbsent},
		"invalid token":    {Credential: credential.Credential{Type: credential.TypeBearer, Placement: credential.PlacementHeader}, Status: policy.StatusInvalid, Error: "expired"},
		"invalid key":      {Credential: credential.Credential{Type: credential.TypeAPIKey, Placement: credential.PlacementHeader}, Status: policy.StatusInvalid},
		"owner reader":     user(credential.PlacementHeader, []string{"customers:read", "products:read"}, nil, map[string]any{"customer_number": "42"}),
		"owner writer":     user(credential.PlacementCookie, []string{"customers:write"}, nil, map[string]any{"customer_number": json.Number("42")}),
		"other customer":   user(credential.PlacementHeader, []string{"customers:read", "customers:write"}, nil, map[string]any{"customer_number": "7"}),
		"token in query":   user(credential.PlacementQuery, []string{"customers:read", "products:read"}, nil, map[string]any{"customer_number": "42"}),
		"admin":            user(credential.PlacementHeader, nil, []string{"admin"}, map[string]any{"roles": []any{"admin"}}),
		"claims only":      user(credential.PlacementHeader, nil, nil, map[string]any{"scope": "customers:read products:read", "customer_number": "42"}),
		"unsafe subject":   user(credential.PlacementHeader, []string{"products:read"}, nil, map[string]any{"customer_number": "42\r\n"}),
		"service key":      {Credential: credential.Credential{Type: credential.TypeAPIKey, Placement: credential.PlacementHeader}, Status: policy.StatusValid, Identity: &authn.Identity{Kind: authn.KindService, Subject: "billing", KeyID: "k1", Scopes: []string{"products:read", "customers:read"}}},
		"service in query": {Credential: credential.Credential{Type: credential.TypeAPIKey, Placement: credential.PlacementQuery}, Status: policy.StatusValid, Identity: &authn.Identity{Kind: authn.KindService, Subject: "billing", KeyID: "k1", Scopes: []string{"products:read"}}},
	}
	callers["unsafe subject"].Identity.Subject = "alice\r\nx-admin: true"
	paths := []string{"/", "/public", "/public/a", "/products", "/products/7", "/products/7/x", "/customers/42", "/customers/42/orders",
		"/customers/7", "/customers", "/admin", "/admin/users/1", "/nowhere"}
	methods := []string{"GET", "PUT", "PATCH", "DELETE", "HEAD"}
	n := 0
	for name, caller := range callers {
		for _, p := range paths {
			for _, m := range methods {
				in := caller
				in.Request = &request.Request{Method: m, Path: p, Segments: strings.FieldsFunc(p, func(r rune) bool { return r == '/' })}
				got, err := e.Evaluate(ctx, in)
				if err != nil {
					t.Fatalf("%s %s %s: %v", name, m, p, err)
				}
				rs, err := pq.Eval(ctx, rego.EvalParsedInput(in.Value()))
				if err != nil || len(rs) != 1 {
					t.Fatalf("%s %s %s: reference: %v, %d results", name, m, p, err, len(rs))
				}
				want := rs[0].Expressions[0].Value.(map[string]any)
				gotDoc := map[string]any{"allow": got.Allow, "status": json.Number(fmt.Sprint(got.Status)), "reasons": toAny(got.Reasons), "headers": headersAny(got.Headers)}
				if !reflect.DeepEqual(gotDoc, want) {
					t.Errorf("%s %s %s:\n engine    %v\n reference %v", name, m, p, gotDoc, want)
				}
				n++
			}
		}
	}
	t.Logf("%d decisions compared", n)
}

func toAny(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

func headersAny(h map[string]string) map[string]any {
	out := make(map[string]any, len(h))
	for k, v := range h {
		out[k] = v
	}
	return out
}
