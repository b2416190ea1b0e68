package oidcjwt_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"

	"github.com/tollgate/tollgate/pdp/authn"
	"github.com/tollgate/tollgate/pdp/authn/authntest"
	"github.com/tollgate/tollgate/pdp/authn/oidcjwt"
	"github.com/tollgate/tollgate/pdp/credential"
	"github.com/tollgate/tollgate/pdp/telemetry/telemetrytest"
)

// tokenCase is one token and what the authenticator must make of it.
type tokenCase struct {
	name   string
	config func(*oidcjwt.Config) // nil: the shared default fixture
	token  func(f *fixture) string
	reason string // "" means accepted
}

func runTokenCases(t *testing.T, cases []tokenCase) {
	t.Helper()
	shared := newFixture(t, nil)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := shared
			if tc.config != nil {
				f = newFixture(t, tc.config)
			}
			tok := tc.token(f)
			if tc.reason == "" {
				f.mustAccept(t, tok)
			} else {
				f.mustReject(t, tok, tc.reason)
			}
		})
	}
}

// mint signs the default claims after edit.
func mint(edit func(f *fixture, c map[string]any), opts ...authntest.MintOption) func(*fixture) string {
	return func(f *fixture) string {
		c := f.iss.Claims("alice")
		if edit != nil {
			edit(f, c)
		}
		return f.iss.Mint(c, opts...)
	}
}

// at returns the fixture clock's now moved by d, in Unix seconds.
func at(f *fixture, d time.Duration) int64 { return f.clock.Now().Add(d).Unix() }

// rawToken signs a payload written by hand from the given members, so
// duplicate members can be sent.
func rawToken(members ...func(f *fixture) string) func(*fixture) string {
	return func(f *fixture) string {
		parts := make([]string, len(members))
		for i, m := range members {
			parts[i] = m(f)
		}
		return f.iss.MintRaw([]byte("{" + strings.Join(parts, ",") + "}"))
	}
}

func member(s string) func(*fixture) string { return func(*fixture) string { return s } }

func issMember(f *fixture) string { return fmt.Sprintf(`"iss":%q`, f.iss.URL()) }
func subMember(*fixture) string   { return `"sub":"alice"` }
func audMember(*fixture) string   { return `"aud":"orders-api"` }
func expMember(f *fixture) string { return fmt.Sprintf(`"exp":%d`, at(f, 10*time.Minute)) }

func withAlgorithms(algs ...string) func(*oidcjwt.Config) {
	return func(c *oidcjwt.Config) { c.Issuers[0].Algorithms = algs }
}

func requireType(typ string) func(*oidcjwt.Config) {
	return func(c *oidcjwt.Config) { c.Issuers[0].RequireType = typ }
}

func TestAcceptsValidTokens(t *testing.T) {
	runTokenCases(t, []tokenCase{
		{name: "RS256", token: mint(nil)},
		{name: "ES256", token: mint(nil, authntest.WithAlg("ES256"))},
		{name: "no kid header, key found by trying", token: mint(nil, authntest.WithoutKid())},
		{name: "expired but within skew", token: mint(func(f *fixture, c map[string]any) {
			c["iat"], c["nbf"], c["exp"] = at(f, -time.Hour), at(f, -time.Hour), at(f, -10*time.Second)
		})},
		{name: "expired exactly at the skew edge", token: mint(func(f *fixture, c map[string]any) {
			c["iat"], c["nbf"], c["exp"] = at(f, -time.Hour), at(f, -time.Hour), at(f, -oidcjwt.DefaultClockSkew)
		})},
		{name: "nbf in the future within skew", token: mint(func(f *fixture, c map[string]any) { c["nbf"] = at(f, 10*time.Second) })},
		{name: "iat in the future within skew", token: mint(func(f *fixture, c map[string]any) { c["iat"] = at(f, 10*time.Second) })},
		{name: "no nbf and no iat", token: mint(func(_ *fixture, c map[string]any) { delete(c, "nbf"); delete(c, "iat") })},
		{name: "fractional exp", token: mint(func(f *fixture, c map[string]any) { c["exp"] = float64(at(f, time.Minute)) + 0.5 })},
		{name: "aud list holding the audience", token: mint(func(_ *fixture, c map[string]any) { c["aud"] = []string{"billing-api", authntest.Audience} })},
		{name: "second configured audience", config: func(c *oidcjwt.Config) { c.Issuers[0].Audiences = []string{"billing-api", "shop"} },
			token: mint(func(_ *fixture, c map[string]any) { c["aud"] = "shop" })},
		{name: "PS256 when allowed", config: withAlgorithms("PS256"), token: func(f *fixture) string {
			f.iss.AddKey("PS256")
			return mint(nil, authntest.WithAlg("PS256"))(f)
		}},
		{name: "ES384 when allowed", config: withAlgorithms("ES384"), token: func(f *fixture) string {
			f.iss.AddKey("ES384")
			return mint(nil, authntest.WithAlg("ES384"))(f)
		}},
		{name: "EdDSA when allowed", config: withAlgorithms("EdDSA"), token: func(f *fixture) string {
			f.iss.AddKey("EdDSA")
			return mint(nil, authntest.WithAlg("EdDSA"))(f)
		}},
		{name: "typ at+jwt required and present", config: requireType("at+jwt"), token: mint(nil, authntest.WithType("at+jwt"))},
		{name: "typ matches case-insensitively", config: requireType("at+jwt"), token: mint(nil, authntest.WithType("AT+JWT"))},
		{name: "typ with application/ prefix", config: requireType("at+jwt"), token: mint(nil, authntest.WithType("application/at+jwt"))},
		{name: "required typ with application/ prefix", config: requireType("application/at+jwt"), token: mint(nil, authntest.WithType("at+jwt"))},
	})
}

