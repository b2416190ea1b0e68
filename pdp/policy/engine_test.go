package policy

import (
	"context"
	"errors"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"

	"github.com/tollgate/tollgate/pdp/authn"
	"github.com/tollgate/tollgate/pdp/credential"
	"github.com/tollgate/tollgate/pdp/decision"
)

// testBundle builds a bundle from Rego sources (path → source) the way a
// hand-made bundle arrives: raw modules, no parsed ones, no manifest roots.
func testBundle(revision string, data map[string]any, modules ...string) *bundle.Bundle {
	b := &bundle.Bundle{Manifest: bundle.Manifest{Revision: revision}, Data: data}
	for i, src := range modules {
		path := "/policy" + string(rune('a'+i)) + ".rego"
		b.Modules = append(b.Modules, bundle.ModuleFile{URL: path, Path: path, Raw: []byte(src)})
	}
	if b.Data == nil {
		b.Data = map[string]any{}
	}
	return b
}

// authzBundle is a bundle with one module in package tollgate.authz.
func authzBundle(revision, body string) *bundle.Bundle {
	return testBundle(revision, nil, "package tollgate.authz\n\n"+body)
}

func activeEngine(t testing.TB, opts Options, b *bundle.Bundle) *Engine {
	t.Helper()
	e := NewEngine(opts)
	if err := e.Activate(context.Background(), b); err != nil {
		t.Fatalf("Activate: %v", err)
	}
	return e
}

func validInput() Input {
	return Input{
		Request:    ordersRequest(),
		Credential: credential.Credential{Type: credential.TypeBearer, Placement: credential.PlacementHeader, Name: "authorization", Secret: credential.NewSecret(jwtSecret)},
		Status:     StatusValid,
		Identity:   userIdentity(),
	}
}

func policyError(revision string) decision.Decision {
	d := decision.Deny(500, decision.ReasonPolicyError)
	d.PolicyRevision = revision
	return d
}

const decisionPolicy = `
default decision := {"allow": false, "status": 403, "reasons": ["no_route"], "headers": {}}

decision := {"allow": true, "status": 200, "reasons": [], "headers": {"x-user-id": input.identity.subject}} if {
	input.request.path == "/customers/42/orders"
	input.credential.status == "valid"
}

decision := {"allow": false, "status": 401, "reasons": reasons, "headers": {"WWW-Authenticate": "Bearer realm=\"api\", error=\"invalid_token\""}} if {
	input.request.path == "/customers/42/orders"
	input.credential.status != "valid"
}

reasons contains "unauthenticated"
reasons contains concat(":", ["credential", input.credential.error]) if input.credential.error != ""

decision := {"allow": false, "status": 403.0, "reasons": [], "headers": {}} if input.request.path == "/float-status"
`

