package explain_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"

	"github.com/tollgate/tollgate/pdp"
	"github.com/tollgate/tollgate/pdp/authn"
	"github.com/tollgate/tollgate/pdp/credential"
	"github.com/tollgate/tollgate/pdp/decisionlog"
	"github.com/tollgate/tollgate/pdp/explain"
	"github.com/tollgate/tollgate/pdp/policy"
)

// violationsPolicy has the default policy's shape: a route from data, a
// set of violations each [precedence, status, reasons], the lowest
// deciding.
const violationsPolicy = `package tollgate.authz

default decision := {"allow": false, "status": 500, "reasons": ["policy_error"], "headers": {}}

decision := {"allow": false, "status": status, "reasons": reasons, "headers": {}} if {
	[_, status, reasons] := min(_violations)
} else := {"allow": true, "status": 200, "reasons": [], "headers": {}}

route := r if {
	some r in data.tollgate.routes
	r.path == input.request.path
}

_violations contains [1, 403, ["no_route"]] if not route

_violations contains [2, 403, ["credential_in_query"]] if {
	route.sensitivity == "sensitive"
	input.credential.placement == "query"
}

_violations contains [4, 401, ["credential_missing"]] if {
	route.sensitivity != "public"
	input.credential.status == "absent"
}

_violations contains [5, 401, ["credential_invalid"]] if {
	route.sensitivity != "public"
	input.credential.status == "invalid"
}

_violations contains [7, 403, ["insufficient_scope"]] if {
	some s in route.scopes
	not s in input.identity.scopes
}
`

type tokenAuthn struct{}

func (tokenAuthn) Authenticate(_ context.Context, c credential.Credential) (authn.Outcome, error) {
	switch c.Secret.Reveal() {
	case "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXJlYWRlcg":
		return authn.Accept(&authn.Identity{Kind: authn.KindUser, Subject: "alice", Issuer: "https://idp.example.com/", Scopes: []string{"orders:read"}}), nil
	}
	return authn.Reject(authn.ReasonExpired), nil
}

const goodToken = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXJlYWRlcg"
const oldToken = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJib2IifQ.b2xkLXNpZ25hdHVyZS14eXo"

func setup(t *testing.T) (*explain.Explainer, *pdp.Decider) {
	t.Helper()
	mod, err := ast.ParseModuleWithOpts("authz.rego", violationsPolicy, ast.ParserOptions{RegoVersion: ast.RegoV1})
	if err != nil {
		t.Fatal(err)
	}
	b := &bundle.Bundle{
		Manifest: bundle.Manifest{Revision: "explain-rev"},
		Modules:  []bundle.ModuleFile{{Path: "authz.rego", URL: "authz.rego", Raw: []byte(violationsPolicy), Parsed: mod}},
		Data: map[string]any{"tollgate": map[string]any{"routes": []any{
			map[string]any{"path": "/orders", "sensitivity": "sensitive", "scopes": []any{"orders:read"}},
			map[string]any{"path": "/admin", "sensitivity": "sensitive", "scopes": []any{"admin"}},
		}}},
	}
	e := policy.NewEngine(policy.Options{})
	if err := e.Activate(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	x, err := explain.New(explain.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := x.SetPolicy(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	d, err := pdp.New(pdp.Config{Engine: e, Authenticators: []authn.Authenticator{tokenAuthn{}}, Recorders: []pdp.Recorder{x}})
	if err != nil {
		t.Fatal(err)
	}
	return x, d
}

// TestExplain (issue 10): POST /v1/explain answers the decision and an
// account of it: the credential and where it was, the verification, the
// route, and which of the policy's checks failed (from OPA's trace) and
// which passed; never the credential itself.
func TestExplain(t *testing.T) {
	x, d := setup(t)
	srv := httptest.NewServer(x.Handler(d))
	defer srv.Close()
	tests := []struct {
		name       string
		body       map[string]any
		wantStatus int
		wantFailed []string // the check heads that fail
		wantText   []string
		wantRoute  bool
	}{
		{name: "allowed", body: map[string]any{"method": "GET", "path": "/orders", "headers": map[string]string{"Authorization": "Bearer " + goodToken}},
			wantStatus: 200, wantText: []string{"allowed", "authorization header", "Verification: valid", "Route /orders matched", "5 of 5 checks passed"}, wantRoute: true},
		{name: "token in the query", body: map[string]any{"method": "GET", "path": "/orders?access_token=" + goodToken},
			wantStatus: 403, wantFailed: []string{`[2, 403, ["credential_in_query"]]`}, wantText: []string{"query parameter access_token", "credential_in_query"}, wantRoute: true},
		{name: "expired token, missing scope", body: map[string]any{"method": "GET", "path": "/admin", "headers": map[string]string{"Authorization": "Bearer " + oldToken}},
			wantStatus: 401, wantFailed: []string{`[5, 401, ["credential_invalid"]]`}, wantText: []string{"invalid (expired)"}, wantRoute: true},
		{name: "no route", body: map[string]any{"method": "GET", "path": "/nowhere"},
			wantStatus: 403, wantFailed: []string{`[1, 403, ["no_route"]]`}, wantText: []string{"No route matches", "none found"}},
		{name: "refused before the policy", body: map[string]any{"method": "GET", "path": "/a/..%2f..%2fb", "headers": map[string]string{"Authorization": "Bearer " + goodToken}},
			wantStatus: 400, wantText: []string{"before any credential"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			body, _ := json.Marshal(tc.body)
			resp, err := http.Post(srv.URL, "application/json", strings.NewReader(string(body)))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			raw := new(strings.Builder)
			var got explain.Explanation
			if err := json.NewDecoder(teeReader{resp.Body, raw}).Decode(&got); err != nil {
				t.Fatal(err)
			}
			if got.Decision.Status != tc.wantStatus {
				t.Fatalf("status %d, want %d: %s", got.Decision.Status, tc.wantStatus, raw)
			}
			text := strings.Join(got.Text, "\n")
			for _, w := range tc.wantText {
				if !strings.Contains(text, w) {
					t.Errorf("text lacks %q:\n%s", w, text)
				}
			}
			var failed []string
			for _, c := range got.Checks {
				if c.Result == "failed" {
					failed = append(failed, c.Check)
				}
			}
			if strings.Join(failed, ";") != strings.Join(tc.wantFailed, ";") {
				t.Errorf("failed checks %q, want %q", failed, tc.wantFailed)
			}
			if tc.wantStatus != 400 && len(got.Checks) != 5 {
				t.Errorf("%d checks, want the policy's 5", len(got.Checks))
			}
			if (got.Route != nil && got.Route.(map[string]any)["path"] != nil) != tc.wantRoute {
				t.Errorf("route = %v, want matched %v", got.Route, tc.wantRoute)
			}
			for _, s := range []string{goodToken, oldToken, "c2lnbmF0dXJlLXJlYWRlcg", "b2xkLXNpZ25hdHVyZS14eXo"} {
				if strings.Contains(raw.String(), s) {
					t.Fatalf("the explanation holds a credential: %s", raw)
				}
			}
		})
	}
}

// TestExplainOnlyWaitsForItsOwn: the explainer ignores the records of
// other decisions.
func TestExplainOnlyWaitsForItsOwn(t *testing.T) {
	x, _ := setup(t)
	x.Record(decisionlog.Record{}) // nobody waits: no effect, no panic
}

type teeReader struct {
	r interface{ Read([]byte) (int, error) }
	w *strings.Builder
}

func (t teeReader) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	t.w.Write(p[:n])
	return n, err
}