func TestRejectsBadTokens(t *testing.T) {
	other := authntest.NewIssuer(t)
	runTokenCases(t, []tokenCase{
		// Algorithms.
		{name: "alg none", token: func(f *fixture) string { return f.iss.ForgeNone(f.claims(nil)) }, reason: authn.ReasonAlgorithm},
		{name: "HS256 keyed with the RSA public key PEM", token: func(f *fixture) string { return f.iss.ForgeHS256PEM(f.claims(nil)) }, reason: authn.ReasonAlgorithm},
		{name: "HS256 keyed with the RSA public key DER", token: func(f *fixture) string { return f.iss.ForgeHS256DER(f.claims(nil)) }, reason: authn.ReasonAlgorithm},
		{name: "ES256 when only RS256 is allowed", config: withAlgorithms("RS256"), token: mint(nil, authntest.WithAlg("ES256")), reason: authn.ReasonAlgorithm},
		{name: "ES384 allowed but no key published for it", config: withAlgorithms("RS256", "ES384"),
			token: mint(nil, authntest.WithAlg("ES384")), reason: authn.ReasonUnknownKey},
		{name: "PS256 outside the default allow-list", token: mint(nil, authntest.WithAlg("PS256")), reason: authn.ReasonAlgorithm},

		// Time.
		{name: "expired", token: mint(func(f *fixture, c map[string]any) {
			c["iat"], c["nbf"], c["exp"] = at(f, -2*time.Hour), at(f, -2*time.Hour), at(f, -time.Hour)
		}), reason: authn.ReasonExpired},
		{name: "expired just beyond skew", token: mint(func(f *fixture, c map[string]any) {
			c["iat"], c["nbf"], c["exp"] = at(f, -time.Hour), at(f, -time.Hour), at(f, -oidcjwt.DefaultClockSkew-time.Second)
		}), reason: authn.ReasonExpired},
		{name: "nbf in the future beyond skew", token: mint(func(f *fixture, c map[string]any) { c["nbf"] = at(f, time.Minute) }), reason: authn.ReasonNotYetValid},
		{name: "iat in the future beyond skew", token: mint(func(f *fixture, c map[string]any) { c["iat"] = at(f, time.Minute) }), reason: authn.ReasonNotYetValid},
		{name: "no exp", token: mint(func(_ *fixture, c map[string]any) { delete(c, "exp") }), reason: authn.ReasonMissingExpiry},
		{name: "exp as a string", token: mint(func(f *fixture, c map[string]any) { c["exp"] = fmt.Sprint(at(f, time.Minute)) }), reason: authn.ReasonInvalid},
		{name: "exp absurdly far", token: mint(func(_ *fixture, c map[string]any) { c["exp"] = 1e20 }), reason: authn.ReasonInvalid},
		{name: "nbf not a number", token: mint(func(_ *fixture, c map[string]any) { c["nbf"] = true }), reason: authn.ReasonInvalid},

		// Issuer and audience.
		{name: "token of an issuer not configured", token: func(*fixture) string { return other.Mint(other.Claims("alice")) }, reason: authn.ReasonUnknownIssuer},
		{name: "no iss", token: mint(func(_ *fixture, c map[string]any) { delete(c, "iss") }), reason: authn.ReasonUnknownIssuer},
		{name: "iss with a trailing slash", token: mint(func(f *fixture, c map[string]any) { c["iss"] = f.iss.URL() + "/" }), reason: authn.ReasonUnknownIssuer},
		{name: "iss not a string", token: mint(func(_ *fixture, c map[string]any) { c["iss"] = 1 }), reason: authn.ReasonMalformed},
		{name: "wrong audience", token: mint(func(_ *fixture, c map[string]any) { c["aud"] = "billing-api" }), reason: authn.ReasonAudience},
		{name: "aud list without the audience", token: mint(func(_ *fixture, c map[string]any) { c["aud"] = []string{"a", "b"} }), reason: authn.ReasonAudience},
		{name: "no aud", token: mint(func(_ *fixture, c map[string]any) { delete(c, "aud") }), reason: authn.ReasonAudience},
		{name: "aud not a string", token: mint(func(_ *fixture, c map[string]any) { c["aud"] = 42 }), reason: authn.ReasonInvalid},

		// Subject.
		{name: "no sub", token: mint(func(_ *fixture, c map[string]any) { delete(c, "sub") }), reason: authn.ReasonInvalid},
		{name: "empty sub", token: mint(func(_ *fixture, c map[string]any) { c["sub"] = "" }), reason: authn.ReasonInvalid},

		// Keys and signatures.
		{name: "unknown kid", token: func(f *fixture) string { return f.iss.MintUnknownKey(f.claims(nil)) }, reason: authn.ReasonUnknownKey},
		{name: "published kid, other key", token: func(f *fixture) string {
			return f.iss.MintUnknownKey(f.claims(nil), authntest.WithKid(authntest.KeyIDRSA))
		}, reason: authn.ReasonBadSignature},
		{name: "no kid, unknown key", token: func(f *fixture) string {
			return f.iss.MintUnknownKey(f.claims(nil), authntest.WithoutKid())
		}, reason: authn.ReasonBadSignature},
		{name: "PS256 with a key published for RS256", config: withAlgorithms("RS256", "PS256"),
			token: mint(nil, authntest.WithAlg("PS256")), reason: authn.ReasonBadSignature},
		{name: "RS256 header on the EC key's kid", token: mint(nil, authntest.WithKid(authntest.KeyIDEC)), reason: authn.ReasonBadSignature},
		{name: "tampered payload", token: func(f *fixture) string {
			return authntest.Tamper(f.iss.Mint(f.claims(nil)), func(c map[string]any) { c["sub"] = "admin" })
		}, reason: authn.ReasonBadSignature},
		{name: "signature stripped", token: func(f *fixture) string {
			tok := f.iss.Mint(f.claims(nil))
			return tok[:strings.LastIndexByte(tok, '.')+1]
		}, reason: authn.ReasonBadSignature},
		{name: "signature of another token", token: func(f *fixture) string {
			a, b := f.iss.Mint(f.claims(nil)), f.iss.Mint(f.claims(func(c map[string]any) { c["sub"] = "bob" }))
			return a[:strings.LastIndexByte(a, '.')] + b[strings.LastIndexByte(b, '.'):]
		}, reason: authn.ReasonBadSignature},

		// Duplicate and case-variant claims.
		{name: "aud and AUD", token: rawToken(issMember, subMember, expMember, audMember, member(`"AUD":"orders-api"`)), reason: authn.ReasonDuplicateClaim},
		{name: "AUD instead of aud", token: rawToken(issMember, subMember, expMember, member(`"AUD":"orders-api"`)), reason: authn.ReasonDuplicateClaim},
		{name: "aud twice", token: rawToken(issMember, subMember, expMember, audMember, member(`"aud":"billing-api"`)), reason: authn.ReasonDuplicateClaim},
		{name: "aud twice, once escaped", token: rawToken(issMember, subMember, expMember, audMember, member(`"\u0061ud":"x"`)), reason: authn.ReasonDuplicateClaim},
		{name: "Exp instead of exp", token: rawToken(issMember, subMember, audMember, func(f *fixture) string {
			return fmt.Sprintf(`"Exp":%d`, at(f, time.Hour))
		}), reason: authn.ReasonDuplicateClaim},
		{name: "sub spelled with a long s", token: rawToken(issMember, subMember, audMember, expMember, member(`"ſub":"admin"`)), reason: authn.ReasonDuplicateClaim},
		{name: "iss twice", token: rawToken(issMember, subMember, audMember, expMember, member(`"iss":"https://evil.example"`)), reason: authn.ReasonDuplicateClaim},
		{name: "private claim twice", token: rawToken(issMember, subMember, audMember, expMember, member(`"role":"user"`), member(`"role":"admin"`)), reason: authn.ReasonDuplicateClaim},

		// Token type.
		{name: "typ required and missing", config: requireType("at+jwt"), token: mint(nil), reason: authn.ReasonTokenType},
		{name: "typ required and different", config: requireType("at+jwt"), token: mint(nil, authntest.WithType("JWT")), reason: authn.ReasonTokenType},

		// Size.
		{name: "oversized", token: mint(func(_ *fixture, c map[string]any) { c["pad"] = strings.Repeat("x", oidcjwt.DefaultMaxTokenBytes) }), reason: authn.ReasonTooLarge},
		{name: "over a configured cap", config: func(c *oidcjwt.Config) { c.MaxTokenBytes = 256 }, token: mint(nil), reason: authn.ReasonTooLarge},
	})
}