func TestEvaluateDecisions(t *testing.T) {
	e := activeEngine(t, Options{}, authzBundle("rev-1", decisionPolicy))

	invalid := validInput()
	invalid.Status, invalid.Error, invalid.Identity = StatusInvalid, authn.ReasonExpired, nil
	noRoute := validInput()
	noRoute.Request.Path = "/nowhere"
	floatStatus := validInput()
	floatStatus.Request.Path = "/float-status"

	cases := []struct {
		name string
		in   Input
		want decision.Decision
	}{
		{"allow with identity header", validInput(), decision.Decision{
			Allow: true, Status: 200, Reasons: []string{}, Headers: map[string]string{"x-user-id": "alice"}, PolicyRevision: "rev-1",
		}},
		{"deny 401, reasons from a set, header name lower-cased", invalid, decision.Decision{
			Status: 401, Reasons: []string{"credential:expired", "unauthenticated"},
			Headers:        map[string]string{"www-authenticate": `Bearer realm="api", error="invalid_token"`},
			PolicyRevision: "rev-1",
		}},
		{"default deny", noRoute, decision.Decision{
			Status: 403, Reasons: []string{"no_route"}, Headers: map[string]string{}, PolicyRevision: "rev-1",
		}},
		{"integral status written as a float", floatStatus, decision.Decision{
			Status: 403, Reasons: []string{}, Headers: map[string]string{}, PolicyRevision: "rev-1",
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := e.Evaluate(context.Background(), tc.in)
			if err != nil {
				t.Fatalf("Evaluate: %v", err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("decision\n got %#v\nwant %#v", got, tc.want)
			}
			if got.Reasons == nil || got.Headers == nil {
				t.Errorf("nil Reasons or Headers: %#v", got)
			}
		})
	}
}

// TestEvaluateSeesInput checks, from Rego, the parts of the input contract
// that a JSON comparison cannot: numbers are numbers, identity is absent
// when the credential is not valid.
func TestEvaluateSeesInput(t *testing.T) {
	e := activeEngine(t, Options{}, authzBundle("rev-1", `
checks contains "exp_is_number" if input.identity.claims.exp > 1700000000
checks contains "ratio_is_number" if input.identity.claims.ratio == 0.5
checks contains "segments" if input.request.segments == ["customers", "42", "orders"]
checks contains "query_lists" if input.request.query.tag == ["a", "b"]
checks contains "fingerprint" if startswith(input.credential.fingerprint, "sha256:")
checks contains "no_identity" if not input.identity
checks contains "roles_empty_array" if input.identity.roles == []

decision := {"allow": false, "status": 403, "reasons": checks, "headers": {}}
`))
	got, err := e.Evaluate(context.Background(), validInput())
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"exp_is_number", "fingerprint", "query_lists", "ratio_is_number", "roles_empty_array", "segments"}
	if !reflect.DeepEqual(got.Reasons, want) {
		t.Errorf("valid: checks = %v, want %v", got.Reasons, want)
	}

	in := validInput()
	in.Status = StatusInvalid
	got, err = e.Evaluate(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	want = []string{"fingerprint", "no_identity", "query_lists", "segments"}
	if !reflect.DeepEqual(got.Reasons, want) {
		t.Errorf("invalid: checks = %v, want %v", got.Reasons, want)
	}
}

// TestEvaluateFailsClosed: every broken policy output is a deny 500
// policy_error, with the revision and an error saying why.
func TestEvaluateFailsClosed(t *testing.T) {
	const ok = `"allow": true, "status": 200, "reasons": [], "headers": {}`
	cases := []struct {
		name    string
		query   string
		policy  string
		wantErr error
	}{
		{"undefined", "", `decision := {` + ok + `} if input.request.path == "/never"`, ErrUndefined},
		{"not an object", "", `decision := true`, ErrMalformedDecision},
		{"a set of decisions", "", `decision contains {` + ok + `}`, ErrMalformedDecision},
		{"multiple results", "data.tollgate.authz.decisions[_]",
			`decisions contains {` + ok + `}
			 decisions contains {"allow": false, "status": 403, "reasons": [], "headers": {}}`, ErrMalformedDecision},
		{"runtime conflict", "",
			`decision := {` + ok + `} if input.request.method == "GET"
			 decision := {"allow": false, "status": 403, "reasons": [], "headers": {}} if input.request.host == "api.example.com"`, ErrEvaluation},

		{"allow missing", "", `decision := {"status": 200, "reasons": [], "headers": {}}`, ErrMalformedDecision},
		{"allow is a string", "", `decision := {"allow": "true", "status": 200, "reasons": [], "headers": {}}`, ErrMalformedDecision},
		{"status missing", "", `decision := {"allow": false, "reasons": [], "headers": {}}`, ErrMalformedDecision},
		{"status 0", "", `decision := {"allow": false, "status": 0, "reasons": [], "headers": {}}`, ErrMalformedDecision},
		{"status is a string", "", `decision := {"allow": false, "status": "403", "reasons": [], "headers": {}}`, ErrMalformedDecision},
		{"status 999", "", `decision := {"allow": false, "status": 999, "reasons": [], "headers": {}}`, ErrMalformedDecision},
		{"status 403.5", "", `decision := {"allow": false, "status": 403.5, "reasons": [], "headers": {}}`, ErrMalformedDecision},
		{"status 1e3", "", `decision := {"allow": false, "status": 1e3, "reasons": [], "headers": {}}`, ErrMalformedDecision},
		{"allow with 403", "", `decision := {"allow": true, "status": 403, "reasons": [], "headers": {}}`, ErrMalformedDecision},
		{"allow with 302", "", `decision := {"allow": true, "status": 302, "reasons": [], "headers": {}}`, ErrMalformedDecision},
		{"deny with 200", "", `decision := {"allow": false, "status": 200, "reasons": [], "headers": {}}`, ErrMalformedDecision},
		{"reasons missing", "", `decision := {"allow": false, "status": 403, "headers": {}}`, ErrMalformedDecision},
		{"reasons is a string", "", `decision := {"allow": false, "status": 403, "reasons": "no_route", "headers": {}}`, ErrMalformedDecision},
		{"reasons not strings", "", `decision := {"allow": false, "status": 403, "reasons": ["no_route", 7], "headers": {}}`, ErrMalformedDecision},
		{"headers missing", "", `decision := {"allow": true, "status": 200, "reasons": []}`, ErrMalformedDecision},
		{"headers is an array", "", `decision := {"allow": true, "status": 200, "reasons": [], "headers": ["x-a"]}`, ErrMalformedDecision},
		{"header value not a string", "", `decision := {"allow": true, "status": 200, "reasons": [], "headers": {"x-a": 1}}`, ErrMalformedDecision},
		{"header value with CRLF", "", `decision := {"allow": true, "status": 200, "reasons": [], "headers": {"x-user-id": "alice\r\nx-admin: true"}}`, ErrMalformedDecision},
		{"header value with LF", "", `decision := {"allow": true, "status": 200, "reasons": [], "headers": {"x-user-id": "alice\nx"}}`, ErrMalformedDecision},
		{"header value with NUL", "", `decision := {"allow": true, "status": 200, "reasons": [], "headers": {"x-user-id": "alice\u0000"}}`, ErrMalformedDecision},
		{"header name with a space", "", `decision := {"allow": true, "status": 200, "reasons": [], "headers": {"x user": "a"}}`, ErrMalformedDecision},
		{"header name with a colon", "", `decision := {"allow": true, "status": 200, "reasons": [], "headers": {"x-a:": "a"}}`, ErrMalformedDecision},
		{"header name empty", "", `decision := {"allow": true, "status": 200, "reasons": [], "headers": {"": "a"}}`, ErrMalformedDecision},
		{"header name not a string", "", `decision := {"allow": true, "status": 200, "reasons": [], "headers": {1: "a"}}`, ErrMalformedDecision},
		{"header names differing in case", "", `decision := {"allow": true, "status": 200, "reasons": [], "headers": {"X-User": "a", "x-user": "b"}}`, ErrMalformedDecision},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := activeEngine(t, Options{Query: tc.query}, authzBundle("rev-bad", tc.policy))
			got, err := e.Evaluate(context.Background(), validInput())
			if !errors.Is(err, tc.wantErr) {
				t.Errorf("error = %v, want %v", err, tc.wantErr)
			}
			if want := policyError("rev-bad"); !reflect.DeepEqual(got, want) {
				t.Errorf("decision = %#v, want %#v", got, want)
			}
		})
	}
}

