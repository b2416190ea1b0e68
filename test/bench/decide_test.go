// Package bench measures one decision in process, and the same work done by
// the peers Tollgate is built from, in the same run: OPA's engine evaluating
// the same policy on the same input given as JSON (how an OPA SDK user
// would call it), and go-oidc verifying the same token on its own. Read the
// figures as ratios: these machines are shared and noisy.
//
//	go test -run '^$' -bench . -benchmem ./test/bench/
package bench

import (
	"context"
	"crypto"
	"encoding/json"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/open-policy-agent/opa/v1/rego"

	"github.com/tollgate/tollgate/bundles"
	"github.com/tollgate/tollgate/pdp"
	"github.com/tollgate/tollgate/pdp/authn"
	"github.com/tollgate/tollgate/pdp/authn/apikey"
	"github.com/tollgate/tollgate/pdp/authn/authntest"
	"github.com/tollgate/tollgate/pdp/authn/oidcjwt"
	"github.com/tollgate/tollgate/pdp/policy"
	"github.com/tollgate/tollgate/pdp/request"
)

type fixture struct {
	decider *pdp.Decider
	issuer  *authntest.Issuer
	token   string
	key     string
}

func newFixture(b *testing.B) *fixture {
	b.Helper()
	ctx := context.Background()
	is := authntest.NewIssuer(b)
	claims := is.Claims("alice")
	claims["customer_number"] = "42"
	claims["scope"] = "customers:read"
	tok := is.Mint(claims) // RS256

	bndl, err := bundles.Load(ctx, "embedded")
	if err != nil {
		b.Fatal(err)
	}
	engine := policy.NewEngine(policy.Options{})
	if err := engine.Activate(ctx, bndl); err != nil {
		b.Fatal(err)
	}
	jwts, err := oidcjwt.New(ctx, oidcjwt.Config{Issuers: []oidcjwt.IssuerConfig{{Issuer: is.URL(), Audiences: []string{authntest.Audience}}}})
	if err != nil {
		b.Fatal(err)
	}
	gen, err := apikey.Generate(nil)
	if err != nil {
		b.Fatal(err)
	}
	store, err := apikey.NewStore([]apikey.Record{{ID: gen.ID, Hash: gen.Hash, Owner: "billing", Scopes: []string{"products:read"}, Created: time.Now().Add(-time.Hour)}})
	if err != nil {
		b.Fatal(err)
	}
	d, err := pdp.New(pdp.Config{Engine: engine, Authenticators: []authn.Authenticator{jwts, apikey.New(store, apikey.Options{})}})
	if err != nil {
		b.Fatal(err)
	}
	return &fixture{decider: d, issuer: is, token: tok, key: gen.Key.Reveal()}
}

func (f *fixture) jwtRequest() request.Raw {
	return request.Raw{Method: "GET", Target: "/customers/42/orders?page=2", Host: "api.example.com", Scheme: "https",
		Headers:  map[string][]string{"Authorization": {"Bearer " + f.token}, "User-Agent": {"bench"}},
		SourceIP: "203.0.113.7"}
}

func (f *fixture) keyRequest() request.Raw {
	return request.Raw{Method: "GET", Target: "/products/7", Host: "api.example.com", Scheme: "https",
		Headers:  map[string][]string{"X-Api-Key": {f.key}, "User-Agent": {"bench"}},
		SourceIP: "203.0.113.7"}
}

// BenchmarkDecide is one whole decision: normalize, find, verify, evaluate.
func BenchmarkDecide(b *testing.B) {
	f := newFixture(b)
	ctx := context.Background()
	for _, bc := range []struct {
		name string
		raw  func() request.Raw
	}{
		{"jwt_rs256_sensitive", f.jwtRequest},
		{"apikey_internal", f.keyRequest},
	} {
		b.Run(bc.name, func(b *testing.B) {
			if dec := f.decider.Decide(ctx, bc.raw()); !dec.Allow {
				b.Fatalf("setup: decision %+v", dec)
			}
			b.ReportAllocs()
			for b.Loop() {
				f.decider.Decide(ctx, bc.raw())
			}
		})
	}
}

// BenchmarkPeerOPAEval is OPA's engine alone, evaluating the same embedded
// policy on the input Tollgate builds for the JWT request, passed as a JSON
// document the way an OPA SDK user passes it (prepared once, as OPA's
// server does).
func BenchmarkPeerOPAEval(b *testing.B) {
	f := newFixture(b)
	ctx := context.Background()
	bndl, err := bundles.Load(ctx, "embedded")
	if err != nil {
		b.Fatal(err)
	}
	pq, err := rego.New(rego.Query("data.tollgate.authz.decision"), rego.ParsedBundle("tollgate", bndl)).PrepareForEval(ctx)
	if err != nil {
		b.Fatal(err)
	}
	var input map[string]any
	doc := `{"request":{"id":"x","method":"GET","path":"/customers/42/orders","segments":["customers","42","orders"],
	  "host":"api.example.com","scheme":"https","query":{"page":["2"]},"headers":{"user-agent":["bench"]},"source_ip":"203.0.113.7"},
	 "credential":{"type":"bearer","placement":"header","name":"authorization","status":"valid","error":"","fingerprint":"sha256:000000000000"},
	 "identity":{"kind":"user","subject":"alice","issuer":"` + f.issuer.URL() + `","claims":{"customer_number":"42","scope":"customers:read"},
	  "scopes":["customers:read"],"roles":[]}}`
	if err := json.Unmarshal([]byte(doc), &input); err != nil {
		b.Fatal(err)
	}
	rs, err := pq.Eval(ctx, rego.EvalInput(input))
	if err != nil || len(rs) != 1 || rs[0].Expressions[0].Value.(map[string]any)["allow"] != true {
		b.Fatalf("setup: %v %v", rs, err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := pq.Eval(ctx, rego.EvalInput(input)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPeerGoOIDCVerify is go-oidc alone verifying the same RS256 token
// against the issuer's key.
func BenchmarkPeerGoOIDCVerify(b *testing.B) {
	f := newFixture(b)
	ctx := context.Background()
	ks := &oidc.StaticKeySet{PublicKeys: []crypto.PublicKey{f.issuer.SigningKey().Public()}}
	v := oidc.NewVerifier(f.issuer.URL(), ks, &oidc.Config{ClientID: authntest.Audience})
	if _, err := v.Verify(ctx, f.token); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(ctx, f.token); err != nil {
			b.Fatal(err)
		}
	}
}
