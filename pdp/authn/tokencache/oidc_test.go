package tokencache_test

import (
	"context"
	"testing"
	"time"

	"github.com/tollgate/tollgate/pdp/authn"
	"github.com/tollgate/tollgate/pdp/authn/authntest"
	"github.com/tollgate/tollgate/pdp/authn/oidcjwt"
	"github.com/tollgate/tollgate/pdp/authn/tokencache"
	"github.com/tollgate/tollgate/pdp/credential"
)

// TestWithdrawnKeyDropsCachedTokens runs the cache over the real verifier
// and a real issuer over HTTP: a token accepted (and cached) before its key
// left the JWKS is refused once the scheduled refresh has seen the key go,
// though its cache entry has not expired.
func TestWithdrawnKeyDropsCachedTokens(t *testing.T) {
	ctx := context.Background()
	is := authntest.NewIssuer(t)
	old := is.SigningKey()
	jwts, err := oidcjwt.New(ctx, oidcjwt.Config{Issuers: []oidcjwt.IssuerConfig{{
		Issuer: is.URL(), Audiences: []string{authntest.Audience}, JWKSRefreshInterval: time.Second,
	}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(jwts.Close)
	cache, err := tokencache.New(jwts, tokencache.Config{ClockSkew: oidcjwt.DefaultClockSkew})
	if err != nil {
		t.Fatal(err)
	}
	tok := is.Mint(is.Claims("alice"))
	cred := credential.Credential{Type: credential.TypeBearer, Placement: credential.PlacementHeader, Name: "authorization", Secret: credential.NewSecret(tok)}
	for range 3 {
		if out, err := cache.Authenticate(ctx, cred); err != nil || out.Result != authn.Authenticated {
			t.Fatalf("before the rotation: %+v, %v", out, err)
		}
	}
	if cache.Len() != 1 {
		t.Fatalf("cache holds %d tokens, want 1", cache.Len())
	}
	if got := cache.Len(); got != 1 {
		t.Fatalf("cache holds %d", got)
	}

	is.Rotate()
	is.RemoveKey(old.ID)
	deadline := time.Now().Add(15 * time.Second) // several refresh intervals
	for {
		out, err := cache.Authenticate(ctx, cred)
		if err == nil && out.Result == authn.Rejected {
			break // the refresh saw the key go: the cached identity is not used
		}
		if time.Now().After(deadline) {
			t.Fatalf("a token of a withdrawn key is still accepted: %+v, %v", out, err)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// A token of the new key is accepted and cached.
	fresh := is.Mint(is.Claims("bob"))
	freshCred := cred
	freshCred.Secret = credential.NewSecret(fresh)
	if out, err := cache.Authenticate(ctx, freshCred); err != nil || out.Result != authn.Authenticated || out.Identity.Subject != "bob" {
		t.Fatalf("a token of the new key: %+v, %v", out, err)
	}
	if out, _ := cache.Authenticate(ctx, cred); out.Result != authn.Rejected {
		t.Fatalf("the withdrawn key's token came back: %+v", out)
	}
}

// TestExpiresAtIsTheTokensExp checks what the cache relies on: the verifier
// reports the token's exp as the identity's expiry.
func TestExpiresAtIsTheTokensExp(t *testing.T) {
	ctx := context.Background()
	is := authntest.NewIssuer(t)
	jwts, err := oidcjwt.New(ctx, oidcjwt.Config{Issuers: []oidcjwt.IssuerConfig{{Issuer: is.URL(), Audiences: []string{authntest.Audience}}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(jwts.Close)
	exp := time.Now().Add(7 * time.Minute).Truncate(time.Second)
	claims := is.Claims("alice")
	claims["exp"] = exp.Unix()
	out, err := jwts.Authenticate(ctx, credential.Credential{Type: credential.TypeBearer, Placement: credential.PlacementHeader, Secret: credential.NewSecret(is.Mint(claims))})
	if err != nil || out.Result != authn.Authenticated {
		t.Fatalf("%+v, %v", out, err)
	}
	if !out.Identity.ExpiresAt.Equal(exp) {
		t.Errorf("ExpiresAt %v, want %v", out.Identity.ExpiresAt, exp)
	}
}
