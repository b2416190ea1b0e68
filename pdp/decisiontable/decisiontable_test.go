package decisiontable

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/bundle"

	"github.com/tollgate/tollgate/pdp/policy"
)

// echoPolicy allows everything and echoes what it was given in its
// headers: the route Tollgate computed, and the credential and identity.
const echoPolicy = `package tollgate.authz

default decision := {"allow": false, "status": 500, "reasons": ["no"], "headers": {}}

decision := {"allow": true, "status": 200, "reasons": [], "headers": {
	"route": sprintf("%v", [object.get(input, "route", "absent")]),
	"credential": sprintf("%s/%s/%s", [input.credential.type, input.credential.placement, input.credential.status]),
	"subject": object.get(input, ["identity", "subject"], ""),
	"scopes": concat(",", object.get(input, ["identity", "scopes"], [])),
}} if input.request.method != "DELETE"

violations contains ["delete", 403] if input.request.method == "DELETE"
`

var echoRoutes = []any{
	map[string]any{"id": "a", "methods": []any{"GET"}, "paths": []any{"/a/{x}", "/a/**"}, "sensitivity": "internal", "scopes": []any{"s"}},
	map[string]any{"id": "any", "methods": []any{"*"}, "paths": []any{"/**"}, "sensitivity": "public"},
}

func echoBundle(routes []any) *bundle.Bundle {
	data := map[string]any{}
	if routes != nil {
		data["tollgate"] = map[string]any{"routes": routes}
	}
	return &bundle.Bundle{
		Manifest: bundle.Manifest{Revision: "echo-1"},
		Data:     data,
		Modules:  []bundle.ModuleFile{{URL: "/authz.rego", Path: "/authz.rego", Raw: []byte(echoPolicy)}},
	}
}

func newTestRunner(t *testing.T, b *bundle.Bundle, opts Options) *Runner {
	t.Helper()
	e := policy.NewEngine(policy.Options{})
	if err := e.Activate(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	r, err := NewRunner(context.Background(), e, opts)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestParse(t *testing.T) {
	tests := []struct {
		name, src, err string
	}{
		{"ok", "- {name: a, method: GET, path: /x, want: {allow: true, status: 200}}", ""},
		{"unknown field", "- {name: a, method: GET, path: /x, want: {allow: true, status: 200, reason: [x]}}", "field reason not found"},
		{"no status", "- {name: a, method: GET, path: /x, want: {allow: true}}", "needs name, method, path and want.status"},
		{"relative path", "- {name: a, method: GET, path: x, want: {status: 200}}", "must start with /"},
		{"duplicate", "- {name: a, method: GET, path: /x, want: {status: 200}}\n- {name: a, method: GET, path: /y, want: {status: 200}}", "duplicate case name"},
		{"unknown kind", "- {name: a, method: GET, path: /x, credential: {kind: saml}, want: {status: 200}}", `unknown credential kind "saml"`},
		{"unknown placement", "- {name: a, method: GET, path: /x, credential: {kind: jwt, sub: a, placement: body}, want: {status: 200}}", `unknown placement "body"`},
		{"jwt without sub", "- {name: a, method: GET, path: /x, credential: {kind: jwt}, want: {status: 200}}", "needs sub"},
		{"api key in a cookie", "- {name: a, method: GET, path: /x, credential: {kind: api_key, key: k, placement: cookie}, want: {status: 200}}", "cannot be placed in a cookie"},
		{"empty", "", "has no cases"},
		{"not a list", "name: a", "cannot unmarshal"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cases, err := Parse("f.yaml", []byte(tc.src))
			if tc.err == "" {
				if err != nil || len(cases) != 1 || cases[0].Line != 1 || cases[0].File != "f.yaml" {
					t.Fatalf("%v %+v", err, cases)
				}
				return
			}
			if !errors.Is(err, ErrInvalidCase) || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("error %v, want %q", err, tc.err)
			}
		})
	}
}