// TestEvaluateUnknownFieldsIgnored: the decision document may carry more
// than the contract's four fields.
func TestEvaluateUnknownFieldsIgnored(t *testing.T) {
	e := activeEngine(t, Options{}, authzBundle("rev-1",
		`decision := {"allow": true, "status": 204, "reasons": ["ok"], "headers": {}, "debug": {"route": "/x"}}`))
	got, err := e.Evaluate(context.Background(), validInput())
	if err != nil {
		t.Fatal(err)
	}
	if !got.Allow || got.Status != 204 || got.PolicyRevision != "rev-1" {
		t.Errorf("decision = %#v", got)
	}
}

func TestEvaluateInvalidInputFailsClosed(t *testing.T) {
	e := activeEngine(t, Options{}, authzBundle("rev-1", `decision := {"allow": true, "status": 200, "reasons": [], "headers": {}}`))
	in := validInput()
	in.Identity = nil // valid without identity: a pipeline bug
	got, err := e.Evaluate(context.Background(), in)
	if !errors.Is(err, ErrInvalidInput) {
		t.Errorf("error = %v, want ErrInvalidInput", err)
	}
	if want := policyError("rev-1"); !reflect.DeepEqual(got, want) {
		t.Errorf("decision = %#v, want %#v", got, want)
	}
}

func TestEvaluateNoPolicy(t *testing.T) {
	e := NewEngine(Options{})
	if e.Ready() || e.Revision() != "" {
		t.Errorf("new engine: Ready = %v, Revision = %q", e.Ready(), e.Revision())
	}
	got, err := e.Evaluate(context.Background(), validInput())
	if !errors.Is(err, ErrNoPolicy) {
		t.Errorf("error = %v, want ErrNoPolicy", err)
	}
	if want := policyError(""); !reflect.DeepEqual(got, want) {
		t.Errorf("decision = %#v, want %#v", got, want)
	}
}

