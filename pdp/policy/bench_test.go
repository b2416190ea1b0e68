package policy

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"testing"

	"github.com/open-policy-agent/opa/v1/bundle"

	"github.com/tollgate/tollgate/pdp/authn"
	"github.com/tollgate/tollgate/pdp/credential"
	"github.com/tollgate/tollgate/pdp/decision"
	"github.com/tollgate/tollgate/pdp/request"
)

// routePolicy is a route-table policy in the shape of the default policy
// (DESIGN.md, "Default policy"): routes in data, first match wins,
// sensitivity rules, scopes and ownership.
const routePolicy = `package tollgate.authz

param(pat) := trim(pat, "{}") if {
	startswith(pat, "{")
	endswith(pat, "}")
}

seg_match(pat, _) if param(pat)
seg_match(pat, seg) if pat == seg

route_matches(r) if {
	r.segments[count(r.segments) - 1] != "**"
	count(r.segments) == count(input.request.segments)
	every i, pat in r.segments { seg_match(pat, input.request.segments[i]) }
}

route_matches(r) if {
	n := count(r.segments) - 1
	r.segments[n] == "**"
	count(input.request.segments) >= n
	every i, pat in array.slice(r.segments, 0, n) { seg_match(pat, input.request.segments[i]) }
}

matched := [r |
	some r in data.tollgate.routes
	input.request.method in r.methods
	route_matches(r)
]

route := matched[0]

params[name] := input.request.segments[i] if {
	some i, pat in route.segments
	name := param(pat)
}

valid if input.credential.status == "valid"

reasons contains "no_route" if not route

reasons contains "unauthenticated" if {
	route.sensitivity != "public"
	not valid
}

reasons contains "credential_in_query" if {
	route.sensitivity == "sensitive"
	input.credential.placement == "query"
}

reasons contains "api_key_not_allowed_for_sensitive_route" if {
	route.sensitivity == "sensitive"
	input.credential.type == "api_key"
}

reasons contains "missing_scope" if {
	valid
	route.scope
	not route.scope in input.identity.scopes
}

reasons contains "missing_role" if {
	valid
	route.role
	not route.role in input.identity.roles
}

reasons contains "not_owner" if {
	valid
	route.owner
	input.identity.claims[route.owner] != params[route.owner]
}

default status := 403

status := 401 if {
	route
	reasons == {"unauthenticated"}
}

decision := {
	"allow": true,
	"status": 200,
	"reasons": [],
	"headers": {"x-user-id": object.get(input, ["identity", "subject"], "")},
} if count(reasons) == 0

decision := {
	"allow": false,
	"status": status,
	"reasons": reasons,
	"headers": {"www-authenticate": "Bearer realm=\"tollgate\""},
} if reasons == {"unauthenticated"}

decision := {"allow": false, "status": status, "reasons": reasons, "headers": {}} if {
	count(reasons) > 0
	reasons != {"unauthenticated"}
}
`

func benchRoute(methods []string, path, sensitivity, scope, role, owner string) map[string]any {
	var segs []any
	for _, s := range splitPath(path) {
		segs = append(segs, s)
	}
	var ms []any
	for _, m := range methods {
		ms = append(ms, m)
	}
	r := map[string]any{"path": path, "segments": segs, "methods": ms, "sensitivity": sensitivity}
	for k, v := range map[string]string{"scope": scope, "role": role, "owner": owner} {
		if v != "" {
			r[k] = v
		}
	}
	return r
}

func splitPath(p string) []string {
	var segs []string
	start := 1
	for i := 1; i <= len(p); i++ {
		if i == len(p) || p[i] == '/' {
			if i > start {
				segs = append(segs, p[start:i])
			}
			start = i + 1
		}
	}
	return segs
}

// routeBundle holds the DESIGN's example routes plus a dozen more, so the
// table is not trivially short.
func routeBundle() *bundle.Bundle {
	get, write := []string{"GET"}, []string{"PUT", "PATCH"}
	all := []string{"GET", "POST", "PUT", "PATCH", "DELETE"}
	routes := []any{
		benchRoute(get, "/public/**", "public", "", "", ""),
		benchRoute(get, "/products", "internal", "products:read", "", ""),
		benchRoute(get, "/products/{id}", "internal", "products:read", "", ""),
	}
	for i := range 12 {
		routes = append(routes,
			benchRoute(get, fmt.Sprintf("/catalog%d/{id}", i), "internal", "catalog:read", "", ""),
		)
	}
	routes = append(routes,
		benchRoute(get, "/customers/{customer_number}", "sensitive", "customers:read", "", "customer_number"),
		benchRoute(get, "/customers/{customer_number}/**", "sensitive", "customers:read", "", "customer_number"),
		benchRoute(write, "/customers/{customer_number}", "sensitive", "customers:write", "", "customer_number"),
		benchRoute(write, "/customers/{customer_number}/**", "sensitive", "customers:write", "", "customer_number"),
		benchRoute(all, "/admin/**", "sensitive", "", "admin", ""),
	)
	return testBundle("bench-rev", map[string]any{"tollgate": map[string]any{"routes": routes}}, routePolicy)
}