func TestRunnerCredentials(t *testing.T) {
	r := newTestRunner(t, echoBundle(echoRoutes), Options{Keys: map[string]Key{"k": {Owner: "svc", Scopes: []string{"s1", "s2"}}}})
	tests := []struct {
		cred       Credential
		path       string
		credential string
		subject    string
		scopes     string
	}{
		{Credential{}, "/a/1", "none/none/absent", "", ""},
		{Credential{Kind: "jwt", Sub: "alice", Claims: map[string]any{"scope": "x y"}}, "/a/1", "bearer/header/valid", "alice", "x,y"},
		{Credential{Kind: "jwt", Sub: "bob", Placement: "cookie"}, "/a/1", "bearer/cookie/valid", "bob", ""},
		{Credential{Kind: "jwt", Sub: "carol", Placement: "query"}, "/a/1?page=2", "bearer/query/valid", "carol", ""},
		{Credential{Kind: "api_key", Key: "k"}, "/a/1", "api_key/header/valid", "svc", "s1,s2"},
		{Credential{Kind: "api_key", Key: "k", Placement: "query"}, "/a/1", "api_key/query/valid", "svc", "s1,s2"},
		{Credential{Kind: "raw", Header: "Authorization", Value: "Bearer junk"}, "/a/1", "bearer/header/invalid", "", ""},
	}
	for _, tc := range tests {
		c := Case{Name: "c", Method: "GET", Path: tc.path, Credential: tc.cred, Want: Want{Allow: true, Status: 200}}
		raw, err := r.Request(c)
		if err != nil {
			t.Fatal(err)
		}
		if tc.cred.Placement == "query" {
			param := map[string]string{"jwt": "access_token", "api_key": "api_key"}[tc.cred.Kind]
			u, err := url.Parse(raw.Target)
			if err != nil || u.Query().Get(param) == "" || strings.Contains(tc.path, "?") && u.Query().Get("page") != "2" {
				t.Errorf("query placement: target %q", u.Path)
			}
		}
		d, in, ok := r.Decide(context.Background(), raw)
		if !ok || in.Request == nil {
			t.Fatalf("%+v: not decided by the policy", tc.cred)
		}
		if d.Headers["credential"] != tc.credential || d.Headers["subject"] != tc.subject || d.Headers["scopes"] != tc.scopes {
			t.Errorf("%+v: got %v", tc.cred, d.Headers)
		}
	}
	if _, err := r.Request(Case{Name: "c", Method: "GET", Path: "/", Credential: Credential{Kind: "api_key", Key: "nope"}}); err == nil || strings.Contains(err.Error(), "tgk_") {
		t.Errorf("unknown key: %v", err)
	}
}

func TestRunnerCompare(t *testing.T) {
	r := newTestRunner(t, echoBundle(echoRoutes), Options{})
	pass := r.Run(context.Background(), Case{Name: "p", Method: "GET", Path: "/a/1", Want: Want{Allow: true, Status: 200}})
	if !pass.Pass() {
		t.Errorf("pass: %+v", pass)
	}
	tests := []struct {
		want    Want
		problem string
	}{
		{Want{Allow: false, Status: 200}, "allow is true, want false"},
		{Want{Allow: true, Status: 201}, "status is 200, want 201"},
		{Want{Allow: true, Status: 200, Headers: map[string]string{}}, "headers are"},
		{Want{Allow: true, Status: 200, Headers: map[string]string{"subject": ""}}, "headers are"},
	}
	for _, tc := range tests {
		res := r.Run(context.Background(), Case{Name: "f", Method: "GET", Path: "/a/1", Want: tc.want})
		if res.Pass() || !strings.Contains(strings.Join(res.Problems, "\n"), tc.problem) {
			t.Errorf("%+v: problems %q, want %q", tc.want, res.Problems, tc.problem)
		}
	}
}

