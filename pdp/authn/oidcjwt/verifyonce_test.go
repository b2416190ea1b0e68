package oidcjwt_test

import (
	"bytes"
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"net"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/tollgate/tollgate/pdp/authn"
	"github.com/tollgate/tollgate/pdp/authn/authntest"
	"github.com/tollgate/tollgate/pdp/authn/oidcjwt"
)

// TestGoOIDCClaimChecksKept: the claim checks go-oidc's IDTokenVerifier made
// when it decoded the payload still hold, now that it no longer runs, and
// still come before the expiry and audience checks (a token failing them was
// invalid, whatever else was wrong with it).
func TestGoOIDCClaimChecksKept(t *testing.T) {
	f := newFixture(t, nil)
	expired := func(c map[string]any) { c["exp"] = f.clock.Now().Add(-time.Hour).Unix() }
	cases := []struct {
		name   string
		edit   func(map[string]any)
		reason string // "" accepts
	}{
		{"nonce string", func(c map[string]any) { c["nonce"] = "n-1" }, ""},
		{"nonce number", func(c map[string]any) { c["nonce"] = 1 }, authn.ReasonInvalid},
		{"nonce object", func(c map[string]any) { c["nonce"] = map[string]any{} }, authn.ReasonInvalid},
		{"at_hash string", func(c map[string]any) { c["at_hash"] = "abc" }, ""},
		{"at_hash list", func(c map[string]any) { c["at_hash"] = []any{"abc"} }, authn.ReasonInvalid},
		{"sub number", func(c map[string]any) { c["sub"] = 7 }, authn.ReasonInvalid},
		{"sub number, expired", func(c map[string]any) { c["sub"] = 7; expired(c) }, authn.ReasonInvalid},
		{"aud number, expired", func(c map[string]any) { c["aud"] = 7; expired(c) }, authn.ReasonInvalid},
		{"aud list of numbers", func(c map[string]any) { c["aud"] = []any{1} }, authn.ReasonInvalid},
		{"iat a string, expired", func(c map[string]any) { c["iat"] = "1"; expired(c) }, authn.ReasonInvalid},
		{"nbf bool", func(c map[string]any) { c["nbf"] = true }, authn.ReasonInvalid},
		{"exp null", func(c map[string]any) { c["exp"] = nil }, authn.ReasonInvalid},
		{"exp a numeric string", func(c map[string]any) { c["exp"] = "99999999999" }, authn.ReasonInvalid},
		{"expired alone", expired, authn.ReasonExpired},
		{"distributed claims", func(c map[string]any) {
			c["_claim_names"] = map[string]any{"groups": "src1"}
			c["_claim_sources"] = map[string]any{"src1": map[string]any{"endpoint": "https://idp/claims", "access_token": "x"}}
		}, ""},
		{"claim name to no source", func(c map[string]any) {
			c["_claim_names"] = map[string]any{"groups": "src2"}
			c["_claim_sources"] = map[string]any{"src1": map[string]any{"endpoint": "https://idp/claims"}}
		}, authn.ReasonInvalid},
		{"claim name to an empty source", func(c map[string]any) {
			c["_claim_names"] = map[string]any{"groups": ""}
			c["_claim_sources"] = map[string]any{"": map[string]any{}}
		}, authn.ReasonInvalid},
		{"claim names without sources", func(c map[string]any) { c["_claim_names"] = map[string]any{"groups": "src1"} }, authn.ReasonInvalid},
		{"claim names a list", func(c map[string]any) { c["_claim_names"] = []any{"groups"} }, authn.ReasonInvalid},
		{"claim source endpoint a number", func(c map[string]any) {
			c["_claim_sources"] = map[string]any{"src1": map[string]any{"endpoint": 1}}
		}, authn.ReasonInvalid},
		{"claim sources a string", func(c map[string]any) { c["_claim_sources"] = "src1" }, authn.ReasonInvalid},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tok := f.iss.Mint(f.claims(tc.edit))
			if tc.reason == "" {
				f.mustAccept(t, tok)
				return
			}
			f.mustReject(t, tok, tc.reason)
		})
	}
}

// TestClaimsDecodedOnceForThePolicy: the identity carries the claims as
// encoding/json (UseNumber) decodes the payload, and the same claims as an
// OPA AST object, equal to what the policy package would convert.
func TestClaimsDecodedOnceForThePolicy(t *testing.T) {
	f := newFixture(t, nil)
	extras := []string{
		`"n":{"a":[1,2.5,-3e2,{"b":null}],"c":true,"d":false}`,
		`"big":123456789012345678901234567890,"f":0.1,"neg":-0`,
		`"u":"caf\u00e9 \ud83d\ude00 \u2028","esc":"a\"b\\c\/d\n"`,
		`"nested_dup":{"x":1,"x":2}`,
		`"empty":{},"list":[],"s":""`,
		`"scope":"orders:read customers:read","roles":["admin","ops"]`,
	}
	for _, extra := range extras {
		t.Run(extra[:8], func(t *testing.T) {
			base, err := json.Marshal(f.claims(nil))
			if err != nil {
				t.Fatal(err)
			}
			payload := append(base[:len(base)-1:len(base)-1], []byte(","+extra+"}")...)
			id := f.mustAccept(t, f.iss.MintRaw(payload))

			dec := json.NewDecoder(bytes.NewReader(payload))
			dec.UseNumber()
			var want map[string]any
			if err := dec.Decode(&want); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(id.Claims, want) {
				t.Fatalf("claims = %#v\nwant %#v", id.Claims, want)
			}
			obj, ok := id.ClaimsValue.(ast.Object)
			if !ok {
				t.Fatalf("ClaimsValue is %T, want ast.Object", id.ClaimsValue)
			}
			conv, err := ast.InterfaceToValue(want)
			if err != nil {
				t.Fatal(err)
			}
			if obj.Compare(conv) != 0 {
				t.Fatalf("ClaimsValue = %v\nwant %v", obj, conv)
			}
		})
	}
}