func TestRejectsMalformedTokens(t *testing.T) {
	b64 := base64.RawURLEncoding.EncodeToString
	valid := func(f *fixture) string { return f.iss.Mint(f.claims(nil)) }
	parts := func(f *fixture) []string { return strings.Split(valid(f), ".") }
	lit := func(s string) func(*fixture) string { return func(*fixture) string { return s } }
	withHeader := func(h string) func(*fixture) string {
		return func(f *fixture) string { p := parts(f); return b64([]byte(h)) + "." + p[1] + "." + p[2] }
	}
	withPayload := func(pl string) func(*fixture) string {
		return func(f *fixture) string { p := parts(f); return p[0] + "." + b64([]byte(pl)) + "." + p[2] }
	}
	cases := []tokenCase{
		{name: "empty", token: lit("")},
		{name: "one part", token: lit("abc")},
		{name: "two parts", token: lit("a.b")},
		{name: "four parts", token: func(f *fixture) string { return valid(f) + ".d" }},
		{name: "dots only", token: lit("..")},
		{name: "empty payload", token: func(f *fixture) string { p := parts(f); return p[0] + ".." + p[2] }},
		{name: "bad base64 length", token: lit("a.b.c")},
		{name: "characters outside base64url", token: lit("e30.e30.a+b/")},
		{name: "padding", token: func(f *fixture) string { p := parts(f); return p[0] + "=." + p[1] + "." + p[2] }},
		{name: "non-canonical base64", token: func(f *fixture) string {
			// Find a header whose encoding ends in a character with spare
			// bits, and set one of them.
			var p []string
			for pad := ""; ; pad += "y" {
				p = strings.Split(f.iss.Mint(f.claims(nil), authntest.WithHeader("x", pad)), ".")
				if len(p[0])%4 != 0 {
					break
				}
			}
			const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
			last := strings.IndexByte(alphabet, p[0][len(p[0])-1])
			p[0] = p[0][:len(p[0])-1] + string(alphabet[last|1])
			return strings.Join(p, ".")
		}},
		{name: "JWS JSON serialization", token: func(f *fixture) string { return f.iss.MintJSON(f.claims(nil)) }},
		{name: "leading space", token: func(f *fixture) string { return " " + valid(f) }},
		{name: "trailing newline", token: func(f *fixture) string { return valid(f) + "\n" }},
		{name: "space inside", token: func(f *fixture) string { t := valid(f); return t[:20] + " " + t[20:] }},
		{name: "Bearer prefix left on", token: func(f *fixture) string { return "Bearer " + valid(f) }},
		{name: "header not JSON", token: withHeader("not json")},
		{name: "header a JSON array", token: withHeader(`["alg","RS256"]`)},
		{name: "header without alg", token: withHeader(`{"kid":"rsa-1"}`)},
		{name: "alg not a string", token: withHeader(`{"alg":256,"kid":"rsa-1"}`)},
		{name: "alg twice in header", token: withHeader(`{"alg":"RS256","alg":"none","kid":"rsa-1"}`)},
		{name: "crit header", token: func(f *fixture) string {
			return f.iss.Mint(f.claims(nil), authntest.WithHeader("crit", []string{"exp"}))
		}},
		{name: "payload not JSON", token: withPayload("hello")},
		{name: "payload a JSON array", token: withPayload(`["iss"]`)},
		{name: "payload with trailing data", token: withPayload(`{"sub":"alice"} {}`)},
		{name: "payload truncated", token: withPayload(`{"sub":"alice"`)},
	}
	for i := range cases {
		cases[i].reason = authn.ReasonMalformed
	}
	runTokenCases(t, cases)
}

