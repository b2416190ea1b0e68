package policy

import (
	"context"
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/tollgate/tollgate/bundles"
	"github.com/tollgate/tollgate/pdp/decision"
	"github.com/tollgate/tollgate/pdp/request"
)

// TestInputHoldsWhatThePolicyReads is the differential test of the input
// Evaluate builds with only the parts the policy can read (Input.value
// with the program's reads): over policies that read each part, and the
// default policy, every decision equals the one on the whole input.
func TestInputHoldsWhatThePolicyReads(t *testing.T) {
	ctx := context.Background()
	embedded, err := bundles.Load(ctx, "embedded")
	if err != nil {
		t.Fatal(err)
	}
	const deny = `{"allow": false, "status": 403, "reasons": ["r"], "headers": {}}`
	allowIf := func(cond string) string {
		return `decision := {"allow": true, "status": 200, "reasons": [], "headers": {}} if {` + "\n\t" + cond + "\n} else := " + deny
	}
	for _, tc := range []struct {
		name  string
		body  string // "" for the default policy
		known bool   // the analysis can tell what the policy reads
	}{
		{"default policy", "", true},
		{"a header", allowIf(`input.request.headers["x-a"][0] == "1"`), true},
		{"the headers as a whole", allowIf(`input.request.headers == object.union(input.request.headers, {"x-a": ["1"]})`), true},
		{"the query", allowIf(`input.request.query.a[0] == "1"`), true},
		{"host, scheme and source", allowIf(`concat(" ", [input.request.host, input.request.scheme, input.request.source_ip]) == "h https 192.0.2.1"`), true},
		{"the request as a whole", allowIf(`object.get(input.request, ["headers", "x-a"], []) == ["1"]`), true},
		{"the credential's fingerprint", allowIf(`startswith(input.credential.fingerprint, "sha256:")`), true},
		{"claims", allowIf(`input.identity.claims.customer_number == "42"`), true},
		{"the route", allowIf(`input.route.params.customer_number == "42"`), true},
		{"input as a whole", allowIf(`input.request.method == "GET"
	count(input) > 3`), false},
		{"input by a computed key", allowIf(`some k in ["request"]
	input[k].headers["x-a"][0] == "1"`), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := embedded
			if tc.body != "" {
				b = authzBundle("r1", tc.body)
				b.Data = embedded.Data // the route table, for input.route
			}
			e := activeEngine(t, Options{DecisionCacheEntries: -1}, b)
			p := e.active.Load()
			if (p.reads != nil) != tc.known {
				t.Fatalf("reads known = %t, want %t", p.reads != nil, tc.known)
			}
			rng := rand.New(rand.NewPCG(3, 4))
			allowed := 0
			for i := range 1500 {
				in := randomInput(rng)
				req, err := request.Normalize(request.Raw{
					Method: in.Request.Method, Target: in.Request.Path + []string{"", "?a=1", "?a=2"}[rng.IntN(3)],
					Host: "h", Scheme: "https", SourceIP: []string{"192.0.2.1", "192.0.2.2"}[rng.IntN(2)],
					Headers: map[string][]string{"X-A": {fmt.Sprint(1 + rng.IntN(2))}, "X-B": {"b"}},
				})
				if err != nil {
					t.Fatal(err)
				}
				in.Request = req
				got, gerr := e.Evaluate(ctx, in)
				whole, err := in.value(p.routes, nil)
				if err != nil {
					t.Fatal(err)
				}
				want, werr := decideWhole(ctx, p, whole)
				if (gerr == nil) != (werr == nil) || !sameDecision(got, want) {
					t.Fatalf("input %d (%s):\n trimmed %+v (%v)\n whole   %+v (%v)", i, describe(in), got, gerr, want, werr)
				}
				if got.Allow {
					allowed++
				}
			}
			if allowed == 0 || allowed == 1500 {
				t.Errorf("%d of 1500 allowed: the inputs do not tell allow from deny here", allowed)
			}
		})
	}
}

// decideWhole is Evaluate on an input built in full.
func decideWhole(ctx context.Context, p *program, input ast.Value) (decision.Decision, error) {
	v, err := p.eval(ctx, input)
	if err != nil {
		return failClosed(p.revision, err)
	}
	d, err := decode(v)
	if err != nil {
		return failClosed(p.revision, err)
	}
	d.PolicyRevision = p.revision
	return d, nil
}

// TestEveryPartIsEveryPart: the whole input (Input.Value, and an
// evaluation whose reads are unknown) has every part reads can name.
func TestEveryPartIsEveryPart(t *testing.T) {
	v := reflect.ValueOf(everyPart())
	for i := range v.NumField() {
		if !v.Field(i).Bool() {
			t.Errorf("everyPart leaves out %s", v.Type().Field(i).Name)
		}
	}
}
