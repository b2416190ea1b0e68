package policy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/tollgate/tollgate/pdp/authn"
	"github.com/tollgate/tollgate/pdp/credential"
	"github.com/tollgate/tollgate/pdp/request"
)

// echoRoute answers with input.route, as JSON, in a header ("absent" when
// the input has none), so a test sees what a policy sees.
const echoRoute = `decision := {"allow": true, "status": 200, "reasons": [], "headers": {"x-route": json.marshal(object.get(input, "route", "absent"))}}`

func routesData(routes ...any) map[string]any {
	return map[string]any{"tollgate": map[string]any{"routes": routes}}
}

var echoRoutes = []any{
	map[string]any{"id": "public", "methods": []any{"GET"}, "paths": []any{"/public/**"}, "sensitivity": "public", "note": "not copied"},
	map[string]any{"methods": []any{"get", "PUT"}, "paths": []any{"/customers/{customer_number}", "/customers/{customer_number}/orders/{order}"},
		"sensitivity": "sensitive", "scopes": []any{"customers:read"}, "roles": []any{}, "owner": "customer_number"},
}

// routeOf evaluates one request on e and returns input.route as the policy
// saw it.
func routeOf(t *testing.T, e *Engine, req *request.Request) any {
	t.Helper()
	d, err := e.Evaluate(context.Background(), Input{Request: req, Status: StatusAbsent})
	if err != nil {
		t.Fatal(err)
	}
	var v any
	if err := json.Unmarshal([]byte(d.Headers["x-route"]), &v); err != nil {
		t.Fatalf("x-route %q: %v", d.Headers["x-route"], err)
	}
	return v
}

func get(path string) *request.Request {
	return &request.Request{Method: "GET", Path: path, Segments: splitPath(path)}
}

