package pdp_test

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"

	"github.com/tollgate/tollgate/pdp"
	"github.com/tollgate/tollgate/pdp/authn"
	"github.com/tollgate/tollgate/pdp/credential"
	"github.com/tollgate/tollgate/pdp/decision"
	"github.com/tollgate/tollgate/pdp/policy"
	"github.com/tollgate/tollgate/pdp/request"
)

// echoPolicy allows exactly valid credentials and reports the credential
// fields it saw as reasons, so tests can see what the pipeline handed it.
const echoPolicy = `package tollgate.authz

decision := {
	"allow": input.credential.status == "valid",
	"status": _status,
	"reasons": [input.credential.status, input.credential.error, input.credential.type, input.credential.placement, object.get(input, ["identity", "subject"], "")],
	"headers": {},
}

_status := 200 if input.credential.status == "valid"
else := 401
`

func newEngine(t testing.TB, rego string) *policy.Engine {
	t.Helper()
	mod, err := ast.ParseModuleWithOpts("authz.rego", rego, ast.ParserOptions{RegoVersion: ast.RegoV1})
	if err != nil {
		t.Fatal(err)
	}
	b := &bundle.Bundle{
		Manifest: bundle.Manifest{Revision: "test-rev-1", Roots: &[]string{"tollgate"}},
		Modules:  []bundle.ModuleFile{{Path: "authz.rego", URL: "authz.rego", Raw: []byte(rego), Parsed: mod}},
		Data:     map[string]any{},
	}
	e := policy.NewEngine(policy.Options{})
	if err := e.Activate(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	return e
}

// fakeAuthn is an in-process authenticator for bearer credentials: the
// secret names the outcome.
type fakeAuthn struct{}

func (fakeAuthn) Authenticate(_ context.Context, c credential.Credential) (authn.Outcome, error) {
	if c.Type != credential.TypeBearer {
		return authn.Outcome{}, nil
	}
	switch c.Secret.Reveal() {
	case "good-secret":
		return authn.Accept(&authn.Identity{Kind: authn.KindUser, Subject: "alice"}), nil
	case "broken-secret":
		return authn.Outcome{}, errors.New("jwks unreachable")
	case "nil-identity":
		return authn.Outcome{Result: authn.Authenticated}, nil
	default:
		return authn.Reject(authn.ReasonExpired), nil
	}
}

func TestDecide(t *testing.T) {
	tests := []struct {
		name        string
		raw         request.Raw
		wantAllow   bool
		wantStatus  int
		wantReasons []string
	}{
		{name: "no credential", raw: request.Raw{Method: "GET", Target: "/x"},
			wantStatus: 401, wantReasons: []string{"absent", "", "none", "none", ""}},
		{name: "valid bearer", raw: request.Raw{Method: "get", Target: "/x", Headers: map[string][]string{"Authorization": {"Bearer good-secret"}}},
			wantAllow: true, wantStatus: 200, wantReasons: []string{"valid", "", "bearer", "header", "alice"}},
		{name: "rejected bearer", raw: request.Raw{Method: "GET", Target: "/x", Headers: map[string][]string{"Authorization": {"Bearer old-secret"}}},
			wantStatus: 401, wantReasons: []string{"invalid", "expired", "bearer", "header", ""}},
		{name: "verifier failure is a deny", raw: request.Raw{Method: "GET", Target: "/x", Headers: map[string][]string{"Authorization": {"Bearer broken-secret"}}},
			wantStatus: 401, wantReasons: []string{"invalid", authn.ReasonUnavailable, "bearer", "header", ""}},
		{name: "authenticated without identity is invalid", raw: request.Raw{Method: "GET", Target: "/x", Headers: map[string][]string{"Authorization": {"Bearer nil-identity"}}},
			wantStatus: 401, wantReasons: []string{"invalid", authn.ReasonInvalid, "bearer", "header", ""}},
		{name: "no authenticator for api keys", raw: request.Raw{Method: "GET", Target: "/x", Headers: map[string][]string{"X-Api-Key": {"k"}}},
			wantStatus: 401, wantReasons: []string{"invalid", "no_authenticator", "api_key", "header", ""}},
		{name: "two credentials", raw: request.Raw{Method: "GET", Target: "/x?access_token=good-secret", Headers: map[string][]string{"Authorization": {"Bearer good-secret"}}},
			wantStatus: 401, wantReasons: []string{"invalid", credential.ErrMultipleCredentials, "bearer", "query", ""}},
		{name: "query token", raw: request.Raw{Method: "GET", Target: "/x?access_token=good-secret"},
			wantAllow: true, wantStatus: 200, wantReasons: []string{"valid", "", "bearer", "query", "alice"}},
		{name: "path that cannot be normalized", raw: request.Raw{Method: "GET", Target: "/a/..%2f..%2fetc"},
			wantStatus: 400, wantReasons: []string{decision.ReasonInvalidRequest}},
		{name: "bad method", raw: request.Raw{Method: "G ET", Target: "/x"},
			wantStatus: 400, wantReasons: []string{decision.ReasonInvalidRequest}},
	}
	d, err := pdp.New(pdp.Config{Engine: newEngine(t, echoPolicy), Authenticators: []authn.Authenticator{fakeAuthn{}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dec := d.Decide(context.Background(), tc.raw)
			if dec.Allow != tc.wantAllow || dec.Status != tc.wantStatus || !slices.Equal(dec.Reasons, tc.wantReasons) {
				t.Fatalf("got allow=%v status=%d reasons=%q, want %v %d %q", dec.Allow, dec.Status, dec.Reasons, tc.wantAllow, tc.wantStatus, tc.wantReasons)
			}
			if dec.ID == "" || dec.PolicyRevision != "test-rev-1" {
				t.Fatalf("id=%q revision=%q", dec.ID, dec.PolicyRevision)
			}
		})
	}
}

func TestDecideKeepsGatewayRequestID(t *testing.T) {
	d, err := pdp.New(pdp.Config{Engine: newEngine(t, echoPolicy)})
	if err != nil {
		t.Fatal(err)
	}
	if dec := d.Decide(context.Background(), request.Raw{ID: "gw-123", Method: "GET", Target: "/"}); dec.ID != "gw-123" {
		t.Fatalf("id = %q", dec.ID)
	}
}

func TestDecideFailsClosed(t *testing.T) {
	tests := []struct {
		name   string
		engine func(t *testing.T) *policy.Engine
	}{
		{name: "no policy active", engine: func(*testing.T) *policy.Engine { return policy.NewEngine(policy.Options{}) }},
		{name: "runtime error", engine: func(t *testing.T) *policy.Engine {
			return newEngine(t, "package tollgate.authz\n\ndecision := x if { x := 1 / 0 }\n")
		}},
		{name: "malformed decision", engine: func(t *testing.T) *policy.Engine {
			return newEngine(t, "package tollgate.authz\n\ndecision := {\"allow\": \"yes\", \"status\": 200, \"reasons\": [], \"headers\": {}}\n")
		}},
		{name: "conflicting values", engine: func(t *testing.T) *policy.Engine {
			return newEngine(t, "package tollgate.authz\n\ndecision := {\"allow\": true, \"status\": 200, \"reasons\": [], \"headers\": {}} if input.request.method == \"GET\"\n\ndecision := {\"allow\": false, \"status\": 403, \"reasons\": [], \"headers\": {}} if input.request.path == \"/x\"\n")
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var logs bytes.Buffer
			d, err := pdp.New(pdp.Config{Engine: tc.engine(t), Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
			if err != nil {
				t.Fatal(err)
			}
			dec := d.Decide(context.Background(), request.Raw{Method: "GET", Target: "/x"})
			if dec.Allow || dec.Status != 500 || !slices.Equal(dec.Reasons, []string{decision.ReasonPolicyError}) {
				t.Fatalf("got %+v, want a 500 policy_error deny", dec)
			}
			if !strings.Contains(logs.String(), "policy evaluation failed") {
				t.Errorf("policy failure not logged: %s", logs.String())
			}
		})
	}
}

// TestNoSecretInDecisionLogOrInput is a security regression test: the raw
// credential reaches neither the decision log, the operational log, nor the
// policy input.
func TestNoSecretInDecisionLogOrInput(t *testing.T) {
	const leakPolicy = `package tollgate.authz

decision := {"allow": false, "status": 403, "reasons": [json.marshal(input)], "headers": {}}
`
	var logs bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&logs, nil))
	d, err := pdp.New(pdp.Config{Engine: newEngine(t, leakPolicy), Authenticators: []authn.Authenticator{fakeAuthn{}}, Logger: logger, DecisionLog: logger})
	if err != nil {
		t.Fatal(err)
	}
	secrets := []string{"good-secret", "broken-secret", "cookie-secret-value", "query-secret-value", "api-key-secret-value"}
	raws := []request.Raw{
		{Method: "GET", Target: "/x", Headers: map[string][]string{"Authorization": {"Bearer good-secret"}}},
		{Method: "GET", Target: "/x", Headers: map[string][]string{"Authorization": {"Bearer broken-secret"}}},
		{Method: "GET", Target: "/x", Headers: map[string][]string{"Cookie": {"a=b; session=cookie-secret-value"}}},
		{Method: "GET", Target: "/x?access_token=query-secret-value&page=2"},
		{Method: "GET", Target: "/x?api_key=api-key-secret-value", Headers: map[string][]string{"X-API-Key": {"api-key-secret-value"}}},
		// Refused before the credential stage: the normalize error is
		// logged (decision log "error"), and must quote none of it.
		{Method: "GET", Target: "/x?api_key=api-key-secret-value#x"},
		{Method: "GET", Target: "http://h/x?access_token=query-secret-value"},
		{Method: "GET", Target: "/x/%zz?access_token=query-secret-value"},
		{Method: "GET", Target: "/x?access_token=query-secret-value&a=%zz"},
		{Method: "GET ", Target: "/x", Headers: map[string][]string{"Authorization": {"Bearer good-secret"}}},
		{Method: "GET", Target: "/x", Headers: map[string][]string{"Cookie": {"session=cookie-secret-value\r\nX-A: b"}}},
		{Method: "GET", Target: "/x", Headers: map[string][]string{"X-Api-Key": {"api-key-secret-value\x00"}}},
	}
	var inputs strings.Builder
	for _, raw := range raws {
		dec := d.Decide(context.Background(), raw)
		inputs.WriteString(strings.Join(dec.Reasons, "\n"))
	}
	for _, s := range secrets {
		if strings.Contains(inputs.String(), s) {
			t.Errorf("policy input holds secret %q", s)
		}
		if strings.Contains(logs.String(), s) {
			t.Errorf("logs hold secret %q", s)
		}
	}
	if !strings.Contains(inputs.String(), `"page":["2"]`) || !strings.Contains(inputs.String(), `"fingerprint":"sha256:`) {
		t.Errorf("input lost non-secret data: %s", inputs.String())
	}
	if !strings.Contains(logs.String(), `"policy_revision":"test-rev-1"`) || !strings.Contains(logs.String(), `"fingerprint":"sha256:`) {
		t.Errorf("decision log lacks revision or fingerprint: %s", logs.String())
	}
}

func TestDecideConcurrent(t *testing.T) {
	d, err := pdp.New(pdp.Config{Engine: newEngine(t, echoPolicy), Authenticators: []authn.Authenticator{fakeAuthn{}}})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 50 {
				h := map[string][]string{"Authorization": {"Bearer good-secret"}}
				if i%2 == 1 {
					h = nil
				}
				dec := d.Decide(context.Background(), request.Raw{Method: "GET", Target: "/x", Headers: h})
				if dec.Allow != (i%2 == 0) {
					t.Errorf("worker %d got %+v", i, dec)
					return
				}
			}
		}()
	}
	wg.Wait()
}