func benchInput() Input {
	return Input{
		Request: &request.Request{
			ID:       "0f4c2a9be1d84c7f",
			Method:   "GET",
			Path:     "/customers/42/orders",
			Segments: []string{"customers", "42", "orders"},
			Host:     "api.example.com",
			Scheme:   "https",
			Query:    map[string][]string{"page": {"2"}, "size": {"50"}},
			Headers: map[string][]string{
				"user-agent":      {"Mozilla/5.0 (X11; Linux x86_64)"},
				"accept":          {"application/json"},
				"accept-encoding": {"gzip, br"},
				"accept-language": {"en-GB,en;q=0.9"},
				"x-request-id":    {"0f4c2a9be1d84c7f"},
				"x-forwarded-for": {"203.0.113.7"},
				"traceparent":     {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
			},
			SourceIP: "203.0.113.7",
		},
		Credential: credential.Credential{Type: credential.TypeBearer, Placement: credential.PlacementHeader, Name: "authorization", Secret: credential.NewSecret(jwtSecret)},
		Status:     StatusValid,
		Identity: &authn.Identity{
			Kind:    authn.KindUser,
			Subject: "alice",
			Issuer:  "https://idp.example.com/",
			Claims: map[string]any{
				"iss": "https://idp.example.com/", "sub": "alice", "aud": "orders-api",
				"exp": json.Number("1767225600"), "iat": json.Number("1767222000"),
				"email": "alice@example.com", "customer_number": "42",
				"scope": "customers:read orders:read",
			},
			Scopes: []string{"customers:read", "orders:read"},
		},
	}
}

func TestRoutePolicy(t *testing.T) {
	e := activeEngine(t, Options{}, routeBundle())
	apiKey := benchInput()
	apiKey.Credential = credential.Credential{Type: credential.TypeAPIKey, Placement: credential.PlacementHeader, Name: "x-api-key", Secret: credential.NewSecret(apiKeySecret)}
	apiKey.Identity = &authn.Identity{Kind: authn.KindService, Subject: "billing", KeyID: "k1", Scopes: []string{"customers:read"}}
	otherCustomer := benchInput()
	otherCustomer.Request.Path, otherCustomer.Request.Segments = "/customers/43", []string{"customers", "43"}
	anonymous := benchInput()
	anonymous.Status, anonymous.Identity, anonymous.Credential = StatusAbsent, nil, credential.None()
	public := anonymous
	public.Request = &request.Request{Method: "GET", Path: "/public/docs/a", Segments: []string{"public", "docs", "a"}}
	noRoute := benchInput()
	noRoute.Request.Method = "DELETE"

	cases := []struct {
		name string
		in   Input
		want decision.Decision
	}{
		{"owner with scope", benchInput(), decision.Decision{Allow: true, Status: 200, Reasons: []string{}, Headers: map[string]string{"x-user-id": "alice"}}},
		{"api key on sensitive route", apiKey, decision.Decision{Status: 403, Reasons: []string{"api_key_not_allowed_for_sensitive_route"}, Headers: map[string]string{}}},
		{"not the owner", otherCustomer, decision.Decision{Status: 403, Reasons: []string{"not_owner"}, Headers: map[string]string{}}},
		{"no credential", anonymous, decision.Decision{Status: 401, Reasons: []string{"unauthenticated"}, Headers: map[string]string{"www-authenticate": `Bearer realm="tollgate"`}}},
		{"public", public, decision.Decision{Allow: true, Status: 200, Reasons: []string{}, Headers: map[string]string{"x-user-id": ""}}},
		{"no route for method", noRoute, decision.Decision{Status: 403, Reasons: []string{"no_route"}, Headers: map[string]string{}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := e.Evaluate(context.Background(), tc.in)
			if err != nil {
				t.Fatal(err)
			}
			tc.want.PolicyRevision = "bench-rev"
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("decision\n got %#v\nwant %#v", got, tc.want)
			}
		})
	}
}

func BenchmarkEvaluate(b *testing.B) {
	e := activeEngine(b, Options{}, routeBundle())
	in := benchInput()
	ctx := context.Background()
	if d, err := e.Evaluate(ctx, in); err != nil || !d.Allow {
		b.Fatalf("benchmark input is not allowed: %#v, %v", d, err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := e.Evaluate(ctx, in); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEvaluateParallel(b *testing.B) {
	e := activeEngine(b, Options{}, routeBundle())
	in := benchInput()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		ctx, cancel := context.WithCancel(context.Background()) // a request context, as a server passes
		defer cancel()
		for pb.Next() {
			if _, err := e.Evaluate(ctx, in); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkEvaluateOverhead measures the engine without policy work: a
// constant decision, so what remains is input conversion, OPA's evaluation
// setup and decoding.
func BenchmarkEvaluateOverhead(b *testing.B) {
	e := activeEngine(b, Options{}, authzBundle("rev-1", `decision := {"allow": true, "status": 200, "reasons": [], "headers": {"x-user-id": "alice"}}`))
	in := benchInput()
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := e.Evaluate(ctx, in); err != nil {
			b.Fatal(err)
		}
	}
}