func TestIdentity(t *testing.T) {
	f := newFixture(t, nil)
	c := f.claims(func(c map[string]any) {
		c["email"] = "alice@example.com"
		c["customer_number"] = "42"
		c["scope"] = "orders:read  orders:write"
		c["scp"] = []string{"customers:read", "orders:read"}
		c["roles"] = []string{"admin", "support"}
	})
	id := f.mustAccept(t, f.iss.Mint(c))
	if id.Kind != authn.KindUser || id.Subject != "alice" || id.Issuer != f.iss.URL() || id.KeyID != "" {
		t.Fatalf("identity = %+v", id)
	}
	if want := []string{"orders:read", "orders:write", "customers:read"}; !slices.Equal(id.Scopes, want) {
		t.Errorf("Scopes = %q, want %q", id.Scopes, want)
	}
	if want := []string{"admin", "support"}; !slices.Equal(id.Roles, want) {
		t.Errorf("Roles = %q, want %q", id.Roles, want)
	}
	if id.Claims["email"] != "alice@example.com" || id.Claims["customer_number"] != "42" {
		t.Errorf("Claims = %v", id.Claims)
	}
	if n, ok := id.Claims["exp"].(json.Number); !ok || n.String() != fmt.Sprint(c["exp"]) {
		t.Errorf("exp claim = %#v, want json.Number %v", id.Claims["exp"], c["exp"])
	}

	id = f.mustAccept(t, f.iss.Mint(f.claims(func(c map[string]any) {
		c["roles"] = "admin"
		c["scp"] = "a b"
	})))
	if !slices.Equal(id.Roles, []string{"admin"}) || !slices.Equal(id.Scopes, []string{"a", "b"}) {
		t.Errorf("Roles = %q, Scopes = %q", id.Roles, id.Scopes)
	}
	id = f.mustAccept(t, f.iss.Mint(f.claims(nil)))
	if id.Scopes != nil || id.Roles != nil {
		t.Errorf("without scope or roles: Scopes = %q, Roles = %q", id.Scopes, id.Roles)
	}
}