func TestNewRequiresEngine(t *testing.T) {
	if _, err := pdp.New(pdp.Config{}); err == nil {
		t.Fatal("want an error without an engine")
	}
}

// blockingAuthn stands for a verifier waiting on a JWKS download: for the
// secret "slow-secret" it blocks until its ctx ends, then answers as told
// (a ctx error, or a late "valid"); other secrets go to fakeAuthn.
type blockingAuthn struct {
	entered chan<- time.Duration // receives the time left to the ctx deadline when a call blocks
	lateOK  bool                 // answer Authenticated after ctx ends
}

func (b blockingAuthn) Authenticate(ctx context.Context, c credential.Credential) (authn.Outcome, error) {
	if c.Secret.Reveal() != "slow-secret" {
		return fakeAuthn{}.Authenticate(ctx, c)
	}
	dl, ok := ctx.Deadline()
	if b.entered != nil {
		left := time.Until(dl)
		if !ok {
			left = -1
		}
		b.entered <- left
	}
	<-ctx.Done()
	if b.lateOK {
		return authn.Accept(&authn.Identity{Kind: authn.KindUser, Subject: "late"}), nil
	}
	return authn.Outcome{}, fmt.Errorf("fetch jwks: %w", ctx.Err())
}

// TestDecideDeadline is the regression test for decisions without a
// deadline: a verifier that blocks (an unknown kid, a JWKS fetch) is cut
// off at the decision deadline and the decision is a deny with
// verifier_unavailable; a late "valid" is not used.
func TestDecideDeadline(t *testing.T) {
	slow := request.Raw{Method: "GET", Target: "/x", Headers: map[string][]string{"Authorization": {"Bearer slow-secret"}}}
	for _, tc := range []struct {
		name    string
		timeout time.Duration
		lateOK  bool
	}{
		{name: "error after the deadline", timeout: 100 * time.Millisecond},
		{name: "valid after the deadline", timeout: 100 * time.Millisecond, lateOK: true},
		{name: "default deadline", timeout: 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs bytes.Buffer
			entered := make(chan time.Duration, 1)
			d, err := pdp.New(pdp.Config{
				Engine:          newEngine(t, echoPolicy),
				Authenticators:  []authn.Authenticator{blockingAuthn{entered: entered, lateOK: tc.lateOK}},
				Logger:          slog.New(slog.NewJSONHandler(&logs, nil)),
				DecisionTimeout: tc.timeout,
			})
			if err != nil {
				t.Fatal(err)
			}
			dec := d.Decide(context.Background(), slow)
			want := []string{"invalid", authn.ReasonUnavailable, "bearer", "header", ""}
			if dec.Allow || dec.Status != 401 || !slices.Equal(dec.Reasons, want) {
				t.Fatalf("got allow=%v %d %q, want deny 401 %q", dec.Allow, dec.Status, dec.Reasons, want)
			}
			timeout := cmp.Or(tc.timeout, pdp.DefaultDecisionTimeout)
			if left := <-entered; left < 0 || left > timeout {
				t.Errorf("the verifier had %v left to its deadline, want a deadline within %v", left, timeout)
			}
			if !strings.Contains(logs.String(), "decision deadline") || strings.Contains(logs.String(), "slow-secret") {
				t.Errorf("log: %s", logs.String())
			}
		})
	}
}