func TestEvaluateHonoursContext(t *testing.T) {
	// About 10^9 iterations: only cancellation ends it in time.
	e := activeEngine(t, Options{}, authzBundle("rev-slow", `
n := count([1 | some i in numbers.range(1, 1000); some j in numbers.range(1, 1000); some k in numbers.range(1, 1000)])
decision := {"allow": false, "status": 403, "reasons": [sprintf("%d", [n])], "headers": {}}
`))
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	got, err := e.Evaluate(ctx, validInput())
	if !errors.Is(err, ErrEvaluation) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error = %v, want ErrEvaluation and DeadlineExceeded", err)
	}
	if want := policyError("rev-slow"); !reflect.DeepEqual(got, want) {
		t.Errorf("decision = %#v, want %#v", got, want)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("evaluation took %v after its deadline", d)
	}
}

func TestActivate(t *testing.T) {
	e := NewEngine(Options{})
	b := authzBundle("rev-1", `decision := {"allow": true, "status": 200, "reasons": [], "headers": {}}`)
	if err := e.Activate(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	if !e.Ready() || e.Revision() != "rev-1" {
		t.Errorf("Ready = %v, Revision = %q", e.Ready(), e.Revision())
	}
	// The caller's bundle is left as it was.
	if b.Manifest.Roots != nil || b.Modules[0].Parsed != nil {
		t.Error("Activate modified the bundle")
	}

	// A newer bundle replaces it.
	if err := e.Activate(context.Background(), authzBundle("rev-2", `decision := {"allow": false, "status": 403, "reasons": [], "headers": {}}`)); err != nil {
		t.Fatal(err)
	}
	got, err := e.Evaluate(context.Background(), validInput())
	if err != nil || got.Allow || got.PolicyRevision != "rev-2" {
		t.Errorf("after rev-2: %#v, %v", got, err)
	}
}

func TestActivateParsedModulesAndData(t *testing.T) {
	src := `package tollgate.authz

decision := {"allow": input.request.method in data.tollgate.allowed_methods, "status": status, "reasons": [], "headers": {}}
status := 200 if input.request.method in data.tollgate.allowed_methods
else := 405
`
	mod, err := ast.ParseModuleWithOpts("/authz.rego", src, ast.ParserOptions{RegoVersion: ast.RegoV1})
	if err != nil {
		t.Fatal(err)
	}
	roots := []string{"tollgate"}
	b := &bundle.Bundle{
		Manifest: bundle.Manifest{Revision: "rev-parsed", Roots: &roots},
		Data:     map[string]any{"tollgate": map[string]any{"allowed_methods": []any{"GET", "HEAD"}}},
		Modules:  []bundle.ModuleFile{{URL: "/authz.rego", Path: "/authz.rego", Raw: []byte(src), Parsed: mod}},
	}
	e := activeEngine(t, Options{}, b)
	got, err := e.Evaluate(context.Background(), validInput())
	if err != nil || !got.Allow || got.Status != 200 || got.PolicyRevision != "rev-parsed" {
		t.Errorf("decision = %#v, %v", got, err)
	}
}

func TestActivateDecisionFromDataOnly(t *testing.T) {
	b := testBundle("rev-data", map[string]any{"tollgate": map[string]any{"authz": map[string]any{
		"decision": map[string]any{"allow": false, "status": 503, "reasons": []any{"maintenance"}, "headers": map[string]any{}},
	}}})
	e := activeEngine(t, Options{}, b)
	got, err := e.Evaluate(context.Background(), validInput())
	if err != nil || got.Status != 503 || got.Reasons[0] != "maintenance" {
		t.Errorf("decision = %#v, %v", got, err)
	}
}

// TestActivateBadBundleKeepsPrevious: a bundle that cannot be activated
// leaves the previous policy deciding.
func TestActivateBadBundleKeepsPrevious(t *testing.T) {
	good := authzBundle("rev-good", `decision := {"allow": true, "status": 200, "reasons": [], "headers": {}}`)
	cases := []struct {
		name    string
		bundle  *bundle.Bundle
		wantErr error // nil: any error
		astErrs bool  // OPA's ast.Errors are wrapped
	}{
		{"nil bundle", nil, nil, false},
		{"syntax error", authzBundle("rev-bad", `decision := {"allow": true,`), nil, true},
		{"rego v0 syntax", authzBundle("rev-bad", `decision = d { d := {"allow": true} }`), nil, true},
		{"unsafe variable", authzBundle("rev-bad", `decision := x`), nil, true},
		{"type error", authzBundle("rev-bad", `decision := {"allow": true, "status": 200 + "x", "reasons": [], "headers": {}}`), nil, true},
		{"unknown function", authzBundle("rev-bad", `decision := no_such_function(1)`), nil, true},
		// Denied built-ins: a decision must not reach the network or the
		// process environment.
		{"http.send denied", authzBundle("rev-bad", `decision := http.send({"method": "GET", "url": "http://127.0.0.1:1/"})`), nil, true},
		{"net.lookup_ip_addr denied", authzBundle("rev-bad", `decision := net.lookup_ip_addr("example.com")`), nil, true},
		{"opa.runtime denied", authzBundle("rev-bad", `decision := opa.runtime().env`), nil, true},
		{"decision in another package", testBundle("rev-bad", nil, "package tollgate.authx\n\ndecision := {}"), ErrNoDecisionRule, false},
		{"empty bundle", testBundle("rev-bad", nil), ErrNoDecisionRule, false},
		{"data conflicts with a rule", testBundle("rev-bad",
			map[string]any{"tollgate": map[string]any{"authz": map[string]any{"decision": 1}}},
			"package tollgate.authz\n\ndecision := {}"), nil, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := activeEngine(t, Options{}, good)
			err := e.Activate(context.Background(), tc.bundle)
			if err == nil {
				t.Fatal("Activate succeeded")
			}
			if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Errorf("error = %v, want %v", err, tc.wantErr)
			}
			var astErrs ast.Errors
			if tc.astErrs && !errors.As(err, &astErrs) {
				t.Errorf("error %v does not wrap ast.Errors", err)
			}
			if e.Revision() != "rev-good" || !e.Ready() {
				t.Errorf("Revision = %q, Ready = %v after a failed Activate", e.Revision(), e.Ready())
			}
			got, err := e.Evaluate(context.Background(), validInput())
			if err != nil || !got.Allow || got.PolicyRevision != "rev-good" {
				t.Errorf("previous policy no longer decides: %#v, %v", got, err)
			}
		})
	}
}

