package oidcjwt_test

import (
	"context"
	"testing"

	"github.com/tollgate/tollgate/pdp/authn"
	"github.com/tollgate/tollgate/pdp/authn/authntest"
	"github.com/tollgate/tollgate/pdp/authn/oidcjwt"
	"github.com/tollgate/tollgate/pdp/credential"
)

// BenchmarkVerifyAlg is one cold verification (no token cache in front)
// of a typical access token per signing algorithm the defaults allow,
// keys from a real JWKS over loopback (fetched once, before the loop).
func BenchmarkVerifyAlg(b *testing.B) {
	ctx := context.Background()
	is := authntest.NewIssuer(b)
	a, err := oidcjwt.New(ctx, oidcjwt.Config{Issuers: []oidcjwt.IssuerConfig{{Issuer: is.URL(), Audiences: []string{authntest.Audience}}}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(a.Close)
	claims := is.Claims("alice")
	claims["scope"] = "orders:read customers:read"
	claims["email"] = "alice@example.com"
	claims["customer_number"] = "42"
	for _, alg := range []string{"RS256", "ES256"} {
		b.Run(alg, func(b *testing.B) {
			cred := credential.Credential{Type: credential.TypeBearer, Placement: credential.PlacementHeader, Name: "authorization",
				Secret: credential.NewSecret(is.Mint(claims, authntest.WithAlg(alg)))}
			if out, err := a.Authenticate(ctx, cred); err != nil || out.Result != authn.Authenticated {
				b.Fatalf("%+v, %v", out, err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if out, err := a.Authenticate(ctx, cred); err != nil || out.Result != authn.Authenticated {
					b.Fatalf("%+v, %v", out, err)
				}
			}
		})
	}
}