// TestDecideDeadlineOthersUnaffected: while one decision waits on its
// verifier, other decisions are answered; the waiting one ends when its
// caller goes away.
func TestDecideDeadlineOthersUnaffected(t *testing.T) {
	entered := make(chan time.Duration, 1)
	d, err := pdp.New(pdp.Config{
		Engine:          newEngine(t, echoPolicy),
		Authenticators:  []authn.Authenticator{blockingAuthn{entered: entered}},
		DecisionTimeout: pdp.MaxDecisionTimeout,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan decision.Decision)
	go func() {
		done <- d.Decide(ctx, request.Raw{Method: "GET", Target: "/x", Headers: map[string][]string{"Authorization": {"Bearer slow-secret"}}})
	}()
	<-entered // the slow decision is waiting on its verifier

	for _, tc := range []struct {
		secret string
		allow  bool
	}{{"good-secret", true}, {"old-secret", false}, {"broken-secret", false}} {
		dec := d.Decide(context.Background(), request.Raw{Method: "GET", Target: "/x", Headers: map[string][]string{"Authorization": {"Bearer " + tc.secret}}})
		if dec.Allow != tc.allow {
			t.Errorf("%s while another decision waits: %+v", tc.secret, dec)
		}
	}
	select {
	case dec := <-done:
		t.Fatalf("the slow decision ended before its deadline or cancellation: %+v", dec)
	default:
	}
	cancel()
	if dec := <-done; dec.Allow {
		t.Errorf("cancelled decision: %+v", dec)
	}
}

// TestDecideDeadlineBoundsPolicy: the policy evaluation runs under the
// decision deadline too; one that does not finish fails closed.
func TestDecideDeadlineBoundsPolicy(t *testing.T) {
	const slowPolicy = `package tollgate.authz

decision := {"allow": n > 0, "status": 200, "reasons": [], "headers": {}} if {
	n := count([x | some x in numbers.range(1, 1000000000); x % 7 == 0])
}
`
	d, err := pdp.New(pdp.Config{Engine: newEngine(t, slowPolicy), DecisionTimeout: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	dec := d.Decide(context.Background(), request.Raw{Method: "GET", Target: "/x"})
	if dec.Allow || dec.Status != 500 || !slices.Equal(dec.Reasons, []string{decision.ReasonPolicyError}) {
		t.Fatalf("got %+v, want a 500 policy_error deny", dec)
	}
}

func TestNewValidatesDecisionTimeout(t *testing.T) {
	engine := newEngine(t, echoPolicy)
	for _, tc := range []struct {
		timeout time.Duration
		ok      bool
	}{
		{0, true}, {time.Millisecond, true}, {500 * time.Millisecond, true}, {pdp.MaxDecisionTimeout, true},
		{-time.Second, false}, {time.Microsecond, false}, {pdp.MaxDecisionTimeout + time.Nanosecond, false}, {time.Hour, false},
	} {
		_, err := pdp.New(pdp.Config{Engine: engine, DecisionTimeout: tc.timeout})
		if (err == nil) != tc.ok {
			t.Errorf("DecisionTimeout %v: error %v, want ok=%v", tc.timeout, err, tc.ok)
		}
	}
}