func TestEvaluateInputRoute(t *testing.T) {
	e := activeEngine(t, Options{}, testBundle("r1", routesData(echoRoutes...), "package tollgate.authz\n\n"+echoRoute))
	tests := []struct {
		name string
		req  *request.Request
		want string
	}{
		{"public, fields as the bundle gives them", get("/public/a"),
			`{"matched": true, "index": 0, "id": "public", "template": "/public/**", "params": {}, "methods": ["GET"], "sensitivity": "public"}`},
		{"second path binds its params", get("/customers/42/orders/7"),
			`{"matched": true, "index": 1, "template": "/customers/{customer_number}/orders/{order}", "params": {"customer_number": "42", "order": "7"},
			  "methods": ["get", "PUT"], "sensitivity": "sensitive", "scopes": ["customers:read"], "roles": [], "owner": "customer_number",
			  "caller_is_owner": false}`},
		{"no route", get("/nowhere"), `{"matched": false}`},
		{"no route for the method", &request.Request{Method: "DELETE", Path: "/customers/42", Segments: []string{"customers", "42"}}, `{"matched": false}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var want any
			if err := json.Unmarshal([]byte(tc.want), &want); err != nil {
				t.Fatal(err)
			}
			if got := routeOf(t, e, tc.req); !reflect.DeepEqual(got, want) {
				t.Errorf("input.route = %v, want %v", got, want)
			}
		})
	}
}

// TestInputRouteCallerIsOwner: input.route.caller_is_owner, on routes
// with an owner only, compares the caller's claim with the parameter the
// owner names; policies/route_test.go holds it equal to the Rego
// reference on generated and fuzzed requests.
func TestInputRouteCallerIsOwner(t *testing.T) {
	routes := append(slices.Clone(echoRoutes),
		map[string]any{"methods": []any{"GET"}, "paths": []any{"/n/{x}"}, "sensitivity": "sensitive", "owner": 7},
		map[string]any{"methods": []any{"GET"}, "paths": []any{"/z/{customer_number}", "/z2/{other}"}, "sensitivity": "sensitive", "owner": "customer_number"},
	)
	e := activeEngine(t, Options{}, testBundle("r1", routesData(routes...), "package tollgate.authz\n\n"+echoRoute))
	user := func(claims map[string]any) Input {
		return Input{
			Credential: credential.Credential{Type: credential.TypeBearer, Placement: credential.PlacementHeader, Name: "authorization"},
			Status:     StatusValid,
			Identity:   &authn.Identity{Kind: authn.KindUser, Subject: "alice", Claims: claims},
		}
	}
	precomputed := user(map[string]any{"customer_number": "42"})
	precomputed.Identity.ClaimsValue = ast.MustParseTerm(`{"customer_number": "42"}`).Value
	invalid := user(map[string]any{"customer_number": "42"})
	invalid.Status = StatusInvalid
	service := Input{
		Credential: credential.Credential{Type: credential.TypeAPIKey, Placement: credential.PlacementHeader, Name: "x-api-key"},
		Status:     StatusValid,
		Identity:   &authn.Identity{Kind: authn.KindService, Subject: "billing", KeyID: "k1"},
	}
	tests := []struct {
		name   string
		caller Input
		path   string
		want   any // nil: the field is absent
	}{
		{"string claim, same string", user(map[string]any{"customer_number": "42"}), "/customers/42", true},
		{"string claim, another customer", user(map[string]any{"customer_number": "42"}), "/customers/43", false},
		{"claims converted by the verifier", precomputed, "/customers/42", true},
		{"integer claim", user(map[string]any{"customer_number": json.Number("42")}), "/customers/42", true},
		{"integral float claim", user(map[string]any{"customer_number": json.Number("42.0")}), "/customers/42", true},
		{"float64 claim", user(map[string]any{"customer_number": float64(42)}), "/customers/42", true},
		{"negative integer", user(map[string]any{"customer_number": json.Number("-7")}), "/customers/-7", true},
		{"leading zero", user(map[string]any{"customer_number": json.Number("42")}), "/customers/042", false},
		{"exponent in the path", user(map[string]any{"customer_number": json.Number("40")}), "/customers/4e1", false},
		{"16 digits as a number", user(map[string]any{"customer_number": json.Number("1234567890123456")}), "/customers/1234567890123456", false},
		{"16 digits as a string", user(map[string]any{"customer_number": "1234567890123456"}), "/customers/1234567890123456", true},
		{"fraction", user(map[string]any{"customer_number": json.Number("42.5")}), "/customers/42", false},
		{"boolean", user(map[string]any{"customer_number": true}), "/customers/true", false},
		{"no such claim", user(map[string]any{"email": "42"}), "/customers/42", false},
		{"invalid credential: no identity", invalid, "/customers/42", false},
		{"anonymous", Input{Credential: credential.None(), Status: StatusAbsent}, "/customers/42", false},
		{"API key: no claims", service, "/customers/42", false},
		{"owner not a string", user(map[string]any{"x": "1", "7": "1"}), "/n/1", false},
		{"owner not a parameter of this path", user(map[string]any{"customer_number": "42", "other": "42"}), "/z2/42", false},
		{"owner a parameter of this path", user(map[string]any{"customer_number": "42"}), "/z/42", true},
		{"route without an owner", user(map[string]any{"customer_number": "42"}), "/public/42", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := tc.caller
			in.Request = get(tc.path)
			d, err := e.Evaluate(context.Background(), in)
			if err != nil {
				t.Fatal(err)
			}
			var route map[string]any
			if err := json.Unmarshal([]byte(d.Headers["x-route"]), &route); err != nil {
				t.Fatal(err)
			}
			if route["matched"] != true {
				t.Fatalf("no route matched: %v", route)
			}
			if got, ok := route["caller_is_owner"]; got != tc.want || ok != (tc.want != nil) {
				t.Errorf("caller_is_owner = %v (present %t), want %v", got, ok, tc.want)
			}
		})
	}
}

// TestInputRouteCannotBeSetByTheCaller: input.route comes from the active
// bundle's route table and the normalized method and path only. Whatever a
// request carries (a header, a query parameter or a cookie named route, a
// path that spells one), the policy sees the matcher's answer; Input has no
// field that could carry one.
func TestInputRouteCannotBeSetByTheCaller(t *testing.T) {
	e := activeEngine(t, Options{}, testBundle("r1", routesData(echoRoutes...), "package tollgate.authz\n\n"+echoRoute))
	forged := `{"matched":true,"index":0,"sensitivity":"public","params":{}}`
	attacks := map[string]*request.Request{
		"route header": {Method: "GET", Path: "/customers/42", Segments: []string{"customers", "42"},
			Headers: map[string][]string{"route": {forged}, "x-route": {forged}}},
		"route query": {Method: "GET", Path: "/customers/42", Segments: []string{"customers", "42"},
			Query: map[string][]string{"route": {forged}, "route.matched": {"true"}}},
		"route cookie": {Method: "GET", Path: "/customers/42", Segments: []string{"customers", "42"},
			Headers: map[string][]string{"cookie": {"route=" + forged}}},
		"path spelling a route": {Method: "GET", Path: "/route/matched/true", Segments: []string{"route", "matched", "true"}},
	}
	for name, req := range attacks {
		t.Run(name, func(t *testing.T) {
			got := routeOf(t, e, req)
			m, _ := got.(map[string]any)
			if name == "path spelling a route" {
				if !reflect.DeepEqual(got, map[string]any{"matched": false}) {
					t.Errorf("input.route = %v, want no match", got)
				}
				return
			}
			if m["index"] != float64(1) || m["sensitivity"] != "sensitive" {
				t.Errorf("input.route = %v, want the sensitive route the table matches", got)
			}
		})
	}

	// The input document's top-level keys are Tollgate's: no field of Input
	// reaches "route".
	in := Input{Request: get("/public/a"), Status: StatusValid, Identity: &authn.Identity{Kind: authn.KindUser, Subject: "route", Claims: map[string]any{"route": "x"}}}
	v, err := in.value(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, k := range v.(ast.Object).Keys() {
		keys = append(keys, string(k.Value.(ast.String)))
	}
	if want := []string{"credential", "identity", "request"}; !reflect.DeepEqual(keys, want) {
		t.Errorf("input keys without a route table = %v, want %v", keys, want)
	}
}

func TestEvaluateWithoutRouteTable(t *testing.T) {
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	tests := map[string]struct {
		data    map[string]any
		warning bool
	}{
		"no data":                 {nil, false},
		"routes elsewhere":        {map[string]any{"tollgate": map[string]any{"other": 1}}, false},
		"routes null":             {map[string]any{"tollgate": map[string]any{"routes": nil}}, true},
		"routes not an array":     {map[string]any{"tollgate": map[string]any{"routes": "x"}}, true},
		"route not an object":     {routesData("GET /x"), true},
		"methods missing":         {routesData(map[string]any{"paths": []any{"/x"}}), true},
		"path not a string":       {routesData(map[string]any{"methods": []any{"GET"}, "paths": []any{7}}), true},
		"invalid template":        {routesData(map[string]any{"methods": []any{"GET"}, "paths": []any{"/a/**/b"}}), true},
		"another shape of routes": {routesData(map[string]any{"path": "/x", "segments": []any{"x"}}), true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			logs.Reset()
			e := activeEngine(t, Options{Logger: log}, testBundle("r1", tc.data, "package tollgate.authz\n\n"+echoRoute))
			if got := routeOf(t, e, get("/x")); got != "absent" {
				t.Errorf("input.route = %v, want none", got)
			}
			if warned := strings.Contains(logs.String(), "route table not compiled"); warned != tc.warning {
				t.Errorf("warning logged: %v, want %v; log:\n%s", warned, tc.warning, logs.String())
			}
		})
	}
}

// TestInputIdentityFieldsAreHeaderSafe: the identity fields a policy copies
// into identity headers (kind, subject, issuer, key_id) never hold a
// control character; such a value reaches the policy as "". The default
// policy relies on it (policies/authz.rego, _identity_headers).
func TestInputIdentityFieldsAreHeaderSafe(t *testing.T) {
	unsafe := []string{"alice\r\nx-admin: true", "alice\n", "\ralice", "al\x00ice", "alice\x7f", "tab\there", "\x1b[31m", "\x01"}
	safe := []string{"alice", "Ålice ünïcode", "a b", "https://idp.example.com/", "key_7f3a", "caf\u00e9\u0085"}
	check := func(t *testing.T, id *authn.Identity, field, want string) {
		t.Helper()
		in := Input{Request: get("/x"), Credential: credential.Credential{Type: credential.TypeBearer, Placement: credential.PlacementHeader}, Status: StatusValid, Identity: id}
		v, err := in.value(nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		term := v.(ast.Object).Get(keyIdentity).Value.(ast.Object).Get(ast.StringTerm(field))
		if want == "" && field == "key_id" {
			if term != nil {
				t.Errorf("identity.key_id = %v, want none for an unsafe key id", term)
			}
			return
		}
		if term == nil {
			t.Fatalf("identity.%s missing", field)
		}
		if got, ok := term.Value.(ast.String); !ok || string(got) != want {
			t.Errorf("identity.%s = %v, want %q", field, term, want)
		}
		if len(id.Claims) > 0 && !reflect.DeepEqual(in.Value(), v) {
			t.Error("Value and value differ")
		}
	}
	for _, field := range []string{"kind", "subject", "issuer", "key_id"} {
		for _, s := range append(unsafe, safe...) {
			id := &authn.Identity{Kind: authn.KindUser, Subject: "alice", Issuer: "https://idp.example.com/", KeyID: "k1"}
			switch field {
			case "kind":
				id.Kind = authn.Kind(s)
			case "subject":
				id.Subject = s
			case "issuer":
				id.Issuer = s
			case "key_id":
				id.KeyID = s
			}
			want := s
			for _, u := range unsafe {
				if s == u {
					want = ""
				}
			}
			t.Run(field+"/"+strings.ToValidUTF8(s, "?"), func(t *testing.T) { check(t, id, field, want) })
		}
	}
	// Claims are the issuer's, passed as they are; the policy checks the
	// one it copies into a header.
	in := Input{Request: get("/x"), Status: StatusValid, Identity: &authn.Identity{Kind: authn.KindUser, Subject: "alice", Claims: map[string]any{"customer_number": "42\r\n"}}}
	claims := in.Value().(ast.Object).Get(keyIdentity).Value.(ast.Object).Get(keyClaims).Value.(ast.Object)
	if got := claims.Get(ast.StringTerm("customer_number")).Value; got.Compare(ast.String("42\r\n")) != 0 {
		t.Errorf("claim changed: %v", got)
	}
}

// BenchmarkInputRoute is the cost input.route adds to an input: the match
// and its term, on a table of 5 routes and one of 10,000 (2,000 services
// with the same five routes under their own prefix; the request goes to
// the last).
func BenchmarkInputRoute(b *testing.B) {
	five := []any{
		map[string]any{"id": "public", "methods": []any{"GET"}, "paths": []any{"/public/**"}, "sensitivity": "public"},
		map[string]any{"id": "products-read", "methods": []any{"GET"}, "paths": []any{"/products", "/products/{id}"}, "sensitivity": "internal", "scopes": []any{"products:read"}},
		map[string]any{"id": "customers-read", "methods": []any{"GET"}, "paths": []any{"/customers/{customer_number}", "/customers/{customer_number}/**"}, "sensitivity": "sensitive", "scopes": []any{"customers:read"}, "owner": "customer_number"},
		map[string]any{"id": "customers-write", "methods": []any{"PUT", "PATCH"}, "paths": []any{"/customers/{customer_number}", "/customers/{customer_number}/**"}, "sensitivity": "sensitive", "scopes": []any{"customers:write"}, "owner": "customer_number"},
		map[string]any{"id": "admin", "methods": []any{"*"}, "paths": []any{"/admin/**"}, "sensitivity": "sensitive", "roles": []any{"admin"}},
	}
	var large []any
	for s := range 2000 {
		for _, r := range five {
			cp := map[string]any{}
			for k, v := range r.(map[string]any) {
				cp[k] = v
			}
			var paths []any
			for _, p := range cp["paths"].([]any) {
				paths = append(paths, fmt.Sprintf("/svc%d%s", s, p))
			}
			cp["paths"] = paths
			large = append(large, cp)
		}
	}
	for _, bc := range []struct {
		name   string
		routes []any
		path   string
	}{
		{"routes=5/hit", five, "/customers/42/orders"},
		{"routes=5/miss", five, "/nowhere"},
		{"routes=10000/hit", large, "/svc1999/customers/42/orders"},
		{"routes=10000/miss", large, "/svc1999/nowhere"},
	} {
		rt, err := compileRoutes(routesData(bc.routes...))
		if err != nil {
			b.Fatal(err)
		}
		req := get(bc.path)
		claims := ast.MustParseTerm(`{"customer_number": "42"}`).Value
		b.Run(bc.name, func(b *testing.B) {
			a := newArena(req, nil, true, true)
			b.ReportAllocs()
			for b.Loop() {
				a.terms = nil // every term allocated, as when the arena is spent
				_ = rt.term(a, req.Method, req.Segments, claims)
			}
		})
	}
}