func TestInvalidQuery(t *testing.T) {
	for _, q := range []string{"data.tollgate.authz[", "data.a; data.b"} {
		opts := Options{Query: q}
		if err := opts.Validate(); !errors.Is(err, ErrInvalidQuery) {
			t.Errorf("Validate(%q) = %v, want ErrInvalidQuery", q, err)
		}
		e := NewEngine(opts)
		if err := e.Activate(context.Background(), authzBundle("rev-1", `decision := {}`)); !errors.Is(err, ErrInvalidQuery) {
			t.Errorf("Activate with query %q = %v, want ErrInvalidQuery", q, err)
		}
		if e.Ready() {
			t.Errorf("query %q: engine ready", q)
		}
	}
	if err := (Options{}).Validate(); err != nil {
		t.Errorf("zero Options: Validate = %v", err)
	}
}

func TestActivateCancelledContext(t *testing.T) {
	e := activeEngine(t, Options{}, authzBundle("rev-1", `decision := {"allow": true, "status": 200, "reasons": [], "headers": {}}`))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := e.Activate(ctx, authzBundle("rev-2", `decision := {"allow": true, "status": 200, "reasons": [], "headers": {}}`)); err == nil {
		t.Fatal("Activate with a cancelled context succeeded")
	}
	if e.Revision() != "rev-1" {
		t.Errorf("Revision = %q", e.Revision())
	}
}

// TestConcurrentEvaluateDuringActivate: under -race, evaluations running
// while bundles are swapped each see exactly one whole revision.
func TestConcurrentEvaluateDuringActivate(t *testing.T) {
	revision := func(rev string) *bundle.Bundle {
		// Both the reason and the revision name the bundle; a decision mixing
		// two bundles would show it.
		return authzBundle(rev, `decision := {"allow": false, "status": 403, "reasons": ["`+rev+`"], "headers": {}}`)
	}
	e := activeEngine(t, Options{}, revision("a"))

	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			for ctx.Err() == nil {
				d, err := e.Evaluate(context.Background(), validInput())
				if err != nil {
					errs <- err
					return
				}
				if len(d.Reasons) != 1 || d.Reasons[0] != d.PolicyRevision {
					errs <- errors.New("decision mixes revisions: " + d.PolicyRevision + " " + d.Reasons[0])
					return
				}
			}
		})
	}
	for i := range 20 {
		rev := []string{"a", "b"}[i%2]
		if err := e.Activate(context.Background(), revision(rev)); err != nil {
			t.Fatal(err)
		}
	}
	stop()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