func TestNotApplicable(t *testing.T) {
	f := newFixture(t, nil)
	tok := f.iss.Mint(f.claims(nil))
	for _, typ := range []credential.Type{credential.TypeAPIKey, credential.TypeNone, "other"} {
		out, err := f.auth.Authenticate(context.Background(), credential.Credential{Type: typ, Secret: credential.NewSecret(tok)})
		if err != nil || out.Result != authn.NotApplicable {
			t.Fatalf("%s: %+v, %v", typ, out, err)
		}
	}
	if n := f.iss.JWKSFetches(); n != 1 {
		t.Fatalf("NotApplicable fetched the JWKS: %d fetches, want only New's", n)
	}
}

func TestUnknownIssuerFetchesNothing(t *testing.T) {
	f := newFixture(t, nil)
	other := authntest.NewIssuer(t)
	for range 5 {
		f.mustReject(t, other.MintUnknownKey(other.Claims("x")), authn.ReasonUnknownIssuer)
	}
	if f.iss.JWKSFetches() != 1 || other.JWKSFetches() != 0 || other.DiscoveryFetches() != 0 {
		t.Fatalf("fetches: ours %d, theirs %d jwks, %d discovery", f.iss.JWKSFetches(), other.JWKSFetches(), other.DiscoveryFetches())
	}
}