// otherKeySet is an oidc.KeySet that is not an *oidc.StaticKeySet: the
// authenticator hands it the compact token.
type otherKeySet struct {
	inner   oidc.KeySet
	payload []byte // returned instead of the verified payload when set
	err     error
}

func (k *otherKeySet) VerifySignature(ctx context.Context, raw string) ([]byte, error) {
	if k.err != nil {
		return nil, k.err
	}
	p, err := k.inner.VerifySignature(ctx, raw)
	if err == nil && k.payload != nil {
		return k.payload, nil
	}
	return p, err
}

type timeoutError struct{}

func (timeoutError) Error() string   { return "i/o timeout" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }

var _ net.Error = timeoutError{}

// TestConfiguredKeySets: a configured StaticKeySet verifies the parsed token
// itself; any other KeySet gets the compact token, and its payload must be
// the token's; its errors keep their meaning.
func TestConfiguredKeySets(t *testing.T) {
	c := newClock()
	iss := authntest.NewIssuer(t, authntest.WithNow(c.Now))
	const name = "tollgate-dev"
	claims := func() map[string]any { m := iss.Claims("dev"); m["iss"] = name; return m }
	newAuth := func(ks oidc.KeySet) *fixture {
		a, err := oidcjwt.New(context.Background(), oidcjwt.Config{
			Issuers: []oidcjwt.IssuerConfig{{Issuer: name, Audiences: []string{authntest.Audience}, KeySet: ks}},
			Now:     c.Now,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(a.Close)
		return &fixture{iss: iss, clock: c, auth: a}
	}
	static := &oidc.StaticKeySet{PublicKeys: iss.PublicKeys()}

	f := newAuth(&otherKeySet{inner: static})
	if id := f.mustAccept(t, iss.Mint(claims(), authntest.WithAlg("ES256"))); id.Subject != "dev" || id.ClaimsValue == nil {
		t.Fatalf("identity = %+v", id)
	}
	f.mustReject(t, iss.MintUnknownKey(claims()), authn.ReasonBadSignature)

	// A key set that answers with another payload than the token's.
	other := claims()
	other["sub"] = "mallory"
	otherPayload, _ := json.Marshal(other)
	f = newAuth(&otherKeySet{inner: static, payload: otherPayload})
	f.mustReject(t, iss.Mint(claims()), authn.ReasonBadSignature)

	// A key set that cannot be reached: an error, not a verdict.
	f = newAuth(&otherKeySet{err: timeoutError{}})
	if err := f.mustFail(t, iss.Mint(claims())); !errors.As(err, new(net.Error)) {
		t.Fatalf("error = %v, want the key set's net.Error", err)
	}

	// A static key set holding a key of an unsupported type.
	f = newAuth(&oidc.StaticKeySet{PublicKeys: append([]crypto.PublicKey{"not a key"}, iss.PublicKeys()...)})
	f.mustReject(t, iss.Mint(claims()), authn.ReasonBadSignature)
}

// TestTokenRejectionsWithoutSideChannel: each verdict of the key set keeps
// its own reason, and a fetch failure stays an error, with the verification
// errors typed directly (no context value between the key set and the
// authenticator).
func TestTokenRejectionsWithoutSideChannel(t *testing.T) {
	f := newFixture(t, nil)
	claims := f.claims(nil)
	good := f.iss.Mint(claims)
	f.mustAccept(t, good)

	// Tamper with the signature: same kid, signature of another token.
	other := f.iss.Mint(f.claims(func(c map[string]any) { c["sub"] = "bob" }))
	forged := good[:strings.LastIndexByte(good, '.')] + other[strings.LastIndexByte(other, '.'):]
	f.mustReject(t, forged, authn.ReasonBadSignature)
	f.mustReject(t, f.iss.MintUnknownKey(claims), authn.ReasonUnknownKey)
	f.mustReject(t, f.iss.MintUnknownKey(claims, authntest.WithoutKid()), authn.ReasonBadSignature)

	// The issuer's JWKS down, and a kid to fetch: the token cannot be judged.
	f.iss.SetJWKSResponse(500, nil)
	f.clock.Advance(time.Hour) // past the refetch interval
	tok := f.iss.MintUnknownKey(f.claims(func(c map[string]any) { c["exp"] = f.clock.Now().Add(time.Minute).Unix() }), authntest.WithKid("new-kid"))
	var fe *oidcjwt.FetchError
	if err := f.mustFail(t, tok); !errors.As(err, &fe) {
		t.Fatalf("error = %v, want a *FetchError", err)
	}
}