// TestEvaluatorRouteMatchesEngine: the input.route an Evaluator adds is the
// one policy.Engine adds, for the same bundle and request (the echo policy
// prints it in a header in both).
func TestEvaluatorRouteMatchesEngine(t *testing.T) {
	// A route with an owner: caller_is_owner compares a caller's claim.
	owned := append([]any{map[string]any{"id": "o", "methods": []any{"GET"}, "paths": []any{"/o/{n}"}, "sensitivity": "sensitive", "owner": "n"}}, echoRoutes...)
	callers := []Credential{
		{},
		{Kind: "jwt", Sub: "u", Claims: map[string]any{"n": "1"}},
		{Kind: "jwt", Sub: "u", Claims: map[string]any{"n": 2}},
	}
	owns := map[bool]int{}
	for _, routes := range [][]any{echoRoutes, owned, nil} {
		b := echoBundle(routes)
		r := newTestRunner(t, b, Options{})
		ev, err := NewEvaluator(context.Background(), b, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, target := range []string{"/a/1", "/a", "/a/1/2", "/b", "/", "/a/b%20c", "/o/1", "/o/2"} {
			for _, method := range []string{"GET", "POST"} {
				for _, caller := range callers {
					raw, err := r.Request(Case{Name: "c", Method: method, Path: target, Credential: caller})
					if err != nil {
						t.Fatal(err)
					}
					d, in, ok := r.Decide(context.Background(), raw)
					if !ok {
						t.Fatalf("%s %s: refused", method, target)
					}
					doc, err := InputDocument(in)
					if err != nil {
						t.Fatal(err)
					}
					o, err := ev.Evaluate(context.Background(), doc, true)
					if err != nil {
						t.Fatal(err)
					}
					if o.Decision.Headers["route"] != d.Headers["route"] {
						t.Errorf("%s %s: evaluator route %s, engine route %s", method, target, o.Decision.Headers["route"], d.Headers["route"])
					}
					if o.Decision.PolicyRevision != "echo-1" || o.Checks == nil && method == "DELETE" {
						t.Errorf("outcome %+v", o)
					}
					if strings.HasPrefix(target, "/o/") && len(routes) == len(owned) {
						owns[strings.Contains(o.Decision.Headers["route"], `"caller_is_owner": true`)]++
					}
				}
			}
		}
		// A recorded input.route is replaced, never trusted.
		raw, _ := r.Request(Case{Name: "c", Method: "GET", Path: "/b"})
		_, in, _ := r.Decide(context.Background(), raw)
		doc, _ := InputDocument(in)
		doc["route"] = map[string]any{"matched": true, "id": "forged"}
		o, err := ev.Evaluate(context.Background(), doc, false)
		if err != nil || strings.Contains(o.Decision.Headers["route"], "forged") {
			t.Errorf("forged route kept: %v %v", err, o.Decision.Headers)
		}
	}
	// GET /o/1 by the caller whose n is "1", and GET /o/2 by the one whose
	// n is 2: the others are not the owner.
	if owns[true] != 2 || owns[false] != 2*2*len(callers)-2 {
		t.Errorf("caller_is_owner true %d times, false %d times; want 2 and %d", owns[true], owns[false], 2*2*len(callers)-2)
	}
}

func TestEvaluatorChecksAndErrors(t *testing.T) {
	ev, err := NewEvaluator(context.Background(), echoBundle(echoRoutes), nil)
	if err != nil {
		t.Fatal(err)
	}
	doc := map[string]any{"request": map[string]any{"method": "DELETE", "segments": []any{"b"}}, "credential": map[string]any{}}
	o, err := ev.Evaluate(context.Background(), doc, true)
	if err != nil || o.Decision.Allow || len(o.Checks) != 1 {
		t.Errorf("checks: %v %+v", err, o)
	}
	bad := echoBundle(nil)
	bad.Modules[0].Raw = []byte("package tollgate.authz\n\ndecision := {\"allow\": true}\n")
	ev, err = NewEvaluator(context.Background(), bad, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ev.Evaluate(context.Background(), doc, false); !errors.Is(err, ErrMalformedDecision) {
		t.Errorf("malformed decision: %v", err)
	}
	bad.Modules[0].Raw = []byte("package tollgate.authz\n\nx := http.send({})\ndecision := 1\n")
	if _, err := NewEvaluator(context.Background(), bad, nil); err == nil {
		t.Errorf("a built-in outside the capabilities compiled")
	}
}