func TestStaticKeySet(t *testing.T) {
	c := newClock()
	iss := authntest.NewIssuer(t, authntest.WithNow(c.Now))
	const name = "tollgate-dev" // with a KeySet, the issuer need not be a URL
	a, err := oidcjwt.New(context.Background(), oidcjwt.Config{
		Issuers: []oidcjwt.IssuerConfig{{
			Issuer:    name,
			Audiences: []string{authntest.Audience},
			KeySet:    &oidc.StaticKeySet{PublicKeys: iss.PublicKeys()},
		}},
		Now: c.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close)
	if st := a.Status(); len(st) != 1 || st[0].State != oidcjwt.StateReady || !st[0].Static {
		t.Fatalf("Status = %+v", st)
	}
	f := &fixture{iss: iss, clock: c, auth: a}
	claims := func() map[string]any { m := iss.Claims("dev"); m["iss"] = name; return m }
	if id := f.mustAccept(t, iss.Mint(claims())); id.Issuer != name || id.Subject != "dev" {
		t.Fatalf("identity = %+v", id)
	}
	f.mustAccept(t, iss.Mint(claims(), authntest.WithAlg("ES256")))
	f.mustReject(t, iss.MintUnknownKey(claims()), authn.ReasonBadSignature)
	f.mustReject(t, iss.ForgeHS256PEM(claims()), authn.ReasonAlgorithm)
	if iss.DiscoveryFetches() != 0 || iss.JWKSFetches() != 0 {
		t.Fatalf("a static key set fetched: discovery %d, jwks %d", iss.DiscoveryFetches(), iss.JWKSFetches())
	}
}

func TestConcurrentUse(t *testing.T) {
	f := newFixture(t, nil)
	good := f.iss.Mint(f.claims(nil))
	bad := f.iss.MintUnknownKey(f.claims(nil))
	var wg sync.WaitGroup
	errs := make(chan string, 64)
	for i := range 64 {
		wg.Go(func() {
			tok, want := good, authn.Authenticated
			if i%2 == 1 {
				tok, want = bad, authn.Rejected
			}
			out, err := f.auth.Authenticate(context.Background(), bearer(tok))
			if err != nil || out.Result != want {
				errs <- fmt.Sprintf("goroutine %d: %+v, %v", i, out, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if n := f.iss.JWKSFetches(); n != 2 {
		t.Errorf("JWKSFetches = %d, want 2: New's, and one for the unknown kids (concurrent fetches collapse)", n)
	}
}

// TestNeverLogsOrReturnsTheToken is a security regression test: neither the
// log (at debug) nor an error may carry the raw token or its parts.
func TestNeverLogsOrReturnsTheToken(t *testing.T) {
	var logs telemetrytest.LogBuffer // background refreshes log too
	f := newFixture(t, func(c *oidcjwt.Config) {
		c.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	toks := []string{
		f.iss.Mint(f.claims(nil)),
		authntest.Tamper(f.iss.Mint(f.claims(nil)), func(c map[string]any) { c["sub"] = "x" }),
		f.iss.MintUnknownKey(f.claims(nil)),
		f.iss.ForgeNone(f.claims(nil)),
	}
	for _, tok := range toks {
		_, _ = f.authenticate(t, tok)
	}
	f.iss.Close()
	f.clock.Advance(time.Hour)
	tok := f.iss.MintUnknownKey(f.claims(nil), authntest.WithKid("fresh"))
	err := f.mustFail(t, tok)
	toks = append(toks, tok)

	for _, tok := range toks {
		for _, part := range strings.Split(tok, ".") {
			if len(part) < 8 {
				continue
			}
			if strings.Contains(logs.String(), part) {
				t.Errorf("log holds a token part: %s", logs.String())
			}
			if strings.Contains(err.Error(), part) {
				t.Errorf("error holds a token part: %v", err)
			}
		}
	}
	if !strings.Contains(logs.String(), "fingerprint=sha256:") {
		t.Errorf("rejections are not logged with a fingerprint: %s", logs.String())
	}
}

func BenchmarkAuthenticate(b *testing.B) {
	f := newFixture(b, nil)
	cred := bearer(f.iss.Mint(f.claims(func(c map[string]any) {
		c["scope"] = "orders:read customers:read"
		c["email"] = "alice@example.com"
	})))
	ctx := context.Background()
	if out, err := f.auth.Authenticate(ctx, cred); err != nil || out.Result != authn.Authenticated {
		b.Fatalf("%+v, %v", out, err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		out, err := f.auth.Authenticate(ctx, cred)
		if err != nil || out.Result != authn.Authenticated {
			b.Fatalf("%+v, %v", out, err)
		}
	}
}
