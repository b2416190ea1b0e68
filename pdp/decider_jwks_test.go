package pdp_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/tollgate/tollgate/pdp"
	"github.com/tollgate/tollgate/pdp/authn"
	"github.com/tollgate/tollgate/pdp/authn/authntest"
	"github.com/tollgate/tollgate/pdp/authn/oidcjwt"
	"github.com/tollgate/tollgate/pdp/decision"
	"github.com/tollgate/tollgate/pdp/request"
)

// TestStalledJWKSIsBoundedByTheDecisionDeadline (issue 5, item 12) with the
// real verifier: while the issuer's JWKS endpoint stalls, a token naming a
// new kid is denied verifier_unavailable when the decision deadline passes,
// and tokens whose keys are cached are decided at once meanwhile.
func TestStalledJWKSIsBoundedByTheDecisionDeadline(t *testing.T) {
	iss := authntest.NewIssuer(t)
	jwts, err := oidcjwt.New(context.Background(), oidcjwt.Config{
		Issuers: []oidcjwt.IssuerConfig{{Issuer: iss.URL(), Audiences: []string{authntest.Audience}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(jwts.Close)
	d, err := pdp.New(pdp.Config{
		Engine:          newEngine(t, echoPolicy),
		Authenticators:  []authn.Authenticator{jwts},
		DecisionTimeout: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	bearer := func(tok string) request.Raw {
		return request.Raw{Method: "GET", Target: "/x", Headers: map[string][]string{"Authorization": {"Bearer " + tok}}}
	}
	cached := []string{
		iss.Mint(iss.Claims("alice")),
		iss.Mint(iss.Claims("alice"), authntest.WithAlg("ES256")),
		iss.Mint(iss.Claims("alice"), authntest.WithoutKid()),
	}
	hold := iss.HoldJWKS()
	iss.Rotate()
	stalled := iss.Mint(iss.Claims("bob")) // names the new kid

	done := make(chan decision.Decision, 1)
	go func() { done <- d.Decide(context.Background(), bearer(stalled)) }()
	<-hold.Arrived()
	for _, tok := range cached {
		if dec := d.Decide(context.Background(), bearer(tok)); !dec.Allow {
			t.Errorf("a cached key while the JWKS stalls: %+v", dec)
		}
	}
	select {
	case dec := <-done:
		want := []string{"invalid", authn.ReasonUnavailable, "bearer", "header", ""}
		if dec.Allow || !slices.Equal(dec.Reasons, want) {
			t.Fatalf("stalled token: %+v, want a deny %q", dec, want)
		}
	case <-time.After(10 * time.Second): // a failure guard, not a timing assertion
		t.Fatal("the stalled decision outlived its deadline")
	}
	hold.Release()
}
